"""cgan.run.shard: the typed shard, across XCom and back, and what it hands over."""

import json

import pytest

from cgan.run.plan import plan_shards
from cgan.run.shard import Shard, ShardError


def test_a_planned_shard_crosses_xcom_and_comes_back_whole():
    for shard in plan_shards(2500, "ascend", [3, 4], 1000, keep_raw_outputs=True):
        carried = json.loads(json.dumps(shard.as_xcom()))
        assert Shard.from_xcom(carried) == shard
        assert carried["bins_prefix"] == shard.bins_prefix == f"bins/shard_{shard.index:04d}"
    assert Shard.from_xcom(shard) is shard


def test_what_a_shard_hands_over_and_judges():
    shard = Shard(index=0, start=10, count=5, parity=(11, 14), judge=(12,))
    assert shard.grids == range(10, 15) and shard.outputs_prefix == "outputs/shard_0000"
    assert shard.kept_raw_outputs == {11, 14} and shard.handed_stems == {"grid_00000011", "grid_00000014"}
    assert shard.judged_stems == {"grid_00000012"}
    assert Shard(0, 10, 5, parity=(11,), keep_raw_outputs=True).kept_raw_outputs is None  # all of them
    assert Shard(0, 10, 5).kept_raw_outputs is None and Shard(0, 10, 5).judged_stems is None  # no samples: all


@pytest.mark.parametrize("value, message", [
    ({"shard": 0, "start": 0}, "a dict of the plan's shard fields"),
    ({"shard": 0, "start": 0, "count": 3, "device": 1}, "a dict of the plan's shard fields"),
    ({"shard": "0", "start": 0, "count": 3}, "whole number"),
    ({"shard": 0, "start": 0, "count": 0}, "has no grids"),
    ({"shard": 1, "start": 0, "count": 3, "bins_prefix": "bins/shard_0000"}, "is not the plan's"),
    ({"shard": 0, "start": 0, "count": 3, "parity": [3]}, "parity must list grids of the shard"),
    ({"shard": 0, "start": 0, "count": 3, "devices": []}, "devices must be a non-empty list"),
    ({"shard": 0, "start": 0, "count": 3, "keep_raw_outputs": "yes"}, "true or false"),
    ([0, 0, 3], "a dict of the plan's shard fields"),
])
def test_a_value_the_plan_did_not_make_is_refused_naming_the_field(value, message):
    with pytest.raises(ShardError, match=message):
        Shard.from_xcom(value)
    assert ShardError.retryable is False
