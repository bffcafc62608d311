"""Reading a published run's grids the way a consumer does (docs/data-layout.md, layout v2): the
manifest's packs, each downloaded and checked against the manifest, its index checked, the tar
opened with the system's `tar` (a list argv, never a shell), each PNG checked against the index.
Shared by the tests that run the real DAG (tests/dags, tests/reliability, tests/distributed)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
AWSCLI_TARGET = Path("/tmp/awscli-t")  # a `pip install --target` of awscli, where no `aws` is on PATH


def check_v2_manifest(manifest: dict, grids: int) -> list[dict]:
    """The manifest is layout v2 and its packs hold grids 0..grids-1, each once, in order; its packs."""
    assert manifest["version"] == 2, manifest.get("version")
    assert manifest["grids"] == grids, (manifest["grids"], grids)
    packs = manifest["packs"]
    expect = 0
    for pack in packs:
        assert pack["first"] == expect and pack["count"] > 0, (expect, pack)
        assert pack["key"].endswith(f"/packs/pack_{pack['first']:08d}.tar"), pack["key"]
        assert pack["index"]["key"] == pack["key"].removesuffix(".tar") + ".json", pack
        expect += pack["count"]
    assert expect == grids, f"the packs hold grids 0..{expect - 1}, the run has {grids}"
    return packs


def published_grids(client, bucket: str, manifest: dict, work_dir: Path, *, grids: int | None = None) -> dict[int, str]:
    """{grid: sha256 of its PNG} of every grid the manifest's packs hold, read as a consumer reads
    them: each pack and index downloaded with their manifest size and sha256, the index's own size
    and sha256 of the pack, `tar -x` of the pack giving exactly the index's members, each PNG's
    size and sha256 the index's."""
    packs = check_v2_manifest(manifest, manifest["grids"] if grids is None else grids)
    found: dict[int, str] = {}
    for pack in packs:
        tar_body = client.get_object(Bucket=bucket, Key=pack["key"])["Body"].read()
        assert len(tar_body) == pack["size"] and sha256(tar_body) == pack["sha256"], pack["key"]
        index_body = client.get_object(Bucket=bucket, Key=pack["index"]["key"])["Body"].read()
        assert len(index_body) == pack["index"]["size"] and sha256(index_body) == pack["index"]["sha256"], pack
        index = json.loads(index_body)
        assert index["first"] == pack["first"] and index["count"] == pack["count"], index
        assert index["size"] == pack["size"] and index["sha256"] == pack["sha256"], index
        local = Path(work_dir) / "packs" / Path(pack["key"]).name
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(tar_body)
        for name, sha in extract_with_tar(local, Path(work_dir) / "x" / local.stem, index).items():
            found[int(name.removeprefix("grid_").removesuffix(".png"))] = sha
    return found


def extract_with_tar(pack: Path, dest: Path, index: dict) -> dict[str, str]:
    """`tar -x` the pack into dest (a new folder); {member name: sha256} of what it extracted,
    checked to be exactly the index's members, each a PNG of the index's size and sha256."""
    dest.mkdir(parents=True)
    listed = subprocess.run(["tar", "-t", "-f", str(pack)], capture_output=True, text=True, check=True, timeout=60)
    names = [m[0] for m in index["members"]]
    assert listed.stdout.split() == names, (listed.stdout, names)  # in grid order
    subprocess.run(["tar", "-x", "-f", str(pack), "-C", str(dest)], capture_output=True, check=True, timeout=60)
    extracted = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*"))
    assert extracted == sorted(names), extracted
    shas = {}
    for name, _offset, size, sha in index["members"]:
        data = (dest / name).read_bytes()
        assert data.startswith(PNG_MAGIC), name
        assert len(data) == size and sha256(data) == sha, name
        shas[name] = sha
    return shas


def webdataset_samples(pack: Path) -> dict[str, bytes]:
    """{key: png} of the pack read by the `webdataset` library, as a training loader reads it."""
    import webdataset as wds

    return {s["__key__"]: s["png"] for s in wds.WebDataset(str(pack), shardshuffle=False)}


def aws_cli() -> list[str] | None:
    """The argv prefix of an AWS CLI: `aws` on PATH, else awscli from AWSCLI_TARGET; None without."""
    found = shutil.which("aws")
    if found:
        return [found]
    if (AWSCLI_TARGET / "awscli" / "__main__.py").is_file():
        return [sys.executable, "-m", "awscli"]
    return None


def aws_s3_cp(s3: dict, bucket: str, key: str, dest: Path) -> subprocess.CompletedProcess:
    """`aws s3 cp s3://bucket/key dest` against the test server (s3: the local_s3 fixture's dict),
    with only its keys (no config or credentials file of this machine)."""
    cli = aws_cli()
    assert cli is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_ACCESS_KEY_ID": s3["access_key"], "AWS_SECRET_ACCESS_KEY": s3["secret_key"],
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull})
    if cli[0] == sys.executable:
        env["PYTHONPATH"] = str(AWSCLI_TARGET)
    return subprocess.run([*cli, "s3", "cp", "--endpoint-url", s3["endpoint"], "--only-show-errors",
                           f"s3://{bucket}/{key}", str(dest)], env=env, capture_output=True, text=True, timeout=120)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
