"""OpenCV, imported on first use: it is the `control` extra (opencv-python-headless), needed by
the preprocessors only, not by a ControlNet fed a ready control image."""
from __future__ import annotations


def cv2():
    try:
        import cv2 as module
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("ControlNet preprocessors need OpenCV: pip install 'sdrt[control]' "
                          "(opencv-python-headless)") from e
    return module
