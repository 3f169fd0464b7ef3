"""A wheel install holds every module and finds its Hydra configs: conf/ ships inside the package as
cifarbench.conf, and pyproject.toml's package list (by hand, for that mapping) names every package."""
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
# Import every module of the installed package and list them (walk_packages finds what the wheel holds).
IMPORT_ALL = """
import importlib, pkgutil, cifarbench
names = ["cifarbench", *(m.name for m in pkgutil.walk_packages(cifarbench.__path__, "cifarbench."))]
for name in names:
    importlib.import_module(name)
print(" ".join(sorted(names)))
"""


def source_modules() -> list[str]:
    return sorted(".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
                  for path in (SRC / "cifarbench").rglob("*.py"))


def test_pyproject_lists_every_package():
    tomllib = pytest.importorskip("tomllib")  # (Python 3.11+)
    listed = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = [".".join(init.parent.relative_to(SRC).parts) for package in ("cifarbench", "hydra_plugins")
             for init in (SRC / package).rglob("__init__.py")]
    assert sorted(listed) == sorted([*found, "cifarbench.conf"])


def test_wheel_install_runs_from_anywhere(tmp_path):
    wheels, source = tmp_path / "wheels", tmp_path / "source"
    # Built from a copy of what the wheel is made of: setuptools reuses a build/ folder beside the sources,
    # where a module deleted since an earlier build would still be packed.
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for name in ("src", "conf"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheels,
                    source], check=True, capture_output=True)
    venv = tmp_path / "venv"
    # The packages of the interpreter running the tests supply torch & co: its site-packages, named in a .pth
    # (--system-site-packages alone shows the base interpreter's, which in a virtual environment, as the
    # README's install makes, lack them: "No module named 'omegaconf'"); the wheel goes into the venv and wins.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], check=True)
    python = venv / "bin" / "python"
    venv_site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip()
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(venv_site) / "test_parent_env.pth").write_text("".join(f"{path}\n" for path in ours))
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", *wheels.glob("cifarbench-*.whl")],
                   check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([python, "-c", "import cifarbench; print(cifarbench.__file__)"], cwd=elsewhere,
                           check=True, capture_output=True, text=True).stdout
    assert Path(where.strip()).is_relative_to(venv)
    imported = subprocess.run([python, "-c", IMPORT_ALL], cwd=elsewhere, capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.split() == sorted([*source_modules(), "cifarbench.conf"])  # (hydra_plugins: below)
    # (with the search overlay: Hydra finds the wheel's sweeper plugin, hydra_plugins/cifarbench_sweepers)
    composed = subprocess.run([python, "-m", "cifarbench", "--cfg", "all", "model=lenet", "optim=adam",
                               "hparams_search=lenet_optuna"], cwd=elsewhere, capture_output=True, text=True)
    assert composed.returncode == 0, composed.stderr
    assert "name: lenet" in composed.stdout and "name: adam" in composed.stdout
    assert "_target_: hydra_plugins.cifarbench_sweepers.OptunaSweeper" in composed.stdout
    script = subprocess.run([venv / "bin" / "cifarbench", "--cfg", "job"], cwd=elsewhere, capture_output=True,
                            text=True)
    assert script.returncode == 0 and "trainer:" in script.stdout, script.stderr
