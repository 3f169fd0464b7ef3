"""The run's figures, read back from their PNGs: sizes, red frames on wrong predictions, and a confusion
matrix whose cell numbers and colour bar are in the same unit."""
import numpy as np
import pytest
from helpers import fake_images
from PIL import Image

from cifarbench.run.diagnostics import (CAPTION, FRAME, LEGEND, RED, confusion_figure, montage, plot_confusion,
                                        plot_samples, samples_figure, write_diagnostics)
from cifarbench.run.figures import plot_curves

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def images_and_labels(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    return fake_images(labels, rng).reshape(n, 3, 32, 32), labels


def is_red(pixels: np.ndarray) -> np.ndarray:
    return (pixels[..., 0] > 180) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)


def test_montage_frames_exactly_the_wrong_tiles_and_keeps_every_pixel():
    images, _ = images_and_labels(10)
    wrong = np.zeros(10, bool)
    wrong[[0, 7]] = True
    picture = montage(images, wrong, columns=4, scale=3)
    tile_h, tile_w = CAPTION + 96 + 2 * FRAME, 96 + 2 * FRAME
    assert picture.shape == (3 * tile_h, 4 * tile_w, 4) and picture.dtype == np.uint8
    for k in range(12):
        tile = picture[k // 4 * tile_h:(k // 4 + 1) * tile_h, k % 4 * tile_w:(k % 4 + 1) * tile_w]
        assert (tile[:CAPTION] == 255).all()  # caption band: white
        frame_is_red = (tile[CAPTION:CAPTION + FRAME] == RED).all() and (tile[CAPTION:, :FRAME] == RED).all()
        frame_is_white = (tile[CAPTION:CAPTION + FRAME] == 255).all() and (tile[CAPTION:, -FRAME:] == 255).all()
        assert frame_is_red == (k < 10 and wrong[k]) and frame_is_white == (k >= 10 or not wrong[k])
        if k < 10:  # the image, enlarged 3× by repeating pixels
            inner = tile[CAPTION + FRAME:-FRAME, FRAME:-FRAME, :3]
            assert (inner[::3, ::3] == images[k].transpose(1, 2, 0)).all() and (inner[2::3, 2::3] == inner[::3, ::3]).all()


@pytest.mark.parametrize("all_wrong", [True, False])
def test_samples_png_is_one_montage_with_red_frames_only_for_wrong_predictions(tmp_path, all_wrong):
    images, labels = images_and_labels(40)
    predictions = (labels + 1) % 10 if all_wrong else labels
    plot_samples(tmp_path / "samples.png", images, labels, predictions, CLASSES)
    with Image.open(tmp_path / "samples.png") as png:  # 32 tiles of 5× images under the legend's band
        assert png.size == (8 * (160 + 2 * FRAME), LEGEND + 4 * (CAPTION + 160 + 2 * FRAME))
        pixels = np.asarray(png.convert("RGB"))
    legend, pixels = pixels[:LEGEND], pixels[LEGEND:]
    assert (legend < 100).all(-1).any() and not is_red(legend).any()  # a line of black text
    tile_h, tile_w = CAPTION + 160 + 2 * FRAME, 160 + 2 * FRAME
    frames = pixels.reshape(4, tile_h, 8, tile_w, 3)[:, CAPTION + 1:CAPTION + FRAME - 1, :, 2:-2]  # top edges
    captions = pixels.reshape(4, tile_h, 8, tile_w, 3)[:, :CAPTION]
    assert is_red(frames).all() == all_wrong and is_red(frames).any() == all_wrong
    assert is_red(captions).any() == all_wrong  # wrong captions are red text
    assert (captions < 100).all(-1).any() != all_wrong  # right ones are black


def test_samples_png_says_how_to_read_its_captions():
    """Seen: samples.png did not say its captions read "true → predicted". Four images, all shown: each
    caption is its true class, an arrow, its predicted class, under the line that says so."""
    images, labels = images_and_labels(4)
    predictions = labels.copy()
    predictions[1] = (labels[1] + 1) % 10  # one wrong
    texts = [text.get_text() for text in samples_figure(images, labels, predictions, CLASSES, columns=2).texts]
    assert texts[0] == "each caption reads true class → predicted class; wrong predictions are framed in red"
    assert sorted(texts[1:]) == sorted(f"{CLASSES[t]} → {CLASSES[p]}" for t, p in zip(labels, predictions))


def test_confusion_numbers_and_colour_bar_are_both_percent_of_the_true_class(tmp_path):
    confusion = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])  # the third class has no test images
    fig = confusion_figure(confusion, ["a", "b", "c"])
    axis, colour_bar = fig.axes
    image = axis.images[0]
    shown = {tuple(np.round(t.get_position()).astype(int)): t.get_text() for t in fig.texts}
    # (column, row) of each number: 80 / 20 of "a", 25 / 75 of "b"; cells under 0.5 % blank
    assert shown == {(0, 0): "80", (1, 0): "20", (0, 1): "25", (1, 1): "75"}
    assert all(t.get_transform() == axis.transData for t in fig.texts)
    for (column, row), text in shown.items():  # each number is the value its cell is coloured by
        assert float(text) == pytest.approx(image.get_array()[row, column])
    assert image.norm.vmin == 0 and image.norm.vmax == 100
    assert colour_bar.get_ylabel() == "% of the true class"
    assert colour_bar.get_ylim() == (0, 100)
    assert [t.get_text() for t in axis.get_yticklabels()] == ["a (10)", "b (4)", "c (0)"]
    assert axis.get_title() == "test accuracy 78.57%"
    plot_confusion(tmp_path / "confusion.png", confusion, ["a", "b", "c"])
    with Image.open(tmp_path / "confusion.png") as png:
        assert png.size == (750, 600)


def test_write_diagnostics_writes_both_pngs_and_returns_per_class_accuracy(tmp_path):
    images, labels = images_and_labels(200)
    predictions = np.where(labels == 3, 5, labels)  # every cat called a dog
    accuracy = write_diagnostics(tmp_path, images, labels, predictions, CLASSES)
    assert accuracy["cat"] == 0 and all(accuracy[c] == 1 for c in CLASSES if c != "cat")
    for name in ("confusion.png", "samples.png"):
        with Image.open(tmp_path / name) as png:
            png.verify()


def test_curves_png_has_its_size(tmp_path):
    rows = [{"epoch": e, "train_acc": 0.1 * e, "test_acc": 0.09 * e, "train_loss": 2 / e, "test_loss": 2.1 / e}
            for e in range(1, 6)]
    plot_curves(tmp_path / "curves.png", rows, "lenet / sgd / flip_shift")
    with Image.open(tmp_path / "curves.png") as png:
        assert png.size == (1000, 400)
        pixels = np.asarray(png.convert("RGB"))
    assert (pixels < 250).any(-1).mean() > 0.02  # something is drawn


@pytest.mark.parametrize("config, title", [
    ({"sched": {"name": "constant"}, "trainer": {"budget_min": None}, "data": {"train_subset": None, "val_split": 0}},
     "lenet / sgd / flip_shift / constant schedule"),
    ({"sched": {"name": "cosine"}, "trainer": {"budget_min": 1.5},
      "data": {"train_subset": 10000, "test_subset": 500, "val_split": 5000}},
     "lenet / sgd / flip_shift / cosine schedule, budget 1.5 min, 10,000 training images, 500 test images, "
     "5,000 held out for validation"),
    ({"sched": {"name": "onecycle"}, "trainer": {}, "data": {"train_subset": 0.02}},
     "lenet / sgd / flip_shift / onecycle schedule, 2% of each class"),
])
def test_the_curves_title_names_the_schedule_budget_and_subsets_when_set(config, title):
    """Seen: curves.png's title left out the schedule, the budget and the subset."""
    from cifarbench.run.recorder import curves_title

    assert curves_title({"model": "lenet", "optim": "sgd", "aug": "flip_shift", "config": config}) == title
