"""The held-out choice of the VAE's KL weight beta: for each beta, the task's VAE (trained on the
pool less its held-out share, early stopped on it, cached) and its negative ELBO with KL weight 1
on the held-out pool samples, re-estimated with ``--draws`` z per sample (training estimates it
with one), with the paired difference to beta 1 and its standard error over the held-out samples.
Only held-out *pool* samples are read: no label, no test sample.

    python benchmarks/vae_beta_heldout.py [--task ivus] [--betas 0.5 1 2 4 8 16] [--draws 64] [--threads 1]

Outputs for IVUS: ``results/reference/ivus/latent/beta-heldout.txt``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as nnf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a checkout that is not installed

from bench.generative.base import holdout_split  # noqa: E402
from bench.run.assembly import assemble  # noqa: E402
from bench.run.config import RunConfig  # noqa: E402


@torch.no_grad()
def negative_elbo(vae, x: torch.Tensor, draws: int, seed: int) -> torch.Tensor:
    """Per sample of x [M, ...]: the negative ELBO with KL weight 1, nats, its reconstruction
    term averaged over ``draws`` z ~ q(z | x) from a generator seeded ``seed`` [M]."""
    noise = torch.Generator(device=x.device).manual_seed(seed)
    mean, log_var = vae.posterior(x)
    kl = -0.5 * (1 + log_var - mean.pow(2) - log_var.exp()).sum(1)
    recon = torch.zeros(len(x), device=x.device)
    for _ in range(draws):
        z = mean + torch.randn(mean.shape, generator=noise, device=x.device) * (0.5 * log_var).exp()
        logits = vae.decode_logits(z)
        recon += nnf.binary_cross_entropy_with_logits(logits, x.float(), reduction="none").flatten(1).sum(1)
    return recon / draws + kl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="ivus")
    parser.add_argument("--betas", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0, 8.0, 16.0])
    parser.add_argument("--draws", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    losses, chosen = {}, {}
    for beta in args.betas:
        config = RunConfig(
            task=args.task, strategies=["snn"], seed=args.seed, threads=args.threads, device="cpu", quiet=True,
            generative_options={"beta": beta},
        )  # fmt: skip
        assembly = assemble(config)
        vae, spec, pool = assembly.generative, assembly.plan.generative, assembly.data.pool_x
        _, held = holdout_split(len(pool), spec.holdout, args.seed)
        losses[beta] = negative_elbo(vae, pool[held.to(pool.device)], args.draws, seed=123)
        chosen[beta] = torch.load(assembly.generative_file, weights_only=True).get("best_epoch")
    n = len(next(iter(losses.values())))
    print(
        f"{args.task} VAE, seed {args.seed}: negative ELBO (KL weight 1) on the {n} held-out pool samples, nats per "
        f"sample, {args.draws} z draws each; mean ± standard error over the held-out samples"
    )
    for beta, loss in losses.items():
        line = f"beta {beta:g}: epoch kept {chosen[beta]}, {loss.mean():.1f} ± {loss.std() / n**0.5:.1f}"
        if beta != 1.0 and 1.0 in losses:
            diff = loss - losses[1.0]
            line += f"; minus beta 1, paired: {diff.mean():+.1f} ± {diff.std() / n**0.5:.1f}"
        print(line)
    print(f"lowest: beta {min(losses, key=lambda b: float(losses[b].mean())):g}")


if __name__ == "__main__":
    main()
