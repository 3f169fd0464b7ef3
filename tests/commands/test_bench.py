"""scripts/bench.py runs end to end at toy size and records what it prints (its numbers are not judged)."""
import csv
import json
import re
import struct

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


# Study §1's sixteen variants: the epochs each trained in the study's ten minutes, worked out by hand from
# its config's reported figures: its reported epochs, else 600 s // its reported seconds per epoch, else
# (LeNet-Adam, LeNet-AdaBound: neither reported) the baseline LeNet's 150.
STUDY_EPOCHS = {"lenet": 150, "lenet_adam": 150, "lenet_adabound": 150, "lenet_bn": 117, "lenet_wide": 34,
                "lenet_deep": 49, "lenet_3x3": 98, "lenet_3x1": 65, "lenet_dropout": 110, "lenet_batch128": 73,
                "lenet_augment": 25, "lenet_bc": 20, "deep_cnn_bc": 10, "resnet_k12": 22, "resnet_k24": 20,
                "fashion_cnn": 15}


def test_studies_plans_each_variant_at_the_study_epochs_and_resnet34_under_its_budget():
    import argparse

    module = bench_module()
    args = argparse.Namespace(variants=module.study_variants(), studies=["tenminute", "resnet34"], length="epochs",
                              scale=20.0, resnet34_min=8.0)
    jobs = {label: (epochs, length, overrides) for label, epochs, length, overrides in module.study_jobs(args)}
    assert list(jobs) == [*sorted(STUDY_EPOCHS), "resnet34"]
    for variant, epochs in STUDY_EPOCHS.items():
        assert jobs[variant][0] == epochs and f"trainer.epochs={epochs}" in jobs[variant][2]
        assert f"trainer.eval_every={max(1, epochs // 10)}" in jobs[variant][2]  # ~10 evaluations, not one an epoch
    assert jobs["lenet_bn"][1] == "117 epochs (600 s / 5.1 s per epoch reported)"
    assert jobs["lenet_adam"][1] == "150 epochs (the baseline's: same network and batch)"
    assert sum(STUDY_EPOCHS.values()) == 1108  # the docstring's estimate of the whole run starts from this
    # ResNet-34: its recipe unchanged but for the 8-minute budget (the schedule then runs over budget progress)
    assert jobs["resnet34"] == (200, "budget 8 min (the study: 200 epochs in 7,992 s)",
                                ["experiment=resnet34", "trainer.budget_min=8.0"])
    args.length = "budget"
    assert module.study_jobs(args)[0][1:3] == (10, "budget 30 s (the study's 600 s / 20)")


def test_the_plan_estimates_a_run_from_its_steps_and_flops(compose_with):
    # LeNet's forward FLOPs by hand (a multiply-add is 2): conv 3→20 5×5 'same' on 32×32, 2·32²·20·3·25 =
    # 3,072,000; conv 20→50 5×5 on 16×16, 2·16²·50·20·25 = 12,800,000; FC 3,200→500, 3,200,000;
    # FC 500→10, 10,000
    flops = 3_072_000 + 12_800_000 + 3_200_000 + 10_000
    module = bench_module()
    cfg = compose_with("experiment=tenminute", "study/tenminute=lenet")
    assert module.forward_flops(cfg) == flops
    # 150 epochs of ⌈50,000 / 1,024⌉ = 49 steps at 1 ms, and (3 × 50,000 + 10,000) images an epoch at 50 TFLOP/s
    assert module.estimated_seconds(cfg, 150) == pytest.approx(150 * 49 * 1e-3 + flops * 160_000 * 150 / 50e12)


@pytest.mark.parametrize("length, remaining_s, runs_left, expected_s", [
    ("epochs", 480, 16, 480 * 16.5 / 272),  # in proportion to the estimates: 16.5 s of the 272 s left
    ("budget", 480, 16, 30),  # the study's 600 s / 20, which the 8 minutes give every run
    ("budget", 200, 10, 20),  # runs before took more than theirs: an equal share of what is left
])
def test_the_runs_share_the_minutes_by_their_estimates_or_equally(length, remaining_s, runs_left, expected_s):
    import argparse

    args = argparse.Namespace(length=length, scale=20.0)
    assert bench_module().time_share(args, remaining_s, 16.5, 272, runs_left) == pytest.approx(expected_s)


@pytest.mark.parametrize("delta, epochs, stopped_by, expected", [
    (0.004, 150, "epochs", "closed"),
    (-0.02, 150, "epochs", "data through JPEG"),  # within the 3.4 points the data costs airbench94
    (-0.05, 150, "epochs", "data through JPEG; 1.6 points beyond the data's: not explained"),
    (-0.10, 25, "budget", "data through JPEG; epochs: 25 of the study's 200 (budget 480 s)"),  # ResNet-34, 8 min
    (None, None, "", ""),  # nothing measured (the run failed)
])
def test_each_gap_names_where_it_comes_from(delta, epochs, stopped_by, expected):
    row = {"delta_test_acc": delta, "measured_epochs": epochs, "stopped_by": stopped_by, "budget_min": 8.0}
    assert bench_module().gap_sources(row, 150 if epochs != 25 else 200, toy=False) == expected


def test_studies_toy_writes_the_table_and_figure_from_the_runs_summaries(shared_fake_root, tmp_path, monkeypatch,
                                                                         capsys):
    monkeypatch.chdir(tmp_path)
    bench("studies", "--toy", "--data", str(shared_fake_root), "--out", str(tmp_path / "out"),
          "--json", str(tmp_path / "studies.json"), "data.train_subset=null", "data.test_subset=null")
    out = tmp_path / "out"
    table = (out / "reported_vs_measured.md").read_text()
    assert "went through JPEG" in table.split("| study |")[0] and "Toy run" in table  # the caveat above the table
    wall = float(re.search(r"they took (\d+) s of wall time in all", table).group(1))
    summaries = [json.loads(p.read_text()) for p in out.glob("*/seed0/summary.json")]
    assert wall >= round(sum(s["train_seconds"] for s in summaries)) - 1  # the training, and more
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| tenminute |")]
    assert [row[1] for row in rows] == ["LeNet (baseline)", "LeNet-Adam"]
    with open(out / "reported_vs_measured.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    for row, csv_row, variant, reported, length in zip(
            rows, csv_rows, ("lenet", "lenet_adam"), (68.0, 70.0),
            ("150 epochs (reported)", "150 epochs (the baseline's: same network and batch)")):
        summary = json.loads((out / variant / "seed0" / "summary.json").read_text())
        acc = 100 * summary["final_test_acc"]
        assert summary["status"] == "completed" and summary["epochs"] == 1
        assert row[2:7] == [f"{reported:.2f}%", f"{acc:.2f}% (n=1)", f"{acc - reported:+.2f}", length,
                            "data through JPEG; epochs: 1 of the study's 150 (toy run)"]
        assert float(csv_row["measured_test_acc_mean"]) == pytest.approx(summary["final_test_acc"])
        assert float(csv_row["measured_epochs"]) == 1 and csv_row["stopped_by"] == "epochs"
    # the two runs share the 8 minutes by their estimates (equal: the same network, batch and epochs): LeNet
    # first, with half of them; LeNet-Adam with what is left, nearly all 8 as the first took seconds
    assert float(csv_rows[0]["estimated_seconds"]) == float(csv_rows[1]["estimated_seconds"])
    assert float(csv_rows[0]["budget_min"]) == pytest.approx(4.0, abs=1e-3)
    assert 7.0 < float(csv_rows[1]["budget_min"]) < 8.0
    png = (out / "reported_vs_measured.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (800, 200)  # IHDR: 8 × 2 in
    assert [r["variant"] for r in json.loads((tmp_path / "studies.json").read_text())["rows"]] == [
        "LeNet (baseline)", "LeNet-Adam"]
    assert "| tenminute | LeNet (baseline) |" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--studies", "tenminute,chainer"], "--studies: unknown 'chainer'; choose from tenminute, resnet34"),
    (["--variants", "lenet,lenet5"], "--variants: unknown 'lenet5'; choose from deep_cnn_bc,"),
    (["--scale", "0"], "--scale 0 --total-min 8 --resnet34-min 8: --seeds must be at least 1, the others above 0"),
    (["trainer.batch_size=0"], "bench.py studies: lenet: trainer.batch_size"),  # checked before the first run
])
def test_studies_refuses_bad_options_in_one_line_before_any_run(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        bench("studies", "--toy", *args)
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "outputs").exists()


def test_studies_reference_run_needs_cuda_and_airbench_before_any_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="airbench"):  # on this CPU machine: no CUDA (or no airbench package)
        bench("studies", "--toy", "--reference-run", "--device", "cpu")
    assert not (tmp_path / "outputs").exists()


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


def test_the_gpu_busy_time_counts_overlapping_kernels_once(tmp_path, monkeypatch, capsys):
    """bench.py ops --profile (issue 25: host µs, GPU-busy µs and kernel launches per step): the busy time
    is the union of the kernels' spans, by hand: [0, 2] ∪ [1, 3] ∪ [5, 6] ∪ [5.5, 5.7] = 3 + 1 = 4; a span
    inside another adds nothing. Without CUDA, --profile is refused in one line before any run."""
    module = bench_module()
    assert module.busy_seconds([(5, 6), (0, 2), (1, 3), (5.5, 5.7)]) == 4
    assert module.busy_seconds([(0, 10), (2, 3), (4, 4)]) == 10 and module.busy_seconds([]) == 0
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="the CUDA profile needs --device cuda"):
        bench("ops", "--recipe", "speedrun94", "--device", "cpu", "--profile", "--no-airbench")
    assert not (tmp_path / "outputs").exists()


def test_the_floor_runs_under_the_loops_cudnn_settings(compose_with, monkeypatch):
    """Issue 25: the throughput floor ran with cudnn.benchmark off, the loop with it on (set_up's
    configure_determinism), so loop/floor was not like for like. The floor now sets what the loop sets."""
    import torch

    cfg = compose_with("model=lenet5", "trainer.batch_size=4", "trainer.device=cpu")
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    batches = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))] * 3
    assert bench_module().step_images_per_s(cfg, batches, torch.device("cpu"), warmup=1) > 0
    assert torch.backends.cudnn.benchmark is True  # as train() sets it for a run that is not deterministic
