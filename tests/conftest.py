"""Shared fixtures: a tiny in-memory classification task, and the real data when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.testing import Blobs, registered

#: The real data: ``$BENCH_DATA`` when set, else the shared folder beside the checkout.
SHARED_DATA = Path(os.environ.get("BENCH_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


@pytest.fixture
def blobs_task():
    """Registers the ``blobs`` task for the duration of a test."""
    with registered(Blobs):
        yield Blobs()


@pytest.fixture
def shared_data(monkeypatch) -> Path:
    """``$BENCH_DATA`` pointed at the real data for the test (what ``bench.testing`` reads)."""
    monkeypatch.setenv("BENCH_DATA", str(SHARED_DATA))
    return SHARED_DATA


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The data folder holding the official MNIST; tests using it skip when it is absent."""
    if not (SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.skip(f"real MNIST not found at {SHARED_DATA}/MNIST/raw (the shared data folder)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cifar_root() -> Path:
    """The data folder holding the CIFAR-10 JPEG zip; tests using it skip when it is absent."""
    if not (SHARED_DATA / "cifar10-jpeg.zip").exists():
        pytest.skip(f"CIFAR-10 not found at {SHARED_DATA}/cifar10-jpeg.zip (the shared data folder)")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def isolated_cache(tmp_path_factory):
    """Trained models and labels go to a per-session folder, never the user's cache."""
    previous = os.environ.get("BENCH_CACHE")
    os.environ["BENCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop("BENCH_CACHE")
    else:
        os.environ["BENCH_CACHE"] = previous
