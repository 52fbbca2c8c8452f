import os

import pytest


def _cuda_ready() -> tuple[bool, str]:
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    from sdrt import _C

    if not _C.build_info()["cuda"]:
        return False, "sdrt._C was built without CUDA"
    return True, ""


def pytest_collection_modifyitems(config, items):
    if not any("cuda" in item.keywords for item in items):
        return
    ok, why = _cuda_ready()
    if ok:
        return
    if os.environ.get("SDRT_REQUIRE_CUDA"):  # set by bench/gpu_suite.sh: a skip there would hide a failure
        raise pytest.UsageError(f"SDRT_REQUIRE_CUDA is set but CUDA tests cannot run: {why}")
    skip = pytest.mark.skip(reason=f"cuda test: {why}")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng():
    """A freshly seeded generator per test; the seed is in the test id's report on failure."""
    import numpy as np

    seed = int.from_bytes(os.urandom(4), "little")
    print(f"random seed: {seed}")
    return np.random.default_rng(seed)
