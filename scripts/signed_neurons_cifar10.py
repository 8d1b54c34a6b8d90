"""Plain against signed neurons, training-free, on the shipped ReLU ResNet-20 for CIFAR-10.

Calibrates ``pretrained="cifar10-relu"`` per channel to QCFS with L = 8 (99.9th percentile, 10
shuffled training batches), converts it to IF and to GN τ = 4, 8, plain and signed, and evaluates
all on the first ``--per-class`` test images of each class. Writes ``signed_neurons.json`` and prints
the table of docs/signed_neurons.md::

    python scripts/signed_neurons_cifar10.py --data-dir ../shared/data/cifar10
"""
import argparse
from pathlib import Path

import torch

import groupsnn as gs
from groupsnn import data
from groupsnn._io import write_json
from groupsnn.report import accuracy_rows, neuron_label

CONFIGS = {("if", 1): [1, 2, 4, 8], ("gn", 4): [1, 2, 4], ("gn", 8): [1, 2, 4]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data/cifar10")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("runs/signed_neurons"))
    args = parser.parse_args()
    torch.manual_seed(0)

    splits = data.load("cifar10-folder", args.data_dir)
    test = data.make_loader(data.fixed_order(data.class_balanced_subset(splits.test, args.per_class)), 128,
                            train=False, workers=0)
    calibration = data.make_loader(splits.train, 128, train=True, workers=0, seed=0)
    relu = gs.models.create("resnet20", pretrained="cifar10-relu")
    ann = gs.calibrate(relu, calibration, 99.9, per_channel=True, levels=8, batches=10)
    results = {"relu_accuracy": gs.evaluate(relu, test, [1])[1], "ann": "calibrated QCFS ANN",
               "ann_accuracy": gs.evaluate(ann, test, [1])[1], "levels": 8, "per_class": args.per_class,
               "snn": []}
    print(f"ReLU ANN {results['relu_accuracy']:.2f} %, calibrated QCFS ANN {results['ann_accuracy']:.2f} %")
    for (neuron, tau), timesteps in CONFIGS.items():
        for signed in (False, True):
            accuracy = gs.evaluate(gs.convert(ann, neuron, tau, signed=signed), test, timesteps)
            results["snn"] += accuracy_rows(neuron, tau if neuron == "gn" else None, accuracy, signed)
            print(f"{neuron_label(neuron, tau, signed):<16}" + "".join(f"  T={t}: {a:6.2f}" for t, a in accuracy.items()),
                  flush=True)
    write_json(args.out / "signed_neurons.json", results)


if __name__ == "__main__":
    main()
