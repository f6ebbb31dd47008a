"""The generative models of the latent strategies (the VAE, the alpha-GAN): their settings,
training, cache and how good their latent space is. Knows nothing of runs.

A task declares its model with a spec from here (``generative = VAESpec(latent_dim=3)``): the
specs and :class:`GenerativeModel` are part of the plug-in API."""

from bench.generative.alphagan import AlphaGANSpec
from bench.generative.base import GenerativeModel, GenerativeSpec, Trained, unit_images
from bench.generative.cache import load_or_train
from bench.generative.vae import VAESpec

__all__ = ["AlphaGANSpec", "GenerativeModel", "GenerativeSpec", "Trained", "VAESpec", "load_or_train", "unit_images"]
