"""Fixtures: a tiny random SDXL base and refiner (tiny_sdxl.py) saved as diffusers folders, with
diffusers' own pipelines on the same files as the reference."""
import pytest

from tiny_sdxl import build_pipeline


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory):
    """(folder, diffusers pipeline) of a tiny random SDXL base."""
    folder = tmp_path_factory.mktemp("tiny_sdxl") / "tiny-sdxl"
    pipe = build_pipeline(0)
    pipe.save_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return str(folder), pipe


@pytest.fixture(scope="session")
def tiny_refiner(tmp_path_factory):
    """(folder, diffusers StableDiffusionXLImg2ImgPipeline) of a tiny random SDXL refiner: OpenCLIP
    bigG alone, aesthetic-score time ids."""
    folder = tmp_path_factory.mktemp("tiny_refiner") / "tiny-refiner"
    pipe = build_pipeline(1, refiner=True)
    pipe.save_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return str(folder), pipe
