"""Predict and inspect with a trained checkpoint: real image files, a fake one, and the diagnostics."""
import json

import numpy as np
import pytest
from helpers import fake_images
from PIL import Image

# The module-scoped runs below are shared by its tests: one pytest-xdist worker runs them all.
pytestmark = pytest.mark.xdist_group("test_predict")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, compose_with):
    """A run folder of LeNet trained in-process for 3 epochs on the fake dataset, and that dataset."""
    from helpers import make_fake_cifar

    from cifarbench.engine.loop import train

    base = tmp_path_factory.mktemp("trained")
    root = make_fake_cifar(base / "data", n_train=500, n_test=100)
    summary = train(compose_with("trainer.epochs=3", "trainer.batch_size=32", "optim=adam", "aug=none",
                                 "trainer.progress=false", f"data.root={root}"), base / "run")
    assert summary["status"] == "completed"
    return base / "run", root


def test_predict_classifies_png_and_jpeg_and_reports_a_fake_image(tmp_path, trained_run, capsys):
    from cifarbench.commands.predict import main as predict

    run, _ = trained_run
    labels = np.array([3, 7])
    pixels = fake_images(labels, np.random.default_rng(5)).reshape(2, 3, 32, 32).transpose(0, 2, 3, 1)
    Image.fromarray(pixels[0]).resize((96, 96)).save(tmp_path / "cat.png")  # not 32×32: predict resizes
    Image.fromarray(pixels[1]).save(tmp_path / "horse.jpg", quality=95)
    (tmp_path / "notes.jpg").write_text("this is not an image")
    images = f"images=[{tmp_path / 'cat.png'},{tmp_path / 'notes.jpg'},{tmp_path / 'missing.png'},{tmp_path / 'horse.jpg'}]"
    assert predict([f"ckpt={run / 'checkpoints' / 'best.pt'}", images, "topk=3", f"json={tmp_path / 'out.json'}"]) == 1
    errors = capsys.readouterr().err  # some files failed...
    assert "notes.jpg: not an image" in errors and "missing.png: no such file" in errors
    out = json.loads((tmp_path / "out.json").read_text())  # ...and the others were still classified
    assert out[str(tmp_path / "cat.png")]["prediction"] == "cat"
    assert out[str(tmp_path / "horse.jpg")]["prediction"] == "horse"
    top = out[str(tmp_path / "cat.png")]["top"]
    assert len(top) == 3 and top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]
    assert "error" in out[str(tmp_path / "notes.jpg")]


def test_run_writes_diagnostics_and_inspect_rebuilds_them(tmp_path, trained_run, capsys):
    from cifarbench.commands.inspect import main as inspect

    run, root = trained_run
    summary = json.loads((run / "summary.json").read_text())
    per_class = summary["per_class_acc"]
    assert set(per_class) == {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}
    for name in ("confusion.png", "samples.png"):
        with Image.open(run / name) as image:
            assert image.size[0] > 400
    capsys.readouterr()
    assert inspect([f"ckpt={run / 'checkpoints' / 'last.pt'}", f"out={tmp_path}", f"data.root={root}"]) == 0
    printed = capsys.readouterr().out
    report = json.loads(printed[:printed.rindex("}") + 1])
    assert report["test_acc"] == pytest.approx(summary["final_test_acc"])
    assert report["per_class_acc"] == pytest.approx(per_class, nan_ok=True)
    assert (tmp_path / "confusion.png").is_file() and (tmp_path / "samples.png").is_file()


# read_image on what photo libraries write: each file is made with Pillow (16-bit RGB(A) PNGs, which
# Pillow cannot write, by hand) and decoded to the 8-bit RGB image a viewer shows, within ±1.
def smooth_rgb(seed: int = 0) -> np.ndarray:
    """(32, 32, 3) uint8: random colours smoothed over 4×4 blocks, so JPEG keeps them to a few levels."""
    blocks = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return blocks.repeat(4, axis=0).repeat(4, axis=1)


def write_png16(path, samples: np.ndarray):
    """A 16-bit PNG of (H, W, C) uint16 samples, C = 3 (RGB) or 4 (RGBA)."""
    import struct
    import zlib

    height, width, channels = samples.shape
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in samples)  # filter type 0 on each row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, {3: 2, 4: 6}[channels], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The expected composite of colour over a white background, exact in float."""
    a = alpha[..., None] / 255
    return rgb * a + 255 * (1 - a)


def assert_image(path, expected_hwc: np.ndarray, tolerance: float = 1):
    from cifarbench.commands.predict import read_image

    decoded = read_image(path)
    assert decoded.shape == (3, 32, 32) and decoded.dtype == np.uint8
    error = np.abs(decoded.transpose(1, 2, 0).astype(float) - np.asarray(expected_hwc, float))
    assert error.max() <= tolerance, f"off by up to {error.max()}"


def test_16_bit_greyscale_png_is_scaled_not_clipped(tmp_path):
    grey = smooth_rgb()[..., 0]
    low_bytes = np.random.default_rng(1).integers(0, 256, grey.shape)
    Image.fromarray((grey.astype(np.uint16) << 8) + low_bytes.astype(np.uint16)).save(tmp_path / "grey16.png")
    with Image.open(tmp_path / "grey16.png") as image:
        assert image.mode in ("I;16", "I")  # the case that used to read as all 255
    assert_image(tmp_path / "grey16.png", np.repeat(grey[..., None], 3, axis=2))


@pytest.mark.parametrize("channels", [3, 4])
def test_16_bit_rgb_and_rgba_png(tmp_path, channels):
    rgb, alpha = smooth_rgb(2), smooth_rgb(3)[..., 0]
    eight_bit = np.dstack([rgb, alpha])[..., :channels]
    write_png16(tmp_path / "deep.png", eight_bit.astype(np.uint16) * 257)
    assert_image(tmp_path / "deep.png", rgb if channels == 3 else on_white(rgb, alpha))


def test_palette_with_a_transparent_entry_shows_white_there(tmp_path):
    indices = np.arange(32 * 32).reshape(32, 32) % 3
    image = Image.fromarray(indices.astype(np.uint8), mode="P")
    image.putpalette([200, 10, 20, 5, 90, 250, 0, 0, 0])
    image.save(tmp_path / "palette.png", transparency=2)  # entry 2 (black) is transparent
    expected = np.array([[200, 10, 20], [5, 90, 250], [255, 255, 255]])[indices]
    assert_image(tmp_path / "palette.png", expected, tolerance=0)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_on_white(tmp_path, mode):
    rgb, alpha = smooth_rgb(4), smooth_rgb(5)[..., 1]
    colour = rgb if mode == "RGBA" else rgb[..., :1]
    Image.fromarray(np.dstack([colour, alpha]), mode=mode).save(tmp_path / "alpha.png")
    assert_image(tmp_path / "alpha.png", on_white(np.broadcast_to(colour, rgb.shape), alpha))


def test_cmyk_jpeg_reads_as_its_rgb(tmp_path):
    rgb = smooth_rgb(6)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "print.jpg", quality=100)
    with Image.open(tmp_path / "print.jpg") as image:
        assert image.mode == "CMYK"
    assert_image(tmp_path / "print.jpg", rgb, tolerance=3)  # JPEG's own loss, not inverted or swapped colours


def test_exif_orientation_is_applied(tmp_path):
    upright = smooth_rgb(7)
    stored = Image.fromarray(np.rot90(upright).copy())  # a camera held sideways stores the pixels turned
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: turn 90° clockwise to display
    stored.save(tmp_path / "phone.jpg", quality=100, subsampling=0, exif=exif)  # 4:4:4: sharp colour edges
    assert_image(tmp_path / "phone.jpg", upright, tolerance=3)
    assert np.abs(np.asarray(stored, float) - upright).max() > 100  # unrotated would fail the check above


@pytest.mark.parametrize("name", ["anim.gif", "anim.png"])
def test_an_animation_gives_its_first_frame(tmp_path, name):
    first, second = smooth_rgb(8) // 64 * 64, 255 - smooth_rgb(9) // 64 * 64  # ≤ 64 colours: GIF keeps them
    frames = [Image.fromarray(first), Image.fromarray(second)]
    frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(tmp_path / name) as image:
        assert image.n_frames == 2
    assert_image(tmp_path / name, first, tolerance=0)


def test_non_images_floats_and_decompression_bombs_are_one_line_naming_the_file(tmp_path, monkeypatch):
    from cifarbench.commands.predict import read_image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow warns above this and refuses above twice it
    Image.new("RGB", (40, 40)).save(tmp_path / "warned.png")  # 1600 pixels: only a warning in Pillow
    Image.new("RGB", (50, 50)).save(tmp_path / "refused.png")  # 2500 pixels: an error in Pillow
    Image.new("F", (20, 20)).save(tmp_path / "float.tif")
    (tmp_path / "notes.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    for name, reason in [("warned.png", "decompression bomb"), ("refused.png", "decompression bomb"),
                         ("float.tif", "floating-point pixels"), ("notes.png", "not an image")]:
        with pytest.raises(ValueError) as error:
            read_image(tmp_path / name)
        message = str(error.value)
        assert message.startswith(f"{tmp_path / name}: ") and reason in message and "\n" not in message


def test_predict_skips_a_decompression_bomb_and_classifies_the_rest(tmp_path, trained_run, monkeypatch, capsys):
    from cifarbench.commands.predict import main

    run, _ = trained_run
    pixels = fake_images(np.array([3]), np.random.default_rng(5)).reshape(3, 32, 32).transpose(1, 2, 0)
    Image.fromarray(pixels).save(tmp_path / "cat.png")  # 1024 pixels, under the limit below
    Image.new("RGB", (60, 60)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    code = main([f"ckpt={run / 'checkpoints' / 'best.pt'}", f"images=[{tmp_path / 'bomb.png'},{tmp_path / 'cat.png'}]",
                 f"json={tmp_path / 'out.json'}"])
    assert code == 1
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"error: {tmp_path / 'bomb.png'}: refused as a possible")
    out = json.loads((tmp_path / "out.json").read_text())
    assert out[str(tmp_path / "cat.png")]["prediction"] == "cat" and "error" in out[str(tmp_path / "bomb.png")]


def test_images_expand_folders_and_glob_patterns_in_sorted_order(tmp_path):
    from cifarbench.commands.predict import expand_images

    photos = tmp_path / "photos"
    (photos / "deeper").mkdir(parents=True)
    for name in ("b.png", "a.JPG", "notes.txt", "deeper/c.png"):
        (photos / name).write_bytes(b"")
    files, passed_over, errors = expand_images([str(photos), str(photos / "**" / "*.png"), str(tmp_path / "x.png"),
                                                str(tmp_path / "*.gif"), str(tmp_path)])
    assert files == [str(photos / "a.JPG"), str(photos / "b.png"),  # the folder: its image files, not deeper
                     str(photos / "b.png"), str(photos / "deeper" / "c.png"),  # the pattern, ** recursive
                     str(tmp_path / "x.png")]  # a plain path as it is (read_image says it is missing)
    assert passed_over == [str(photos / "notes.txt")]
    assert errors == [f"{tmp_path / '*.gif'}: no image files match", f"{tmp_path}: no image files in this folder"]


def test_predict_on_a_folder_counts_what_it_read_and_skipped(tmp_path, trained_run, capsys):
    from cifarbench.commands.predict import main

    run, _ = trained_run
    pixels = fake_images(np.array([3, 7]), np.random.default_rng(5)).reshape(2, 3, 32, 32).transpose(0, 2, 3, 1)
    Image.fromarray(pixels[0]).save(tmp_path / "cat.png")
    Image.fromarray(pixels[1]).save(tmp_path / "horse.png")
    (tmp_path / "broken.jpg").write_text("this is not an image")
    (tmp_path / "notes.txt").write_text("a list of photos")
    code = main([f"ckpt={run / 'checkpoints' / 'best.pt'}", f"images={tmp_path}", "topk=1"])
    out, err = capsys.readouterr()
    assert code == 1 and err.startswith(f"error: {tmp_path / 'broken.jpg'}: not an image that Pillow can read")
    how, *lines = out.splitlines()
    assert how.startswith(f"{run / 'checkpoints' / 'best.pt'}: evaluated as its run did")
    assert len(lines) == 3
    assert lines[0].startswith(f"{tmp_path / 'cat.png'}: cat   cat ") and lines[0].endswith("%")
    assert lines[1].startswith(f"{tmp_path / 'horse.png'}: horse   horse ")
    assert lines[2] == (f"classified 2 image(s); skipped 1 unreadable and 1 not an image by extension "
                        f"({tmp_path / 'notes.txt'})")


@pytest.fixture(scope="module")
def ema_tta_run(tmp_path_factory, compose_with):
    """A run that evaluates with EMA weights and flip TTA (the issue's `lenet_bn … trainer.tta=flip`), in
    bf16 on the CPU (issue 26: inspect evaluated it in fp32, 0.276 where the run said 0.278)."""
    from helpers import make_fake_cifar

    from cifarbench.engine.loop import train

    base = tmp_path_factory.mktemp("ema_tta")
    root = make_fake_cifar(base / "data", n_train=300, n_test=150)
    summary = train(compose_with("model=lenet_bn", "trainer.epochs=1", "trainer.batch_size=32", "trainer.ema=0.9",
                                 "trainer.tta=flip", "trainer.eval_batch_size=64", "data.test_subset=130",
                                 "trainer.amp=bf16", "trainer.device=cpu", "trainer.progress=false",
                                 f"data.root={root}"), base / "run")
    return base / "run", root, summary


def test_inspect_evaluates_a_checkpoint_exactly_as_its_run_did(ema_tta_run, capsys):
    from cifarbench.commands.inspect import main as inspect

    run, root, summary = ema_tta_run
    figures = {name: (run / name).read_bytes() for name in ("confusion.png", "samples.png")}
    assert inspect([f"ckpt={run / 'checkpoints' / 'last.pt'}", f"data.root={root}"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[:out.rindex("}") + 1])
    # exactly: the same weights, views, inputs and images (the loss also shows the TTA views)
    assert (report["test_acc"], report["test_loss"]) == (summary["final_test_acc"], summary["final_test_loss"])
    assert report["test_images"] == 130
    assert report["per_class_acc"] == pytest.approx(summary["per_class_acc"], nan_ok=True)
    assert "EMA weights, trainer.tta=flip, data.preprocess=meanstd" in report["evaluated_as"]
    assert report["evaluated_as"].endswith("precision bfloat16 (trainer.amp=bf16 on cpu)")
    assert (run / "inspect" / "confusion.png").is_file() and (run / "inspect" / "samples.png").is_file()
    assert figures == {name: (run / name).read_bytes() for name in figures}  # the run's own figures untouched


def test_predict_classifies_as_the_run_evaluates(ema_tta_run):
    """classify's probabilities are the softmax of the run's evaluation logits: EMA weights, flip TTA, bf16."""
    import torch

    from cifarbench.data import load_cifar10
    from cifarbench.aug.tta import tta_logits
    from cifarbench.commands.predict import classify, load_trained

    run, root, _ = ema_tta_run
    trained = load_trained(run / "checkpoints" / "last.pt")
    assert (trained.weights, trained.tta) == ("ema", "flip")
    images = load_cifar10(root, download=False).test_images[:8]
    with torch.no_grad():
        inputs = trained.preprocess(torch.from_numpy(images))
        with torch.autocast("cpu", dtype=torch.bfloat16):  # as the run evaluated: trainer.amp=bf16 on the CPU
            logits = {tta: tta_logits(trained.model, inputs, tta) for tta in ("flip", "none")}
        expected, without_tta = (logits[tta].float().softmax(1).max(1) for tta in ("flip", "none"))
    top = [t[0] for t in classify(trained, images, topk=1)]
    assert top == [(trained.classes[i], p) for p, i in zip(expected.values.tolist(), expected.indices.tolist())]
    assert [p for _, p in top] != without_tta.values.tolist()  # so the check above could fail without TTA
