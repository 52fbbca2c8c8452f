"""Pipelines: GenerationParams -> the generation stages -> Result (see pipeline.py)."""
from .hooks import JobHooks
from .params import GenerationParams
from .pipeline import ModelInfo, Pipeline, Result
from .start_point import StartPoint

__all__ = ["GenerationParams", "JobHooks", "ModelInfo", "Pipeline", "Result", "StartPoint"]
