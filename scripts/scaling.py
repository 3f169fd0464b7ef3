"""One config on 1 and on N processes (DDP through torchrun): the README's "Scaling out" table.

For each model and each process count N in --nproc, one run of
`torchrun --standalone --nproc_per_node=N -m cifarbench <the run> hydra.run.dir=OUT/<model>-<N>`
(the same global batch on every N), then per run: the training images per second (the last metrics
row's images_per_s: images of every process / training seconds of that window), training seconds,
final test accuracy, and the largest absolute difference of any parameter from the first run's
(checkpoints/last.pt), the equal-weights check. Augmentation is off (`aug=none`) so every N trains
on the same pixels; a model with plain batch norm normalises each process's share of the batch, so
its weights are not expected to match (SyncBatchNorm, CUDA only, would be).

A control row repeats the first run with another number of threads (1, or 2 if it had 1): the same
arithmetic summed in another order. Rounding differences of 1e-8 grow as training goes on, so the
control's difference is the size a correct N-process run's difference can reach at that step.

    python scripts/scaling.py --nproc 1,2 --device cpu                            # the README's CPU table
    python scripts/scaling.py --nproc 1,8 --device cuda --models resnet18 --train-images 50000 --batch-size 512

Each process gets --threads (default: the CPU cores / N) intra-op threads. Prints a Markdown table
and writes JSON (--json, default outputs/bench/scaling-<time>.json). Data: $CIFAR10_ROOT or --data.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch


def run(model: str, nproc: int, args, folder: Path, threads: int) -> dict:
    """Train once on `nproc` processes of `threads` threads; its numbers (seconds, images/s, accuracy
    as a fraction)."""
    overrides = [f"model={model}", "aug=none", f"trainer.device={args.device}", f"trainer.epochs={args.epochs}",
                 f"trainer.batch_size={args.batch_size}", f"data.train_subset={args.train_images}",
                 f"data.test_subset={args.test_images}", "trainer.progress=false", "trainer.plots=none",
                 f"hydra.run.dir={folder}", *([f"data.root={args.data}"] if args.data else []), *args.overrides]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "cifarbench", *overrides]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    summary = json.loads((folder / "summary.json").read_text())
    with open(folder / "metrics.csv") as f:
        last = list(csv.DictReader(f))[-1]
    return {"model": model, "processes": summary["processes"], "threads_per_process": threads,
            "images_per_s": float(last["images_per_s"]), "train_seconds": summary["train_seconds"],
            "final_test_acc": summary["final_test_acc"], "folder": str(folder)}


def largest_difference(a: Path, b: Path) -> float:
    """The largest |w_a − w_b| over the parameters of two checkpoints' models (not batch norm's running
    statistics: under plain BN those are rank 0's share's)."""
    wa = torch.load(a / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)["model"]
    wb = torch.load(b / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)["model"]
    return max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa
               if wa[k].is_floating_point() and not k.endswith(("running_mean", "running_var")))


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nproc", default="1,2", help="process counts, comma-separated; the first is the reference")
    parser.add_argument("--models", default="lenet,lenet_bn")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--train-images", type=int, default=5000)
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--batch-size", type=int, default=128, help="the global batch (every process count)")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads per process (0: cores / N)")
    parser.add_argument("--data", help="data.root (default: the config's, $CIFAR10_ROOT or ~/.cache/cifarbench)")
    parser.add_argument("--out", default=f"outputs/bench/scaling-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--json", help="where to write the results (default: OUT.json)")
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides for every run")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.nproc.split(",")]
    out = Path(args.out)
    rows = []
    for model in args.models.split(","):
        reference = None
        for nproc in [*counts, "control"]:
            procs = counts[0] if nproc == "control" else nproc
            threads = args.threads or max(1, (os.cpu_count() or 1) // procs)
            if nproc == "control":
                threads = 2 if reference["threads_per_process"] == 1 else 1
            row = run(model, procs, args, out / f"{model}-{nproc}", threads)
            row["control"] = nproc == "control"
            reference = reference or row
            row["speedup"] = round(row["images_per_s"] / reference["images_per_s"], 2)
            row["max_weight_difference"] = (None if row is reference
                                            else largest_difference(Path(reference["folder"]), Path(row["folder"])))
            rows.append(row)
            print(f"{model} on {procs} process(es) of {threads} thread(s): {row['images_per_s']:.0f} img/s",
                  file=sys.stderr)

    cpu = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    print(f"\n{args.device} ({cpu}), torch {torch.__version__}; {args.train_images} images, {args.epochs} epochs, "
          f"global batch {args.batch_size}, aug none\n")
    print("| model | processes | threads each | img/s | vs 1st | train s | final test acc | max weight diff vs 1st |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        diff = "—" if r["max_weight_difference"] is None else f"{r['max_weight_difference']:.1e}"
        model = f"{r['model']} (control)" if r["control"] else r["model"]
        print(f"| {model} | {r['processes']} | {r['threads_per_process']} | {r['images_per_s']:,.0f} | "
              f"{r['speedup']:.2f} | {r['train_seconds']:.1f} | {100 * r['final_test_acc']:.2f}% | {diff} |")
    path = Path(args.json or f"{out}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"device": args.device, "cpu": cpu, "torch": torch.__version__, "args": vars(args),
                                "rows": rows}, indent=2))
    print(f"\n(written to {path})")


if __name__ == "__main__":
    main()
