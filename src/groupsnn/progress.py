"""Progress reports: tqdm bars on a terminal or in a Jupyter notebook; in a log (stderr sent to a
file, a pipe, CI), plain lines.

A log never gets escape codes or carriage returns. Bars that vanish when done (``leave=False``: the
steps of an epoch, the batches of an evaluation) are off there, and a lasting bar (the epochs of a
run, the networks of a sweep) becomes one line per finished item, with its postfix.
"""
import sys
import time
from typing import Iterable, Optional

from tqdm.auto import tqdm


def _interactive() -> bool:
    """Whether a person watches stderr: a terminal, or a Jupyter kernel (whose stderr is no tty)."""
    if sys.stderr.isatty():
        return True
    ipython = sys.modules.get("IPython")  # imported only where IPython runs
    shell = getattr(ipython, "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


def progress_bar(iterable: Iterable, desc: str = "", total: Optional[int] = None, initial: int = 0,
                 leave: bool = True, disable: bool = False):
    """``tqdm(iterable, ...)`` on a terminal or in a notebook (``tqdm.auto``: a widget there), a
    :class:`LogProgress` in a log; both take ``set_postfix``."""
    terminal = _interactive()
    if disable or not (terminal or leave):
        return tqdm(iterable, disable=True)
    if terminal:
        return tqdm(iterable, desc=desc, total=total, initial=initial, leave=leave)
    return LogProgress(iterable, desc, total, initial)


class LogProgress:
    """Iterates over ``iterable``; after each item, one line ``desc n/total (elapsed) postfix`` on stderr."""

    def __init__(self, iterable: Iterable, desc: str = "", total: Optional[int] = None, initial: int = 0):
        self.iterable, self.desc, self.n = iterable, desc, initial
        self.total = total if total is not None else getattr(iterable, "__len__", lambda: None)()
        self.postfix: dict = {}

    def set_postfix(self, ordered_dict: Optional[dict] = None, **values) -> None:
        self.postfix = {**(ordered_dict or {}), **values}

    def __iter__(self):
        start = time.monotonic()
        for item in self.iterable:
            yield item
            self.n += 1
            count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
            details = ", ".join(f"{k}={v}" for k, v in self.postfix.items())
            print(f"{self.desc} {count} ({time.monotonic() - start:.0f} s){': ' + details if details else ''}",
                  file=sys.stderr, flush=True)
