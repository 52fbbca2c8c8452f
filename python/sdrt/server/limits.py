"""What one request may ask of the server. Every limit is checked before any model work, and a
violation is answered 422 naming the field (the schemas carry the numeric bounds; images are
checked by sdrt.server.images)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_side: int = 2048            # width / height, pixels (A1111's UI allows up to 2048)
    max_steps: int = 150            # A1111's UI maximum
    max_batch_size: int = 8
    max_n_iter: int = 16
    max_prompt_chars: int = 20_000
    max_image_b64_chars: int = 32 * 2**20  # one base64 image (init image, mask, png-info)
    max_image_pixels: int = 4096 * 4096    # decoded width * height (decompression-bomb guard)
    max_init_images: int = 16
    max_input_pixels: int = 2 * 4096 * 4096   # all decoded images of one request together
    max_batch_pixels: int = 2 * 2048 * 2048   # width * height * batch_size: what one UNet pass holds
    max_output_pixels: int = 16 * 2048 * 2048  # width * height * batch_size * n_iter: the response's images
    max_body_bytes: int = 64 * 2**20       # a whole request body
    max_controlnet_units: int = 10         # alwayson_scripts.ControlNet.args (the extension's UI allows 10)

    def __post_init__(self):
        for name, value in self.__dict__.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{name}={value!r}; must be a positive integer")
        if self.max_side < 64:
            raise ValueError(f"Limits.max_side={self.max_side}; must be >= 64 (the smallest size A1111 accepts)")
