"""Every validator refuses a value with a trailing newline (`$` in Python matches before one)."""

import pytest

from cgan.ascend.errors import AscendError
from cgan.errors import CganError


@pytest.mark.parametrize("check", [
    lambda: __import__("cgan.storage.keys", fromlist=["x"]).check_key("runs/a\n"),
    lambda: __import__("cgan.storage.keys", fromlist=["x"]).check_bucket("cgan\n"),
    lambda: __import__("cgan.layout.published", fromlist=["x"]).check_run_name("a\n"),
    lambda: __import__("cgan.run.plan", fromlist=["x"]).validate_checkpoint("models/g.pth\n"),
    lambda: __import__("cgan.ascend.validate", fromlist=["x"]).check_soc_version("Ascend310P3\n"),
], ids=["key", "bucket", "run-name", "checkpoint", "soc-version"])
def test_a_trailing_newline_is_refused(check):
    with pytest.raises((CganError, AscendError)):
        check()
