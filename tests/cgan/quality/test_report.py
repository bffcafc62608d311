import json

import numpy as np
import pytest

from cgan.errors import InputBinError
from cgan.quality.classifier import DEFAULT_CLASSIFIER
from cgan.quality.report import PARITY_LIMITS, evenly_spaced, quality_report, write_report
from cgan.recipe.bins import write_bins
from cgan.runtimes.onnxruntime_runner import run_onnxruntime

REQUIRED_KEYS = {"label_accuracy", "per_class_accuracy", "parity_max_abs_err", "classifier_holdout_accuracy"}


@pytest.fixture
def run(tmp_path, upstream_onnx):
    write_bins(tmp_path / "bins", 3, seed=1)
    return tmp_path / "bins", run_onnxruntime(upstream_onnx, tmp_path / "bins", tmp_path / "out").output_dir


def test_untrained_generator_scores_low_with_tight_parity(tmp_path, upstream_checkpoint, run):
    bins, out = run
    report = quality_report(upstream_checkpoint, bins, out)
    assert REQUIRED_KEYS <= set(report)
    assert report["label_accuracy"] < 0.5  # random weights draw no digits: the metric can fail
    assert set(report["per_class_accuracy"]) == {str(d) for d in range(10)}
    assert report["parity_max_abs_err"] <= 1e-5 and report["parity_grids_checked"] == 3
    assert report["digits_judged"] == 300
    path = write_report(report, tmp_path / "q")
    assert json.loads(path.read_text()) == report


def test_parity_catches_a_corrupted_output(upstream_checkpoint, run):
    bins, out = run
    target = out / "grid_00000001_output_0.bin"
    data = np.fromfile(target, "<f4")
    data[123] += 0.25
    data.tofile(target)
    report = quality_report(upstream_checkpoint, bins, out)
    assert report["parity_max_abs_err"] == pytest.approx(0.25, abs=1e-4)


def test_outputs_of_another_model_are_refused(modelzoo_checkpoint, run):
    bins, out = run
    with pytest.raises(InputBinError, match="different models"):
        quality_report(modelzoo_checkpoint, bins, out)


def test_missing_input_bin_for_an_output(upstream_checkpoint, run):
    bins, out = run
    (bins / "grid_00000000.bin").unlink()
    with pytest.raises(InputBinError, match="no input bin"):
        quality_report(upstream_checkpoint, bins, out)


def test_committed_generator_draws_the_digits_asked_for(tmp_path, committed_generator):
    from cgan.runtimes.pytorch_runner import run_pytorch

    write_bins(tmp_path / "bins", 5, seed=123)
    out = run_pytorch(committed_generator, tmp_path / "bins", tmp_path / "out").output_dir
    report = quality_report(committed_generator, tmp_path / "bins", out)
    assert report["label_accuracy"] >= 0.90
    assert min(report["per_class_accuracy"].values()) >= 0.6


def test_evenly_spaced():
    assert evenly_spaced(3, 32) == [0, 1, 2]
    assert evenly_spaced(100, 3) == [0, 50, 99]
    assert evenly_spaced(10, 1) == [0]


def test_an_accumulator_without_checkpoint_counts_labels_but_refuses_parity(tmp_path):
    import numpy as np

    from cgan.quality.report import QualityAccumulator

    acc = QualityAccumulator(None)
    acc.record(acc.judge_samples(np.zeros((100, 1, 28, 28), dtype=np.float32)))
    assert acc.grids == 1 and int(acc.total.sum()) == 100 and len(acc.classifier_sha256) == 64
    with pytest.raises(ValueError, match="parity checks need the checkpoint"):
        acc.add_parity(tmp_path / "grid_00000000_output_0.bin", tmp_path / "grid_00000000.bin")


def test_fp32_parity_is_recorded_with_its_precision_and_limits(upstream_checkpoint, run):
    bins, out = run
    report = quality_report(upstream_checkpoint, bins, out)
    assert report["precision"] == "fp32" and report["parity_limits"] == PARITY_LIMITS["fp32"]
    assert 0 < report["parity_mean_abs_err"] <= report["parity_max_abs_err"] and report["parity_ok"] is True
    target = out / "grid_00000000_output_0.bin"
    data = np.fromfile(target, "<f4")
    data[:5000] += 0.01  # small for int8, far too much for fp32
    data.tofile(target)
    assert quality_report(upstream_checkpoint, bins, out)["parity_ok"] is False
    assert quality_report(upstream_checkpoint, bins, out, precision="int8")["parity_ok"] is True
    unknown = quality_report(upstream_checkpoint, bins, out, precision=None)
    assert unknown["parity_limits"] is None and unknown["parity_ok"] is None


@pytest.mark.slow
def test_int8_is_judged_by_the_same_rules_and_keeps_the_labels(tmp_path, committed_generator):
    """int8 outputs go through the same classifier and labels as fp32; only the parity bounds
    differ. 5 grids (500 digits) here; `make bench` measures the 0.005 bar on 3,000."""
    from cgan.quality.classifier import DigitClassifier
    from cgan.quality.report import EXPECTED_LABELS
    from cgan.recipe.export import export_onnx
    from cgan.recipe.outputs import read_output_bin

    onnx_path = export_onnx(committed_generator, tmp_path / "cgan.onnx").onnx_path
    write_bins(tmp_path / "bins", 5, seed=321)
    reports = {}
    for precision in ("fp32", "int8"):
        run = run_onnxruntime(onnx_path, tmp_path / "bins", tmp_path / precision, precision=precision,
                              int8_cache=tmp_path / "cache")
        reports[precision] = quality_report(committed_generator, tmp_path / "bins", run.output_dir,
                                            precision=precision)
        clf = DigitClassifier.load(DEFAULT_CLASSIFIER)
        hits = np.concatenate([clf.predict(read_output_bin(p)) == EXPECTED_LABELS for p in run.outputs])
        assert reports[precision]["label_accuracy"] == round(float(hits.mean()), 4)
        assert reports[precision]["digits_judged"] == 500 and reports[precision]["precision"] == precision
    fp32, int8 = reports["fp32"], reports["int8"]
    assert abs(int8["label_accuracy"] - fp32["label_accuracy"]) <= 0.01
    assert int8["label_accuracy"] >= 0.90
    assert int8["parity_ok"] is True and fp32["parity_ok"] is True
    assert int8["parity_max_abs_err"] > PARITY_LIMITS["fp32"]["max_abs"]  # it is int8, judged as int8
    assert set(int8) == set(fp32)


def test_wilson_interval_covers_a_binomial_proportion_about_95_percent_of_the_time():
    from cgan.quality.report import wilson

    rng = np.random.default_rng(3)
    p, n = 0.93, 2000
    inside = sum(lo <= p <= hi for lo, hi in (wilson(int(rng.binomial(n, p)), n) for _ in range(2000)))
    assert 0.93 <= inside / 2000 <= 0.97
    lo, hi = wilson(1000, 2000)
    assert lo < 0.5 < hi and hi - lo == pytest.approx(2 * 1.96 * 0.5 / 2000 ** 0.5, rel=0.01)


def _clustered_sample(rng, grids: int, p: float):
    """Digits judged right with a probability drawn per grid row (rows share a noise vector)."""
    q = rng.beta(p * 4, (1 - p) * 4, size=(grids * 10, 1))  # strong row effect, mean p
    hits = rng.random((grids * 10, 10)) < q
    correct, total = hits.sum(axis=0), np.full(10, grids * 10)
    return correct, total, int((hits.sum(axis=1) ** 2).sum())


def test_overall_interval_treats_rows_as_clusters_and_still_covers():
    from cgan.quality.report import label_intervals

    rng = np.random.default_rng(7)
    p, covered, digit_wilson_covered = 0.9, 0, 0
    for _ in range(400):
        correct, total, row_sq = _clustered_sample(rng, 200, p)
        lo, hi = label_intervals(correct, total, row_sq)["overall"]
        covered += lo <= p <= hi
        wlo, whi = label_intervals(correct, total, None)["overall"]  # digits as independent draws
        digit_wilson_covered += wlo <= p <= whi
    assert 0.92 <= covered / 400 <= 0.98
    assert digit_wilson_covered / 400 < 0.85  # why the rows must be the units here


def test_the_report_carries_the_label_sample_and_its_intervals(tmp_path):
    from cgan.quality.report import QualityAccumulator

    acc = QualityAccumulator(None)
    rng = np.random.default_rng(0)
    for g in range(4):
        acc.record(rng.random(100) < 0.8 if g % 2 == 0 else None)  # two grids judged, two only made
    report = acc.report()
    assert report["grids"] == 4 and report["digits_judged"] == 200
    assert report["label_sample"]["grids_judged"] == 2 and report["label_sample"]["confidence"] == 0.95
    lo, hi = report["label_accuracy_ci95"]
    assert lo <= report["label_accuracy"] <= hi and hi - lo > 0.05  # 200 digits: a wide interval
    for d, (clo, chi) in report["per_class_accuracy_ci95"].items():
        assert clo <= report["per_class_accuracy"][d] <= chi


def test_label_sample_size_bounds_the_interval_width():
    from cgan.quality.report import LABEL_SAMPLE_GRIDS, label_sample, wilson

    per_class = LABEL_SAMPLE_GRIDS * 10
    lo, hi = wilson(per_class // 2, per_class)
    assert (hi - lo) / 2 <= 0.022
    assert label_sample(50) == list(range(50)) and len(label_sample(10_000)) == LABEL_SAMPLE_GRIDS
