"""Backends: each runs the text encoder, UNet and VAE of one model behind one contract
(``unet(x, timestep, context)``, ``encode_text(ids)``, ``vae_decode(latents)``, ``vae_encode(pixels)``)."""
