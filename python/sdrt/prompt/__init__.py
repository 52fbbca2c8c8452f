"""A1111 prompt syntax, tokenization and conditioning."""

from .attention import parse_prompt_attention
from .scheduling import get_learned_conditioning_prompt_schedules, split_and
from .tokenizer import get_tokenizer

__all__ = ["get_learned_conditioning_prompt_schedules", "get_tokenizer", "parse_prompt_attention", "split_and"]
