"""`cifarbench models`: every registered model with its trainable
parameters and multiply–accumulates per image for a dataset's input shape and classes (`--data`,
default cifar10: 3×32×32, 10 classes), the study section (docs/studies.md) it reproduces and what its network does on
inputs other than 3×32×32; with `--throughput BENCH.json` (written by scripts/bench.py) also its
measured training images/s."""
from __future__ import annotations

import argparse
import json

from cifarbench.data import DATASETS
from cifarbench.models import MODELS, count_params, input_arguments, list_models
from cifarbench.models.layers import count_macs


def model_table(names: list[str], data: str = "cifar10") -> list[dict]:
    """One row per model: params and MACs (per image) as built for dataset `data`, the study section
    (docs/studies.md) it reproduces and what its network does on inputs other than 3×32×32 (its class's
    `INPUTS`, "—" for a network that does not say)."""
    source = DATASETS.build(data)
    rows = []
    for name in names:
        model = MODELS.build(name, num_classes=len(source.classes), **input_arguments(name, source.shape))
        rows.append({"model": name, "params": count_params(model), "macs": count_macs(model, source.shape),
                     "reproduces": MODELS.info[name], "inputs": getattr(type(model), "INPUTS", "—")})
    return rows


def read_throughput(path: str) -> tuple[str, dict[str, float]]:
    """A column title and images/s per model from a bench JSON (the loop's figure, else the floor's)."""
    with open(path) as f:
        bench = json.load(f)
    speeds = {row["model"]: row.get("loop_images_per_s") or row["floor_images_per_s"] for row in bench["rows"]}
    batch = bench["rows"][0]["batch_size"] if bench["rows"] else "?"
    return f"train img/s ({bench['hardware'].split(';')[0]}, batch {batch})", speeds


def format_table(rows: list[dict], markdown: bool, throughput: tuple[str, dict[str, float]] | None = None) -> str:
    """The rows as aligned text or Markdown; the note on other inputs comes last (it is the longest)."""
    header = ["model", "params", "MACs / image", "reproduces"]
    cells = [[r["model"], f"{r['params']:,}", f"{r['macs'] / 1e6:,.1f} M", r["reproduces"]] for r in rows]
    if throughput:
        title, speeds = throughput
        header.append(title)
        for row in cells:
            row.append(f"{speeds[row[0]]:,.0f}" if row[0] in speeds else "—")
    header.append("on other inputs (any channels: the first conv takes them)")
    for row, r in zip(cells, rows):
        row.append(r["inputs"])
    cells.insert(0, header)
    if markdown:
        lines = ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join([lines[0], "|---|--:|--:|---|" + "--:|" * (len(header) - 5) + "---|", *lines[1:]])
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    left = (0, 3, len(header) - 1)
    return "\n".join("  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     .rstrip() for row in cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cifarbench models", description=__doc__)
    parser.add_argument("names", nargs="*", help="models to list (default: all)")
    parser.add_argument("--markdown", action="store_true", help="a Markdown table, as in the README")
    parser.add_argument("--throughput", metavar="BENCH.json", help="add the images/s that scripts/bench.py measured")
    parser.add_argument("--data", default="cifar10", choices=DATASETS.names(),
                        help="count params and MACs for this dataset's input shape and classes (default: cifar10)")
    args = parser.parse_args(argv)
    throughput = read_throughput(args.throughput) if args.throughput else None
    print(format_table(model_table(args.names or list_models(), args.data), args.markdown, throughput))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
