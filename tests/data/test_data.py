"""CIFAR-10 files: download, checksum, extraction, decoding, cache, and the errors for bad input."""
import dataclasses
import pickle
import re

import numpy as np
import pytest
from helpers import DAMAGES, damage, make_archive, make_fake_cifar

from cifarbench.data import DatasetError, load_cifar10
from cifarbench.data import cifar
from cifarbench.data.cifar import CIFAR10
from cifarbench.data.fetch import OfficialFile

ARCHIVE, CACHE, FOLDER = CIFAR10.archive.name, CIFAR10.cache, CIFAR10.batches


def with_md5(md5: str):
    """CIFAR-10 whose archive has this MD5 (the test's own archive's)."""
    return dataclasses.replace(CIFAR10, archive=OfficialFile(ARCHIVE, md5))


@pytest.fixture
def served_archive(tmp_path):
    """A small official-format archive served from a file:// folder (a mirror), and its MD5."""
    source = make_fake_cifar(tmp_path / "source", n_train=50, n_test=20)
    archive = tmp_path / "served" / ARCHIVE
    archive.parent.mkdir()
    return [archive.parent.as_uri()], make_archive(source, archive), source


def test_download_verifies_extracts_and_decodes(tmp_path, served_archive):
    mirrors, md5, source = served_archive
    data = with_md5(md5).load(tmp_path / "root", download=True, mirrors=mirrors)
    assert data.train_images.shape == (50, 3, 32, 32) and data.train_images.dtype == np.uint8
    assert data.test_images.shape == (20, 3, 32, 32) and data.test_labels.dtype == np.int64
    with open(source / FOLDER / "data_batch_1", "rb") as f:
        first = pickle.load(f, encoding="bytes")
    np.testing.assert_array_equal(data.train_images[:10].reshape(10, -1), first[b"data"])
    assert list(data.train_labels[:10]) == first[b"labels"]
    assert (tmp_path / "root" / ARCHIVE).is_file() and (tmp_path / "root" / FOLDER).is_dir()
    assert not [p for p in (tmp_path / "root").iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_wrong_checksum_is_refused_and_nothing_is_kept(tmp_path, served_archive):
    mirrors, md5, _ = served_archive
    with pytest.raises(DatasetError, match="checksum mismatch") as error:
        with_md5("0" * 32).load(tmp_path / "root", download=True, mirrors=mirrors)
    assert f"MD5 {md5}, expected {'0' * 32}" in str(error.value)
    assert list((tmp_path / "root").iterdir()) == []


def test_offline_error_says_where_to_put_the_data(tmp_path):
    url = "http://127.0.0.1:9/cifar-10-python.tar.gz"  # nothing listens on the discard port
    with pytest.raises(DatasetError) as error:
        load_cifar10(tmp_path / "root", download=True, mirrors=["http://127.0.0.1:9/"])
    message = str(error.value)
    assert url in message and ARCHIVE in message and FOLDER in message and str(tmp_path / "root") in message
    assert list((tmp_path / "root").iterdir()) == []


def test_missing_without_download_names_the_fix(tmp_path):
    with pytest.raises(DatasetError, match="data.download=false.*data.root"):
        load_cifar10(tmp_path, download=False)


def test_corrupt_archive_in_root_offline_names_the_file_to_delete(tmp_path):
    (tmp_path / ARCHIVE).write_bytes(b"not a tarball")
    with pytest.raises(DatasetError) as error:
        load_cifar10(tmp_path, download=False)
    assert str(error.value).startswith(f"{tmp_path / ARCHIVE}: checksum mismatch") and "Delete it" in str(error.value)
    assert (tmp_path / ARCHIVE).read_bytes() == b"not a tarball"  # left for the user to look at


def test_corrupt_archive_in_root_is_moved_aside_and_downloaded_again(tmp_path, served_archive, caplog):
    mirrors, md5, source = served_archive
    root = tmp_path / "root"
    root.mkdir()
    (root / ARCHIVE).write_bytes(b"half a download")
    data = with_md5(md5).load(root, download=True, mirrors=mirrors)
    assert data.train_images.shape == (50, 3, 32, 32)
    assert (root / ARCHIVE).read_bytes() == (tmp_path / "served" / ARCHIVE).read_bytes()
    assert (root / f"{ARCHIVE}.corrupt").read_bytes() == b"half a download"
    assert f"{root / ARCHIVE}: checksum mismatch" in caplog.text and "downloading it again" in caplog.text
    with_md5(md5).load(root, download=True, mirrors=["http://127.0.0.1:9/"])  # repaired: no download now


def test_unreadable_batches_are_extracted_again_from_the_archive(tmp_path, served_archive, caplog):
    mirrors, md5, source = served_archive
    root = tmp_path / "root"
    first = with_md5(md5).load(root, download=True, mirrors=mirrors)
    batch = root / FOLDER / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:500])  # a stale cache: the batches are read again
    again = with_md5(md5).load(root, download=False)
    np.testing.assert_array_equal(again.train_images, first.train_images)
    assert batch.read_bytes() == (source / FOLDER / "data_batch_3").read_bytes()
    assert "data_batch_3 is not a readable CIFAR-10 batch" in caplog.text and "extracting" in caplog.text


def test_truncated_batch_names_the_file(tmp_path):
    root = make_fake_cifar(tmp_path)
    batch = root / FOLDER / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:500])
    with pytest.raises(DatasetError, match=f"data_batch_3 is not a readable CIFAR-10 batch.*Replace {re.escape(str(root / FOLDER))}"):
        load_cifar10(root, download=False)  # no archive to extract again: the user must replace them


def test_bad_labels_and_shapes_are_named(tmp_path):
    root = make_fake_cifar(tmp_path)
    with open(root / FOLDER / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 11]}, f, protocol=2)
    with pytest.raises(DatasetError, match=r"test_batch: labels outside \[0, 9\]"):
        load_cifar10(root, download=False)
    with open(root / FOLDER / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((4, 100), np.float32), b"labels": [0, 1, 2, 3]}, f, protocol=2)
    with pytest.raises(DatasetError, match="expected uint8"):
        load_cifar10(root, download=False)


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_batch_pickles_may_not_run_code(tmp_path):
    root = make_fake_cifar(tmp_path)
    with open(root / FOLDER / "data_batch_1", "wb") as f:
        pickle.dump({b"data": Payload(), b"labels": []}, f, protocol=2)
    with pytest.raises(DatasetError, match=r"unexpected object (__builtin__|builtins)\.print"):
        load_cifar10(root, download=False)


def test_decoded_cache_is_reused_and_refreshed(tmp_path, monkeypatch):
    root = make_fake_cifar(tmp_path)
    first = load_cifar10(root, download=False)
    assert (root / CACHE).is_file()

    def no_decoding(*args):
        raise AssertionError("the batches were decoded although the cache is fresh")

    with monkeypatch.context() as patch:
        patch.setattr(cifar, "read_batch", no_decoding)
        cached = load_cifar10(root, download=False)
    np.testing.assert_array_equal(first.train_images, cached.train_images)
    np.testing.assert_array_equal(first.test_labels, cached.test_labels)

    make_fake_cifar(tmp_path, seed=1)  # new pixels in the batch files: the cache must be rebuilt
    refreshed = load_cifar10(root, download=False)
    assert not np.array_equal(first.train_images, refreshed.train_images)


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_cache_is_decoded_again_and_replaced(tmp_path, how, caplog):
    root = make_fake_cifar(tmp_path)
    first = load_cifar10(root, download=False)
    damage(root / CACHE, how)
    again = load_cifar10(root, download=False)
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    assert f"the cache {root / CACHE} is unreadable" in caplog.text
    caplog.clear()

    def no_decoding(*args):
        raise AssertionError("the batches were decoded although the cache was rebuilt")

    with pytest.MonkeyPatch.context() as patch:  # the rewritten cache is whole again
        patch.setattr(cifar, "read_batch", no_decoding)
        np.testing.assert_array_equal(load_cifar10(root, download=False).train_images, first.train_images)
    assert "unreadable" not in caplog.text
