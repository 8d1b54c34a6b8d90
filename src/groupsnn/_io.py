"""Files are written whole or not at all: a temporary file in the same folder, then a rename."""
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Union

PathLike = Union[str, os.PathLike]


def atomic_write(path: PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)``, then move the result onto ``path`` in one step (same file system)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path: PathLike, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2) + "\n")


def prepare_out_dir(out_dir: PathLike, outputs: list[str], overwrite: bool) -> Path:
    """Make ``out_dir``; refuse if it is a file, or if one of ``outputs`` exists and not ``overwrite``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output folder {out} is a file; choose another --out")
    existing = [name for name in outputs if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out / existing[0]} exists; pass --overwrite to replace it, "
                              "or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    return out
