"""One malformed manifest does not take the gallery's index down for every run (before: a
non-list `gate_failures` or an integer too large for a float made list_runs raise, a 500)."""

from __future__ import annotations

import json
import secrets

import pytest

from cgan.publishing import gallery
from cgan.storage import s3


def _manifest(run_id: str, **summary) -> bytes:
    attempt = "20261101T020000.000000Z-a1b2c3"
    return json.dumps({"version": 2, "run_id": run_id, "root": f"runs/{run_id}/attempts/{attempt}",
                       "attempt": attempt, "logical_date": "2026-11-25T02:00:00+00:00",
                       "status": "accepted", "grids": 0, "objects": [], "packs": [],
                       "summary": {"label_accuracy": 0.99, **summary}}).encode()


@pytest.mark.parametrize("bad", [{"gate_failures": 5}, {"gate_failures": "abc"}, {"grids_per_s": 10 ** 400},
                                 {"label_accuracy": "high"}], ids=["int", "str", "huge-int", "str-number"])
def test_a_malformed_manifest_is_one_run_not_the_whole_index(local_s3, bad):
    client = local_s3["client"]
    bucket = "gallery-" + secrets.token_hex(3)
    client.create_bucket(Bucket=bucket)
    s3.put_bytes(client, bucket, "runs/good/manifest.json", _manifest("good"))
    s3.put_bytes(client, bucket, "runs/bad/manifest.json", _manifest("bad", **bad))
    listed = gallery.list_runs(client, bucket, cache=gallery.ManifestCache())
    names = {r.name for r in listed.runs} | {n for n, _ in listed.unreadable}
    assert names == {"good", "bad"}
    good = [r for r in listed.runs if r.name == "good"]
    assert good and good[0].label_accuracy == 0.99, listed
