"""Files are written whole or not at all: a temporary file in the same folder, then a rename."""
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Union

PathLike = Union[str, os.PathLike]
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)``, then move the result onto ``path`` in one step (same file system)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file a new file's usual mode
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # the data reach the disk before the name does
        os.replace(tmp, path)
    except OSError as err:  # disk full, file too large, no permission, ...
        Path(tmp).unlink(missing_ok=True)
        raise OSError(f"could not write {path} ({err.strerror or err}); nothing was changed there. "
                      "Free some disk space or choose another output folder") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_stale_temporaries(folder: PathLike, name: str) -> None:
    """Delete what a killed ``atomic_write(folder/name)`` left behind (it cannot clean up itself)."""
    for tmp in Path(folder).glob(f".{name}.*.tmp"):
        tmp.unlink(missing_ok=True)


def write_text(path: PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path: PathLike, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2) + "\n")


def file_sha256(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_out_dir(out_dir: PathLike, outputs: list[str], overwrite: bool) -> Path:
    """Refuse ``out_dir`` if it is a file, or if one of ``outputs`` exists there and not ``overwrite``.
    Nothing is created: the folder appears with the first file written into it."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output folder {out} is a file; choose another --out")
    existing = [name for name in outputs if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out / existing[0]} exists; pass --overwrite to replace it, "
                              "or choose another --out")
    return out
