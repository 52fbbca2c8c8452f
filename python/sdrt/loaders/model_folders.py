"""A1111's model folders: where checkpoints, LoRAs, VAEs and embeddings live, and how the names
that prompts (``<lora:name:1>``) and API calls use map to files.

Names come from users and remote clients, so :meth:`ModelFolders.resolve` only ever returns a
listed file inside the kind's folder: ``..``, absolute paths, drive letters, NUL bytes and
symlinks leading out of the folder are refused.
"""
from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass

__all__ = [
    "EXTENSIONS",
    "KINDS",
    "ModelEntry",
    "ModelFolders",
    "UnknownModelError",
    "UnsafeModelNameError",
]

ENV_ROOT = "SDRT_MODELS_ROOT"

# Default sub-folders of the root, as in A1111's models/ folder.
_DEFAULT_SUBDIRS = {
    "checkpoints": os.path.join("models", "Stable-diffusion"),
    "lora": os.path.join("models", "Lora"),
    "vae": os.path.join("models", "VAE"),
    "embeddings": os.path.join("models", "embeddings"),
    "esrgan": os.path.join("models", "ESRGAN"),          # ESRGAN-family upscalers, listed by file name
    "realesrgan": os.path.join("models", "RealESRGAN"),  # the files behind A1111's "R-ESRGAN ..." labels
    "controlnet": os.path.join("models", "ControlNet"),  # single files and diffusers folders (sdrt.control)
    # the preprocessors' weights, where the A1111 extension keeps them (<subfolder>/<file>)
    "annotators": os.path.join("extensions", "sd-webui-controlnet", "annotator", "downloads"),
}
KINDS = tuple(_DEFAULT_SUBDIRS)

# File types listed per kind (compared lowercased, as A1111 does). VAE names such as
# "x.vae.pt" are covered by ".pt"; A1111 also picks "*.vae.*" files out of the checkpoint folder,
# which is not done here. Embeddings may also be A1111's .png/.webp images with the vectors in
# their metadata; those are ignored for now.
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "checkpoints": (".safetensors", ".ckpt"),
    "lora": (".safetensors", ".pt", ".ckpt"),
    "vae": (".safetensors", ".pt", ".ckpt"),
    "embeddings": (".pt", ".safetensors", ".bin"),
    "esrgan": (".pth", ".pt", ".safetensors", ".onnx"),
    "realesrgan": (".pth", ".pt", ".safetensors", ".onnx"),
    "controlnet": (".safetensors", ".pth", ".pt", ".ckpt"),
    "annotators": (".pth", ".pt", ".onnx", ".safetensors"),
}

_DRIVE = re.compile(r"^[A-Za-z]:")
_HASH_SUFFIX = re.compile(r"\s+\[([0-9a-fA-F]{8,12})\]$")  # A1111 checkpoint titles: "x.safetensors [abc123def0]"
_DIGITS = re.compile(r"(\d+)")
_MAX_SUGGESTIONS = 10


class UnsafeModelNameError(ValueError):
    """A model name that could reach outside its folder."""

    def __init__(self, kind: str, name: str, why: str) -> None:
        super().__init__(f"refusing {kind} name {name!r}: {why}")
        self.kind, self.name = kind, name


class UnknownModelError(ValueError):
    """No listed file has this name; ``suggestions`` holds close matches."""

    def __init__(self, kind: str, name: str, folder: str, suggestions: list[str]) -> None:
        hint = f"; close matches: {', '.join(suggestions)}" if suggestions else ""
        super().__init__(f"unknown {kind} {name!r} in {folder}{hint}")
        self.kind, self.name, self.suggestions = kind, name, suggestions


@dataclass(frozen=True)
class ModelEntry:
    """One model file. ``name`` is the short name used in ``<lora:name:1>``; ``title`` the path
    relative to the kind's folder with "/" separators (A1111's "sub/name.safetensors")."""

    name: str
    title: str
    path: str
    size: int
    mtime: float

    @property
    def stem_title(self) -> str:
        """``title`` without the extension ("sub/name")."""
        return os.path.splitext(self.title)[0]


def _natural_key(title: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key putting "x2" before "x10" and ignoring case, like A1111's natural sort."""
    parts = _DIGITS.split(title.lower())
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts if p)


def _inside(path: str, root_real: str) -> bool:
    """Whether ``path``, with every symlink followed, stays within ``root_real``."""
    real = os.path.realpath(path)
    return os.path.commonpath([real, root_real]) == root_real


class ModelFolders:
    """The folders of each kind, defaulting to A1111's layout under ``root``.

    ``root`` defaults to the ``SDRT_MODELS_ROOT`` environment variable, else the current
    directory; ``checkpoints``/``lora``/``vae``/``embeddings``/``controlnet`` override single folders
    like A1111's ``--ckpt-dir``, ``--lora-dir``, ``--vae-dir``, ``--embeddings-dir`` and the
    extension's ``--controlnet-dir``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        checkpoints: str | os.PathLike[str] | None = None,
        lora: str | os.PathLike[str] | None = None,
        vae: str | os.PathLike[str] | None = None,
        embeddings: str | os.PathLike[str] | None = None,
        controlnet: str | os.PathLike[str] | None = None,
    ) -> None:
        if root is None:
            root = os.environ.get(ENV_ROOT) or os.getcwd()
        self.root = os.path.abspath(os.path.expanduser(os.fspath(root)))
        overrides = {"checkpoints": checkpoints, "lora": lora, "vae": vae, "embeddings": embeddings}
        overrides.update(esrgan=None, realesrgan=None, controlnet=controlnet, annotators=None)
        self.folders: dict[str, str] = {}
        for kind, sub in _DEFAULT_SUBDIRS.items():
            given = overrides[kind]
            folder = os.path.expanduser(os.fspath(given)) if given is not None else os.path.join(self.root, sub)
            self.folders[kind] = os.path.abspath(folder)

    def folder(self, kind: str) -> str:
        """The absolute folder of ``kind``."""
        return self.folders[_check_kind(kind)]

    def list(self, kind: str) -> list[ModelEntry]:
        """Files of ``kind``, subfolders included, in natural order of their titles.

        Symlinked files are listed when they point inside the folder; symlinked sub-folders are
        not descended into (that avoids link cycles, and outside targets would be refused anyway).
        """
        folder = self.folder(kind)
        if not os.path.isdir(folder):
            return []
        root_real = os.path.realpath(folder)
        exts = EXTENSIONS[kind]
        entries = []
        for dirpath, _dirnames, filenames in os.walk(folder):
            for fn in filenames:
                path = os.path.join(dirpath, fn)
                if os.path.splitext(fn)[1].lower() in exts and _inside(path, root_real):
                    entries.append(_entry(folder, path))
        return sorted((e for e in entries if e is not None), key=lambda e: (_natural_key(e.title), e.title))

    def resolve(self, kind: str, name: str) -> str:
        """The absolute path of the file ``name`` refers to.

        ``name`` may be the short name ("detail"), the relative path without or with extension
        ("style/detail", "style/detail.safetensors"), optionally followed by an A1111 hash
        suffix (" [abc123def0]"). Preference: exact title, then title without extension, then
        short name. When a short name exists in several subfolders the first in :meth:`list`
        order wins (A1111 also picks one silently).

        Raises UnsafeModelNameError for names that could leave the folder and
        UnknownModelError (a ValueError) with close matches when nothing matches.
        """
        folder = self.folder(kind)
        rel = _check_name(kind, name)
        root_real = os.path.realpath(folder)
        _refuse_escaping_links(kind, name, folder, rel, root_real)
        entries = self.list(kind)
        found = _match(entries, rel)
        if found is None and _HASH_SUFFIX.search(rel):
            found = _match(entries, _HASH_SUFFIX.sub("", rel))
        if found is None:
            raise UnknownModelError(kind, name, folder, _suggest(entries, rel))
        if not _inside(found.path, root_real):  # changed since listing
            raise UnsafeModelNameError(kind, name, f"resolves outside {folder}")
        return found.path


def without_hash_suffix(name: str) -> str:
    """`name` without A1111's " [hash]" title suffix ("x.safetensors [abc123def0]" -> "x.safetensors")."""
    return _HASH_SUFFIX.sub("", name)


def hash_suffix(name: str) -> str | None:
    """The hash of A1111's " [hash]" title suffix, lowercased, or None."""
    found = _HASH_SUFFIX.search(name)
    return found.group(1).lower() if found else None


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(KINDS)}")
    return kind


def _entry(folder: str, path: str) -> ModelEntry | None:
    """A ModelEntry for ``path``, or None if it vanished or is not a regular file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not os.path.isfile(path):
        return None
    title = os.path.relpath(path, folder).replace(os.sep, "/")
    name = os.path.splitext(os.path.basename(path))[0]
    return ModelEntry(name=name, title=title, path=path, size=st.st_size, mtime=st.st_mtime)


def _check_name(kind: str, name: str) -> str:
    """Refuse names that could address anything outside the folder; return it with "/" separators."""
    if not isinstance(name, str) or not name.strip():
        raise UnsafeModelNameError(kind, str(name), "empty name")
    if "\x00" in name:
        raise UnsafeModelNameError(kind, name, "contains a NUL byte")
    # Backslashes count as separators whatever the OS, so "..\\x" is caught everywhere.
    rel = name.strip().replace("\\", "/")
    if rel.startswith("/") or os.path.isabs(rel):
        raise UnsafeModelNameError(kind, name, "absolute paths are not allowed")
    if _DRIVE.match(rel):
        raise UnsafeModelNameError(kind, name, "drive letters are not allowed")
    parts = rel.split("/")
    if ".." in parts:
        raise UnsafeModelNameError(kind, name, "'..' is not allowed")
    rel = "/".join(p for p in parts if p not in ("", "."))
    if not rel:
        raise UnsafeModelNameError(kind, name, "names no file")
    return rel


def _refuse_escaping_links(kind: str, name: str, folder: str, rel: str, root_real: str) -> None:
    """Refuse a name whose file (or a directory on its way) is a symlink out of the folder.

    Such files are never listed, so without this they would read as merely unknown.
    """
    parts = rel.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts))]  # the directories on the way
    for candidate in [*prefixes, rel, *(rel + ext for ext in EXTENSIONS[kind])]:
        path = os.path.join(folder, *candidate.split("/"))
        if os.path.lexists(path) and not _inside(path, root_real):
            raise UnsafeModelNameError(kind, name, f"resolves outside {folder}")


def _match(entries: list[ModelEntry], rel: str) -> ModelEntry | None:
    """The first entry by title, then title without extension, then short name."""
    for key in (lambda e: e.title, lambda e: e.stem_title, lambda e: e.name):
        for e in entries:
            if key(e) == rel:
                return e
    return None


def _suggest(entries: list[ModelEntry], rel: str) -> list[str]:
    """Up to ten available names closest to ``rel``: short names and subfolder paths."""
    names = list(dict.fromkeys([e.name for e in entries] + [e.stem_title for e in entries]))
    return difflib.get_close_matches(rel, names, n=_MAX_SUGGESTIONS, cutoff=0.5)
