"""Predict and inspect with a trained checkpoint: real image files, a fake one, and the diagnostics."""
import json

import numpy as np
import pytest
from conftest import fake_images, run_cli
from PIL import Image


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from conftest import make_fake_cifar

    base = tmp_path_factory.mktemp("trained")
    root = make_fake_cifar(base / "data", n_train=500, n_test=100)
    result = run_cli("trainer.epochs=3", "trainer.batch_size=32", "optim=adam", "aug=none", "trainer.progress=false",
                     f"data.root={root}", f"hydra.run.dir={base / 'run'}")
    assert result.returncode == 0, result.stderr
    return base / "run", root


def test_predict_classifies_png_and_jpeg_and_reports_a_fake_image(tmp_path, trained_run):
    run, _ = trained_run
    labels = np.array([3, 7])
    pixels = fake_images(labels, np.random.default_rng(5)).reshape(2, 3, 32, 32).transpose(0, 2, 3, 1)
    Image.fromarray(pixels[0]).resize((96, 96)).save(tmp_path / "cat.png")  # not 32×32: predict resizes
    Image.fromarray(pixels[1]).save(tmp_path / "horse.jpg", quality=95)
    (tmp_path / "notes.jpg").write_text("this is not an image")
    images = f"images=[{tmp_path / 'cat.png'},{tmp_path / 'notes.jpg'},{tmp_path / 'missing.png'},{tmp_path / 'horse.jpg'}]"
    result = run_cli(f"ckpt={run / 'checkpoints' / 'best.pt'}", images, "topk=3", f"json={tmp_path / 'out.json'}",
                     module="cifarbench.predict")
    assert result.returncode == 1  # some files failed...
    assert "notes.jpg: not an image" in result.stderr and "missing.png: no such file" in result.stderr
    out = json.loads((tmp_path / "out.json").read_text())  # ...and the others were still classified
    assert out[str(tmp_path / "cat.png")]["prediction"] == "cat"
    assert out[str(tmp_path / "horse.jpg")]["prediction"] == "horse"
    top = out[str(tmp_path / "cat.png")]["top"]
    assert len(top) == 3 and top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]
    assert "error" in out[str(tmp_path / "notes.jpg")]


def test_run_writes_diagnostics_and_inspect_rebuilds_them(tmp_path, trained_run):
    run, root = trained_run
    summary = json.loads((run / "summary.json").read_text())
    per_class = summary["per_class_acc"]
    assert set(per_class) == {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}
    for name in ("confusion.png", "samples.png"):
        with Image.open(run / name) as image:
            assert image.size[0] > 400
    result = run_cli(f"ckpt={run / 'checkpoints' / 'last.pt'}", f"out={tmp_path}", f"data.root={root}",
                     module="cifarbench.diagnostics")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout[:result.stdout.rindex("}") + 1])
    assert report["test_acc"] == pytest.approx(summary["final_test_acc"])
    assert report["per_class_acc"] == pytest.approx(per_class, nan_ok=True)
    assert (tmp_path / "confusion.png").is_file() and (tmp_path / "samples.png").is_file()
