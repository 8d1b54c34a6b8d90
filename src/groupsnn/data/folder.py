"""Class-per-folder image data sets: ``<root>/<class>/<image>``, class index = rank of the sorted name.

- "imagenet": too big for memory, so each item is decoded with Pillow when it is read.
- "cifar10-folder": small images from a folder or a ``.tar``/``.tar.gz`` of one, decoded once into
  a uint8 tensor and cached on disk (see ``_cache``), e.g. the JPEG CIFAR-10 in shared/data/cifar10.
  ``cifar10`` and ``cifar100`` read this layout too when the python pickles are not there.
"""
import io
import os
import tarfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable, Iterator, Optional, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from . import transforms as T
from ._cache import cached
from ._registry import Augment, Splits, register_dataset
from .images import CIFAR10_MEAN, CIFAR10_STD, TensorImageDataset, cifar_transform

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not PurePosixPath(name).name.startswith(".")


def read_rgb(file: Union[Path, BinaryIO], where: str) -> np.ndarray:
    """Decode the image ``file`` (a path or a file object) to a uint8 RGB array [H, W, 3]; a file that
    cannot be decoded is one ValueError naming ``where`` (its path, or its archive member)."""
    try:
        with Image.open(file) as image:
            return np.array(image.convert("RGB"))
    except UnidentifiedImageError:  # its message names the file object, not where it came from
        raise ValueError(f"{where} is not a readable image (not a format Pillow knows, or damaged at "
                         "its start); replace or remove it") from None
    except Exception as err:  # noqa: BLE001  Pillow reports damage as OSError, SyntaxError, ValueError, ...
        raise ValueError(f"{where} is not a readable image ({type(err).__name__}: {err}); "
                         "replace or remove it") from None


def list_folder(root: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """(image path, class index) pairs sorted by class then file name, and the sorted class names."""
    classes = sorted(d.name for d in os.scandir(root) if d.is_dir() and not d.name.startswith("."))
    samples = [(Path(d, f), y) for y, c in enumerate(classes)
               for d, _, files in sorted(os.walk(root / c)) for f in sorted(files) if is_image(f)]
    return samples, classes


class ImageFolder(Dataset):
    """Images decoded lazily per item from ``root/<class>/...`` (for data sets too big for memory)."""

    def __init__(self, root: Path, transform: Optional[Callable] = None):
        self.samples, self.classes = list_folder(Path(root))
        if not self.samples:
            raise FileNotFoundError(f"no images under {root}; expected {root}/<class>/<image>.jpg")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        path, label = self.samples[i]
        x = torch.from_numpy(read_rgb(path, str(path))).permute(2, 0, 1).contiguous()
        return (x if self.transform is None else self.transform(x)), label


@register_dataset("imagenet")
def load_imagenet(data_dir: Optional[str] = None, augment: Augment = False) -> Splits:
    """ILSVRC-2012 from ``<data_dir>/train/<class>/*`` and ``<data_dir>/val/<class>/*`` at 224x224."""
    root = Path(data_dir or ".")
    if not ((root / "train").is_dir() and (root / "val").is_dir()):
        raise FileNotFoundError(f"expected {root}/train/<class>/*.JPEG and {root}/val/<class>/*.JPEG "
                                "(ImageNet with the validation images sorted into class folders)")
    normalize = [T.ToFloat(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    center = [T.Resize(256), T.CenterCrop(224)]
    train = ImageFolder(root / "train", T.Compose(([T.RandomResizedCrop(224), T.RandomHorizontalFlip()]
                                                   if augment else center) + normalize))
    test = ImageFolder(root / "val", T.Compose(center + normalize))
    return Splits(train, test, num_classes=len(train.classes), input_shape=(3, 224, 224))


# ---- small images, decoded once into memory --------------------------------------------------

def _iter_files(source: Path) -> Iterator[tuple[str, bytes]]:
    """(path relative to the tree's root, file bytes) of every image in a folder or tar archive."""
    if source.is_dir():
        for path, _ in list_folder(source)[0]:
            yield path.relative_to(source).as_posix(), path.read_bytes()
        return
    try:
        with tarfile.open(source, "r|*") as tar:  # streaming: one pass over the compressed file
            for member in tar:
                if member.isfile() and is_image(member.name):
                    yield member.name, tar.extractfile(member).read()
    except (tarfile.TarError, EOFError) as err:
        raise ValueError(f"{source} is not a readable tar archive ({err}); copy or download it again") from None


def decode_image_tree(source: Path) -> dict:
    """Decode every image of a class-per-folder tree (the class is each image's parent folder).

    Returns ``images`` uint8 [N, 3, H, W], ``labels`` [N], ``classes``, ordered by class then path.
    """
    items = []
    for name, data in _iter_files(source):
        where = str(source / name) if source.is_dir() else f"{name} in {source}"
        items.append((PurePosixPath(name).parent.name, name, read_rgb(io.BytesIO(data), where)))
    if not items:
        raise FileNotFoundError(f"no images in {source}; expected <class>/<image>.jpg entries in it")
    items.sort(key=lambda item: item[:2])
    if len({array.shape for _, _, array in items}) > 1:
        raise ValueError(f"images in {source} differ in size; resize them to one size first")
    classes = sorted({c for c, _, _ in items})
    index = {c: i for i, c in enumerate(classes)}
    images = torch.from_numpy(np.stack([array for _, _, array in items])).permute(0, 3, 1, 2).contiguous()
    return {"images": images, "labels": torch.tensor([index[c] for c, _, _ in items]), "classes": classes}


def _fingerprint(source: Path) -> list:
    """Changes whenever a file of the tree (or the archive) is added, removed, resized or touched."""
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    return [[str(p), stat.st_size, stat.st_mtime_ns] for p in files for stat in [p.stat()]]


def load_image_tree(source: Path, cache: bool = True) -> dict:
    """``decode_image_tree(source)``, reusing the on-disk cache while ``source`` is unchanged."""
    source = Path(source).resolve()
    if not cache:
        return decode_image_tree(source)
    key = {"source": str(source), "files": _fingerprint(source), "format": 1}
    return cached("image-tree", key, lambda: decode_image_tree(source))


def _find_split(root: Path, split: str) -> Optional[Path]:
    candidates = [root / split] + [root / f"{split}{ext}" for ext in (".tar.gz", ".tgz", ".tar")]
    return next((p for p in candidates if p.exists()), None)


def find_image_splits(root: Path) -> Optional[tuple[Path, Path]]:
    """The train and test sources under ``root`` (folders ``train/``, ``test/`` or their
    ``.tar.gz``/``.tgz``/``.tar``), or None unless both are there."""
    sources = _find_split(root, "train"), _find_split(root, "test")
    return None if None in sources else sources


IMAGE_SPLITS_LAYOUT = ("{root}/train/ and {root}/test/ (<class>/<image> inside) or "
                       "{root}/train.tar.gz and {root}/test.tar.gz holding those trees")


def load_image_splits(root: Path, augment: Augment, mean, std) -> Splits:
    """Small images as class folders (or archives of them) under ``root``, decoded once and cached."""
    sources = find_image_splits(root)
    if sources is None:
        raise FileNotFoundError(f"expected {IMAGE_SPLITS_LAYOUT.format(root=root)}")
    splits = []
    for source, aug in zip(sources, (augment, False)):
        tree = load_image_tree(source)
        transform = cifar_transform(mean, std, aug)
        splits.append(TensorImageDataset(tree["images"], tree["labels"], transform, tree["classes"]))
    if splits[0].classes != splits[1].classes:
        raise ValueError(f"train and test classes differ under {root}: {splits[0].classes} vs {splits[1].classes}")
    return Splits(*splits, num_classes=len(splits[0].classes), input_shape=tuple(splits[0].images.shape[1:]))


@register_dataset("cifar10-folder")
def load_cifar10_folder(data_dir: Optional[str] = None, augment: Augment = False) -> Splits:
    """CIFAR-10 as class folders of images: ``<data_dir>/{train,test}/<class>/*`` or ``{train,test}.tar.gz``
    (any number of classes; ``cifar10`` reads the same layout and checks there are ten)."""
    return load_image_splits(Path(data_dir or "."), augment, CIFAR10_MEAN, CIFAR10_STD)
