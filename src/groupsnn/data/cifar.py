"""CIFAR-10 and CIFAR-100 from the python-pickle folders of https://www.cs.toronto.edu/~kriz/cifar.html,
or from class folders of images (or ``.tar.gz`` archives of them), whichever ``data_dir`` holds.

Images stay in memory as one uint8 tensor; augmentation runs per item on tensors.
"""
import pickle
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor

from ._registry import Augment, Splits, register_dataset
from .folder import IMAGE_SPLITS_LAYOUT, find_image_splits, load_image_splits
from .images import (CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD,  # noqa: F401  (public here too)
                     TensorImageDataset, cifar_transform)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts of numpy arrays and lists only, so a rogue file cannot run code."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
               ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")
        return super().find_class(module, name)


def read_batches(files: Sequence[Path], label_key: str) -> tuple[Tensor, Tensor]:
    """Concatenate pickled batches (``data``: N x 3072 uint8, ``label_key``: N ints) -> [N,3,32,32], [N]."""
    images, labels = [], []
    for file in files:
        try:
            with open(file, "rb") as f:
                batch = _ArrayUnpickler(f, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError) as err:
            raise ValueError(f"{file} is not a readable CIFAR batch ({err}); extract the archive again") from None
        batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
        images.append(torch.as_tensor(batch["data"], dtype=torch.uint8).reshape(-1, 3, 32, 32))
        labels.append(torch.as_tensor(batch[label_key], dtype=torch.long))
    return torch.cat(images), torch.cat(labels)


def _pickle_folder(root: Path, folder: str, files: list[str]) -> Optional[Path]:
    """Where the pickled batches are: ``root/folder`` if it exists, else ``root`` itself if it holds
    any of ``files`` (``data_dir`` named the pickle folder), else None."""
    if (root / folder).is_dir():
        return root / folder
    return root if any((root / name).is_file() for name in files) else None


def _load_cifar(data_dir: Optional[str], augment: Augment, folder: str, train: list[str], test: list[str],
                label_key: str, num_classes: int, mean: Sequence[float], std: Sequence[float]) -> Splits:
    """The python pickles under ``data_dir/folder`` (or in ``data_dir`` itself) if there, else class
    folders of images ``data_dir/{train,test}/<class>/*`` or their ``.tar.gz`` (``folder.py``)."""
    base = Path(data_dir or ".")
    root = _pickle_folder(base, folder, train + test)
    if root is None and find_image_splits(base) is not None:
        splits = load_image_splits(base, augment, mean, std)
        if splits.num_classes != num_classes:
            raise ValueError(f"{base} holds image folders of {splits.num_classes} classes, not the "
                             f"{num_classes} of this data set; for other class-per-folder images use the data "
                             "set cifar10-folder (any number of classes)")
        return splits
    if root is None:
        raise FileNotFoundError(
            f"expected {base / folder}/{{{','.join(train + test)}}} (the python version of CIFAR from "
            f"https://www.cs.toronto.edu/~kriz/cifar.html, unpacked into data_dir) or class folders of "
            f"images, {IMAGE_SPLITS_LAYOUT.format(root=base)}; found neither")
    missing = [name for name in train + test if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"expected {root}/{{{','.join(train + test)}}} (the python version of CIFAR from "
            f"https://www.cs.toronto.edu/~kriz/cifar.html, unpacked into data_dir); missing: {', '.join(missing)}")
    splits = []
    for names, aug in ((train, augment), (test, False)):
        images, labels = read_batches([root / n for n in names], label_key)
        splits.append(TensorImageDataset(images, labels, cifar_transform(mean, std, aug)))
    return Splits(*splits, num_classes=num_classes, input_shape=(3, 32, 32))


@register_dataset("cifar10")
def load_cifar10(data_dir: Optional[str] = None, augment: Augment = False) -> Splits:
    """50,000 train and 10,000 test images from ``<data_dir>/cifar-10-batches-py``, or from 10 class
    folders ``<data_dir>/{train,test}/<class>/*`` (or ``{train,test}.tar.gz`` holding them)."""
    return _load_cifar(data_dir, augment, "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)],
                       ["test_batch"], "labels", 10, CIFAR10_MEAN, CIFAR10_STD)


@register_dataset("cifar100")
def load_cifar100(data_dir: Optional[str] = None, augment: Augment = False) -> Splits:
    """50,000 train and 10,000 test images (fine labels) from ``<data_dir>/cifar-100-python``, or
    from 100 class folders ``<data_dir>/{train,test}/<class>/*`` (or ``{train,test}.tar.gz``)."""
    return _load_cifar(data_dir, augment, "cifar-100-python", ["train"], ["test"], "fine_labels", 100,
                       CIFAR100_MEAN, CIFAR100_STD)
