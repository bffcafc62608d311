"""Which node a process belongs to, for `[core] hostname_callable` (tests only).

Two Celery workers on one machine share one FQDN, so the task instance's `hostname` field
could not tell them apart. Each worker of the distributed test is started with its own
`CGAN_TEST_NODE` and `AIRFLOW__CORE__HOSTNAME_CALLABLE=tests.distributed.node.hostname`:
the task process that Airflow forks from that worker inherits the variable and reports it
to the Execution API, which stores it as the task instance's hostname. A task run by the
other worker cannot report this name, because that worker's environment does not hold it.

Keep this module free of heavy imports: Airflow imports it in every task process.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("CGAN_TEST_NODE") or socket.getfqdn()
