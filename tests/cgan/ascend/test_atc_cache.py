"""The conversion cache: a hit skips atc (the stand-in records every call), misses are honest."""

import json
import shutil

import pytest

from cgan.ascend.atc import AtcOptions
from cgan.ascend.atc_cache import AtcCache, cache_key, convert
from cgan.ascend.errors import AtcError
from cgan.ascend.target import host_target
from cgan.ascend.toolkit import locate_toolkit
from cgan.storage.store import LocalStore

OPTS = AtcOptions("Ascend310P3")


def atc_runs(calls):
    return [c for c in calls("atc") if c["argv"] != ["--version"]]


@pytest.fixture
def cache(tmp_path):
    return AtcCache(LocalStore(tmp_path / "cache"))


def test_second_conversion_is_a_hit_and_skips_atc(tmp_path, fake_toolkit, calls, upstream_onnx, cache):
    toolkit = locate_toolkit(fake_toolkit)
    first = convert(upstream_onnx, tmp_path / "a", OPTS, toolkit=toolkit, cache=cache)
    assert not first.cache_hit and len(atc_runs(calls)) == 1
    entry = tmp_path / "cache" / "atc-cache" / first.cache_key
    assert sorted(p.name for p in entry.iterdir()) == ["entry.json", "model.om"]
    meta = json.loads((entry / "entry.json").read_text())
    assert meta["toolkit_version"] == "7.0.0 (V100R001C15SPC001B220)" and meta["target"] == host_target()
    assert "--precision_mode=force_fp16" in meta["flags"] and not any("--model" in f for f in meta["flags"])
    lines = []
    second = convert(upstream_onnx, tmp_path / "b", OPTS, toolkit=toolkit, cache=cache, on_line=lines.append)
    assert second.cache_hit and second.cache_key == first.cache_key
    assert len(atc_runs(calls)) == 1, "atc ran on a cache hit"
    assert second.om_path.read_bytes() == first.om_path.read_bytes()
    assert "cache hit" in lines[0]


def test_log_level_does_not_change_the_key_but_model_flags_do(tmp_path, fake_toolkit, calls, upstream_onnx, cache):
    toolkit = locate_toolkit(fake_toolkit)
    base = convert(upstream_onnx, tmp_path / "a", OPTS, toolkit=toolkit, cache=cache)
    quiet = convert(upstream_onnx, tmp_path / "b", AtcOptions("Ascend310P3", log_level="null"),
                    toolkit=toolkit, cache=cache)
    assert quiet.cache_hit and quiet.cache_key == base.cache_key
    fp32 = convert(upstream_onnx, tmp_path / "c", AtcOptions("Ascend310P3", "must_keep_origin_dtype"),
                   toolkit=toolkit, cache=cache)
    other_soc = convert(upstream_onnx, tmp_path / "d", AtcOptions("Ascend910B1"), toolkit=toolkit, cache=cache)
    assert not fp32.cache_hit and not other_soc.cache_hit
    assert len({base.cache_key, fp32.cache_key, other_soc.cache_key}) == 3
    assert len(atc_runs(calls)) == 3


def test_toolkit_upgrade_and_model_change_miss(tmp_path, fake_toolkit, calls, upstream_onnx, cache):
    base = convert(upstream_onnx, tmp_path / "a", OPTS, toolkit=locate_toolkit(fake_toolkit), cache=cache)
    info = next(fake_toolkit.glob("latest/*-linux/ascend_toolkit_install.info"))
    info.write_text(info.read_text().replace("version=7.0.0", "version=8.0.RC1"))
    upgraded = convert(upstream_onnx, tmp_path / "b", OPTS, toolkit=locate_toolkit(fake_toolkit), cache=cache)
    assert not upgraded.cache_hit and upgraded.cache_key != base.cache_key
    import onnx

    changed = tmp_path / "changed.onnx"
    model = onnx.load(str(upstream_onnx))
    model.producer_name = "someone-else"
    onnx.save(model, changed)
    other = convert(changed, tmp_path / "c", OPTS, toolkit=locate_toolkit(fake_toolkit), cache=cache)
    assert not other.cache_hit and other.cache_key not in (base.cache_key, upgraded.cache_key)
    assert len(atc_runs(calls)) == 3


def test_failed_conversion_stores_nothing(tmp_path, fake_toolkit, upstream_onnx, cache, monkeypatch):
    monkeypatch.setenv("STANDIN_ATC_MODE", "ecode")
    with pytest.raises(AtcError):
        convert(upstream_onnx, tmp_path / "a", OPTS, toolkit=locate_toolkit(fake_toolkit), cache=cache)
    assert cache.store.list() == []


def test_incomplete_or_damaged_entries_are_misses(tmp_path, fake_toolkit, calls, upstream_onnx, cache):
    toolkit = locate_toolkit(fake_toolkit)
    first = convert(upstream_onnx, tmp_path / "a", OPTS, toolkit=toolkit, cache=cache)
    entry = tmp_path / "cache" / "atc-cache" / first.cache_key
    om = (entry / "model.om").read_bytes()
    (entry / "model.om").write_bytes(om[:-10])  # damaged om
    again = convert(upstream_onnx, tmp_path / "b", OPTS, toolkit=toolkit, cache=cache)
    assert not again.cache_hit and (entry / "model.om").read_bytes() == om  # repaired
    (entry / "entry.json").unlink()  # a crash between the two writes
    third = convert(upstream_onnx, tmp_path / "c", OPTS, toolkit=toolkit, cache=cache)
    assert not third.cache_hit
    assert len(atc_runs(calls)) == 3
    assert not list((tmp_path / "c").glob(".*"))  # no temp file left


def test_hit_keeps_the_arch_suffix(tmp_path, fake_toolkit, upstream_onnx, cache, monkeypatch):
    monkeypatch.setenv("STANDIN_ATC_SUFFIX", "auto")  # _linux_<this host's arch>, like CANN 7+ atc
    convert(upstream_onnx, tmp_path / "a", OPTS, toolkit=locate_toolkit(fake_toolkit), cache=cache)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "cgan.om").write_bytes(b"stale")
    hit = convert(upstream_onnx, tmp_path / "b", OPTS, toolkit=locate_toolkit(fake_toolkit), cache=cache)
    name = f"cgan_{host_target()}.om"
    assert hit.cache_hit and hit.om_path.name == name
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [name]


def test_an_om_cached_by_another_architecture_is_a_miss(tmp_path, fake_toolkit, calls, upstream_onnx,
                                                        cache, monkeypatch):
    """A mixed x86_64/aarch64 ascend pool sharing one cache: each converts for itself."""
    import cgan.ascend.atc_cache as atc_cache

    monkeypatch.setattr(atc_cache, "host_target", lambda: "linux_aarch64")
    monkeypatch.setenv("STANDIN_ATC_SUFFIX", "_linux_aarch64")
    arm = convert(upstream_onnx, tmp_path / "arm", OPTS, toolkit=locate_toolkit(fake_toolkit), cache=cache)
    assert arm.om_path.name == "cgan_linux_aarch64.om"
    monkeypatch.setattr(atc_cache, "host_target", lambda: "linux_x86_64")
    monkeypatch.setenv("STANDIN_ATC_SUFFIX", "_linux_x86_64")
    toolkit = locate_toolkit(fake_toolkit)
    x86 = convert(upstream_onnx, tmp_path / "x86", OPTS, toolkit=toolkit, cache=cache)
    assert not x86.cache_hit and x86.cache_key != arm.cache_key
    assert x86.om_path.name == "cgan_linux_x86_64.om" and len(atc_runs(calls)) == 2
    # an entry that names another target under this host's key (a forged or old entry) is a miss
    entry = tmp_path / "cache" / "atc-cache" / x86.cache_key / "entry.json"
    meta = json.loads(entry.read_text())
    entry.write_text(json.dumps({**meta, "target": "linux_aarch64"}))
    assert not convert(upstream_onnx, tmp_path / "x2", OPTS, toolkit=toolkit, cache=cache).cache_hit
    entry.write_text(json.dumps({**meta, "om_name": "cgan_linux_aarch64.om", "om_suffix": "_linux_aarch64"}))
    assert not convert(upstream_onnx, tmp_path / "x3", OPTS, toolkit=toolkit, cache=cache).cache_hit
    assert len(atc_runs(calls)) == 4
    assert convert(upstream_onnx, tmp_path / "x4", OPTS, toolkit=toolkit, cache=cache).cache_hit


def test_without_cache_atc_always_runs(tmp_path, fake_toolkit, calls, upstream_onnx):
    for out in ("a", "b"):
        assert not convert(upstream_onnx, tmp_path / out, OPTS, toolkit=locate_toolkit(fake_toolkit)).cache_hit
    assert len(atc_runs(calls)) == 2


def test_cache_key_depends_on_every_part():
    t = "linux_x86_64"
    base = cache_key("a" * 64, ["--soc_version=Ascend310"], "7.0.0", t)
    assert base == cache_key("a" * 64, ["--soc_version=Ascend310"], "7.0.0", t)
    assert len({base, cache_key("b" * 64, ["--soc_version=Ascend310"], "7.0.0", t),
                cache_key("a" * 64, ["--soc_version=Ascend310P3"], "7.0.0", t),
                cache_key("a" * 64, ["--soc_version=Ascend310"], "8.0.0", t),
                cache_key("a" * 64, ["--soc_version=Ascend310"], "7.0.0", "linux_aarch64")}) == 5


def test_cache_in_a_moved_store_still_hits(tmp_path, fake_toolkit, calls, upstream_onnx, cache):
    """Entries are plain objects: a copied store (e.g. synced to S3 and back) still hits."""
    convert(upstream_onnx, tmp_path / "a", OPTS, toolkit=locate_toolkit(fake_toolkit), cache=cache)
    shutil.copytree(tmp_path / "cache", tmp_path / "copy")
    hit = convert(upstream_onnx, tmp_path / "b", OPTS, toolkit=locate_toolkit(fake_toolkit),
                  cache=AtcCache(LocalStore(tmp_path / "copy")))
    assert hit.cache_hit and len(atc_runs(calls)) == 1


def test_missing_onnx_is_said_clearly(tmp_path, fake_toolkit, cache):
    from cgan.ascend.errors import AscendError

    with pytest.raises(AscendError, match="not found; create it with `cgan export`"):
        convert(tmp_path / "none.onnx", tmp_path / "a", OPTS, toolkit=locate_toolkit(fake_toolkit), cache=cache)


def _unknown_version_toolkit(tmp_path, monkeypatch):
    """A toolkit home with set_env.sh but no version file, whose atc prints no version."""
    import os

    from tests.standins.fixtures import STANDINS

    home = tmp_path / "Ascend" / "cann"
    home.mkdir(parents=True)
    (home / "set_env.sh").write_text(f'export PATH="{STANDINS}:$PATH"\nexport ASCEND_OPP_PATH="{home}/opp"\n')
    monkeypatch.setenv("STANDIN_ATC_VERSION", "no number here")
    return locate_toolkit(home, environ={k: v for k, v in os.environ.items() if k != "CGAN_ASCEND_TOOLKIT"})


def test_unknown_toolkit_version_refuses_to_cache(tmp_path, clean_env, calls, upstream_onnx, cache, monkeypatch):
    """Before: an unknown version was cached under "unknown", so a toolkit upgrade reused the old
    om. Now atc runs every time, nothing is looked up or stored, and the notes and log say so."""
    toolkit = _unknown_version_toolkit(tmp_path, monkeypatch)
    assert toolkit.version == "unknown" and any("version unknown" in n for n in toolkit.notes)
    lines: list[str] = []
    first = convert(upstream_onnx, tmp_path / "a", OPTS, toolkit=toolkit, cache=cache, on_line=lines.append)
    second = convert(upstream_onnx, tmp_path / "b", OPTS, toolkit=toolkit, cache=cache)
    assert not first.cache_hit and not second.cache_hit and first.cache_key == ""
    assert len(atc_runs(calls)) == 2 and cache.store.list() == []
    assert first.om_path.is_file()
    assert any("conversion cache not used" in n and "unknown" in n for n in first.notes)
    assert any("conversion cache not used" in line for line in lines)


def test_an_entry_stored_under_unknown_is_not_reused(tmp_path, clean_env, calls, upstream_onnx, cache, monkeypatch):
    """An old cache holding an "unknown" entry (as the code before stored it) is never a hit."""
    from cgan.storage.files import sha256_file

    toolkit = _unknown_version_toolkit(tmp_path, monkeypatch)
    seeded = convert(upstream_onnx, tmp_path / "seed", OPTS, toolkit=toolkit)  # no cache: a key is computed
    cache.put(seeded.cache_key, seeded.om_path, {"target": host_target(), "om_name": seeded.om_path.name,
                                                 "om_bytes": seeded.om_path.stat().st_size,
                                                 "om_sha256": sha256_file(seeded.om_path)})
    again = convert(upstream_onnx, tmp_path / "a", OPTS, toolkit=toolkit, cache=cache)
    assert not again.cache_hit and len(atc_runs(calls)) == 2


def test_cann_85_layout_caches_under_its_real_version(tmp_path, clean_env, calls, upstream_onnx, cache):
    """The cann/ layout (CANN 8.5+) puts a real version in the key, read from
    cann/<arch>-linux/ascend_toolkit_install.info, and an upgrade there misses."""
    from tests.cgan.ascend.test_toolkit_layout import ARCH, cann_85, host_env, roots

    home = cann_85(tmp_path / "Ascend")
    toolkit = locate_toolkit(environ=host_env(), roots=roots(tmp_path / "Ascend"))
    first = convert(upstream_onnx, tmp_path / "a", OPTS, toolkit=toolkit, cache=cache)
    meta = json.loads((tmp_path / "cache" / "atc-cache" / first.cache_key / "entry.json").read_text())
    assert meta["toolkit_version"] == "8.5.0 (V100R001C25SPC001B212)"
    assert meta["toolkit_version_source"] == str(home / f"{ARCH}-linux" / "ascend_toolkit_install.info")
    assert convert(upstream_onnx, tmp_path / "b", OPTS, toolkit=toolkit, cache=cache).cache_hit
    info = home / f"{ARCH}-linux" / "ascend_toolkit_install.info"
    info.write_text(info.read_text().replace("version=8.5.0", "version=8.5.1"))
    upgraded = convert(upstream_onnx, tmp_path / "c", OPTS, toolkit=locate_toolkit(environ=host_env(), roots=roots(
        tmp_path / "Ascend")), cache=cache)
    assert not upgraded.cache_hit and upgraded.toolkit_version.startswith("8.5.1")
    assert len(atc_runs(calls)) == 2
