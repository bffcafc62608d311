"""Airflow's production topology on one machine, without containers (tests only).

A fresh Postgres database (metadata DB), a Redis database (Celery broker and result backend),
then the services of docker-compose.yaml: `airflow api-server`, `scheduler`,
`dag-processor`, `triggerer` and the two Celery workers (`airflow-worker`, default queue, and
`airflow-worker-ascend`), each a process group of its own with its own AIRFLOW_HOME, TMPDIR and
log file, each started with the environment that the compose file gives its service
(tests/distributed/compose_env.py: credentials and addresses swapped for the test's, nothing
else). The components share only what separate machines of a real deployment share: the
broker and result backend, the [api] secret_key, the execution API URL and the S3 connection;
all but the Celery workers also the database (the auth manager's (FAB) users in it), the Fernet
key and the JWT secret. A worker is started without any database setting (Airflow falls back to
an empty sqlite file in its own AIRFLOW_HOME) and without either key.

Where the services live (override for another machine):

| variable | default |
|---|---|
| CGAN_TEST_POSTGRES | postgresql://postgres@127.0.0.1:5432/postgres (a role that may CREATE DATABASE) |
| CGAN_TEST_REDIS | redis://127.0.0.1:6379/5, flushed (use a DB nothing else uses); xdist worker gwN: DB + N |
| CGAN_REQUIRE_SERVICES | unset: a missing service skips the test; 1 (CI): it fails it |
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.airflow_stack import AIRFLOW, REPO, airflow_env

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/5"
REDIS_LOCK = "cgan-distributed-test:lock"
NODE_CALLABLE = "tests.distributed.node.hostname"


# --------------------------------------------------------------------------- services


@dataclass(frozen=True)
class Services:
    postgres: str  # admin URL (database postgres or any other that exists)
    redis: str  # broker URL including the DB number


def services_required() -> bool:
    return os.environ.get("CGAN_REQUIRE_SERVICES", "").strip().lower() in ("1", "true", "yes")


def _postgres_problem(url: str) -> str | None:
    try:
        import psycopg
    except ImportError:
        return ("the PostgreSQL driver psycopg (v3) is not installed: pip install 'psycopg[binary]' "
                "(Airflow 3.3 uses it for the metadata DB, its async engine and the Celery result backend)")
    try:
        with psycopg.connect(_libpq_url(url), connect_timeout=3) as conn:
            conn.execute("select 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return f"PostgreSQL is not reachable at {_redact(url)}: {str(exc).strip().splitlines()[0]}"
    return None


def _redis_problem(url: str) -> str | None:
    try:
        import redis
    except ImportError:
        return "the redis client is not installed (it comes with apache-airflow-providers-celery)"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
        client.ping()
        client.close()
    except Exception as exc:  # noqa: BLE001
        return f"Redis is not reachable at {_redact(url)}: {exc}"
    return None


def per_worker_db(redis_url: str) -> str:
    """Under pytest-xdist, worker gwN's Redis DB is the configured number + N: two workers'
    distributed tests never flush or lock each other's DB."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw") or not worker[2:].isdigit() or worker == "gw0":
        return redis_url
    base, _, db = redis_url.rpartition("/")
    if not db.isdigit():
        return redis_url
    return f"{base}/{int(db) + int(worker[2:])}"


def check_services() -> tuple[Services, str | None]:
    """Where the services are, and what is wrong with them (None: both answer)."""
    found = Services(os.environ.get("CGAN_TEST_POSTGRES") or DEFAULT_POSTGRES,
                     per_worker_db(os.environ.get("CGAN_TEST_REDIS") or DEFAULT_REDIS))
    problems = [p for p in (_postgres_problem(found.postgres), _redis_problem(found.redis)) if p]
    return found, "; ".join(problems) or None


def require_services() -> Services:
    """The services, or skip the test saying which one is missing; with CGAN_REQUIRE_SERVICES=1
    (CI) their absence fails the test instead."""
    found, problem = check_services()
    if problem:
        if services_required():
            pytest.fail(f"CGAN_REQUIRE_SERVICES=1 but {problem}", pytrace=False)
        pytest.skip(problem)
    return found


def _libpq_url(url: str) -> str:
    """postgresql+driver://... -> postgresql://... (what libpq accepts)."""
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgres") else url


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return url.split("@")[-1]


def _with_database(url: str, database: str, driver: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername=driver, database=database).render_as_string(hide_password=False)


class ScratchDatabase:
    """A new, uniquely named Postgres database, dropped (connections and all) at the end."""

    def __init__(self, admin_url: str):
        self.admin_url = admin_url
        self.name = f"cgan_dist_{os.getpid()}_{secrets.token_hex(3)}"

    def _admin(self):
        import psycopg

        return psycopg.connect(_libpq_url(self.admin_url), autocommit=True, connect_timeout=5)

    def create(self) -> None:
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def exists(self) -> bool:
        with self._admin() as conn:
            return conn.execute("select 1 from pg_database where datname = %s", (self.name,)).fetchone() is not None

    def url(self, driver: str = "postgresql+psycopg") -> str:
        return _with_database(self.admin_url, self.name, driver)


class ScratchRedis:
    """The broker's Redis DB, held for this run by a lock key and flushed at the end."""

    def __init__(self, url: str):
        import redis

        self.url = url
        self.client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=10)
        self.token = secrets.token_hex(8)

    def acquire(self) -> None:
        owner = f"{socket.gethostname()}:{os.getpid()}:{self.token}"
        if not self.client.set(REDIS_LOCK, owner, nx=True, ex=3600):
            held = (self.client.get(REDIS_LOCK) or b"").decode()
            host, _, rest = held.partition(":")
            pid = rest.partition(":")[0]
            if not (host == socket.gethostname() and pid.isdigit() and not _alive(int(pid))):
                raise RuntimeError(
                    f"{_redact(self.url)} is in use by another distributed test run ({REDIS_LOCK} = {held}); "
                    "wait for it or point CGAN_TEST_REDIS at another DB number")
            self.client.set(REDIS_LOCK, owner, ex=3600)  # its owner was killed: take it over
        self.owner = owner
        for key in self.client.scan_iter(count=500):  # leftovers of an earlier run that was killed
            if key != REDIS_LOCK.encode():
                self.client.delete(key)

    def release(self) -> None:
        if self.client.get(REDIS_LOCK) == self.owner.encode():
            self.client.flushdb()
        self.client.close()


# --------------------------------------------------------------------------- processes


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<{path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Component:
    name: str
    argv: list[str]
    env: dict[str, str]
    home: Path
    log: Path
    proc: subprocess.Popen | None = None
    descendants: set[int] = field(default_factory=set)

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        Path(self.env["TMPDIR"]).mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=REPO, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with status {self.proc.returncode}:\n{tail(self.log)}")

    def remember_descendants(self) -> None:
        """Celery's pool children and task supervisors; some may leave the process group."""
        import psutil

        if not self.running():
            return
        try:
            self.descendants |= {p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)}
        except psutil.Error:
            pass

    def signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


# A SIGTERM can be lost: the dag-processor's handler raises SystemExit, and when the signal lands
# while the process forks a parser, the handler runs inside logging's at-fork callback, where
# CPython prints "Exception ignored in: <function _releaseLock>" and goes on (seen in a CI run:
# the dag-processor parsed on for 45 s after "Exiting gracefully upon receiving signal 15").
# So a component still running RESEND_SIGTERM_S after the last SIGTERM gets another one.
RESEND_SIGTERM_S = 10.0


def stop_components(components: list[Component], timeout: float = 45) -> list[str]:
    """SIGTERM every process group (again every RESEND_SIGTERM_S to what still runs), wait,
    SIGKILL what is left after `timeout` (descendants included). Returns the names of components
    that had to be killed."""
    import psutil

    for comp in components:
        comp.remember_descendants()
        comp.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    resend = time.monotonic() + RESEND_SIGTERM_S
    while time.monotonic() < deadline:
        running = [c for c in components if c.proc is not None and c.proc.poll() is None]
        if not running:
            break
        if time.monotonic() >= resend:
            for comp in running:
                comp.signal_group(signal.SIGTERM)
            resend = time.monotonic() + RESEND_SIGTERM_S
        time.sleep(0.2)
    killed = []
    for comp in components:
        if comp.proc is None:
            continue
        if comp.proc.poll() is None:
            killed.append(comp.name)
        comp.signal_group(signal.SIGKILL)
        for pid in comp.descendants:
            try:
                proc = psutil.Process(pid)
                if proc.status() != psutil.STATUS_ZOMBIE:
                    proc.kill()
            except psutil.Error:
                pass
        try:
            comp.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            killed.append(f"{comp.name} (still there after SIGKILL)")
    return killed


# --------------------------------------------------------------------------- the REST API


class ApiClient:
    """Airflow's public REST API (v2) with a SimpleAuthManager token."""

    def __init__(self, base_url: str, username: str, password: str):
        import httpx

        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, timeout=30)
        self.username, self.password = username, password
        self.token: str | None = None

    def login(self) -> str:
        resp = self.http.post("/auth/token", json={"username": self.username, "password": self.password})
        assert resp.status_code in (200, 201), f"POST /auth/token: {resp.status_code} {resp.text[:500]}"
        self.token = resp.json()["access_token"]
        self.http.headers["Authorization"] = f"Bearer {self.token}"
        return self.token

    def request(self, method: str, path: str, **kwargs):
        resp = self.http.request(method, path, **kwargs)
        if resp.status_code == 401 and self.token:  # token expired during a long wait
            self.login()
            resp = self.http.request(method, path, **kwargs)
        return resp

    def json(self, method: str, path: str, *, ok=(200,), **kwargs):
        resp = self.request(method, path, **kwargs)
        assert resp.status_code in ok, f"{method} {path}: {resp.status_code} {resp.text[:1000]}"
        return resp.json()

    def close(self) -> None:
        self.http.close()


# --------------------------------------------------------------------------- the stack


@dataclass
class Worker:
    queue: str
    node: str  # CGAN_TEST_NODE: the hostname its task instances report
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def component(self) -> str:
        return f"worker-{self.queue}"


@dataclass(frozen=True)
class S3Target:
    endpoint: str
    access_key: str
    secret_key: str
    artifact_root: str
    publish_bucket: str
    log_folder: str


class CeleryStack:
    """Start the topology; `with CeleryStack(...) as stack:` stops it and cleans up on exit."""

    def __init__(self, services: Services, root: Path, *, s3: S3Target, toolkit: str,
                 workers: list[Worker], startup_timeout: float = 600, npu_count: int = 1):
        self.services = services
        self.startup_timeout = startup_timeout
        self.root = root
        self.s3 = s3
        self.toolkit = toolkit
        self.workers = workers
        self.npu_count = npu_count
        self.db = ScratchDatabase(services.postgres)
        self.redis = ScratchRedis(services.redis)
        self.api_port = free_port()
        self.components: list[Component] = []
        self.worker_components: dict[str, Component] = {}
        self.api: ApiClient | None = None
        self.cleanup_notes: list[str] = []
        self.compose = None
        self.deployment = None
        self._db_created = False
        self._redis_held = False

    # ---- configuration: the compose file's, per service

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def _resolve_compose(self) -> None:
        from cryptography.fernet import Fernet

        from tests.distributed.compose_env import TestDeployment, compose_services

        self.deployment = TestDeployment(
            database_url=self.db.url("postgresql"), redis_url=self.services.redis, api_url=self.api_url,
            s3_endpoint=self.s3.endpoint, s3_access_key=self.s3.access_key, s3_secret_key=self.s3.secret_key,
            fernet_key=Fernet.generate_key().decode(),
            jwt_secret=secrets.token_urlsafe(64),  # HS512 wants >= 64 bytes
            api_secret_key=secrets.token_urlsafe(32), admin_password=secrets.token_urlsafe(12),
            artifact_root=self.s3.artifact_root, publish_bucket=self.s3.publish_bucket,
            log_folder=self.s3.log_folder, toolkit=self.toolkit, npu_count=str(self.npu_count),
            npu_lock_root=str(self.root / "npu-locks"))
        self.compose = compose_services(self.deployment, self.root / "compose")

    def _test_only(self, name: str) -> dict[str, str]:
        """Keys the compose file does not set: this machine's paths, ports and small limits."""
        extra = {
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
            "AIRFLOW__CORE__PARALLELISM": "4",
            # the nightly cron must not start a run of its own when the DAG is unpaused
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__API__WORKERS": "1",
            "TMPDIR": str(self.root / "tmp" / name),
        }
        return extra

    def env_for(self, name: str, **extra: str) -> dict[str, str]:
        """One component's environment: airflow_env (this machine's PATH, PYTHONPATH, AIRFLOW_HOME,
        DAGS_FOLDER; the caller's AIRFLOW*, CGAN_*, AWS_* dropped) without stand-in or CANN knobs,
        then EXACTLY the compose service's environment (after the swaps), then keys the compose
        file does not set (test-only and `extra`), which may not overwrite a compose key."""
        env = airflow_env(self.root / "homes" / name)
        for key in [k for k in env if k.startswith(("STANDIN_", "ASCEND_"))]:
            env.pop(key)
        compose_env = self.compose.env[name]
        env.update(compose_env)
        added = {**self._test_only(name), **extra}
        clash = sorted(k for k in added if k in compose_env)
        if clash:
            raise AssertionError(f"{name}: the test would overwrite the compose file's {clash}")
        env.update(added)
        return env

    # ---- lifecycle

    def __enter__(self) -> CeleryStack:
        self._started = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self.redis.acquire()
            self._redis_held = True
            self.db.create()
            self._db_created = True
            self._resolve_compose()
            self._preflight()
            self._migrate()
            self._start_components()
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.api is not None:
            self.api.close()
        killed = stop_components(list(reversed(self.components)))
        if killed:
            self.cleanup_notes.append(f"killed after the SIGTERM timeout: {', '.join(killed)}")
        if self._db_created:
            try:
                self.db.drop()
            except Exception as exc:  # noqa: BLE001
                self.cleanup_notes.append(f"could not drop database {self.db.name}: {exc}")
        if self._redis_held:
            try:
                self.redis.release()
            except Exception as exc:  # noqa: BLE001
                self.cleanup_notes.append(f"could not flush {_redact(self.services.redis)}: {exc}")

    def _run_cli(self, args: list[str], timeout: float = 600) -> None:
        env = self.env_for("cli")
        Path(env["TMPDIR"]).mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([AIRFLOW, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed ({proc.returncode}):\n"
                               f"{(proc.stdout + proc.stderr)[-4000:]}")

    def _preflight(self) -> None:
        """The Celery executor imports at all (a celery release that the celery provider cannot
        use fails here with a message, not as five crashed components)."""
        code = "import airflow.providers.celery.executors.celery_executor"
        env = self.env_for("cli")
        Path(env["TMPDIR"]).mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            from importlib.metadata import version

            raise RuntimeError(
                f"the Celery executor does not import with celery {version('celery')}, kombu {version('kombu')} "
                f"and apache-airflow-providers-celery {version('apache-airflow-providers-celery')} "
                f"(celery 5.7 removed celery.backends.database.retry, which provider 3.26.0 imports; "
                f"celery 5.6.3 + kombu 5.6.2 work):\n{proc.stderr[-2500:]}")

    def _migrate(self) -> None:
        """What airflow-init does (its environment): migrate (FAB's tables too), the admin user
        the official image's entry point creates from _AIRFLOW_WWW_USER_*, the NPU pool."""
        init = self.compose.env["cli"]
        self._run_cli(["db", "migrate"])
        self.admin_user = init["_AIRFLOW_WWW_USER_USERNAME"]
        self._run_cli(["users", "create", "--role", "Admin", "--username", self.admin_user,
                       f"--password={init['_AIRFLOW_WWW_USER_PASSWORD']}", "--email", "admin@example.invalid",
                       "--firstname", "Admin", "--lastname", "User"])
        self._run_cli(["pools", "set", "ascend_npu", "1", "NPU slots (one per NPU)"])

    def _add(self, name: str, args: list[str], **extra: str) -> Component:
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = self.env_for(name, **extra)
        comp = Component(name, [AIRFLOW, *args], env, Path(env["AIRFLOW_HOME"]), logs / f"{name}.log")
        comp.start()
        self.components.append(comp)
        return comp

    def _start_components(self) -> None:
        """Each with its compose service's command (the api-server told this test's port)."""
        commands = self.compose.commands
        self._add("api-server", [*commands["api-server"], "--host", "127.0.0.1", "--port", str(self.api_port),
                                 "--workers", "1"])
        for name in ("scheduler", "dag-processor", "triggerer"):
            self._add(name, list(commands[name]))
        for worker in self.workers:
            command = list(commands[worker.component])
            queue = command[command.index("-q") + 1] if "-q" in command else "default"
            assert queue == worker.queue, f"{worker.component} serves {queue} in docker-compose.yaml"
            self.worker_components[worker.queue] = self._add(
                worker.component, [*command, "--celery-hostname", worker.node],
                CGAN_TEST_NODE=worker.node, AIRFLOW__CORE__HOSTNAME_CALLABLE=NODE_CALLABLE,
                AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()), **worker.extra_env)

    def _wait(self, what: str, check, deadline: float) -> None:
        """Poll `check` until it is true; fail early when a component exits, late at `deadline`."""
        while True:
            for comp in self.components:
                comp.check_alive()
            try:
                if check():
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not ready within {self.startup_timeout:.0f} s of the start\n"
                                   f"{self.diagnostics()}")
            time.sleep(2)

    def health(self) -> dict:
        import httpx

        return httpx.get(f"{self.api_url}/api/v2/monitor/health", timeout=10).json()

    def _wait_ready(self) -> None:
        deadline = self._started + self.startup_timeout
        self._wait("api-server", lambda: self.health()["metadatabase"]["status"] == "healthy", deadline)
        self._wait("scheduler, dag-processor and triggerer",
                   lambda: all(self.health()[k]["status"] == "healthy"
                               for k in ("scheduler", "dag_processor", "triggerer")),
                   deadline)
        for worker in self.workers:
            comp = self.worker_components[worker.queue]
            self._wait(f"celery worker {worker.node}", lambda c=comp, w=worker: f"@{w.node} ready" in c.text(),
                       deadline)
        self.api = ApiClient(self.api_url, self.admin_user, self.deployment.admin_password)
        self.api.login()

    def healthcheck(self, queue: str) -> subprocess.CompletedProcess:
        """The compose file's healthcheck of that worker's service, run in the worker's environment
        with HOSTNAME = its Celery node name (what Docker's HOSTNAME is in the container)."""
        worker = next(w for w in self.workers if w.queue == queue)
        return run_healthcheck(self.compose.healthchecks[worker.component], self.worker_components[queue].env,
                               worker.node)

    def start_npu_host_worker(self, node: str, **extra: str) -> tuple[Component, list]:
        """A worker as an extra NPU host runs it: docker/compose.npu-host.yaml's environment (no
        database, no Fernet key, no JWT secret) and command. Returns it (ready) and its healthcheck."""
        from tests.distributed.compose_env import NPU_HOST_COMPONENT, npu_host_service

        raw, compose_env, command, test = npu_host_service(self.deployment, self.root / "compose-npu-host")
        name = NPU_HOST_COMPONENT
        env = airflow_env(self.root / "homes" / name)
        env.update(compose_env)
        added = {**self._test_only(name), "CGAN_TEST_NODE": node, "AIRFLOW__CORE__HOSTNAME_CALLABLE": NODE_CALLABLE,
                 "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()), **extra}
        assert not set(added) & set(compose_env), set(added) & set(compose_env)
        env.update(added)
        logs = self.root / "logs"
        comp = Component(name, [AIRFLOW, *command, "--celery-hostname", node], env, Path(env["AIRFLOW_HOME"]),
                         logs / f"{name}.log")
        comp.start()
        self.components.append(comp)
        self._wait(f"celery worker {node}", lambda: f"@{node} ready" in comp.text(),
                   time.monotonic() + self.startup_timeout)
        return comp, test

    def diagnostics(self, lines: int = 40) -> str:
        parts = []
        for comp in self.components:
            state = "running" if comp.running() else f"exited {comp.proc.returncode if comp.proc else '-'}"
            parts.append(f"----- {comp.name} ({state}) {comp.log}\n{tail(comp.log, lines)}")
        return "\n".join(parts)

    def task_log_files(self, queue: str) -> list[Path]:
        """The task log files that one worker wrote under its own AIRFLOW_HOME."""
        home = self.worker_components[queue].home
        return sorted((home / "logs").rglob("attempt=*.log"))


def run_healthcheck(test: list[str], env: dict[str, str], node: str) -> subprocess.CompletedProcess:
    assert test[0] == "CMD-SHELL", test
    return subprocess.run(["/bin/sh", "-c", test[1].replace("$$", "$")], env={**env, "HOSTNAME": node}, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
