"""Shared fixtures: small generator checkpoints built on the fly, and their ONNX exports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMMITTED_GENERATOR = REPO / "models" / "cgan_generator.pth"

# The files that run real Airflow (whole DAG runs, services), longest first: seconds each on a
# 2-core machine under two workers. `make test` hands whole files to its workers in collection
# order (--dist loadfile --no-loadscope-reorder); starting the longest first (the longest-
# processing-time rule) lets the workers finish together instead of one idling while the other
# runs a long file it was handed last. Any other file keeps its place after these.
LONGEST_FIRST = (
    "tests/reliability/test_dag_faults.py",  # 295 s
    "tests/dags/test_cgan_generation.py",  # 244 s
    "tests/distributed/test_ascend_fleet.py",  # 133 s
    "tests/dags/test_checkpoint_trigger.py",  # 104 s
    "tests/reliability/test_load.py",  # 94 s
    "tests/distributed/test_celery_topology.py",  # 90 s
    "tests/cgan/ascend/test_msame.py",  # 56 s
    "tests/reliability/test_storage_faults.py",  # 47 s
    "tests/plugins/test_gallery_browser.py",  # 41 s
    "tests/cgan/test_cli.py",  # 35 s
)


def pytest_collection_modifyitems(config, items):
    rank = {path: n for n, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable: files stay whole


def build_checkpoint(path: Path, channels: int, *, prefix: str = "", half: bool = False, seed: int = 0) -> Path:
    """A randomly initialised upstream generator saved as a state_dict (BN stats perturbed)."""
    import torch

    from cgan.recipe.model import Generator

    torch.manual_seed(seed)
    model = Generator(channels)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so export folding is exercised
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    state = {}
    for key, value in model.state_dict().items():
        if half and value.is_floating_point():
            value = value.half()
        state[prefix + key] = value
    torch.save(state, path)
    return path


@pytest.fixture(scope="session")
def upstream_checkpoint(tmp_path_factory) -> Path:
    """C = 1, plain keys, fp32: like upstream CGAN_G.pkl."""
    return build_checkpoint(tmp_path_factory.mktemp("ckpt") / "CGAN_G.pkl", 1)


@pytest.fixture(scope="session")
def modelzoo_checkpoint(tmp_path_factory) -> Path:
    """C = 3, `module.`-prefixed keys, fp16 tensors: like ModelZoo CGAN_G.pth from DDP + apex O2."""
    return build_checkpoint(tmp_path_factory.mktemp("ckpt") / "CGAN_G.pth", 3, prefix="module.", half=True)


@pytest.fixture(scope="session")
def upstream_onnx(tmp_path_factory, upstream_checkpoint) -> Path:
    from cgan.recipe.export import export_onnx

    return Path(export_onnx(upstream_checkpoint, tmp_path_factory.mktemp("onnx") / "cgan.onnx").onnx_path)


@pytest.fixture(scope="session")
def committed_generator() -> Path:
    if not COMMITTED_GENERATOR.is_file():
        pytest.fail(f"{COMMITTED_GENERATOR} is missing: it is committed with the repository")
    return COMMITTED_GENERATOR


@pytest.fixture(scope="session")
def local_s3(tmp_path_factory):
    """A real S3-compatible server (SeaweedFS weed mini) on 127.0.0.1 with its own credentials."""
    import secrets

    import boto3

    from scripts import local_s3 as server

    keys = {"AWS_ACCESS_KEY_ID": "test-" + secrets.token_hex(4), "AWS_SECRET_ACCESS_KEY": secrets.token_hex(16)}
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        s3 = server.start(tmp_path_factory.mktemp("s3"))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    client = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1",
                          aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"])
    yield {"endpoint": s3.endpoint, "access_key": keys["AWS_ACCESS_KEY_ID"],
           "secret_key": keys["AWS_SECRET_ACCESS_KEY"], "client": client, "server": s3}
    s3.stop()


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory):
    """A migrated Airflow 3.3 metadata DB (SQLite) in a temporary AIRFLOW_HOME."""
    from tests.airflow_stack import airflow_env, migrate

    home = tmp_path_factory.mktemp("airflow_home")
    migrate(airflow_env(home))
    return home
