"""How close `cifarbench -m ... --plan` comes to the sweep it plans: the README's plan example.

    python scripts/plan_check.py model=lenet5 optim.lr=0.001,0.003,0.01,-1 trainer.seed=0,1,2 \
        data.train_subset=2000 data.test_subset=1000 trainer.epochs=2

Runs the plan (its estimate in seconds, from the line `estimate: ≈ N s …` or `estimate: ≈ … (N s) …`), then the sweep itself
in a temporary folder, timed from the command's start to its end (imports, every job, the leaderboard),
and prints both and their ratio. Each is a new `python -m cifarbench` process; data: $CIFAR10_ROOT.
"""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time


def timed(args: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cifarbench", *args], capture_output=True, text=True)
    return time.perf_counter() - start, done.stdout


def main(overrides: list[str]):
    plan_seconds, printed = timed(["-m", *overrides, "--plan"])
    print(printed.rstrip())
    line = re.search(r"^estimate: .*$", printed, re.M).group(0)
    estimate = float(re.search(r"(\d+) s\b", line).group(1))
    with tempfile.TemporaryDirectory(prefix="plan-check-") as folder:
        sweep_seconds, _ = timed(["-m", *overrides, "trainer.progress=false", f"hydra.sweep.dir={folder}"])
    print(f"plan took {plan_seconds:.0f} s; estimated {estimate:.0f} s; the sweep took {sweep_seconds:.0f} s "
          f"(estimate / real = {estimate / sweep_seconds:.2f})")


if __name__ == "__main__":
    main(sys.argv[1:])
