"""summary.json's provenance: a command a user can paste, and the git state of the code that ran."""
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig

from cifarbench.run.provenance import command_line, git_state

TRICKY = ["optim.lr=0.05", "model.channels=[6,16]", "trainer.device='tpu'", "data.root=/my data/cifar",
          "+tag=$HOME;rm -rf x"]


def test_command_line_quotes_each_override_for_the_shell():
    command = command_line(TRICKY)
    assert command == ("python -m cifarbench optim.lr=0.05 'model.channels=[6,16]' 'trainer.device='\"'\"'tpu'\"'\"'' "
                       "'data.root=/my data/cifar' '+tag=$HOME;rm -rf x'")
    assert shlex.split(command) == ["python", "-m", "cifarbench", *TRICKY]  # what the shell hands back
    assert command_line([]) == "python -m cifarbench"


def test_command_line_outside_hydra_uses_sys_argv(monkeypatch):
    from hydra.core.hydra_config import HydraConfig

    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: False))  # (earlier tests ran Hydra jobs)
    monkeypatch.setattr(sys, "argv", ["/site-packages/cifarbench/__main__.py", "model=lenet_bn", "optim.lr=0.1"])
    assert command_line() == "python -m cifarbench model=lenet_bn optim.lr=0.1"


@pytest.fixture
def hydra_job():
    """Sets HydraConfig as a running job would have it, for the given overrides; unsets it afterwards."""
    from hydra import compose, initialize_config_module

    def start(*overrides):
        with initialize_config_module("cifarbench.conf", version_base="1.3"):
            HydraConfig.instance().set_config(compose("config", overrides=list(overrides), return_hydra_config=True))

    yield start
    HydraConfig.instance().cfg = None


def test_command_line_in_a_hydra_job_uses_its_overrides_not_the_script_path(hydra_job, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/site-packages/cifarbench/__main__.py", "-m", "optim.lr=0.01,0.05"])
    hydra_job("optim.lr=0.05", "model.channels=[6,16]", "hydra.run.dir=/tmp/somewhere")
    assert command_line() == "python -m cifarbench optim.lr=0.05 'model.channels=[6,16]'"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_git_state_reports_the_revision_and_whether_tracked_files_changed(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "train.py").write_text("lr = 0.1\n")
    git(repo, "add", "train.py")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    revision = git(repo, "rev-parse", "--short", "HEAD")
    assert len(revision) >= 7
    (repo / "notes.txt").write_text("untracked\n")
    assert git_state(repo) == {"revision": revision, "dirty": False}  # untracked files do not count
    (repo / "train.py").write_text("lr = 0.2\n")
    assert git_state(repo) == {"revision": revision, "dirty": True}
    (repo / "sub").mkdir()
    assert git_state(repo / "sub") == {"revision": revision, "dirty": True}  # any folder of the checkout


def test_git_state_outside_a_checkout_or_without_git_is_unknown(tmp_path, monkeypatch):
    assert git_state(tmp_path) == {"revision": None, "dirty": None}
    repo = Path(__file__).resolve().parents[2]
    monkeypatch.setenv("PATH", str(tmp_path))  # no git to run
    assert git_state(repo) == {"revision": None, "dirty": None}


def test_git_state_defaults_to_the_running_source():
    import cifarbench

    source = Path(cifarbench.__file__).parent
    try:
        expected = git(source, "rev-parse", "--short", "HEAD")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("cifarbench is not running from a git checkout here")
    assert git_state()["revision"] == expected and isinstance(git_state()["dirty"], bool)
