"""Started by tests/engine/test_distributed.py as `torchrun --standalone --nproc_per_node=2 ddp_worker.py DATA OUT`:
the 2-process scenarios in one launch (one process group; each launch costs seconds of imports).

- `cli`: `cifarbench` itself (cli.main, Hydra and all) in the folder OUT/cli, one epoch, with batch norm;
- `equal`, `muon`: the tests' run (`BASE`) and its Muon variant, into OUT/<name>;
- `accumulate`: `equal` with its batches of 8 as 2 accumulated micro-batches of 4;
- `budget`, `diverged`: a budget that is over at once, and an lr that makes the loss non-finite;
- `interrupt`: rank 1 alone gets a real SIGINT during its training forward number 30.

Rank 0 trains into OUT/<name>, rank 1 is given OUT/<name>-rank1, which must stay absent (one writer).
Each scenario's summary, as each rank returns it, goes to OUT/summaries/<name>-<rank>.json (a file
per rank: the ranks' shared stdout interleaves their lines).
"""
import json
import os
import signal
import sys
from pathlib import Path
from unittest import mock

# The tests' run: a small LeNet, no augmentation (so 1 and 2 processes see the same pixels), 205 training
# images in global batches of 8 (25 full batches, then 5 images shared 3 + 2), 101 test images shared
# 51 + 50, 26 steps an epoch. (CPU kernels are deterministic without trainer.deterministic, which costs an import.)
BASE = ("model=lenet", "model.channels=[6,16]", "model.hidden=64", "aug=none", "optim=sgd", "sched=cosine",
        "data.train_subset=205", "data.test_subset=101", "trainer.batch_size=8", "trainer.epochs=2",
        "trainer.eval_batch_size=32", "trainer.progress=false", "trainer.plots=none",
        "trainer.device=cpu", "trainer.dist_timeout_s=60")
SCENARIOS = {
    "equal": ("trainer.ema=0.9", "trainer.lookahead.every=4"),
    # `equal` in micro-batches of 4 accumulated 2 at a time, each rank's 4 images a step as 2 + 2
    "accumulate": ("trainer.ema=0.9", "trainer.lookahead.every=4", "trainer.batch_size=4", "trainer.accumulate=2"),
    "muon": ("optim=muon", "trainer.epochs=0.1"),  # 3 steps (see test_muon_under_ddp_matches_one_process)
    "budget": ("trainer.budget_min=1e-6",),
    "diverged": ("optim.lr=1e12",),
    "interrupt": ("trainer.ema=0.9", "trainer.lookahead.every=4"),  # `equal`, stopped, resumed on 1 process
}
INTERRUPT_AT = 30  # rank 1's training forward; the ranks agree to stop at step 50 (the next check)


def interrupt_rank_1_at(forward: int):
    """A build_model that makes rank 1 send itself SIGINT at its training forward number `forward`."""
    from cifarbench.engine import build as engine_build

    build, calls = engine_build.build_model, {"n": 0}

    def hook(module, args):
        if module.training:
            calls["n"] += 1
            if calls["n"] == forward and int(os.environ["RANK"]) == 1:
                signal.raise_signal(signal.SIGINT)  # to this (the main) thread, not a gloo thread

    def build_with_hook(*args, **kwargs):
        model = build(*args, **kwargs)
        model.register_forward_pre_hook(hook)
        return model

    return mock.patch.object(engine_build, "build_model", build_with_hook)


def main(data: str, out: str):
    from hydra import compose, initialize_config_module

    from cifarbench.commands import cli
    from cifarbench.engine import loop as trainer
    from cifarbench.core.distributed import process_group

    out, rank = Path(out), int(os.environ["RANK"])
    with initialize_config_module("cifarbench.conf", version_base="1.3"):
        configs = {name: compose("config", overrides=[*BASE, *extra, f"data.root={data}"])
                   for name, extra in SCENARIOS.items()}
    with process_group(configs["equal"].trainer):
        (out / "cli").mkdir(exist_ok=True)
        os.chdir(out / "cli")
        with mock.patch.object(sys, "argv", ["cifarbench", *BASE, "trainer.epochs=1", "model.bn=true",
                                             f"data.root={data}"]):
            cli.main()
        for name, cfg in configs.items():
            with interrupt_rank_1_at(INTERRUPT_AT) if name == "interrupt" else mock.patch.dict({}):
                summary = trainer.train(cfg, out / (name if rank == 0 else f"{name}-rank1"))
            (out / "summaries").mkdir(exist_ok=True)
            (out / "summaries" / f"{name}-{rank}.json").write_text(
                json.dumps({k: v for k, v in summary.items() if k != "config"}))


if __name__ == "__main__":
    main(*sys.argv[1:])
