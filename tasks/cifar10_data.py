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
folder, keyed by the archive's SHA-256 (a folder: by its file names, sizes and times). A copy with
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
    ``cache_dir`` (None: decoded every time)."""
    cached = None if cache_dir is None else Path(cache_dir) / f"cifar10-{_digest(source)}.npz"
    label = f"{'zip' if source.is_file() else 'folder'}: {source}"
    if cached is not None and cached.exists():
        try:
            with np.load(cached) as saved:
                return Cifar10Arrays(*(saved[k] for k in ("train_x", "train_y", "test_x", "test_y")), source=label)
        except Exception as err:  # a truncated cache file: decode again and replace it
            log.warning("cifar10: cached arrays %s are unreadable (%s); decoding %s again", cached, err, source)
    files = _zip_files(source) if source.is_file() else _folder_files(source)
    arrays = {}
    for split in ("train", "test"):
        arrays[f"{split}_x"], arrays[f"{split}_y"] = _decode_split(source, split, files)
    if cached is None:
        return Cifar10Arrays(**arrays, source=label)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(cached.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(cached)
    log.info("cifar10: decoded %s and cached the arrays in %s", source, cached)
    return Cifar10Arrays(**arrays, source=label)


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
