"""Data-set registry: ``load(name, data_dir=None, augment=False)`` -> ``Splits``."""
from typing import Callable, Dict, NamedTuple, Optional, Union

from torch.utils.data import Dataset


# False: no augmentation; True: the data set's standard recipe; a string: a named recipe
# (CIFAR: "autoaugment", the QCFS recipe and True's meaning, or "crop-flip")
Augment = Union[bool, str]


class Splits(NamedTuple):
    train: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple  # one sample, without the batch dimension, e.g. (3, 32, 32)


_DATASETS: Dict[str, Callable[..., Splits]] = {}


def register_dataset(name: str):
    """Register ``fn(data_dir: Optional[str], augment: Augment) -> Splits`` under ``name``."""
    def wrap(fn):
        if name in _DATASETS:
            raise ValueError(f"data set {name!r} is registered twice")
        _DATASETS[name] = fn
        return fn
    return wrap


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def load(name: str, data_dir: Optional[str] = None, augment: Augment = False) -> Splits:
    """Train/test splits of data set ``name``; ``augment`` picks the training augmentation (``Augment``)."""
    try:
        loader = _DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; known data sets: {', '.join(list_datasets())}") from None
    return loader(data_dir=data_dir, augment=augment)
