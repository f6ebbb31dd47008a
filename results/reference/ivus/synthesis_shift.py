"""How far SI's synthetic IVUS masks are from the real cohort: why `si` trails `random` on ivus.

    python results/reference/ivus/synthesis_shift.py > results/reference/ivus/synthesis_shift.txt

Decodes 500 z ~ N(0, I) with the task's cached VAE (seed 0, the one the reference run used),
thresholds them as SI does, and compares with 500 pool masks and their VAE reconstructions:
plaque burden (wall / (wall + lumen) area), lumen roughness (lumen border pixels / sqrt(lumen
area): higher is more ragged), wall area in pixels (mean [5th, 95th percentile]), and the peak
FEM stress of 200 of each.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from bench.generative import load_or_train
from bench.paths import cache_root
from tasks.ivus import STRESS_SCALE_KPA, IVUSTask


def shape_stats(masks: np.ndarray) -> dict[str, np.ndarray]:
    """Per-mask plaque burden, lumen roughness and wall pixels of binary masks [N, H, W]."""
    burden, rough, wall = [], [], []
    for mask in masks.astype(bool):
        filled = ndimage.binary_fill_holes(mask)
        lumen = filled & ~mask
        border = lumen & ~ndimage.binary_erosion(lumen)
        burden.append(mask.sum() / filled.sum())
        rough.append(border.sum() / max(np.sqrt(lumen.sum()), 1.0))
        wall.append(mask.sum())
    return {"plaque burden": np.array(burden), "lumen roughness": np.array(rough), "wall pixels": np.array(wall)}


def main() -> None:
    torch.manual_seed(0)
    task = IVUSTask()
    data = task.load()
    vae = load_or_train("ivus", data.pool_x, task.generative, 0, cache_root() / "generative", progress=False)
    with torch.no_grad():
        synthesized = vae.decode(torch.randn(500, task.generative.latent_dim)) > 0.5
        reconstructed = vae.decode(vae.encode(data.pool_x[:500])) > 0.5
    sets = {"pool": data.pool_x[:500] > 0.5, "VAE reconstructions": reconstructed, "G(z), z ~ N(0, I)": synthesized}
    print(f"{'':22s} " + "  ".join(f"{k:>24s}" for k in shape_stats(np.zeros((1, 4, 4)))))
    for name, masks in sets.items():
        stats = shape_stats(masks.squeeze(1).numpy())
        cells = [f"{v.mean():7.2f} [{np.percentile(v, 5):.2f}, {np.percentile(v, 95):.2f}]" for v in stats.values()]
        print(f"{name:22s} " + "  ".join(f"{c:>24s}" for c in cells))
    labels = task.label_inputs(synthesized[:200].float())
    peak_pool = data.pool_y[:200].flatten(1).amax(1) * STRESS_SCALE_KPA
    peak_syn = labels.targets[torch.as_tensor(labels.ok)].flatten(1).amax(1) * STRESS_SCALE_KPA
    print(f"peak von Mises stress (kPa), mean: pool {peak_pool.mean():.1f}, G(z) {peak_syn.mean():.1f} "
          f"({int(labels.ok.sum())} of 200 synthesized masks labeled)")


if __name__ == "__main__":
    main()
