"""sdrt: an optimized Stable Diffusion inference runtime with AUTOMATIC1111 semantics.

The compiled core is ``sdrt._C``; its Python face is :mod:`sdrt.kernels`.
"""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("sdrt")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

from .loading import load  # noqa: E402

__all__ = ["__version__", "load"]
