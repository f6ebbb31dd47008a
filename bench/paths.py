"""Where data and caches live by default (environment variables override)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """Per-user cache folder: ``$BENCH_CACHE``, else ``$XDG_CACHE_HOME/latent-bench``."""
    if os.environ.get("BENCH_CACHE"):
        return Path(os.environ["BENCH_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "latent-bench"


def default_data_root() -> Path:
    """Where tasks look for data: ``$BENCH_DATA``, else ``<cache root>/data``."""
    if os.environ.get("BENCH_DATA"):
        return Path(os.environ["BENCH_DATA"]).expanduser()
    return cache_root() / "data"
