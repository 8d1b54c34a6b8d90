"""What the benchmarks share: thread, clock and allocator options, and interleaved timing."""
import argparse
import ctypes
import sys
import time
from typing import Callable

import torch

CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def add_options(parser: argparse.ArgumentParser, repeats: int = 5) -> None:
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's default)")
    parser.add_argument("--repeats", type=int, default=repeats, help="timed rounds; the best is kept")
    parser.add_argument("--clock", choices=CLOCKS, default="wall",
                        help="wall time, or this thread's CPU time (steadier on a busy machine; "
                             "meaningful with --threads 1 only)")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc as it is (see keep_freed_memory)")


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory (up to 32 MiB blocks) instead of returning it to the OS.

    By default, freeing a large tensor can give its pages back, and the next tensor page-faults them
    in again; in a ResNet-20 forward at batch 64 that was a third of the time, by an amount that
    depends on what ran before. Keeping freed memory makes the comparison about the computation.
    Returns False where there is no glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_trim_threshold, 1 << 30) and libc.mallopt(m_mmap_threshold, 32 << 20))


def setup(args: argparse.Namespace) -> str:
    """Apply ``--threads`` and the allocator setting; returns a line describing the run."""
    if args.threads:
        torch.set_num_threads(args.threads)
    malloc = "default malloc" if args.default_malloc or not keep_freed_memory() else "malloc keeps freed memory"
    return (f"{torch.get_num_threads()} threads, {args.clock} clock, best of {args.repeats}, {malloc}, "
            f"torch {torch.__version__}")


def best_times(candidates: dict[str, Callable[[], object]], repeats: int, clock: str = "wall",
               grad: bool = False, warm_up: bool = True) -> dict[str, float]:
    """Seconds per call of each candidate: one warm-up round (unless ``warm_up=False``), then
    ``repeats`` rounds that run every candidate in turn (so a change of machine load hits all of them
    alike); the best of each. Autograd is off unless ``grad``."""
    with torch.set_grad_enabled(grad):
        return _best_times(candidates, repeats, CLOCKS[clock], warm_up)


def _best_times(candidates, repeats, now, warm_up) -> dict[str, float]:
    if warm_up:
        for fn in candidates.values():
            fn()
    best = dict.fromkeys(candidates, float("inf"))
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = now()
            fn()
            best[name] = min(best[name], now() - start)
    return best
