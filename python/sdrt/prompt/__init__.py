"""A1111 prompt syntax, tokenization and conditioning."""

from .tokenizer import get_tokenizer

__all__ = ["get_tokenizer"]
