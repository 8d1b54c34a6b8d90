"""What the in-memory image readers share: CIFAR's statistics, a dataset of uint8 image tensors,
and the CIFAR training transforms (``cifar.py`` and ``folder.py`` both build on them)."""
from typing import Callable, Optional, Sequence, Union

from torch import Tensor
from torch.utils.data import Dataset

from . import transforms as T

# Statistics used by the QCFS reference code (Bu et al., 2022).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN = (129.3 / 255, 124.1 / 255, 112.4 / 255)
CIFAR100_STD = (68.2 / 255, 65.4 / 255, 70.4 / 255)


class TensorImageDataset(Dataset):
    """uint8 images [N, C, H, W] and labels [N] held in memory; ``transform`` runs on each item."""

    def __init__(self, images: Tensor, labels: Tensor, transform: Optional[Callable] = None,
                 classes: Sequence[str] = ()):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.transform, self.classes = images, labels, transform, list(classes)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        image = self.images[i]
        return (image if self.transform is None else self.transform(image)), self.labels[i]


# Training augmentations by name; ``augment=True`` means the QCFS recipe.
AUGMENTATIONS = ("autoaugment", "crop-flip")


def cifar_transform(mean: Sequence[float], std: Sequence[float], augment: Union[bool, str]) -> T.Compose:
    """Test (``augment=False``): normalise. Train: crop 32 (pad 4) and flip, then for ``"autoaugment"``
    (or ``True``, the QCFS recipe) AutoAugment before and Cutout 16 after normalising.

    Cutout comes after normalisation, as in the reference code, so the hole holds the mean colour.
    """
    normalize = [T.ToFloat(), T.Normalize(mean, std)]
    if not augment:
        return T.Compose(normalize)
    policy = "autoaugment" if augment is True else augment
    if policy not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {policy!r}; choose one of {', '.join(AUGMENTATIONS)}")
    crop_flip = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
    if policy == "crop-flip":
        return T.Compose(crop_flip + normalize)
    return T.Compose([*crop_flip, T.AutoAugment(), *normalize, T.Cutout(16)])
