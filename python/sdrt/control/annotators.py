"""The preprocessors' weight files ("annotators"): the user's own copies, never downloaded, looked
up where the A1111 extension keeps them: <models root>/extensions/sd-webui-controlnet/annotator/
downloads/<subfolder>/<file> (the "annotators" kind of sdrt.loaders.model_folders)."""
from __future__ import annotations

import os
import threading
from typing import Callable, Optional

from ..loaders.model_folders import ModelFolders

_cache: dict = {}
_lock = threading.Lock()


class MissingAnnotatorError(FileNotFoundError):
    """A preprocessor's weight file is not where it is looked for; the message names file and folder."""


def annotator_file(folders: Optional[ModelFolders], subfolder: str, filename: str) -> str:
    """The path of a preprocessor's weight file in `folders` (default: $SDRT_MODELS_ROOT's)."""
    from .models import configured_folders

    folders = folders or configured_folders()
    if folders is None:
        raise MissingAnnotatorError(f"{filename} is needed by this preprocessor and no models folder is set "
                                    f"(models_dir=, --models-dir or SDRT_MODELS_ROOT) to find it in "
                                    f"extensions/sd-webui-controlnet/annotator/downloads/{subfolder}/")
    folder = os.path.join(folders.folder("annotators"), subfolder)
    path = os.path.join(folder, filename)
    if not os.path.isfile(path):
        raise MissingAnnotatorError(f"{filename} is needed by this preprocessor and is not in {folder}; sdrt never "
                                    f"downloads weights: copy your file there (see docs/controlnet.md)")
    return path


def cached(path: str, build: Callable[[str], object]) -> object:
    """`build(path)` once per (file, modification time): loaded networks are kept between calls."""
    key = (os.path.realpath(path), os.path.getmtime(path))
    with _lock:
        if key not in _cache:
            _cache[key] = build(path)
        return _cache[key]
