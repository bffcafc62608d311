"""Airflow's production topology on one machine, without containers (tests only).

A fresh Postgres database (metadata DB and Celery result backend), a Redis database (Celery
broker), then `airflow api-server`, `airflow scheduler`, `airflow dag-processor` and one
`airflow celery worker -q <queue>` per queue, each a process group of its own with its own
AIRFLOW_HOME, TMPDIR and log file. The components share only what separate machines of a
real deployment share: the database, the broker, the JWT secret, the fernet key, the
execution API URL, the auth manager's users and the S3 connection.

Where the services live (override for another machine):

| variable | default |
|---|---|
| CGAN_TEST_POSTGRES | postgresql://postgres@127.0.0.1:5432/postgres (a role that may CREATE DATABASE) |
| CGAN_TEST_REDIS | redis://127.0.0.1:6379/5 (this DB number is flushed; use one nothing else uses) |
| CGAN_REQUIRE_SERVICES | unset: a missing service skips the test; 1 (CI): it fails it |
"""

from __future__ import annotations

import json
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
ADMIN_USER = "admin"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
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


def check_services() -> tuple[Services, str | None]:
    """Where the services are, and what is wrong with them (None: both answer)."""
    found = Services(os.environ.get("CGAN_TEST_POSTGRES") or DEFAULT_POSTGRES,
                     os.environ.get("CGAN_TEST_REDIS") or DEFAULT_REDIS)
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


def stop_components(components: list[Component], timeout: float = 45) -> list[str]:
    """SIGTERM every process group, wait, SIGKILL what is left (descendants included).
    Returns the names of components that had to be killed."""
    import psutil

    for comp in components:
        comp.remember_descendants()
        comp.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for comp in components:
        if comp.proc is None:
            continue
        try:
            comp.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
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


class CeleryStack:
    """Start the topology; `with CeleryStack(...) as stack:` stops it and cleans up on exit."""

    def __init__(self, services: Services, root: Path, *, common_env: dict[str, str],
                 workers: list[Worker], concurrency: int = 1, startup_timeout: float = 300):
        self.services = services
        self.startup_timeout = startup_timeout
        self.root = root
        self.common_env = common_env
        self.workers = workers
        self.concurrency = concurrency
        self.db = ScratchDatabase(services.postgres)
        self.redis = ScratchRedis(services.redis)
        self.api_port = free_port()
        self.password = secrets.token_urlsafe(12)
        self.components: list[Component] = []
        self.worker_components: dict[str, Component] = {}
        self.api: ApiClient | None = None
        self.cleanup_notes: list[str] = []
        self._db_created = False
        self._redis_held = False

    # ---- configuration shared by every component

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def _shared_settings(self) -> dict[str, str]:
        passwords = self.root / "simple_auth_manager_passwords.json"
        if not passwords.exists():
            passwords.write_text(json.dumps({ADMIN_USER: self.password}) + "\n")
        return {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.db.url("postgresql+psycopg"),
            # the async engine would default to asyncpg; psycopg (v3) serves both
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": self.db.url("postgresql+psycopg"),
            "AIRFLOW__CELERY__BROKER_URL": self.services.redis,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.db.url("postgresql+psycopg"),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.concurrency),
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__FERNET_KEY": self._fernet,
            "AIRFLOW__API_AUTH__JWT_SECRET": self._jwt_secret,
            "AIRFLOW__API__SECRET_KEY": self._api_secret,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            # the nightly cron must not start a run of its own when the DAG is unpaused
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            **self.common_env,
        }

    def env_for(self, name: str, **extra: str) -> dict[str, str]:
        """One component's environment: airflow_env (which drops the caller's AIRFLOW*, CGAN_*
        and AWS_* variables) without stand-in or CANN knobs, the shared settings, its own
        AIRFLOW_HOME and TMPDIR, then `extra`."""
        env = airflow_env(self.root / "homes" / name)
        for key in [k for k in env if k.startswith(("STANDIN_", "ASCEND_"))]:
            env.pop(key)
        env.update(self.shared)
        env["TMPDIR"] = str(self.root / "tmp" / name)
        env.update(extra)
        return env

    # ---- lifecycle

    def __enter__(self) -> CeleryStack:
        from cryptography.fernet import Fernet

        self._started = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        self._fernet = Fernet.generate_key().decode()
        self._jwt_secret = secrets.token_urlsafe(64)  # HS512 wants >= 64 bytes
        self._api_secret = secrets.token_urlsafe(32)
        try:
            self.redis.acquire()
            self._redis_held = True
            self.db.create()
            self._db_created = True
            self.shared = self._shared_settings()
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
        self._run_cli(["db", "migrate"])
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
        self._add("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(self.api_port), "--workers", "1"])
        self._add("scheduler", ["scheduler"])
        self._add("dag-processor", ["dag-processor"])
        for worker in self.workers:
            name = f"worker-{worker.queue}"
            self.worker_components[worker.queue] = self._add(
                name, ["celery", "worker", "-q", worker.queue, "-c", str(self.concurrency),
                       "--celery-hostname", worker.node],
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
        self._wait("scheduler and dag-processor",
                   lambda: all(self.health()[k]["status"] == "healthy" for k in ("scheduler", "dag_processor")),
                   deadline)
        for worker in self.workers:
            comp = self.worker_components[worker.queue]
            self._wait(f"celery worker {worker.node}", lambda c=comp, w=worker: f"@{w.node} ready" in c.text(),
                       deadline)
        self.api = ApiClient(self.api_url, ADMIN_USER, self.password)
        self.api.login()

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
