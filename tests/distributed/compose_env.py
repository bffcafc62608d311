"""The environment that docker-compose.yaml gives each Airflow service, for the distributed proof.

The proof must start each component the way the compose file starts it, so that the two cannot
drift apart. Compose's own parser (tests/deploy/compose.py) resolves the file with a .env made
from .env.example whose secrets and addresses are this test's; each component then gets exactly
that service's `environment`. What cannot be expressed through .env is swapped, each named in
SWAPPED with its reason, and checked: the driver / scheme of every swapped URL stays the compose
file's. Keys that the compose file does not set may be added (TEST_ONLY_PREFIXES and the image's
ENV, IMAGE_ENV), never the other way round.

The Celery workers (WORKER_COMPONENTS, and an extra NPU host's worker) must hold no way into the
metadata database and neither the Fernet key nor the JWT secret (worker_holds): checked on the
compose file's environment and again after the swaps, so that the proof runs them without.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from tests.deploy.compose import REPO, compose_binary, resolved, write_env

NPU_HOST_COMPOSE = REPO / "docker" / "compose.npu-host.yaml"
NPU_HOST_ENV = REPO / "docker" / "npu-host.env.example"

# test component -> compose service
COMPONENTS = {
    "cli": "airflow-init",
    "api-server": "airflow-apiserver",
    "scheduler": "airflow-scheduler",
    "dag-processor": "airflow-dag-processor",
    "triggerer": "airflow-triggerer",
    "worker-default": "airflow-worker",
    "worker-ascend": "airflow-worker-ascend",
}
WORKER_COMPONENTS = {"worker-default", "worker-ascend"}
NPU_HOST_COMPONENT = "worker-npu-host"  # docker/compose.npu-host.yaml's worker
DB_KEYS = ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC")
REDIS_KEYS = ("AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND")
SWAPPED = {
    **{key: "the test's scratch database (role, host, port, database); the driver is the compose file's"
       for key in DB_KEYS},
    **{key: "the test's Redis database (no password there); the scheme is the compose file's" for key in REDIS_KEYS},
    "CGAN_ARTIFACT_ROOT": "a bucket of this test run in the test's S3 server",
    "CGAN_PUBLISH_BUCKET": "a bucket of this test run in the test's S3 server",
    "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER": "a bucket of this test run in the test's S3 server",
    "CGAN_ASCEND_TOOLKIT": "the stand-in CANN toolkit (the image's path does not exist here)",
    "CGAN_NPU_LOCK_DIR": "the host folder compose mounts there: one folder per simulated host (npu_lock_dir)",
}
# What the Dockerfiles set with ENV (the compose file builds on it); here the repository's paths.
IMAGE_ENV = {"AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER", "CGAN_ASCEND_PYTHON"}
# Sentinels put into .env for secrets the test's services do not use; after the swaps no
# component may hold them (the swaps were complete, and the MinIO root account stays out).
UNUSED_SECRETS = {"POSTGRES_PASSWORD": "compose-postgres-password-not-used-here",
                  "REDIS_PASSWORD": "compose-redis-password-not-used-here",
                  "MINIO_ROOT_PASSWORD": "compose-minio-root-password-not-used-here"}


@dataclass(frozen=True)
class TestDeployment:
    """This test's services and secrets, in the form of the compose file's settings."""

    database_url: str  # postgresql://role@host:port/db of the scratch database
    redis_url: str
    api_url: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    fernet_key: str
    jwt_secret: str
    api_secret_key: str
    admin_password: str
    artifact_root: str
    publish_bucket: str
    log_folder: str
    toolkit: str
    npu_count: str = "1"  # CGAN_NPU_COUNT: each Ascend worker's Celery concurrency
    npu_lock_root: str = ""  # the simulated hosts' NPU lock folders are <npu_lock_root>/<component>

    def env_file_values(self) -> dict[str, str]:
        return {
            "FERNET_KEY": self.fernet_key,
            "AIRFLOW__API_AUTH__JWT_SECRET": self.jwt_secret,
            "AIRFLOW__API__SECRET_KEY": self.api_secret_key,
            "AIRFLOW_ADMIN_PASSWORD": self.admin_password,
            "CGAN_S3_ACCESS_KEY": self.s3_access_key,
            "CGAN_S3_SECRET_KEY": self.s3_secret_key,
            "CGAN_NPU_COUNT": self.npu_count,
            "CGAN_NPU_SLOTS": "1",
            **UNUSED_SECRETS,
        }

    def env_file_extra(self) -> tuple[str, ...]:
        return (f"CGAN_S3_ENDPOINT={self.s3_endpoint}",
                f"AIRFLOW_EXECUTION_API_SERVER_URL={self.api_url}/execution/")


def _swap_db(value: str, database_url: str) -> str:
    from sqlalchemy.engine import make_url

    assert not value.startswith("db+"), value
    compose_url = make_url(value)
    return make_url(database_url).set(drivername=compose_url.drivername).render_as_string(hide_password=False)


def npu_lock_dir(dep: TestDeployment, component: str) -> Path:
    """The NPU lock folder of one simulated host (a compose component), as its host folder."""
    assert dep.npu_lock_root, "TestDeployment.npu_lock_root is not set"
    return Path(dep.npu_lock_root) / component


def _swap(key: str, value: str, dep: TestDeployment, component: str) -> str:
    if key == "CGAN_NPU_LOCK_DIR":
        return str(npu_lock_dir(dep, component))
    if key in DB_KEYS:
        return _swap_db(value, dep.database_url)
    if key in REDIS_KEYS:
        scheme = value.split("://", 1)[0]
        assert dep.redis_url.startswith(scheme + "://"), (value, dep.redis_url)
        return dep.redis_url
    return {"CGAN_ARTIFACT_ROOT": dep.artifact_root, "CGAN_PUBLISH_BUCKET": dep.publish_bucket,
            "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER": dep.log_folder, "CGAN_ASCEND_TOOLKIT": dep.toolkit}[key]


@dataclass
class ComposeServices:
    """Per component: the compose service's resolved environment and command, and the
    environment after the swaps (what the component is started with, before test-only keys)."""

    compose_env: dict[str, dict[str, str]]
    commands: dict[str, list[str]]
    healthchecks: dict[str, list[str]]
    env: dict[str, dict[str, str]]


def compose_services(dep: TestDeployment, workdir: Path) -> ComposeServices:
    """Resolve docker-compose.yaml (profile ascend) for this test deployment."""
    workdir.mkdir(parents=True, exist_ok=True)
    env_file = write_env(workdir / ".env", dep.env_file_values(), extra_lines=dep.env_file_extra())
    config = resolved(compose_binary(), env_file, "--profile", "ascend")
    compose_env, commands, healthchecks, env = {}, {}, {}, {}
    for component, service_name in COMPONENTS.items():
        service = config["services"][service_name]
        raw = {k: "" if v is None else str(v) for k, v in (service.get("environment") or {}).items()}
        compose_env[component] = raw
        commands[component] = service.get("command") or []
        healthchecks[component] = (service.get("healthcheck") or {}).get("test") or []
        env[component] = {k: _swap(k, v, dep, component) if k in SWAPPED else v for k, v in raw.items()}
        leftovers = [k for k, v in env[component].items() for s in UNUSED_SECRETS.values() if s in v]
        assert not leftovers, f"{service_name}: {leftovers} still hold a compose-only secret after the swaps"
        if component in WORKER_COMPONENTS:
            for which in (raw, env[component]):
                held = worker_holds(which, dep)
                assert not held, f"{service_name} (a Celery worker) holds {held}"
    return ComposeServices(compose_env, commands, healthchecks, env)


# Where Airflow or Celery would find a database, and the keys that sign tokens or decrypt.
_DB_OR_SIGNING_KEY = re.compile(r"DATABASE|SQL_ALCHEMY|FERNET|JWT|POSTGRES", re.I)


def worker_holds(env: dict[str, str], dep: TestDeployment) -> list[str]:
    """What a Celery worker's environment must not hold, named: a database setting under any
    name, a database URL or this deployment's database, the Fernet key, the JWT secret."""
    from sqlalchemy.engine import make_url

    database = make_url(dep.database_url).database
    held = [k for k in env if _DB_OR_SIGNING_KEY.search(k)]
    held += [f"{k} (a database URL)" for k, v in env.items()
             if re.search(r"postgres(ql)?(\+\w+)?://|db\+|mysql", v) or (database and database in v)]
    held += [f"{k} (the {what})" for k, v in env.items()
             for what, secret in (("Fernet key", dep.fernet_key), ("JWT secret", dep.jwt_secret)) if secret in v]
    if env.get("AIRFLOW__CELERY__RESULT_BACKEND", "redis://").split("://")[0] not in ("redis", "rediss"):
        held.append("AIRFLOW__CELERY__RESULT_BACKEND (not Redis)")
    return held


def npu_host_service(dep: TestDeployment, workdir: Path) -> tuple[dict, dict, list, list]:
    """docker/compose.npu-host.yaml's worker for this test deployment: (compose environment,
    environment after the swaps, command, healthcheck). Its env file holds only what the file
    asks for: no database address or login exists there to fill in."""
    workdir.mkdir(parents=True, exist_ok=True)
    values = {k: v for k, v in dep.env_file_values().items()
              if k in ("AIRFLOW__API__SECRET_KEY",
                       "CGAN_S3_ACCESS_KEY", "CGAN_S3_SECRET_KEY", "REDIS_PASSWORD", "CGAN_NPU_COUNT")}
    values |= {"AIRFLOW_REDIS_HOST": "main-host.invalid",
               "CGAN_S3_ENDPOINT": dep.s3_endpoint, "AIRFLOW_EXECUTION_API_SERVER_URL": f"{dep.api_url}/execution/"}
    env_file = write_env(workdir / "npu-host.env", values, template=NPU_HOST_ENV)
    service = resolved(compose_binary(), env_file, files=(NPU_HOST_COMPOSE,))["services"]["airflow-worker-ascend"]
    raw = {k: "" if v is None else str(v) for k, v in service["environment"].items()}
    env = {k: _swap(k, v, dep, NPU_HOST_COMPONENT) if k in SWAPPED else v for k, v in raw.items()}
    for which in (raw, env):
        held = worker_holds(which, dep)
        assert not held, f"docker/compose.npu-host.yaml's worker holds {held}"
    return raw, env, service["command"], service["healthcheck"]["test"]


def differences(compose_env: dict[str, str], started: dict[str, str]) -> dict[str, tuple[str | None, str | None]]:
    """The compose keys whose value the started process does not have, swaps excluded."""
    return {k: (v, started.get(k)) for k, v in compose_env.items() if k not in SWAPPED and started.get(k) != v}


def connection_of(env: dict[str, str]) -> dict:
    return json.loads(env["AIRFLOW_CONN_CGAN_S3"])
