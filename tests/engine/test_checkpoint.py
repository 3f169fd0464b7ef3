"""Checkpoints: kill-and-resume gives exactly the uninterrupted metrics; loading is weights_only."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image
import torch
from helpers import make_fake_cifar, metrics_without_timing

from cifarbench.run.checkpoint import Checkpoint, CheckpointError, load_checkpoint

RUN = ("model=lenet5", "trainer.epochs=4", "trainer.batch_size=16", "trainer.deterministic=true",
       "trainer.progress=false", "trainer.plots=none", "trainer.eval_batch_size=100", "data.preprocess=meanstd")


def cli(*overrides):
    return [sys.executable, "-m", "cifarbench", *overrides]


@pytest.mark.long
def test_killed_run_resumes_to_exactly_the_same_metrics(tmp_path, compose_with):
    from cifarbench.engine.loop import train

    root = make_fake_cifar(tmp_path / "data", n_train=480, n_test=100)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the processes below: the same arithmetic
    try:
        whole = train(compose_with(*RUN, f"data.root={root}"), tmp_path / "whole")  # uninterrupted, in-process
    finally:
        torch.set_num_threads(threads)
    assert whole["status"] == "completed"

    killed_dir = tmp_path / "killed"
    process = subprocess.Popen(cli(*RUN, f"data.root={root}", f"hydra.run.dir={killed_dir}"), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed_dir / "checkpoints" / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    summary = json.loads((killed_dir / "summary.json").read_text())
    assert summary["status"] == "running", "the run must be killed before it finishes (make it longer)"
    epochs_before = len(metrics_without_timing(killed_dir / "metrics.csv"))
    assert epochs_before < 4

    resumed = subprocess.run(cli(*RUN, "trainer.resume=auto", f"data.root={root}", f"hydra.run.dir={killed_dir}"),
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout + resumed.stderr
    assert metrics_without_timing(killed_dir / "metrics.csv") == metrics_without_timing(tmp_path / "whole" / "metrics.csv")
    assert json.loads((killed_dir / "summary.json").read_text())["status"] == "completed"


def test_checkpoints_hold_what_a_resume_needs(tmp_path, fake_cifar_root, compose_with):
    from cifarbench.engine.loop import train

    train(compose_with("trainer.epochs=2", "trainer.batch_size=32", "trainer.progress=false", "trainer.plots=none",
                       f"data.root={fake_cifar_root}"), tmp_path)
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state.loader["epoch"] == 2 and state.state["step"] == 14 and len(state.state["rows"]) == 2
    saved = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert {"format", "model", "optimizer", "scaler", "loader", "window", "state", "ranks", "config", "preprocess",
            "classes", "loggers", "ema", "lookahead"} == set(saved)
    assert state.config["model"]["name"] == "lenet" and isinstance(state.config, dict)
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert best.state["rows"][-1]["test_acc"] == max(r["test_acc"] for r in state.state["rows"])
    assert not list((tmp_path / "checkpoints").glob(".*.tmp")), "no temporary files left behind"


@pytest.mark.parametrize("links", [True, False])
def test_best_pt_shares_last_pt_bytes_and_keeps_them_when_last_pt_moves_on(tmp_path, monkeypatch, links):
    """best.pt is a hard link to last.pt (nothing copied), or a copy where the file system has no links;
    either way a later last.pt leaves it as it was."""
    from cifarbench.run.checkpoint import save_checkpoint
    from cifarbench.run.recorder import Recorder

    def at_step(step: int) -> Checkpoint:
        return Checkpoint(model={}, optimizer={}, scaler={}, ema=None, lookahead=None, loader={}, window={},
                          state={"step": step}, ranks=[], config={}, preprocess={}, classes=[])

    if not links:
        def no_links(source, target):
            raise OSError(1, "Operation not permitted")
        monkeypatch.setattr("cifarbench.core.files.os.link", no_links)
    recorder = Recorder(tmp_path, {"status": "running"}, plots="none")
    best, last = recorder.folder.best, recorder.folder.last
    recorder.save(at_step(1), best=True)
    assert (os.stat(best).st_ino == os.stat(last).st_ino) is links
    recorder.save(at_step(2))
    assert load_checkpoint(best).state["step"] == 1 and load_checkpoint(last).state["step"] == 2
    save_checkpoint(last, at_step(3))
    assert load_checkpoint(best).state["step"] == 1
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.pt", "last.pt"]


def test_a_run_resumed_into_a_new_folder_has_the_best_pt_its_summary_names(tmp_path, fake_cifar_root, compose_with):
    """Seen: resumed from another folder's last.pt (no better evaluation after), the new folder's summary
    said best_epoch 1 but it held no best.pt, so `inspect ckpt=<new run>/checkpoints/best.pt` failed."""
    from cifarbench.engine.loop import train

    run = ("model=lenet5", "trainer.epochs=2", "trainer.batch_size=32", "trainer.progress=false",
           "trainer.plots=none", f"data.root={fake_cifar_root}")
    train(compose_with(*run), tmp_path / "first")
    summary = train(compose_with(*run, f"trainer.resume={tmp_path / 'first' / 'checkpoints' / 'last.pt'}"),
                    tmp_path / "again")  # resumed after its final evaluation: no new one
    best = load_checkpoint(tmp_path / "again" / "checkpoints" / "best.pt")
    assert best.state["rows"][-1]["epoch"] == summary["best_epoch"]
    assert best.state["rows"][-1]["test_acc"] == summary["best_test_acc"]
    assert load_checkpoint(tmp_path / "first" / "checkpoints" / "best.pt").state == best.state  # as it was


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_checkpoint_with_arbitrary_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "cifarbench-checkpoint/1", "model": Payload()}, path)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(path)


def test_a_file_that_is_not_a_checkpoint_gets_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "notes.txt")
    # Seen (a new user): a photo given as ckpt= was refused "as holding objects other than tensors".
    Image.new("RGB", (4, 4)).save(tmp_path / "photo.png")
    with pytest.raises(CheckpointError, match=r"photo.png is not a readable checkpoint \(torch.save writes a zip "
                                              r"archive; this file is not one\)$"):
        load_checkpoint(tmp_path / "photo.png")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a cifarbench checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"format": "cifarbench-checkpoint/1", "model": {}, "config": {}}, tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match="cut.pt is a damaged cifarbench checkpoint: it lacks optimizer, scaler, "
                                              "ema, lookahead, loader, window, state, ranks, preprocess, classes$"):
        load_checkpoint(tmp_path / "cut.pt")


def test_where_files_live_is_no_reason_to_refuse_a_resume_or_to_train_a_finished_job_again():
    """paths.* (run folders, datasets, the MLflow store) may differ as data.root may; a checkpoint or summary
    written before the paths group existed has none."""
    from cifarbench.run.setting import resume_conflicts, same_run

    before = {"trainer": {"seed": 0}, "data": {"root": "/a"}}
    now = {"trainer": {"seed": 0}, "data": {"root": "/b"},
           "paths": {"output_dir": "outputs", "data_dir": "/b", "mlflow_uri": "sqlite:///outputs/mlflow.db"}}
    moved = {**now, "paths": {**now["paths"], "output_dir": "/scratch", "data_dir": "/c"}}
    for old, new in ((before, now), (now, moved)):
        assert resume_conflicts(old, new) == [] and same_run(old, new)
