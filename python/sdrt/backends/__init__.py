"""Backends: each runs the text encoder, UNet and VAE of one model behind one contract, the
``Backend`` protocol of backends/base.py (``unet_forward(x, timestep, context, extras)``,
``encode_text(ids)``, ``vae_decode(latents)``, ``vae_encode(pixels)`` and ``capabilities``)."""
