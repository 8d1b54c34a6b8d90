"""Data sets read from local files (no downloads): ``load(name, data_dir=None, augment=False)``."""
from . import cifar, digits, folder, mnist1d  # noqa: F401  (each module registers its data sets)
from ._registry import Splits, list_datasets, load, register_dataset
from .loader import make_loader
from .subset import class_balanced_subset, fixed_order

__all__ = ["Splits", "class_balanced_subset", "fixed_order", "list_datasets", "load", "make_loader", "register_dataset"]
