from datetime import UTC, datetime, timedelta

import pytest

from cgan.run.plan import (
    MAX_SHARDS,
    ParamError,
    derive_seed,
    make_plan,
    plan_shards,
    safe_run_id,
    validate,
)


def test_defaults_validate():
    p = validate({})
    assert (p.num_grids, p.target, p.devices, p.precision_mode) == (100, "cpu", None, "force_fp16")
    assert p.precision == "fp32" and validate({"precision": "int8"}).precision == "int8"


@pytest.mark.parametrize("conf,message", [
    ({"num_grids": 0}, "num_grids must be an integer in 1..100000"),
    ({"num_grids": "10"}, "num_grids must be an integer"),
    ({"seed": -5}, "seed must be an integer"),
    ({"target": "gpu"}, "target must be one of cpu, ascend"),
    ({"soc_version": "Ascend310; rm -rf /"}, "not an Ascend SoC name"),
    ({"soc_version": "$(reboot)"}, "not an Ascend SoC name"),
    ({"devices": []}, "devices must be empty (any NPU of the worker's host) or a list of 1..64"),
    ({"devices": [0, "1;ls"]}, "each device id must be an integer"),
    ({"devices": [0, 0]}, "must not repeat"),
    ({"devices": [256]}, "0..255"),
    ({"checkpoint": "../../etc/passwd"}, "no '..'"),
    ({"checkpoint": "models/x.pth; curl evil"}, "no '..', spaces or shell characters"),
    ({"checkpoint": "s3://Bad_Bucket/x.pth"}, "shell characters"),
    ({"precision_mode": "fast"}, "precision_mode must be one of"),
    ({"threads": -1}, "threads must be an integer in 0..64"),
    ({"keep_raw_outputs": "yes"}, "keep_raw_outputs must be true or false"),
    ({"precision": "fp16"}, "precision must be one of fp32, int8, got 'fp16'"),
    ({"bogus": 1}, "unknown parameter(s) bogus"),
])
def test_bad_params_are_refused_with_the_fix(conf, message):
    with pytest.raises(ParamError) as err:
        validate(conf)
    assert message in str(err.value)


def test_a_seed_typed_as_digits_runs_as_that_integer():
    """The form's Seed field sends what was typed as text (a browser rounds numbers past 2**53 - 1)."""
    assert validate({"seed": "42"}).seed == 42
    assert validate({"seed": "9007199254740993"}).seed == 9007199254740993  # not ...992
    assert validate({"seed": "9223372036854775807"}).seed == 2**63 - 1 and validate({"seed": "0"}).seed == 0


@pytest.mark.parametrize("seed", ["abc", "-5", "", " 42", "4 2", "1e3", "42.0", "١٢", "9" * 20])
def test_a_seed_typed_as_anything_but_digits_is_refused_not_replaced(seed):
    with pytest.raises(ParamError) as err:
        validate({"seed": seed})
    assert "seed must be a whole number 0..9223372036854775807 (digits only), or empty for one derived from the " \
           f"logical date, got {seed!r}" in str(err.value)


def test_a_seed_of_19_digits_past_the_largest_is_refused():
    with pytest.raises(ParamError) as err:
        validate({"seed": "9" * 19})
    assert "seed must be an integer in 0..9223372036854775807, got 9999999999999999999" in str(err.value)


@pytest.mark.parametrize("soc", ["Ascend310", "Ascend310P3", "Ascend910B1", "Ascend310B4", "Ascend910_9391"])
def test_real_soc_names_pass(soc):
    assert validate({"soc_version": soc}).soc_version == soc


def test_cpu_shards_cover_every_grid_once():
    shards = plan_shards(1001, "cpu", [0], 250)
    assert len(shards) == 5
    covered = [g for s in shards for g in range(s.start, s.start + s.count)]
    assert covered == list(range(1001))
    assert shards[2].bins_prefix == "bins/shard_0002" and shards[0].devices is None


def test_the_parity_sample_is_planned_once_and_split_over_the_shards():
    shards = plan_shards(1000, "cpu", [0], 300)
    parity = [g for s in shards for g in s.parity]
    assert len(parity) == 32 and parity == sorted(set(parity)) and parity[0] == 0 and parity[-1] == 999
    for s in shards:
        assert all(s.start <= g < s.start + s.count for g in s.parity)
        assert s.keep_raw_outputs is False
    assert [g for s in plan_shards(5, "cpu", [0], 2) for g in s.parity] == [0, 1, 2, 3, 4]
    assert all(s.keep_raw_outputs for s in plan_shards(5, "cpu", [0], 2, keep_raw_outputs=True))


def test_keep_raw_outputs_reaches_the_plan():
    when = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    plan = make_plan({"num_grids": 3, "keep_raw_outputs": True}, run_id="r", logical_date=when,
                     artifact_root="file:///x")
    assert plan["params"]["keep_raw_outputs"] is True and all(s["keep_raw_outputs"] for s in plan["shards"])
    assert validate({}).keep_raw_outputs is False


def test_ascend_shards_by_size_with_an_optional_device_restriction():
    shards = plan_shards(10, "ascend", [4, 5], 3)  # more shards than devices: each leases one when it runs
    assert [s.count for s in shards] == [3, 3, 2, 2] and all("device" not in s.as_xcom() for s in shards)
    assert all(s.devices == (4, 5) for s in shards)
    assert all(s.devices is None for s in plan_shards(10, "ascend", None, 3))  # any NPU of the worker's host
    assert plan_shards(10, "cpu", [4], 3)[0].devices is None
    assert validate({}).devices is None and validate({"devices": None}).devices is None


def test_npu_tool_is_checked():
    assert validate({"npu_tool": "ais_bench"}).npu_tool == "ais_bench" and validate({}).npu_tool == "msame"
    with pytest.raises(ParamError, match="npu_tool must be one of msame, ais_bench"):
        validate({"npu_tool": "trtexec"})


def test_a_typed_shard_size_that_needs_more_shards_than_max_map_length_is_refused_not_clamped():
    with pytest.raises(ParamError, match=r"more than 1024 shards .*give at least 98"):
        validate({"num_grids": 100_000, "grids_per_shard": 1})
    with pytest.raises(ParamError, match="cannot be split into at most 1024 shards"):
        plan_shards(100_000, "cpu", [0], 1)
    shards = plan_shards(100_000, "cpu", None, 98)
    assert len(shards) == 1021 and sum(s.count for s in shards) == 100_000


@pytest.mark.parametrize("grids", [1_000_000, 10_000_000])
@pytest.mark.parametrize("target,slots", [("cpu", 2), ("cpu", None), ("ascend", 8), ("ascend", 64)])
def test_runs_of_millions_of_grids_plan_bounded_shards(grids, target, slots):
    """A plan for 1M and 10M grids: no shard over MAX_GRIDS_PER_SHARD, no more than MAX_SHARDS,
    every grid once, and the XCom a task reads stays O(shards)."""
    import json

    from cgan.run.plan import MAX_GRIDS_PER_SHARD

    plan = make_plan({"num_grids": grids, "target": target}, run_id="r", logical_date=datetime(2026, 1, 1, tzinfo=UTC),
                     artifact_root="file:///x", cpu_slots=slots, npu_slots=slots)
    shards = plan["shards"]
    assert len(shards) <= MAX_SHARDS and max(s["count"] for s in shards) <= MAX_GRIDS_PER_SHARD
    assert shards[0]["start"] == 0
    assert all(a["start"] + a["count"] == b["start"] for a, b in zip(shards, shards[1:], strict=False))
    assert shards[-1]["start"] + shards[-1]["count"] == grids
    if slots:
        assert len(shards) % slots == 0 or len(shards) == MAX_SHARDS  # balanced over the slots
    assert len(json.dumps(plan)) < 400 * len(shards) + 20_000  # parity + label samples are bounded too


def test_more_grids_than_the_plan_can_hold_is_refused():
    with pytest.raises(ParamError, match=r"num_grids must be an integer in 1\.\.10000000"):
        validate({"num_grids": 10_000_001})


def test_seed_from_logical_date_and_plan():
    when = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    assert derive_seed(when) == 20261126020000
    plan = make_plan({"num_grids": 3, "seed": None}, run_id="scheduled__2026-11-26T02:00:00+00:00",
                     logical_date=when, artifact_root="file:///tmp/a/")
    assert plan["seed"] == 20261126020000 and plan["params"]["seed"] == 20261126020000
    key = safe_run_id("scheduled__2026-11-26T02:00:00+00:00")
    assert key.startswith("scheduled__2026-11-26T02-00-00-00-00+")
    assert plan["workspace"] == f"file:///tmp/a/runs/{key}"
    assert plan["run_prefix"] == f"runs/{key}"
    assert make_plan({"seed": 7}, run_id="r", logical_date=when, artifact_root="file:///x")["seed"] == 7


def test_safe_run_id():
    assert safe_run_id("nightly-1") == "nightly-1"  # a safe key part is its own key
    key = safe_run_id("manual__2026-11-26T06:30:00.123+00:00")
    assert key.startswith("manual__2026-11-26T06-30-00.123-00-00+") and len(key.rsplit("+", 1)[1]) == 20
    assert safe_run_id("::").startswith("run+")
    with pytest.raises(ParamError, match="empty"):
        safe_run_id("")


NIGHTLY = "scheduled__2026-11-25T02:00:00+00:00"


@pytest.mark.parametrize("chosen", [
    f"-{NIGHTLY}",  # the key it used to share with the nightly: leading '-' stripped
    f".{NIGHTLY}",
    "scheduled__2026-11-25T02-00-00-00-00",  # the nightly's old key, typed as a run id
    None,  # the nightly's key itself, typed as a run id (filled in below)
    "manual__2026-11-25T10-00-00-00-00",  # next to Airflow's own manual__...T10:00:00+00:00
    "manual__2026-11-25T10:00:00+00:00",
    f"{NIGHTLY}\n",  # a trailing newline
    "x" * 200 + "a", "x" * 200 + "b",  # cut at the same length
])
def test_no_chosen_run_id_takes_another_runs_key(chosen):
    """Airflow lets anyone who may trigger the DAG choose the run id: none may land on the key of
    another run id (the nightly's, Airflow's own manual ids, each other)."""
    chosen = chosen if chosen is not None else safe_run_id(NIGHTLY)
    ids = {NIGHTLY, "manual__2026-11-25T10:00:00+00:00", "x" * 200 + "a", "x" * 200 + "b", chosen}
    keys = {safe_run_id(i) for i in ids}
    assert len(keys) == len(ids)
    from cgan.storage.keys import check_key

    assert all(check_key(k) == k for k in keys)


def test_run_keys_are_injective_over_hostile_ids():
    import random

    rng = random.Random(7)
    alphabet = "aZ09._=@-+:/~ \n\x00é"
    ids = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8))) for _ in range(20_000)}
    keys = {safe_run_id(i) for i in ids}
    assert len(keys) == len(ids)


def test_the_label_sample_is_planned_once_and_split_over_the_shards():
    from cgan.quality.report import LABEL_SAMPLE_GRIDS

    shards = plan_shards(10_000, "cpu", [0], 1000)
    judged = [g for s in shards for g in s.judge]
    assert len(judged) == LABEL_SAMPLE_GRIDS and judged == sorted(set(judged)) and judged[-1] == 9999
    for s in shards:
        assert all(s.start <= g < s.start + s.count for g in s.judge) and s.judge
    assert [g for s in plan_shards(5, "cpu", [0], 2) for g in s.judge] == [0, 1, 2, 3, 4]


def test_checkpoints_only_from_the_configured_roots(tmp_path, monkeypatch):
    from cgan import settings
    from cgan.run.plan import check_checkpoint_root

    monkeypatch.delenv("CGAN_CHECKPOINT_ROOTS", raising=False)
    roots = settings.checkpoint_roots()
    assert roots == ["models"]
    assert check_checkpoint_root("models/cgan_generator.pth", roots)
    for outside in ("/etc/passwd", "cgan/settings.py", "s3://any-bucket/g.pth"):
        with pytest.raises(ParamError, match="outside the checkpoint roots .*CGAN_CHECKPOINT_ROOTS"):
            check_checkpoint_root(outside, roots)
    link = tmp_path / "models-link.pth"  # a link inside a root that points out of it is followed
    link.symlink_to("/etc/hostname")
    with pytest.raises(ParamError, match="outside the checkpoint roots"):
        check_checkpoint_root(str(link), [str(tmp_path / "models")])
    monkeypatch.setenv("CGAN_CHECKPOINT_ROOTS", f"models, {tmp_path}, s3://ckpts/team-a")
    roots = settings.checkpoint_roots()
    assert check_checkpoint_root(str(tmp_path / "g.pth"), roots)
    assert check_checkpoint_root("s3://ckpts/team-a/g.pth", roots)
    with pytest.raises(ParamError, match="outside"):
        check_checkpoint_root("s3://ckpts/team-b/g.pth", roots)
    when = datetime(2026, 11, 26, 2, tzinfo=UTC)
    with pytest.raises(ParamError, match="outside the checkpoint roots"):
        make_plan({"checkpoint": "/etc/passwd"}, run_id="r", logical_date=when, artifact_root="file:///x",
                  checkpoint_roots=["models"])
    monkeypatch.setenv("CGAN_CHECKPOINT_ROOTS", "s3://Bad_Bucket")
    with pytest.raises(settings.ConfigError, match="CGAN_CHECKPOINT_ROOTS"):
        settings.checkpoint_roots()


@pytest.mark.parametrize("grids,slots,sizes", [
    (6000, 2, [1500] * 4),  # not 2500 + 2500 + 1000: every slot gets the same share
    (2500, 2, [1250] * 2),
    (10_000, 2, [2500] * 4),
    (10_001, 2, [1667] * 5 + [1666]),
    (10_000, 16, [625] * 16),
    (10_000, 3, [1667] * 4 + [1666] * 2),  # a multiple of the slots, none over 2500
    (2000, 4, [500] * 4),
    (250, 4, [125] * 2),  # a small run does not split below 100 grids a shard to fill the slots
    (100, 2, [100]),
    (7, 4, [7]),
    (6000, None, [2000] * 3),  # slots unknown: shards of at most 2500
])
def test_automatic_shards_are_balanced_over_the_inference_slots(grids, slots, sizes):
    shards = plan_shards(grids, "cpu", None, None, slots=slots)
    assert [s.count for s in shards] == sizes
    assert [g for s in shards for g in range(s.start, s.start + s.count)] == list(range(grids))


def test_automatic_shard_sizing_is_the_default_and_reads_the_slots(monkeypatch):
    from cgan import settings

    monkeypatch.setenv("CGAN_CPU_INFER_TASKS", "2")
    assert validate({}).grids_per_shard is None
    plan = make_plan({"num_grids": 6000}, run_id="r", logical_date=datetime(2026, 1, 1, tzinfo=UTC),
                     artifact_root="file:///x", cpu_slots=settings.cpu_infer_tasks())
    assert [s["count"] for s in plan["shards"]] == [1500] * 4
    # ascend: balanced over the NPUs the run names, else the pool's (npu_slots, CGAN_NPU_SLOTS), in
    # shards of 500..10,000 grids: an NPU computes 10,000 grids in about 25 s
    assert len(plan_shards(2500, "ascend", [0, 1, 2], None)) == 3
    assert len(plan_shards(4000, "ascend", [0, 1, 2], None)) == 3
    assert len(plan_shards(2500, "ascend", None, None)) == 1
    assert [s.count for s in plan_shards(100_000, "ascend", None, None, npu_slots=8)] == [6250] * 16
    assert len(plan_shards(100_000, "ascend", None, None)) == 10
    # a typed size is used as typed
    typed = make_plan({"num_grids": 2500, "grids_per_shard": 1000}, run_id="r",
                      logical_date=datetime(2026, 1, 1, tzinfo=UTC), artifact_root="file:///x")
    assert [s["count"] for s in typed["shards"]] == [834, 833, 833]
    with pytest.raises(ParamError, match="grids_per_shard must be an integer in 1..10000"):
        validate({"grids_per_shard": 0})


def test_a_logical_date_in_the_future_is_refused():
    """latest.json follows the newest logical date: a run dated 2099 would freeze it."""
    now = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    with pytest.raises(ParamError, match="logical date 2099-01-01T00:00:00\\+00:00 is in the future"):
        make_plan({}, run_id="r", logical_date=datetime(2099, 1, 1, tzinfo=UTC), artifact_root="file:///x", now=now)
    with pytest.raises(ParamError, match="in the future"):  # a naive date is read as UTC
        make_plan({}, run_id="r", logical_date=datetime(2026, 11, 26, 3, 1), artifact_root="file:///x", now=now)
    for fine in (now, now - timedelta(days=400), now + timedelta(minutes=59)):  # clocks may differ a little
        assert make_plan({}, run_id="r", logical_date=fine, artifact_root="file:///x", now=now)["logical_date"]


def test_a_plan_is_described_in_a_few_readable_lines():
    from datetime import datetime

    from cgan.run.plan import describe_plan, make_plan

    planned = make_plan({"num_grids": 2500, "target": "ascend", "devices": [0, 1]}, run_id="manual__x",
                        logical_date=datetime(2026, 12, 1, tzinfo=UTC), artifact_root="file:///tmp/a",
                        npu_slots=2, now=datetime(2026, 12, 1, tzinfo=UTC))
    lines = describe_plan(planned, seed_given=False)
    assert lines[0] == f"2,500 grid(s), seed {planned['seed']} (from the logical date)"
    assert lines[1].startswith("target ascend: msame on the Ascend workers, soc Ascend310P3")
    assert lines[1].endswith("devices 0, 1 only")
    assert "shard(s) of" in lines[2] and "(automatic)" in lines[2]
    assert lines[-1] == "workspace file:///tmp/a/runs/manual__x; published under runs/manual__x/"
    assert len(lines) <= 6 and all(len(line) < 160 for line in lines)
