"""``make_loader``: one DataLoader recipe for every data set, single process or DDP."""
import os
import random
import signal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset


def default_workers(dataset: Dataset) -> int:
    """0 for plain tensors (batching is all the work); else one process per spare core, at most 8.

    Workers also run the per-image transforms single-threaded: in a multi-threaded process the
    tiny-tensor ops stall on thread wake-ups (20x slower measured on 2 busy cores). Under
    torchrun the cores are shared among the ``LOCAL_WORLD_SIZE`` processes of the host.
    """
    if isinstance(dataset, TensorDataset) or getattr(dataset, "transform", True) is None:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores // int(os.environ.get("LOCAL_WORLD_SIZE", 1)) - 1))


def _init_worker(worker_id: int) -> None:
    # Ctrl-C in a terminal reaches the workers too; the main process decides when to stop, and a
    # worker that quit on it would turn a clean stop into "DataLoader worker exited unexpectedly".
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # torch is already seeded per worker from the loader's generator; make random/NumPy follow it.
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def make_loader(dataset: Dataset, batch_size: int, train: bool, workers: int | None = None,
                distributed: bool = False, seed: int = 0) -> DataLoader:
    """Batches of ``dataset``, shuffled (and augmented, if the data set does) when ``train``.

    The order depends only on ``seed`` (and the epoch, via ``sampler.set_epoch`` under DDP); so do
    the augmentation draws in worker processes (per rank under DDP), while with ``workers=0`` they
    come from torch's global RNG. A ragged last training batch is dropped, because a batch of one
    breaks BatchNorm, unless that would leave no batch at all.
    """
    workers = default_workers(dataset) if workers is None else workers
    sampler = DistributedSampler(dataset, shuffle=train, seed=seed) if distributed else None
    samples = len(sampler) if sampler is not None else len(dataset)
    rank = sampler.rank if sampler is not None else 0
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
        num_workers=workers, pin_memory=torch.cuda.is_available(), drop_last=train and samples > batch_size,
        generator=torch.Generator().manual_seed(seed + rank), worker_init_fn=_init_worker,
        persistent_workers=False,  # fresh workers each epoch, seeded from `generator`: resumable
    )
