"""Data sets read from local files (no downloads): ``load(name, data_dir=None, augment=False)``."""
from . import digits  # noqa: F401  (each module registers its data sets)
from ._registry import Splits, list_datasets, load, register_dataset

__all__ = ["Splits", "list_datasets", "load", "register_dataset"]
