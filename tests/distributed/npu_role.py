"""docker/npu-worker-role.sql applied to a scratch database (tests only).

The file names the database `airflow`, its owner `airflow` and the role `cgan_npu`; here those
three names are replaced with the test's, nothing else, and psql runs it as the file says.
"""

from __future__ import annotations

import re
import shutil
import subprocess

from tests.deploy.compose import REPO
from tests.distributed.topology import _libpq_url

SQL = REPO / "docker" / "npu-worker-role.sql"


def psql_missing() -> str | None:
    return None if shutil.which("psql") else "psql is not installed (Debian: postgresql-client)"


def role_sql(database: str, owner: str, role: str) -> str:
    sql = re.sub(r"\bcgan_npu\b", role, SQL.read_text())
    sql = re.sub(r"\bDATABASE airflow\b", f"DATABASE {database}", sql)
    sql = re.sub(r"\bFOR ROLE airflow\b", f"FOR ROLE {owner}", sql)
    assert "airflow" not in re.sub(r"^--.*$", "", sql, flags=re.M), sql
    return sql


def apply_role(admin_url: str, database: str, owner: str, role: str, password: str) -> None:
    """psql -v npu_password=... < npu-worker-role.sql, connected to `database` as the admin."""
    url = _libpq_url(admin_url).rsplit("/", 1)[0] + f"/{database}"
    proc = subprocess.run(["psql", "-v", "ON_ERROR_STOP=1", "-v", f"npu_password='{password}'", url],
                          input=role_sql(database, owner, role), capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise AssertionError(f"docker/npu-worker-role.sql failed: {proc.stderr}")
