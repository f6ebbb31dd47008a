"""The generative models of the latent strategies (the VAE, the alpha-GAN): their settings,
training, cache and how good their latent space is. Knows nothing of runs."""
