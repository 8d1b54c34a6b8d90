"""The demo: train a QCFS CNN on an embedded data set, convert it to IF and to Group Neurons, and
compare accuracy against time steps."""
import time
from typing import Optional

import torch

from . import data, models
from .convert import prepare
from .sweep import sweep
from .train import TrainConfig, fit

DEMO_MODELS = {"digits": "digits_cnn", "mnist1d": "mnist1d_cnn"}
TAUS = (1, 2, 4, 8)
TIMESTEPS = (1, 2, 4, 8, 16, 32)


def train_demo_ann(dataset: str = "digits", levels: Optional[int] = 8, epochs: int = 30, lr: float = 0.1,
                   batch_size: int = 64, seed: int = 0, progress: bool = True):
    """Train the demo's QCFS CNN (``levels=None``: the plain ReLU CNN); returns ``(ann, test_loader)``."""
    if dataset not in DEMO_MODELS:
        raise ValueError(f"the demo runs on {' or '.join(DEMO_MODELS)}, not {dataset!r}")
    torch.manual_seed(seed)
    splits = data.load(dataset)
    train_loader = data.make_loader(splits.train, batch_size, train=True, seed=seed)
    test_loader = data.make_loader(splits.test, 512, train=False)
    net = models.create(DEMO_MODELS[dataset], num_classes=splits.num_classes, in_channels=splits.input_shape[0])
    ann = prepare(net, levels=levels) if levels else net
    fit(ann, train_loader, TrainConfig(epochs=epochs, lr=lr, seed=seed), torch.device("cpu"), progress=progress)
    return ann, test_loader


def run_demo(dataset: str = "digits", levels: int = 8, epochs: int = 30, seed: int = 0,
             taus=TAUS, timesteps=TIMESTEPS, progress: bool = True) -> dict:
    """Returns ``{"ann_accuracy", "levels", "snn": [{"neuron", "tau", "timesteps", "accuracy"}], ...}``
    with accuracies in percent on the data set's fixed test split."""
    started = time.perf_counter()
    ann, test_loader = train_demo_ann(dataset, levels, epochs, seed=seed, progress=progress)
    return {
        **sweep(ann, test_loader, taus, timesteps, progress, energy_batches=0),
        "dataset": dataset,
        "model": DEMO_MODELS[dataset],
        "epochs": epochs,
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 1),
    }
