"""Figures beyond the learning curves: task samples (Fig. S1), synthesized samples, and SNN
trajectories in a 2-D latent space (Fig. 4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bench.training import train_epochs
from strategies.latent import encode_in_batches, harder_points
from strategies.snn import PoolCodes
from tasks.base import Task, TaskData, make_optimizer, unit_images


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _image(x: Tensor) -> np.ndarray:
    """One input [C, H, W] as an array for imshow ([H, W] or [H, W, C])."""
    x = unit_images(x.detach()).float().cpu()
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def pairs_figure(task: Task, inputs: Tensor, targets: Tensor, path: Path, title: str) -> Path:
    """Each input beside its target: map targets as images with a colour bar, class targets in
    the title (Fig. S1 for IVUS: masks beside their stress maps)."""
    plt = _pyplot()
    n = len(inputs)
    maps = targets.ndim == inputs.ndim
    fig, axes = plt.subplots(2 if maps else 1, n, figsize=(2.2 * n, 4.6 if maps else 2.4), squeeze=False)
    vmax = float(targets.max()) * task.target_scale if maps else None
    for i in range(n):
        axes[0, i].imshow(_image(inputs[i]), cmap="gray")
        axes[0, i].set_axis_off()
        if maps:
            shown = axes[1, i].imshow(_image(targets[i]) * task.target_scale, cmap="inferno", vmin=0, vmax=vmax)
            axes[1, i].set_axis_off()
        else:
            axes[0, i].set_title(f"{task.target_label} {int(targets[i])}")
    if maps:
        axes[0, 0].set_title("input", loc="left")
        axes[1, 0].set_title(task.target_label, loc="left")
        fig.colorbar(shown, ax=axes[1, :].tolist(), shrink=0.8, label=task.target_label)
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def sample_figure(task: Task, data: TaskData, path: Path, n: int = 6, seed: int = 0) -> Path:
    """``n`` random pool samples beside their targets."""
    idx = torch.randperm(len(data.pool_x), generator=torch.Generator().manual_seed(seed))[:n]
    return pairs_figure(task, data.pool_x[idx], data.pool_y[idx], path, f"{task.name}: pool samples and targets")


def synthesized_figure(task: Task, vae, path: Path, n: int = 6, seed: int = 0) -> Path:
    """What SI's first round synthesizes: G(z) for z ~ N(0, I), labeled by the task's labeler;
    the title counts the candidates the labeler rejected on the way."""
    rng = np.random.default_rng(seed)
    inputs, targets, tried = [], [], 0
    while sum(map(len, inputs)) < n and tried < 50 * n:
        z = torch.as_tensor(rng.standard_normal((n, vae.latent_dim)), dtype=torch.float32)
        with torch.no_grad():
            labels = task.label_inputs(vae.decode(z))
        inputs.append(labels.inputs[labels.ok])
        targets.append(labels.targets[labels.ok])
        tried += n
    inputs, targets = torch.cat(inputs), torch.cat(targets)
    title = (
        f"{task.name}: SI-synthesized G(z), z ~ N(0, I), thresholded and labeled "
        f"({len(inputs)} of {tried} accepted by the labeler)"
    )
    inputs, targets = inputs[:n], targets[:n]
    return pairs_figure(task, inputs, targets, path, title)


def trajectories(
    task: Task,
    data: TaskData,
    vae,
    model,
    starts: np.ndarray,
    steps: int,
    alpha: float,
    rng: np.random.Generator,
) -> list[list[int]]:
    """SNN without re-selection (the paper's Fig. 4): from each start, step towards a higher loss
    and move to the nearest unvisited pool sample, ``steps`` times. Returns the visited pool
    indices per trajectory."""
    codes = encode_in_batches(vae.encode, data.pool_x)
    pool_codes = PoolCodes(codes.double().numpy(), manifold_quantile=1.0)
    visited = np.zeros(len(data.pool_x), dtype=bool)
    visited[starts] = True
    paths = [[int(s)] for s in starts]
    current = np.asarray(starts)
    for _ in range(steps):
        index = torch.as_tensor(current)
        stepped = harder_points(model, vae.decode, task.loss, codes[index], data.pool_y[index], alpha, rng)
        current = pool_codes.nearest_available(stepped.double().numpy(), visited)
        for path, i in zip(paths, current):
            path.append(int(i))
    return paths


def trajectory_figure(
    task: Task,
    data: TaskData,
    vae,
    path: Path,
    n_paths: int = 6,
    steps: int = 8,
    alpha: float = 0.5,
    initial: int = 500,
    epochs: int = 10,
    seed: int = 0,
) -> Path:
    """Fig. 4: the pool embedded in a 2-D latent space coloured by class, SNN trajectories of a
    model trained on ``initial`` random labeled samples, and the samples along each trajectory."""
    if vae.latent_dim != 2:
        raise ValueError(f"trajectories need a 2-D latent space (got {vae.latent_dim}); use --latent-dim 2")
    plt = _pyplot()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = task.make_model()
    labeled = rng.choice(len(data.pool_x), size=initial, replace=False)
    index = torch.as_tensor(labeled)
    recipe = task.protocol
    optimizer = make_optimizer(recipe.optimizer, model.parameters(), recipe.lr, recipe.optimizer_options)
    train_epochs(
        model,
        optimizer,
        task.loss,
        data.pool_x[index],
        data.pool_y[index],
        epochs,
        task.protocol.batch_size,
        torch.Generator().manual_seed(seed),
    )
    paths = trajectories(task, data, vae, model, labeled[:n_paths], steps, alpha, rng)
    codes = encode_in_batches(vae.encode, data.pool_x).numpy()

    fig = plt.figure(figsize=(14, 6.5))
    grid = fig.add_gridspec(n_paths, steps + 2, width_ratios=[steps] + [1] * (steps + 1), wspace=0.05)
    ax = fig.add_subplot(grid[:, 0])
    shown = rng.choice(len(codes), size=min(len(codes), 15000), replace=False)
    scatter = ax.scatter(codes[shown, 0], codes[shown, 1], c=data.pool_y[shown].numpy(), cmap="tab10", s=2, alpha=0.4)
    ax.legend(*scatter.legend_elements(), title=task.target_label, loc="upper right", fontsize=7, markerscale=0.8)
    for letter, visited in zip("abcdefghij", paths):
        xy = codes[visited]
        ax.plot(xy[:, 0], xy[:, 1], "-o", color="black", ms=3, lw=1.2)
        ax.annotate(letter, xy[0], fontsize=12, fontweight="bold", xytext=(4, 4), textcoords="offset points")
    ax.set_title(f"{task.name}: SNN trajectories in a 2-D VAE latent space (alpha={alpha}, {steps} steps)")
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    for row, (letter, visited) in enumerate(zip("abcdefghij", paths)):
        for col, i in enumerate(visited):
            image_ax = fig.add_subplot(grid[row, col + 1])
            image_ax.imshow(_image(data.pool_x[i]), cmap="gray")
            image_ax.set_xticks([])
            image_ax.set_yticks([])
            if col == 0:
                image_ax.set_ylabel(letter, rotation=0, fontsize=12, fontweight="bold", labelpad=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
