"""A wheel install finds its Hydra configs: conf/ ships inside the package as cifarbench.conf."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_install_runs_from_anywhere(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheels,
                    REPO], check=True, capture_output=True)
    venv = tmp_path / "venv"
    # System site-packages supply torch & co; the wheel itself goes into the venv and wins.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], check=True)
    python = venv / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", *wheels.glob("cifarbench-*.whl")],
                   check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([python, "-c", "import cifarbench; print(cifarbench.__file__)"], cwd=elsewhere,
                           check=True, capture_output=True, text=True).stdout
    assert Path(where.strip()).is_relative_to(venv)
    composed = subprocess.run([python, "-m", "cifarbench", "--cfg", "job", "model=lenet", "optim=adam"],
                              cwd=elsewhere, capture_output=True, text=True)
    assert composed.returncode == 0, composed.stderr
    assert "name: lenet" in composed.stdout and "name: adam" in composed.stdout
    script = subprocess.run([venv / "bin" / "cifarbench", "--cfg", "job"], cwd=elsewhere, capture_output=True,
                            text=True)
    assert script.returncode == 0 and "trainer:" in script.stdout, script.stderr
