"""Reading CIFAR-10 as uint8 arrays: the official release, or an ImageFolder copy (folder or zip).

Under the data root the sources are tried in this order, and the first one present is used:

1. ``cifar-10-batches-py/``: the official python release, read (and integrity checked) by
   torchvision's ``CIFAR10``;
2. ``cifar10-jpeg.zip``, then the folder ``cifar10-jpeg/``: an ImageFolder layout,
   ``train/<class>/*`` and ``test/<class>/*``, 32x32 RGB images of the ten CIFAR-10 classes
   (5,000 per class in train, 1,000 in test), e.g. a JPEG re-encoding for offline machines;
3. when none is there and downloads are allowed, the official release, downloaded through
   torchvision.

An ImageFolder copy is decoded once and the arrays are cached as a ``.npz`` under the cache
folder, keyed by the archive's SHA-256 (a folder: by its file names, sizes and times). The cache
file carries a SHA-256 of its arrays (and of that key); a cache file that is unreadable, lacks
it, does not match it, or holds other sizes than CIFAR-10's (e.g. rewritten with 49,000 training
images) is decoded again, with a warning, and replaced. A copy with
a missing class folder, a short class, an image of the wrong size or an unreadable file is
refused with an error naming the file, never read as a shorter data set.
"""

from __future__ import annotations

import hashlib
import io
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.base import DataNotFoundError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
PER_CLASS = {"train": 5000, "test": 1000}
OFFICIAL_FOLDER = "cifar-10-batches-py"
JPEG_ZIP = "cifar10-jpeg.zip"
JPEG_FOLDER = "cifar10-jpeg"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
ARRAYS = ("train_x", "train_y", "test_x", "test_y")  # the decoded arrays, as cached
log = logging.getLogger(__name__)


class CorruptDataError(DataNotFoundError):
    """A CIFAR-10 copy is present but broken or incomplete; the message names the file."""


@dataclass
class Cifar10Arrays:
    """The split as uint8 images [N, 3, 32, 32] and int64 labels [N], and where it came from."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    source: str  # e.g. "official: /data/cifar-10-batches-py"


def read_cifar10(data_root: Path, download: bool, cache_dir: Path | None) -> Cifar10Arrays:
    """The first CIFAR-10 copy found under ``data_root`` (see the module docstring)."""
    root = Path(data_root)
    folder = _image_folder(root)
    if (root / OFFICIAL_FOLDER).is_dir() or (folder is None and download):
        try:
            return read_official(root, download)
        except Exception as err:  # torchvision raises RuntimeError, or URLError/OSError offline
            raise DataNotFoundError(_missing_message(root, f"the official release failed: {err}")) from err
    if folder is None:
        raise DataNotFoundError(_missing_message(root, "nothing found"))
    return read_image_folder(folder, cache_dir)


def _image_folder(root: Path) -> Path | None:
    for candidate in (root / JPEG_ZIP, root / JPEG_FOLDER):
        if candidate.exists():
            return candidate
    return None


def _missing_message(root: Path, why: str) -> str:
    return (
        f"CIFAR-10 not found under {root} ({why}): looked for {OFFICIAL_FOLDER}/ (official release), "
        f"{JPEG_ZIP} and {JPEG_FOLDER}/ (ImageFolder layout train/<class>/*, test/<class>/*). Run once "
        f"with internet access to download the official release, put one of these there, or point "
        f"--data-root (or the BENCH_DATA environment variable) at the folder that holds one."
    )


def read_official(root: Path, download: bool) -> Cifar10Arrays:
    """The official release through torchvision (downloaded when allowed and missing)."""
    from torchvision.datasets import CIFAR10

    parts = [CIFAR10(str(root), train=train, download=download) for train in (True, False)]
    (train_x, train_y), (test_x, test_y) = (
        (np.ascontiguousarray(p.data.transpose(0, 3, 1, 2)), np.asarray(p.targets, dtype=np.int64)) for p in parts
    )
    return Cifar10Arrays(train_x, train_y, test_x, test_y, source=f"official: {root / OFFICIAL_FOLDER}")


def read_image_folder(source: Path, cache_dir: Path | None) -> Cifar10Arrays:
    """An ImageFolder copy (a zip file or a folder), decoded once and cached by its digest in
    ``cache_dir`` (None: decoded every time); a cache file that fails its checks is decoded again
    with a warning (see the module docstring)."""
    digest = _digest(source)
    cached = None if cache_dir is None else Path(cache_dir) / f"cifar10-{digest}.npz"
    label = f"{'zip' if source.is_file() else 'folder'}: {source}"
    if cached is not None and cached.exists():
        try:
            return Cifar10Arrays(**_read_cache(cached, digest), source=label)
        except Exception as err:  # truncated, rewritten or another copy's: decode again and replace it
            log.warning("cifar10: cached arrays %s are unusable (%s); decoding %s again", cached, err, source)
    files = _zip_files(source) if source.is_file() else _folder_files(source)
    arrays = {}
    for split in ("train", "test"):
        arrays[f"{split}_x"], arrays[f"{split}_y"] = _decode_split(source, split, files)
    if cached is None:
        return Cifar10Arrays(**arrays, source=label)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(cached.stem + ".tmp.npz")
    np.savez(tmp, **arrays, checksum=np.array(_checksum(arrays, digest)))
    tmp.replace(cached)
    log.info("cifar10: decoded %s and cached the arrays in %s", source, cached)
    return Cifar10Arrays(**arrays, source=label)


def _read_cache(cached: Path, digest: str) -> dict[str, np.ndarray]:
    """The arrays of a decoded cache file, after checking that they have CIFAR-10's sizes and the
    checksum written with them (for the copy of ``digest``); ValueError saying what differs."""
    with np.load(cached) as saved:  # pickles are refused (allow_pickle is False)
        arrays = {key: saved[key] for key in ARRAYS if key in saved}
        stored = str(saved["checksum"]) if "checksum" in saved else None
    for key, (shape, dtype) in _expected_arrays().items():
        if key not in arrays:
            raise ValueError(f"{key} is missing")
        if arrays[key].shape != shape or arrays[key].dtype != dtype:
            raise ValueError(f"{key} is {arrays[key].dtype} {arrays[key].shape}, expected {np.dtype(dtype)} {shape}")
    if stored is None:
        raise ValueError("no checksum: written by an older version, or rewritten")
    if stored != _checksum(arrays, digest):
        raise ValueError("the arrays do not match their checksum: changed after they were cached")
    return arrays


def _expected_arrays() -> dict[str, tuple[tuple[int, ...], type]]:
    """The shape and dtype of each decoded array, from the number of images per class."""
    expected: dict[str, tuple[tuple[int, ...], type]] = {}
    for split, per_class in PER_CLASS.items():
        n = len(CLASSES) * per_class
        expected[f"{split}_x"] = ((n, 3, 32, 32), np.uint8)
        expected[f"{split}_y"] = ((n,), np.int64)
    return expected


def _checksum(arrays: dict[str, np.ndarray], digest: str) -> str:
    """SHA-256 of the copy's ``digest`` and each array's name, dtype, shape and bytes (about 0.1 s
    for the 60,000 images)."""
    checksum = hashlib.sha256(digest.encode())
    for key in ARRAYS:
        array = np.ascontiguousarray(arrays[key])
        checksum.update(f"{key} {array.dtype.str} {array.shape}\n".encode())
        checksum.update(array.data)
    return checksum.hexdigest()


def _digest(source: Path) -> str:
    """SHA-256 of a zip's bytes, or of a folder's listing (relative names, sizes, modification times)."""
    digest = hashlib.sha256()
    if source.is_file():
        with open(source, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    else:
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            stat = path.stat()
            digest.update(f"{path.relative_to(source)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


class _Files:
    """Image members of one copy by (split, class): names, and a reader of their bytes."""

    def __init__(self, members: dict[tuple[str, str], list[str]], read) -> None:
        self.members, self.read = members, read


def _split_member(name: str) -> tuple[str, str] | None:
    """("train", "cat") for ``[prefix/]train/cat/0001.jpg``; None for anything else."""
    parts = name.replace("\\", "/").split("/")
    if len(parts) < 3 or not parts[-1].lower().endswith(IMAGE_SUFFIXES) or parts[-1].startswith("."):
        return None
    split, cls = parts[-3], parts[-2]
    return (split, cls) if split in PER_CLASS else None


def _zip_files(path: Path) -> _Files:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise CorruptDataError(
            f"{path} is not a readable zip file ({err}); download it again or "
            f"remove it so another CIFAR-10 copy is used"
        ) from None
    members: dict[tuple[str, str], list[str]] = {}
    for info in archive.infolist():
        key = _split_member(info.filename)
        if key is not None and not info.is_dir():
            members.setdefault(key, []).append(info.filename)

    def read(name: str) -> bytes:
        try:
            return archive.read(name)
        except (zipfile.BadZipFile, OSError, EOFError) as err:  # CRC mismatch, truncated archive
            raise CorruptDataError(
                f"{path}: member {name} is corrupt ({err}); the archive is damaged, download it again"
            ) from None

    return _Files(members, read)


def _folder_files(path: Path) -> _Files:
    members: dict[tuple[str, str], list[str]] = {}
    for file in path.rglob("*"):
        key = _split_member(str(file.relative_to(path)))
        if key is not None and file.is_file():
            members.setdefault(key, []).append(str(file.relative_to(path)))
    return _Files(members, lambda name: (path / name).read_bytes())


def _decode_split(source: Path, split: str, files: _Files) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, 3, 32, 32] uint8 and labels [N] of one split, classes in CIFAR-10's order and
    files in name order within a class; refuses a missing, short or extra class, or a bad image."""
    from PIL import Image

    found = {cls for (s, cls) in files.members if s == split}
    extra = sorted(found - set(CLASSES))
    if extra:
        raise CorruptDataError(
            f"{source}: {split}/ has folders that are not CIFAR-10 classes: "
            f"{', '.join(extra)} (expected {', '.join(CLASSES)})"
        )
    expected = PER_CLASS[split]
    images, labels = [], []
    for label, cls in enumerate(CLASSES):
        names = sorted(files.members.get((split, cls), []))
        if len(names) != expected:
            what = "is missing" if not names else f"has {len(names)} images, expected {expected}"
            raise CorruptDataError(
                f"{source}: class folder {split}/{cls}/ {what}; the copy is incomplete, download it again"
            )
        for name in names:
            try:
                with Image.open(io.BytesIO(files.read(name))) as image:
                    pixels = np.asarray(image.convert("RGB"))
            except CorruptDataError:
                raise
            except Exception as err:  # PIL.UnidentifiedImageError, truncated data
                raise CorruptDataError(f"{source}: {name} is not a readable image ({err})") from None
            if pixels.shape != (32, 32, 3):
                raise CorruptDataError(
                    f"{source}: {name} is {pixels.shape[1]}x{pixels.shape[0]}, CIFAR-10 images are 32x32"
                )
            images.append(pixels)
        labels.append(np.full(len(names), label, dtype=np.int64))
    return np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2)), np.concatenate(labels)
