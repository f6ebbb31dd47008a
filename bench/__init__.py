"""latent-bench: a harness that compares active-sampling strategies on progressive training runs."""

__version__ = "0.1.0"
