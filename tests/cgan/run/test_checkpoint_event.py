"""A run started by a checkpoint asset event: `plan` (cgan.run.plan.make_plan) uses the event's
checkpoint, checked like the form's field, and refuses one outside the roots with a clear message."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cgan.run.plan import CHECKPOINT_ASSET, ParamError, event_checkpoint, make_plan

WHEN = datetime(2026, 11, 30, 2, tzinfo=UTC)


def plan(events, roots=("models",), conf=None):
    return make_plan(dict(conf or {"num_grids": 2}), run_id="asset_triggered__2026-11-30T02:00:00+00:00",
                     logical_date=WHEN, artifact_root="file:///tmp/x", checkpoint_roots=list(roots),
                     checkpoint_events=events)


def test_a_nightly_or_manual_run_uses_its_params_checkpoint():
    run = plan([], conf={"num_grids": 2, "checkpoint": "models/cgan_generator.pth"})
    assert run["checkpoint"] == run["params"]["checkpoint"] == "models/cgan_generator.pth"
    assert run["checkpoint_source"] == "params"


def test_the_newest_events_checkpoint_replaces_the_params_and_is_recorded(tmp_path):
    (tmp_path / "new").mkdir()
    events = [{"extra": {"checkpoint": str(tmp_path / "new" / "a.pth")}, "timestamp": "2026-11-30T01:00:00+00:00"},
              {"extra": {"checkpoint": str(tmp_path / "new" / "b.pth"), "from_rest_api": True},
               "timestamp": "2026-11-30T01:05:00+00:00"}]
    run = plan(events, roots=[str(tmp_path / "new")], conf={"num_grids": 2, "checkpoint": "models/x.pth"})
    assert run["checkpoint"] == run["params"]["checkpoint"] == str(tmp_path / "new" / "b.pth")  # the manifest's
    assert run["checkpoint_source"] == f"the {CHECKPOINT_ASSET} asset event of 2026-11-30T01:05:00+00:00"


@pytest.mark.parametrize("checkpoint,roots,message", [
    ("/etc/passwd", ["models"], "is outside the checkpoint roots (models): put it under one of them, or have the "
                                "deployment add its folder or s3://bucket to CGAN_CHECKPOINT_ROOTS"),
    ("s3://other-bucket/g.pth", ["models", "s3://ckpts"], "is outside the checkpoint roots (models, s3://ckpts)"),
    ("models/../../etc/passwd", ["models"], "no '..'"),
    ("models/x.pth; curl evil", ["models"], "no '..', spaces or shell characters"),
])
def test_an_event_checkpoint_outside_the_roots_or_malformed_is_refused_naming_the_event(checkpoint, roots, message):
    events = [{"extra": {"checkpoint": checkpoint}, "timestamp": "2026-11-30T01:00:00+00:00"}]
    with pytest.raises(ParamError) as err:
        plan(events, roots=roots)
    assert str(err.value).startswith(f"the {CHECKPOINT_ASSET} asset event of 2026-11-30T01:00:00+00:00: ")
    assert message in str(err.value)


def test_an_event_without_a_checkpoint_says_how_to_register_one():
    with pytest.raises(ParamError, match=r"names no checkpoint .*cgan register-checkpoint"):
        event_checkpoint([{"extra": {"from_rest_api": True}, "timestamp": "t"}])
