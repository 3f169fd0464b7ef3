"""`cifarbench -m ... --plan` / `cifarbench plan`: a sweep's jobs, the ones that would fail, its folders
and a time estimate, with nothing trained into its folders."""
import pytest
from helpers import cli_in_process
from omegaconf import OmegaConf

from cifarbench.commands.plan import Probe, evaluations, images_of, job_seconds


def test_a_twelve_job_plan_lists_its_jobs_and_folders_flags_the_invalid_ones_and_trains_nothing(
        tmp_path, monkeypatch, capsys, shared_fake_root):
    monkeypatch.chdir(tmp_path)
    status = cli_in_process(monkeypatch, "-m", "model=lenet5", "optim.lr=0.01,0.02,-1", "trainer.seed=0,1,2,3",
                            "trainer.epochs=2", f"data.root={shared_fake_root}", "trainer.batch_size=32",
                            "trainer.plots=none", "hydra.sweep.dir=sweep", "--plan")
    out = capsys.readouterr().out
    assert status == 1  # some jobs would fail
    assert out.startswith("plan: 12 job(s), into sweep/ (nothing is trained there)\n")
    first = out.splitlines()[1]  # job folders named as Hydra names them (data.root is not in the name)
    assert first.startswith("  #0 model=lenet5 optim.lr=0.01 trainer.seed=0 trainer.epochs=2 data.root=")
    assert first.endswith(" → 0_model=lenet5,optim.lr=0.01,trainer.batch_size=32,trainer.epochs=2,trainer.seed=0/")
    failing = [line for line in out.splitlines() if "must be a positive number" in line]
    assert len(failing) == 4 and all(line.startswith("  #") and "optim.lr=-1" in line for line in failing)
    assert "4 job(s) would fail:" in out
    assert "probe of lenet5 (batch 32): " in out and "estimate: ≈ " in out and "for 8 job(s) on " in out
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no sweep folder, no outputs/


def test_a_sweep_that_does_not_compose_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli_in_process(monkeypatch, "plan", "trainer.epochz=1", "--no-probe") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "epochz" in err[0]


def test_evaluations_and_a_jobs_seconds_by_hand():
    assert [evaluations(3, 1), evaluations(2.5, 1), evaluations(10, 4), evaluations(8, 4), evaluations(0.5, 1)] == [
        3, 3, 3, 2, 1]
    cfg = OmegaConf.create({"data": {"name": "cifar10", "train_subset": 1000, "test_subset": 200, "val_split": 0},
                            "trainer": {"epochs": 3, "eval_every": 1, "budget_min": None}})
    probe = Probe(images_per_s=100.0, fixed_s=5.0, device="cpu")
    # 5 s fixed + 3 × 1000 images at 100/s + 3 evaluations × 200 images at 300/s
    assert job_seconds(cfg, probe) == pytest.approx(5 + 30 + 2)
    cfg.trainer.budget_min = 0.1  # training capped at 6 s
    assert job_seconds(cfg, probe) == pytest.approx(5 + 6 + 2)
    mnist = OmegaConf.create({"name": "mnist", "train_subset": 0.02, "test_subset": None, "val_split": 100})
    assert images_of(OmegaConf.create({"data": mnist})) == (round(0.02 * 60_000) - 100, 10_000 + 100)
