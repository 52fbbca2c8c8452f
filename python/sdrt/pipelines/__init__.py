"""Pipelines: txt2img (img2img, inpaint, ControlNet and video build on the same Pipeline)."""
from .pipeline import ModelInfo, Pipeline, Result

__all__ = ["ModelInfo", "Pipeline", "Result"]
