"""Pretrained weights shipped inside the package, each checked against its sha256 on load.

``create("resnet20", pretrained="cifar10")`` returns the trained QCFS ANN, ready for ``convert``;
``pretrained="cifar10-relu"`` a plain ReLU ResNet-20, for ``calibrate``, ``correct`` and fine-tuning;
``create("vit_cifar", pretrained="cifar10")`` the small vision transformer, quantised (L = 8, spike
inputs) and fine-tuned, ready for ``convert`` (docs/transformers.md).
This module imports the checkpoint reader, which imports the model registry, so the package
``groupsnn`` imports it (and so registers the weights), not ``groupsnn.models``.
"""
import functools
from dataclasses import dataclass
from importlib import resources
from typing import Optional

import torch.nn as nn

from .._io import file_sha256
from ..checkpoint import load_model
from ._registry import register_pretrained


@dataclass(frozen=True)
class PretrainedWeights:
    file: str     # under groupsnn/models/weights/
    sha256: str
    command: str  # how the file was made (see results/<run>/ in the repository for the whole record)


PRETRAINED: dict[tuple[str, str], PretrainedWeights] = {
    ("resnet20", "cifar10"): PretrainedWeights(
        file="resnet20_cifar10_qcfs_l8.pt",
        sha256="533be2f817f877175b909ce9681927f6728a768e7913a6e6881a61bbe3956baa",
        command="groupsnn train --model resnet20 --data cifar10-folder --data-dir ../shared/data/cifar10 "
                "--levels 8 --epochs 85 --lr 0.1 --batch-size 128 --out runs/cifar10_resnet20_e85/train && "
                "groupsnn export runs/cifar10_resnet20_e85/train/checkpoint.pt "
                "--out src/groupsnn/models/weights/resnet20_cifar10_qcfs_l8.pt",
    ),
    ("resnet20", "cifar10-relu"): PretrainedWeights(
        file="resnet20_cifar10_relu.pt",
        sha256="f86736b17a6ff861821ec6813b598601015d700d1002b661e26e3f344a8e5ef8",
        command="groupsnn train --model resnet20 --data cifar10-folder --data-dir ../shared/data/cifar10 "
                "--activation relu --augment crop-flip --epochs 80 --seed 0 --out runs/cifar10_resnet20_relu_e80/relu && "
                "groupsnn export runs/cifar10_resnet20_relu_e80/relu/checkpoint.pt "
                "--out src/groupsnn/models/weights/resnet20_cifar10_relu.pt",
    ),
    ("vit_cifar", "cifar10"): PretrainedWeights(
        file="vit_cifar10_qcfs_l8.pt",
        sha256="1d22b9b889fc9e70e2e823b68e44892f4fcfa41a05154a53f3c16db2e43abdd1",
        command="groupsnn train --model vit_cifar --data cifar10 --data-dir ../shared/data/cifar10 --activation relu "
                "--augment crop-flip --epochs 20 --optimizer adamw --lr 1e-3 --weight-decay 0.05 --warmup-epochs 1 "
                "--label-smoothing 0.1 --out runs/vit_cifar10 && python scripts/modern_to_snn.py "
                "runs/vit_cifar10/checkpoint.pt --data-dir ../shared/data/cifar10 --per-class 200 --finetune-epochs 1 "
                "--finetune-lr 1e-4 --export runs/vit_cifar10_qcfs_l8.pt --out results/cifar10_vit",
    ),
}


WEIGHTS = resources.files(__package__) / "weights"


def load_pretrained(name: str, tag: str, num_classes: Optional[int] = None, **kwargs) -> nn.Module:
    """The shipped network ``(name, tag)`` in eval mode, after checking the file's sha256."""
    weights = PRETRAINED[name, tag]
    if kwargs:
        raise ValueError(f"pretrained={tag!r} fixes the architecture; drop {', '.join(sorted(kwargs))}")
    with resources.as_file(WEIGHTS / weights.file) as path:
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing from this groupsnn installation; reinstall groupsnn")
        digest = file_sha256(path)
        if digest != weights.sha256:
            raise ValueError(f"{path} is corrupt or was changed (sha256 {digest[:12]}..., expected "
                             f"{weights.sha256[:12]}...); reinstall groupsnn")
        model, meta = load_model(path)
    if num_classes is not None and num_classes != meta["num_classes"]:
        raise ValueError(f"pretrained={tag!r} has {meta['num_classes']} classes, not num_classes={num_classes}; "
                         "fine-tune it with `groupsnn train --init-from` for another class count")
    return model


for _name, _tag in PRETRAINED:
    register_pretrained(_name, _tag, functools.partial(load_pretrained, _name, _tag))
