"""scikit-learn's 8x8 handwritten digits (ships with the package): the embedded default."""
from typing import Optional

import torch
from torch.utils.data import TensorDataset

from ._registry import Augment, Splits, register_dataset

SPLIT_SEED = 0
TEST_FRACTION = 0.2


@register_dataset("digits")
def load_digits(data_dir: Optional[str] = None, augment: Augment = False) -> Splits:
    """1797 images 1x8x8 in [0, 1]; a fixed stratified 80/20 split (1437 train, 360 test).

    ``data_dir`` and ``augment`` are accepted for a uniform interface and ignored.
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    digits = sk_load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    idx_train, idx_test = train_test_split(
        torch.arange(len(y)).numpy(), test_size=TEST_FRACTION, stratify=y.numpy(), random_state=SPLIT_SEED)
    return Splits(TensorDataset(x[idx_train], y[idx_train]), TensorDataset(x[idx_test], y[idx_test]),
                  num_classes=10, input_shape=(1, 8, 8))
