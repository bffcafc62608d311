"""The late-run Deadline Alert is on the DAG only where CGAN_LATE_AFTER_MINUTES is set (>0): with it,
Airflow 3.3.2's `airflow dags test` crashes after the run (apache/airflow#73428), so the local
default is off. That it fires under the real scheduler and triggerer:
tests/dags/test_checkpoint_trigger.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.airflow_stack import REPO, airflow_env

DEADLINE = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags.get("cgan_generation")
out = {"errors": {k: v[-600:] for k, v in bag.import_errors.items()}}
if dag is not None:
    alerts = dag.deadline if isinstance(dag.deadline, list) else [dag.deadline] if dag.deadline else []
    out["deadline"] = [{"reference": type(a.reference).__name__, "minutes": a.interval.total_seconds() / 60,
                        "callback": type(a.callback).__name__, "path": a.callback.path,
                        "kwargs": a.callback.kwargs} for a in alerts]
    out["serialized"] = "deadline" in json.dumps(DagSerialization.to_dict(dag), default=str)
print("RESULT" + json.dumps(out))
"""


def parse(tmp_path, **env) -> dict:
    proc = subprocess.run([sys.executable, "-c", DEADLINE, str(REPO / "dags")], capture_output=True, text=True,
                          env=airflow_env(tmp_path, **env), timeout=300)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert line, proc.stderr[-3000:]
    return json.loads(line[0][len("RESULT"):])


def test_no_deadline_alert_by_default(tmp_path):
    out = parse(tmp_path)
    assert out["errors"] == {} and out["deadline"] == []
    assert parse(tmp_path, CGAN_LATE_AFTER_MINUTES="0")["deadline"] == []


def test_the_deadline_alert_is_an_async_callback_from_when_the_run_was_queued(tmp_path):
    out = parse(tmp_path, CGAN_LATE_AFTER_MINUTES="240")
    assert out["errors"] == {}
    assert out["deadline"] == [{"reference": "DagRunQueuedAtDeadline", "minutes": 240.0, "callback": "AsyncCallback",
                                "path": "operators.notify.late_run_alert", "kwargs": {"late_after_minutes": 240.0}}]
    assert out["serialized"]


@pytest.mark.parametrize("value", ["-1", "soon", "20000"])
def test_a_bad_late_after_minutes_is_an_import_error_naming_it(tmp_path, value):
    errors = parse(tmp_path, CGAN_LATE_AFTER_MINUTES=value)["errors"]
    message = (f"CGAN_LATE_AFTER_MINUTES={value!r} must be a number of minutes (0 or empty: no late-run alert) "
               "in 0..10080")
    assert any(message in e for e in errors.values()), errors
