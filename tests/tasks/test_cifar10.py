"""CIFAR-10: reading the official release or an ImageFolder copy, VGG-16, augmentation, small runs."""

from __future__ import annotations

import io
import re
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as nnf
from PIL import Image

import tasks.cifar10_data as cifar10_data
from bench.cli.main import main
from bench.paths import cache_root
from tasks.base import DataNotFoundError
from tasks.cifar10 import VGG16BN, CIFAR10Task, flip_and_crop
from tasks.cifar10_data import CLASSES, CorruptDataError, read_cifar10


@pytest.fixture
def small_per_class(monkeypatch):
    """A CIFAR-10 copy of 2 train and 1 test image per class is complete (tests build those)."""
    monkeypatch.setattr(cifar10_data, "PER_CLASS", {"train": 2, "test": 1})


def png(seed: int, size: int = 32) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def write_copy(path, skip_class: str | None = None, odd: dict[str, bytes] | None = None) -> dict[str, bytes]:
    """A small ImageFolder zip at ``path``: 2 train and 1 test PNG per class (lossless, so the
    decoded pixels are known); ``skip_class`` leaves that class out of train/, ``odd`` replaces
    members' bytes. Returns the members written."""
    members = {}
    for label, cls in enumerate(CLASSES):
        for split, n in (("train", 2), ("test", 1)):
            if split == "train" and cls == skip_class:
                continue
            for i in range(n):
                members[f"cifar10/{split}/{cls}/{i:04d}.png"] = png(100 * label + 10 * (split == "test") + i)
    members.update(odd or {})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return members


def test_reads_an_image_folder_zip_in_class_order(tmp_path, small_per_class):
    members = write_copy(tmp_path / "cifar10-jpeg.zip")
    arrays = read_cifar10(tmp_path, download=False, cache_dir=tmp_path / "cache")
    assert arrays.train_x.shape == (20, 3, 32, 32) and arrays.train_x.dtype == np.uint8
    assert arrays.test_x.shape == (10, 3, 32, 32)
    assert arrays.train_y.tolist() == [c for c in range(10) for _ in range(2)]
    assert arrays.test_y.tolist() == list(range(10))
    first = np.asarray(Image.open(io.BytesIO(members["cifar10/train/airplane/0000.png"]))).transpose(2, 0, 1)
    assert np.array_equal(arrays.train_x[0], first)
    assert arrays.source == f"zip: {tmp_path / 'cifar10-jpeg.zip'}"


def test_decoded_arrays_are_cached_by_the_archive_hash(tmp_path, small_per_class, monkeypatch):
    write_copy(tmp_path / "cifar10-jpeg.zip")
    first = read_cifar10(tmp_path, download=False, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("cifar10-*.npz"))) == 1

    def no_decoding(*args):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(cifar10_data, "_decode_split", no_decoding)
    again = read_cifar10(tmp_path, download=False, cache_dir=tmp_path / "cache")
    assert np.array_equal(first.train_x, again.train_x) and np.array_equal(first.test_y, again.test_y)
    monkeypatch.undo()
    monkeypatch.setattr(cifar10_data, "PER_CLASS", {"train": 2, "test": 1})
    write_copy(tmp_path / "cifar10-jpeg.zip", odd={"cifar10/test/cat/0000.png": png(999)})  # new content
    changed = read_cifar10(tmp_path, download=False, cache_dir=tmp_path / "cache")
    assert not np.array_equal(changed.test_x, first.test_x)
    assert len(list((tmp_path / "cache").glob("cifar10-*.npz"))) == 2


@pytest.mark.parametrize(
    ("tamper", "why"),
    [
        ("fewer", r"train_x is uint8 \(19, 3, 32, 32\), expected uint8 \(20, 3, 32, 32\)"),  # as 49,000 of 50,000
        ("edited", "the arrays do not match their checksum"),
        ("another copy's", "the arrays do not match their checksum"),
        ("no checksum", "no checksum: written by an older version, or rewritten"),
    ],
)
def test_a_rewritten_decoded_cache_is_decoded_again_with_a_warning(tmp_path, small_per_class, caplog, tamper, why):
    write_copy(tmp_path / "cifar10-jpeg.zip")
    first = read_cifar10(tmp_path, download=False, cache_dir=tmp_path / "cache")
    (cached,) = (tmp_path / "cache").glob("cifar10-*.npz")
    with np.load(cached) as saved:
        arrays = dict(saved)
    if tamper == "fewer":
        arrays["train_x"], arrays["train_y"] = arrays["train_x"][1:], arrays["train_y"][1:]
    elif tamper == "edited":
        arrays["test_x"][3, 0, 0, 0] ^= 1
    elif tamper == "another copy's":  # a complete cache of other images, renamed to this copy's key
        arrays = {key: np.ascontiguousarray(array[::-1]) for key, array in arrays.items() if key != "checksum"}
        arrays["checksum"] = np.array(cifar10_data._checksum(arrays, "another copy"))
    else:
        del arrays["checksum"]
    np.savez(cached, **arrays)
    with caplog.at_level("WARNING", logger="tasks.cifar10_data"):
        again = read_cifar10(tmp_path, download=False, cache_dir=tmp_path / "cache")
    assert re.search(rf"cached arrays {re.escape(str(cached))} are unusable \({why}.*\); decoding ", caplog.text)
    for key in cifar10_data.ARRAYS:
        assert np.array_equal(getattr(again, key), getattr(first, key)), key
    caplog.clear()  # the cache was replaced: read as it is, without a warning
    with caplog.at_level("WARNING", logger="tasks.cifar10_data"):
        read_cifar10(tmp_path, download=False, cache_dir=tmp_path / "cache")
    assert not caplog.records


def test_reads_an_image_folder_directory(tmp_path, small_per_class):
    members = write_copy(tmp_path / "copy.zip")
    for name, data in members.items():
        target = tmp_path / "cifar10-jpeg" / name.split("/", 1)[1]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    from_folder = read_cifar10(tmp_path, download=False, cache_dir=tmp_path / "cache")
    assert from_folder.source.startswith("folder: ") and from_folder.train_x.shape == (20, 3, 32, 32)


def test_a_missing_class_folder_is_refused_with_the_file_named(tmp_path, small_per_class):
    write_copy(tmp_path / "cifar10-jpeg.zip", skip_class="cat")
    with pytest.raises(CorruptDataError, match=r"cifar10-jpeg.zip: class folder train/cat/ is missing"):
        read_cifar10(tmp_path, download=False, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.npz"))  # nothing short was cached


def test_a_short_class_or_wrong_size_image_is_refused(tmp_path, small_per_class):
    write_copy(tmp_path / "cifar10-jpeg.zip", odd={"cifar10/train/dog/0002.png": png(1)})
    with pytest.raises(CorruptDataError, match=r"train/dog/ has 3 images, expected 2"):
        read_cifar10(tmp_path, download=False, cache_dir=tmp_path / "cache")
    write_copy(tmp_path / "cifar10-jpeg.zip", odd={"cifar10/test/dog/0000.png": png(1, size=16)})
    with pytest.raises(CorruptDataError, match=r"test/dog/0000.png is 16x16"):
        read_cifar10(tmp_path, download=False, cache_dir=tmp_path / "cache")


def test_a_corrupt_zip_is_refused_with_the_file_named(tmp_path, small_per_class):
    (tmp_path / "cifar10-jpeg.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CorruptDataError, match=r"cifar10-jpeg.zip is not a readable zip file"):
        read_cifar10(tmp_path, download=False, cache_dir=tmp_path / "cache")


def test_a_damaged_member_is_refused_with_its_name(tmp_path, small_per_class):
    path = tmp_path / "cifar10-jpeg.zip"
    members = write_copy(path)
    raw = bytearray(path.read_bytes())
    target = members["cifar10/train/bird/0001.png"]
    at = bytes(raw).index(target) + len(target) // 2
    raw[at] ^= 0xFF  # one flipped byte inside a stored member: its CRC no longer matches
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptDataError, match=r"member cifar10/train/bird/0001.png is corrupt"):
        read_cifar10(tmp_path, download=False, cache_dir=tmp_path / "cache")


def test_no_copy_and_no_download_says_where_it_looked(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"cifar-10-batches-py.*cifar10-jpeg.zip.*--data-root"):
        read_cifar10(tmp_path, download=False, cache_dir=tmp_path / "cache")


def test_a_broken_official_release_is_not_silently_replaced(tmp_path, small_per_class):
    (tmp_path / "cifar-10-batches-py").mkdir()
    write_copy(tmp_path / "cifar10-jpeg.zip")
    with pytest.raises(DataNotFoundError, match="the official release failed"):
        read_cifar10(tmp_path, download=False, cache_dir=tmp_path / "cache")


@pytest.mark.slow
def test_reads_the_shared_jpeg_copy(cifar_root):
    task = CIFAR10Task()
    task.cache_dir = cache_root()  # as the harness gives it (the decoded arrays are cached there)
    data = task.load(cifar_root, download=False)
    assert data.pool_x.shape == (50000, 3, 32, 32) and data.test_x.shape == (10000, 3, 32, 32)
    assert data.pool_x.dtype == torch.uint8
    assert torch.bincount(data.pool_y).tolist() == [5000] * 10
    assert torch.bincount(data.test_y).tolist() == [1000] * 10
    assert data.source.startswith("zip: ")


def test_vgg16_is_the_standard_configuration():
    model = VGG16BN()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 13
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) == 5
    assert (model.classifier.in_features, model.classifier.out_features) == (512, 10)


def test_vgg_takes_uint8_images_and_floats_in_unit_range_alike():
    torch.manual_seed(0)
    model = VGG16BN().eval()
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(model(images), model(images.float() / 255), atol=1e-5)
        assert model.embed(images).shape == (4, 512) and model(images).shape == (4, 10)


def test_flip_and_crop_matches_a_per_image_reference():
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    out = flip_and_crop(x, torch.Generator().manual_seed(3), padding=2)
    draws = torch.Generator().manual_seed(3)  # the same draws, in the same order
    flip = torch.rand(16, generator=draws) < 0.5
    dy, dx = torch.randint(0, 5, (2, 16), generator=draws)
    padded = nnf.pad(x, (2, 2, 2, 2))
    for i in range(16):
        crop = padded[i, :, dy[i] : dy[i] + 8, dx[i] : dx[i] + 8]
        assert torch.equal(out[i], crop.flip(-1) if flip[i] else crop)
    assert flip.any() and (~flip).any()  # both branches were checked


def test_augment_is_refused_for_a_task_without_it(capsys, tmp_path):
    code = main(["run", "--task", "mnist", "--strategy", "random", "--augment", "--out", str(tmp_path / "o")])
    assert code == 2 and "task 'mnist' has no data augmentation" in capsys.readouterr().err


def tiny_run(tmp_path, root, name: str, *extra: str) -> pd.DataFrame:
    args = [
        "run",
        "--task",
        "cifar10",
        "--subset",
        "200",
        "--initial",
        "40",
        "--increment",
        "20",
        "--rounds",
        "2",
        "--epochs",
        "1",
        "--batch-size",
        "20",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--generative-option",
        "epochs=1",
        "--generative-option",
        "channels=8",
        "--data-root",
        str(root),
        "--no-download",
        "--quiet",
        "--out",
        str(tmp_path / name),
        *extra,
    ]
    assert main(args) == 0
    return pd.read_csv(tmp_path / name / "rounds.csv")


@pytest.mark.slow
def test_snn_and_the_baselines_run_two_rounds_on_a_small_subset(tmp_path, cifar_root):
    rows = tiny_run(tmp_path, cifar_root, "snn", "--strategy", "random,snn,coreset,uncertainty", "--augment")
    sizes = rows.groupby("strategy")["n_labeled"].apply(list).to_dict()
    assert sizes == dict.fromkeys(["coreset", "random", "snn", "uncertainty"], [40, 60])
    assert rows["value"].between(0, 100).all()
    assert (tmp_path / "snn" / "generative-samples.png").exists()
    import json

    manifest = json.loads((tmp_path / "snn" / "manifest.json").read_text())
    assert manifest["data"]["source"].startswith("zip: ") and manifest["protocol"]["augment"] is True
    assert manifest["generative"]["channels"] == 8 and manifest["generative"]["file"].endswith(".pt")
    again = tiny_run(tmp_path, cifar_root, "snn-again", "--strategy", "random,snn,coreset,uncertainty", "--augment")
    assert again["value"].tolist() == rows["value"].tolist()  # same command, same numbers


def test_si_is_refused_on_cifar10(capsys, tmp_path):
    code = main(["run", "--task", "cifar10", "--strategy", "si", "--out", str(tmp_path / "o")])
    assert code == 2 and "a labeler for synthetic inputs" in capsys.readouterr().err
