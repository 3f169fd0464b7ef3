"""scripts/bench.py runs end to end at toy size and records what it prints (its numbers are not judged)."""
import json

import pytest
from helpers import bench, bench_module, make_fake_cifar


def test_throughput_compares_the_loop_with_its_floor_and_a_dataloader(tmp_path, monkeypatch, capsys):
    root = make_fake_cifar(tmp_path / "data", n_train=400, n_test=100)
    monkeypatch.chdir(tmp_path)
    bench("throughput", "--models", "lenet", "--train-images", "400", "--batch-size", "50", "--epochs", "2",
                "--floor-steps", "3", "--warmup", "2", "--workers", "0", "--data", str(root),
                "--json", str(tmp_path / "throughput.json"))
    out = capsys.readouterr().out
    assert "| model | batch_size | loop_images_per_s |" in out and "| lenet | 50 |" in out
    record = json.loads((tmp_path / "throughput.json").read_text())
    assert record["mode"] == "throughput" and record["hardware"].startswith("cpu")
    [row] = record["rows"]
    assert row["loop_images_per_s"] > 0 and row["floor_images_per_s"] > 0 and row["dataloader_images_per_s"] > 0
    assert row["loop_vs_floor"] == pytest.approx(row["loop_images_per_s"] / row["floor_images_per_s"], rel=1e-2)
    assert (tmp_path / "outputs" / "bench").is_dir()  # the loop's own run folders land under outputs/


def test_time_to_accuracy_aggregates_over_seeds(tmp_path, monkeypatch, capsys):
    root = make_fake_cifar(tmp_path / "data", n_train=300, n_test=100)
    monkeypatch.chdir(tmp_path)
    bench("accuracy", "--recipe", "speedrun94", "--seeds", "2", "--target", "0.2", "--warmup-runs", "0",
                "--data", str(root), "debug=quick", "data.train_subset=300", "data.test_subset=100",
                "model.widths=[16,32,32]",  # the recipe on a narrow network: CPU seconds, not minutes
                "--json", str(tmp_path / "accuracy.json"))
    out = capsys.readouterr().out
    record = json.loads((tmp_path / "accuracy.json").read_text())
    aggregate, *seeds = record["rows"]
    accs = [s["test_acc"] for s in seeds]
    assert [s["seed"] for s in seeds] == [0, 1] and all(s["status"] == "completed" for s in seeds)
    assert aggregate["mean_test_acc"] == pytest.approx(sum(accs) / 2, abs=1e-5)
    assert aggregate["seeds_at_target"] == sum(a >= 0.2 for a in accs)
    assert "mean test accuracy over 2 seeds" in out


def test_ops_are_counted_one_by_one_and_per_step_from_two_runs():
    """bench.py ops (issue 25): each aten op once (by hand: add, slice (a view), mul, sum, then two host
    syncs: .item() and nonzero); per step, the difference of two runs over the difference of their steps:
    a run of 5 setup ops, 3 ops a step and 2 an epoch of 4 steps costs 3 + 2/4 = 3.5 ops a step."""
    import torch

    module = bench_module()
    x = torch.ones(3)
    with module.OpCounter() as counter:
        s = ((x + 1)[1:] ** 2).sum()
        s.item(), torch.nonzero(x)
    assert (counter.ops, counter.views, counter.syncs) == (6, 1, 2)
    assert counter.names == {"add": 1, "slice": 1, "pow": 1, "sum": 1, "_local_scalar_dense": 1, "nonzero": 1}

    def run(epochs: float) -> int:
        t = torch.zeros(())
        for _ in range(5):
            t.add_(1)
        for _ in range(int(epochs)):
            t.mul_(2), t.sub_(1)
            for _ in range(4):
                t.add_(1), t.add_(1), t.add_(1)
        return int(epochs) * 4

    result = module.per_step(run)
    assert (result["ops_per_step"], result["kernels_per_step"], result["syncs_per_step"], result["steps"]) == (3.5, 3.5, 0, 8)

