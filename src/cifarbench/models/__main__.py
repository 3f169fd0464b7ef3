"""`python -m cifarbench.models` / `cifarbench models`: every registered model with its trainable
parameters, multiply–accumulates per 32×32 image, and the SPEC section it reproduces."""
from __future__ import annotations

import argparse

from cifarbench.models import MODELS, count_params, list_models
from cifarbench.models.layers import count_macs


def model_table(names: list[str]) -> list[dict]:
    rows = []
    for name in names:
        model = MODELS.build(name)
        rows.append({"model": name, "params": count_params(model), "macs": count_macs(model),
                     "reproduces": MODELS.info[name]})
    return rows


def format_table(rows: list[dict], markdown: bool) -> str:
    cells = [["model", "params", "MACs / image", "reproduces"]]
    cells += [[r["model"], f"{r['params']:,}", f"{r['macs'] / 1e6:,.1f} M", r["reproduces"]] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join([lines[0], "|---|--:|--:|---|", *lines[1:]])
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) if i in (0, 3) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     for row in cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cifarbench models", description=__doc__)
    parser.add_argument("names", nargs="*", help="models to list (default: all)")
    parser.add_argument("--markdown", action="store_true", help="a Markdown table, as in the README")
    args = parser.parse_args(argv)
    print(format_table(model_table(args.names or list_models()), args.markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
