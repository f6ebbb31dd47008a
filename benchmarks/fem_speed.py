"""Speed of the FEM stress labeler on 64x64 vessel-wall masks.

Run from the repository root: ``python benchmarks/fem_speed.py [--masks 20] [--workers 2]
[--backend fast]``. Prints the time per mask of the linear and the Mooney-Rivlin labeler (16 kPa),
in this process (``label``, one core) and with ``label_batch`` over worker processes (wall-clock
time / masks); ``--backend skfem`` times the scikit-fem reference instead.
Targets on one core: linear <= 0.05 s, Mooney-Rivlin <= 0.5 s per mask of 1-2k wall pixels.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labelers.fem import BACKENDS, FEMLabeler  # noqa: E402


def vessel_masks(count: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """Varied walls of 1-2k pixels: eccentric lumens with lobes, slightly elliptic outer borders."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:size, :size] + 0.5
    masks = []
    while len(masks) < count:
        lumen_radius = rng.uniform(9, 15)
        outer_radius = rng.uniform(lumen_radius + 8, 27)
        offset = rng.uniform(-1, 1, 2) * (outer_radius - lumen_radius - 4) / 2
        y, x = rows - size / 2, cols - size / 2
        phi = np.arctan2(y, x)
        outer = outer_radius * (1 + rng.uniform(0, 0.05) * np.cos(2 * (phi - rng.uniform(0, np.pi))))
        ly, lx = y - offset[0], x - offset[1]
        theta = np.arctan2(ly, lx)
        lobes = sum(
            rng.uniform(0, 0.1) * (2 / k) ** 2 * np.cos(k * theta - rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4, 5)
        )
        mask = (np.hypot(ly, lx) > lumen_radius * (1 + lobes)) & (np.hypot(y, x) < outer)
        if 1000 <= mask.sum() <= 2000:
            masks.append(mask)
    return np.stack(masks)


def time_single(labeler: FEMLabeler, masks: np.ndarray) -> np.ndarray:
    labeler.label(masks[0])  # warm up (imports, caches)
    times = []
    for mask in masks:
        start = time.perf_counter()
        labeler.label(mask)
        times.append(time.perf_counter() - start)
    return np.array(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backend", choices=BACKENDS, default="fast")
    args = parser.parse_args()

    masks = vessel_masks(args.masks)
    pixels = masks.sum(axis=(1, 2))
    print(f"{len(masks)} masks of 64x64, {pixels.min()}-{pixels.max()} wall pixels (mean {pixels.mean():.0f})")
    for material in ("linear", "mooney-rivlin"):
        labeler = FEMLabeler(material, backend=args.backend)
        times = time_single(labeler, masks)
        print(
            f"{material:>14}  one process:  mean {times.mean():.3f} s  median {np.median(times):.3f} s  "
            f"max {times.max():.3f} s per mask"
        )
        start = time.perf_counter()
        result = labeler.label_batch(masks, workers=args.workers, progress=False)
        elapsed = time.perf_counter() - start
        print(
            f"{material:>14}  label_batch, {args.workers} workers:  {elapsed / len(masks):.3f} s per mask "
            f"({elapsed:.2f} s in all, pool start included; {result.ok.sum()}/{len(masks)} labeled)"
        )


if __name__ == "__main__":
    main()
