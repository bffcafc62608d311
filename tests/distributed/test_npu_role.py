"""docker/npu-worker-role.sql, run by psql against the machine's PostgreSQL (tests only).

The file creates the database role of extra NPU hosts. Here it runs on a scratch database with
a scratch owner role standing in for `airflow` (the names in the file are replaced, nothing
else), then the role is tried: it reads and writes the rows of a table the owner made (as
Airflow's migrations do, before and after the grants), and may neither change the schema nor
act as a superuser. Roles and database are dropped at the end. Needs PostgreSQL and psql, like
the distributed test (tests/distributed/topology.py says where it looks).
"""

from __future__ import annotations

import secrets

import pytest

from tests.distributed.npu_role import apply_role, psql_missing
from tests.distributed.topology import _libpq_url, check_services, services_required


@pytest.fixture()
def scratch():
    found, problem = check_services()
    problem = problem or psql_missing()
    if problem:
        if services_required():
            pytest.fail(f"CGAN_REQUIRE_SERVICES=1 but {problem}", pytrace=False)
        pytest.skip(problem)
    import psycopg

    token = secrets.token_hex(3)
    names = {"db": f"cgan_role_db_{token}", "owner": f"cgan_role_owner_{token}", "npu": f"cgan_npu_{token}"}
    admin = psycopg.connect(_libpq_url(found.postgres), autocommit=True)
    admin.execute(f'CREATE ROLE "{names["owner"]}" LOGIN')
    admin.execute(f'CREATE DATABASE "{names["db"]}" OWNER "{names["owner"]}"')
    try:
        yield found.postgres, names, admin
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{names["db"]}" WITH (FORCE)')
        for role in (names["npu"], names["owner"]):
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.close()


def connect(admin_url: str, db: str, user: str, password: str | None = None):
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(admin_url).set(drivername="postgresql", database=db, username=user, password=password)
    return psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)


def test_npu_worker_role_reads_and_writes_rows_but_cannot_change_the_schema(scratch):
    import psycopg

    admin_url, names, admin = scratch
    owner = connect(admin_url, names["db"], names["owner"])
    owner.execute("CREATE TABLE before_grants (id serial PRIMARY KEY, v text)")
    password = secrets.token_hex(8)
    for _ in range(2):  # the file is safe to run again
        apply_role(admin_url, names["db"], names["owner"], names["npu"], password)
    owner.execute("CREATE TABLE after_grants (id serial PRIMARY KEY, v text)")  # a later migration

    role = admin.execute("select rolsuper, rolcreatedb, rolcreaterole from pg_roles where rolname = %s",
                         (names["npu"],)).fetchone()
    assert role == (False, False, False)
    npu = connect(admin_url, names["db"], names["npu"], password)
    for table in ("before_grants", "after_grants"):
        npu.execute(f"INSERT INTO {table} (v) VALUES ('a')")
        npu.execute(f"UPDATE {table} SET v = 'b'")
        assert npu.execute(f"SELECT v FROM {table}").fetchall() == [("b",)]
        npu.execute(f"DELETE FROM {table}")
    for ddl in ("CREATE TABLE sneaky (id int)", "DROP TABLE before_grants", "ALTER TABLE after_grants ADD COLUMN x int",
                "TRUNCATE before_grants"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            npu.execute(ddl)
    npu.close()
    owner.close()


def test_npu_worker_role_has_no_rights_on_users_roles_connections_or_variables(scratch):
    """Before: the role could UPDATE ab_user / ab_user_role (make itself an admin) and read the
    connection table. Tables made by the owner before the file runs, as Airflow's migrations do."""
    import psycopg

    admin_url, names, admin = scratch
    owner = connect(admin_url, names["db"], names["owner"])
    guarded = ("ab_user", "ab_user_role", "ab_role", "connection", "variable")
    for table in guarded + ("celery_taskmeta",):
        owner.execute(f"CREATE TABLE {table} (id serial PRIMARY KEY, v text)")
        owner.execute(f"INSERT INTO {table} (v) VALUES ('secret')")
    password = secrets.token_hex(8)
    apply_role(admin_url, names["db"], names["owner"], names["npu"], password)
    npu = connect(admin_url, names["db"], names["npu"], password)
    for table in guarded:
        for sql in (f"SELECT v FROM {table}", f"UPDATE {table} SET v = 'mine'",
                    f"INSERT INTO {table} (v) VALUES ('x')"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                npu.execute(sql)
    npu.execute("UPDATE celery_taskmeta SET v = 'result'")  # the Celery result backend stays writable
    assert npu.execute("SELECT v FROM celery_taskmeta").fetchall() == [("result",)]
    npu.close()
    owner.close()

