"""A fixed class-balanced subset: the first ``per_class`` samples of every class, in data-set order.

Image-folder data sets are ordered by class, so "the first 1,000 test images" of CIFAR-10 would all
be airplanes; this takes 100 of each class instead, and always the same ones.
"""
import torch
from torch.utils.data import Dataset, Subset


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """The labels of ``dataset``, without decoding its samples where it lists them: ``.labels``
    (in-memory images) or ``.samples`` of (path, label) (image folders)."""
    if getattr(dataset, "labels", None) is not None:
        labels = dataset.labels
    elif getattr(dataset, "samples", None) is not None:
        labels = [label for _, label in dataset.samples]
    else:
        labels = [int(dataset[i][1]) for i in range(len(dataset))]
    return torch.as_tensor(labels).reshape(-1)


def class_balanced_subset(dataset: Dataset, per_class: int) -> Subset:
    """The first ``per_class`` samples of each class of ``dataset``, kept in data-set order."""
    labels = dataset_labels(dataset)
    classes, counts = labels.unique(return_counts=True)
    smallest = int(counts.min())
    if not 1 <= per_class <= smallest:
        raise ValueError(f"a class-balanced subset needs 1 <= per_class <= {smallest} (the smallest class "
                         f"of this split has {smallest} samples), not {per_class}; ask for fewer per class")
    rank_in_class = torch.zeros(len(labels), dtype=torch.long)
    for c in classes:
        members = labels == c
        rank_in_class[members] = torch.arange(int(members.sum()))
    return Subset(dataset, torch.nonzero(rank_in_class < per_class).flatten().tolist())


def fixed_order(dataset: Dataset, seed: int = 0) -> Subset:
    """All of ``dataset`` in one random order fixed by ``seed``, so that its first batches (the ones
    ``stats`` and ``sweep``'s energy columns count) mix the classes of a data set stored class by class."""
    return Subset(dataset, torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist())
