"""On-disk cache of decoded or generated data sets: ``$GROUPSNN_CACHE`` or ``~/.cache/groupsnn``."""
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Callable

import torch

from .._io import atomic_write


def cache_dir() -> Path:
    return Path(os.environ.get("GROUPSNN_CACHE") or Path.home() / ".cache" / "groupsnn")


def cache_path(name: str, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"{name}-{digest}.pt"


def cached(name: str, key: dict, build: Callable[[], dict]) -> dict:
    """``build()`` (a dict of tensors, lists, str, numbers), stored under ``name`` + a hash of ``key``.

    A later call with an equal ``key`` loads the stored dict (``weights_only``, memory-mapped, so
    processes on one host share the pages). The file is written to a temporary name and renamed,
    so a crash or a concurrent writer never leaves a half-written cache behind.
    """
    path = cache_path(name, key)
    if path.exists():
        try:
            return torch.load(path, weights_only=True, mmap=True)
        except Exception as e:  # truncated or from an incompatible version: rebuild it
            warnings.warn(f"ignoring unreadable cache {path} ({e}); rebuilding it")
    value = build()
    try:
        atomic_write(path, lambda tmp: torch.save(value, tmp))
    except OSError as e:  # e.g. a read-only home: the data are still good, just not cached
        warnings.warn(f"{e} (the data cache; set GROUPSNN_CACHE to a writable folder)")
    return value
