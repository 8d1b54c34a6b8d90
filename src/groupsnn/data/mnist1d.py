"""MNIST-1D (Greydanus, 2020): 1-D signals of length 40 in 10 classes, generated locally, never downloaded."""
import random
from importlib.metadata import version
from typing import Optional

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ._cache import cached
from ._registry import Augment, Splits, register_dataset


def generate() -> dict:
    """The package's default data set (5,000 signals, seed 42, 4,000/1,000 split) as tensors.

    Uses ``make_dataset``, not ``get_dataset`` (which downloads), and restores the global
    ``random``/NumPy RNG states that ``make_dataset`` reseeds.
    """
    from mnist1d.data import get_dataset_args, make_dataset  # slow import (matplotlib): only on a cache miss

    states = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
    return {split: (torch.tensor(data[f"x{suffix}"], dtype=torch.float32).unsqueeze(1),
                    torch.tensor(data[f"y{suffix}"], dtype=torch.long))
            for split, suffix in (("train", ""), ("test", "_test"))}


@register_dataset("mnist1d")
def load_mnist1d(data_dir: Optional[str] = None, augment: Augment = False) -> Splits:
    """4,000 train and 1,000 test signals [1, 40]; ``data_dir`` and ``augment`` are ignored."""
    data = cached("mnist1d", {"mnist1d": version("mnist1d")}, generate)
    return Splits(TensorDataset(*data["train"]), TensorDataset(*data["test"]), num_classes=10, input_shape=(1, 40))
