"""The `cgan` command line, run as a user runs it (a subprocess of the installed entry point)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import COMMITTED_GENERATOR

CGAN = [sys.executable, "-m", "cgan"]


def cgan(*args, check=True):
    proc = subprocess.run([*CGAN, *map(str, args)], capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"cgan {args} exited {proc.returncode}:\n{proc.stderr}")
    return proc


@pytest.mark.parametrize("command", ["export", "bins", "infer", "grids", "quality", "set-latest"])
def test_every_subcommand_has_help(command):
    proc = cgan(command, "--help")
    assert proc.stdout.startswith("usage: cgan " + command)


@pytest.mark.slow
def test_modelzoo_checkpoint_end_to_end_gives_rgb_grids(tmp_path, modelzoo_checkpoint):
    exported = json.loads(cgan("export", "--checkpoint", modelzoo_checkpoint, "--out", tmp_path / "zoo.onnx",
                               "--json").stdout)
    assert exported["channels"] == 3 and exported["max_abs_err"] <= 1e-5
    cgan("bins", "--out", tmp_path / "bins", "--num-grids", 2, "--seed", 3)
    assert (tmp_path / "bins" / "CGAN_prep_bin.info").is_file()
    infer = json.loads(cgan("infer", "--model", tmp_path / "zoo.onnx", "--input", tmp_path / "bins",
                            "--output", tmp_path / "out", "--threads", 2, "--json").stdout)
    assert infer["perf"]["threads"] == 2 and infer["perf"]["grids"] == 2
    assert Path(infer["output_dir"], "grid_00000001_output_0.bin").stat().st_size == 940_800
    cgan("grids", "--input", tmp_path / "out", "--out", tmp_path / "grids")
    img = Image.open(tmp_path / "grids" / "grid_00000000.png")
    assert img.mode == "RGB" and img.size == (280, 280)
    report = json.loads(cgan("quality", "--checkpoint", modelzoo_checkpoint, "--inputs", tmp_path / "bins",
                             "--outputs", tmp_path / "out", "--out", tmp_path, "--json").stdout)
    assert report["parity_max_abs_err"] <= 1e-5
    assert json.loads((tmp_path / "quality.json").read_text()) == report


@pytest.mark.slow
def test_quality_acceptance_on_the_committed_model():
    """The issue's bar: label accuracy >= 0.90, parity <= 1e-5, classifier hold-out >= 0.95."""
    proc = cgan("quality", "--checkpoint", COMMITTED_GENERATOR, "--grids", 20, "--seed", 0, "--json")
    report = json.loads(proc.stdout)
    assert report["grids"] == 20 and report["digits_judged"] == 2000
    assert report["label_accuracy"] >= 0.90
    assert report["parity_max_abs_err"] <= 1e-5
    assert report["classifier_holdout_accuracy"] >= 0.95


def test_pytorch_backend_needs_a_checkpoint(tmp_path):
    proc = cgan("infer", "--backend", "pytorch", "--input", tmp_path, "--output", tmp_path / "o", check=False)
    assert proc.returncode == 2 and "needs --checkpoint G.pth" in proc.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["export", "--checkpoint", "/nonexistent/G.pth", "--out", "x.onnx"], "not found"),
        (["bins", "--out", "b", "--num-grids", "0", "--seed", "1"], "must be 1 or more"),
        (["bins", "--out", "b", "--num-grids", "10000001", "--seed", "1"], "1..10000000"),  # MAX_GRIDS + 1
        (["bins", "--out", "b", "--num-grids", "two", "--seed", "1"], "'two' is not an integer"),
        (["grids", "--input", "missing", "--out", "g"], "does not exist; run `cgan infer` first"),
        (["quality", "--inputs", "b"], "give both --inputs and --outputs"),
    ],
)
def test_clear_errors(tmp_path, args, message):
    proc = subprocess.run([*CGAN, *args], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_wrong_size_bin_through_the_cli(tmp_path, upstream_onnx):
    (tmp_path / "bins").mkdir()
    np.zeros(100, "<f4").tofile(tmp_path / "bins" / "grid_00000000.bin")
    proc = cgan("infer", "--model", upstream_onnx, "--input", tmp_path / "bins", "--output", tmp_path / "o",
                check=False)
    assert proc.returncode == 2 and "400 bytes" in proc.stderr and "28,800 bytes" in proc.stderr


def test_int8_through_the_cli_infer_and_quality(tmp_path, upstream_checkpoint, upstream_onnx):
    env = dict(os.environ, CGAN_INT8_CACHE=str(tmp_path / "cache"))
    cgan("bins", "--out", tmp_path / "bins", "--num-grids", 2, "--seed", 3)
    proc = subprocess.run([*CGAN, "infer", "--model", str(upstream_onnx), "--input", str(tmp_path / "bins"),
                           "--output", str(tmp_path / "out"), "--precision", "int8", "--json"],
                          capture_output=True, text=True, timeout=600, env=env, check=True)
    assert json.loads(proc.stdout)["perf"]["tool"]["precision"] == "int8"
    assert len(list((tmp_path / "cache").glob("cgan-int8-*.onnx"))) == 1
    report = json.loads(cgan("quality", "--checkpoint", upstream_checkpoint, "--inputs", tmp_path / "bins",
                             "--outputs", tmp_path / "out", "--json").stdout)
    assert report["precision"] == "int8" and report["parity_limits"]["max_abs"] == 0.5
    proc = subprocess.run([*CGAN, "quality", "--checkpoint", str(upstream_checkpoint), "--grids", "1",
                           "--precision", "int8", "--json"], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["precision"] == "int8"


def test_int8_is_only_for_onnxruntime(tmp_path):
    proc = cgan("infer", "--backend", "pytorch", "--checkpoint", "x.pth", "--precision", "int8",
                "--input", tmp_path, "--output", tmp_path / "o", check=False)
    assert proc.returncode == 2 and "--precision int8 needs --backend onnxruntime" in proc.stderr


def test_set_latest_repoints_latest_json_and_refuses_what_it_cannot_point_at(local_s3):
    """`cgan set-latest <run>`: the documented way to move latest.json (e.g. away from a run that
    got a wrong logical date before plan refused future ones); a later night moves it on."""
    import secrets

    from cgan.storage import s3

    client = local_s3["client"]
    bucket = "setlatest-" + secrets.token_hex(3)
    client.create_bucket(Bucket=bucket)
    for name, date, status in (("good", "2026-11-25T02:00:00+00:00", "accepted"),
                               ("future", "2099-01-01T00:00:00+00:00", "accepted"),
                               ("bad", "2026-11-24T02:00:00+00:00", "rejected")):
        s3.put_bytes(client, bucket, f"runs/{name}/manifest.json",
                     json.dumps({"run_id": name, "logical_date": date, "status": status}).encode())
    s3.put_bytes(client, bucket, "latest.json", json.dumps({"manifest": "runs/future/manifest.json",
                                                            "logical_date": "2099-01-01T00:00:00+00:00"}).encode())
    env = dict(os.environ, CGAN_S3_ENDPOINT_URL=local_s3["endpoint"], AWS_ACCESS_KEY_ID=local_s3["access_key"],
               AWS_SECRET_ACCESS_KEY=local_s3["secret_key"], AWS_DEFAULT_REGION="us-east-1")

    def run(*args):
        return subprocess.run([*CGAN, "set-latest", *args, "--bucket", bucket], capture_output=True, text=True,
                              timeout=120, env=env)

    done = run("good")
    assert done.returncode == 0, done.stderr
    latest = json.loads(client.get_object(Bucket=bucket, Key="latest.json")["Body"].read())
    assert latest["manifest"] == "runs/good/manifest.json" and latest["logical_date"].startswith("2026-11-25")
    for name, message in (("bad", "failed the quality gate"), ("nothing", "is not a published run"),
                          ("../x", "is not the name of a published run")):
        refused = run(name)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
    assert json.loads(client.get_object(Bucket=bucket, Key="latest.json")["Body"].read()) == latest
    assert local_s3["secret_key"] not in done.stdout + done.stderr
