"""`cifarbench inspect ckpt=PATH [out=DIR] [data.root=DIR]`: confusion.png, samples.png and per-class
accuracy of any checkpoint, evaluated as its run evaluated it, into `<run>/inspect/` unless `out` says where."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from cifarbench.commands.args import key_value_args
from cifarbench.commands.predict import load_trained
from cifarbench.data import DeviceLoader, load_dataset
from cifarbench.engine.evaluate import evaluate
from cifarbench.run.diagnostics import write_diagnostics
from cifarbench.run.layout import RunFolder


def main(argv: list[str] | None = None) -> int:
    """Diagnostics for a checkpoint on the test set of its config's data (or data.root=...), evaluated
    exactly as its run evaluated: its EMA weights if it had them, its trainer.tta, its fitted
    preprocessing, memory format, evaluation batch size and data.test_subset. Prints the test
    accuracy (fraction), loss (mean cross-entropy, nats), per-class accuracy and how it evaluated as
    JSON; writes confusion.png and samples.png into `out` (default: `inspect/` in the checkpoint's
    run folder, so the run's own figures stay as they are). Returns 0, or 2 without ckpt=; raises
    CheckpointError or DatasetError."""
    args = key_value_args(list(argv if argv is not None else sys.argv[1:]),
                          "usage: cifarbench inspect ckpt=PATH [out=DIR] [data.root=DIR]", required=("ckpt",))
    trained = load_trained(args.ckpt)
    root = OmegaConf.select(args, "data.root") or trained.config["data"]["root"]
    data = load_dataset({**trained.config["data"], "root": root}, download=False)
    test_subset = trained.config["data"].get("test_subset")
    images, labels = data.test_images[:test_subset], data.test_labels[:test_subset]
    loader = DeviceLoader(torch.from_numpy(images), torch.from_numpy(labels),
                          trained.config["trainer"]["eval_batch_size"],
                          trained.preprocess, shuffle=False, memory_format=trained.memory_format)
    loss, acc, predictions = evaluate(trained.model, loader, trained.autocast(), trained.tta)
    out = Path(args.get("out") or RunFolder.of_checkpoint(args.ckpt).inspect)
    accuracy = write_diagnostics(out, images, labels, predictions.numpy(), trained.classes)
    figures = RunFolder(out)
    print(json.dumps({"test_acc": acc, "test_loss": loss, "test_images": len(labels),
                      "evaluated_as": trained.describe(), "per_class_acc": accuracy}, indent=2))
    print(f"wrote {figures.confusion} and {figures.samples}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
