"""`cifarbench report PATH... [--out DIR] [--level 0.95] [--target ACC]`: the leaderboard and comparison
plots of folders of runs, with confidence intervals and tests (see `cifarbench.report`)."""
from __future__ import annotations

import argparse
from pathlib import Path

import cifarbench.report
from cifarbench.report import write_report
from cifarbench.report.board import LEVEL, not_started
from cifarbench.run.layout import METRICS, SUMMARY


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cifarbench report", description=cifarbench.report.__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", metavar="path", help="a folder holding runs (searched recursively)")
    parser.add_argument("--out", help="where the report goes (default: the folder, when there is one)")
    parser.add_argument("--level", type=float, default=LEVEL,
                        help="confidence level of the intervals (default 0.95); differences are resolved at 1 - level")
    parser.add_argument("--target", type=float,
                        help="an accuracy as a fraction (0.94): test whether each setting's mean final test "
                             "accuracy exceeds it (one-sided t-test) and say how many seeds would resolve it")
    args = parser.parse_args(argv)
    if not 0 < args.level < 1:
        parser.error(f"--level is a probability in (0, 1), such as 0.95, not {args.level:g}")
    if args.target is not None and not 0 < args.target < 1:
        parser.error(f"--target is an accuracy as a fraction in (0, 1), such as 0.94, not {args.target:g}")
    for path in args.paths:
        if not Path(path).is_dir():
            parser.error(f"{path} is not a folder")
    if len(args.paths) > 1 and args.out is None:
        parser.error("several folders: say where their report goes with --out DIR")
    out = Path(args.out or args.paths[0])
    boards = write_report(args.paths, out, args.level, args.target)
    if not boards:
        print(f"no runs (folders with {SUMMARY} or {METRICS}) under {' '.join(args.paths)}")
        return 1
    print((out / "leaderboard.md").read_text())
    waiting = not_started(boards)
    if waiting:
        print(f"{len(waiting)} job(s) never started: " + "; ".join(
            f"#{run.summary['job']} {' '.join(run.overrides)} (sweep {run.sweep})" for run in waiting))
    figures = ", ".join(f.name for board in boards for f in board.figures)
    print(f"wrote leaderboard.csv, leaderboard.md, leaderboard_runs.csv, {figures} and report.html to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
