"""A pretrained ReLU network converted without retraining vs the QCFS-trained route, side by side.

    python benchmarks/calibration_table.py [--data digits|mnist1d] [--epochs 30] [--percentile 99.9]

Trains the demo's CNN twice with the same seed and schedule: as a plain ReLU network (with its
max-pooling) and as the demo's QCFS network (L = 8, average pooling). The ReLU network is
calibrated on its training split (``gs.calibrate``: clip only, max-pooling kept) and converted to
IF and Group Neurons; the QCFS network is converted as it is. Prints a Markdown table of test
accuracy (%) against the number of time steps T.
"""
import argparse
import time

import groupsnn as gs
from groupsnn import data
from groupsnn.demo import train_demo_ann
from groupsnn.report import neuron_label
from groupsnn.sweep import sweep

TAUS = [4, 8, 16]
TIMESTEPS = [1, 2, 4, 8, 16, 32]


def table_rows(route: str, ann_name: str, ann, test_loader) -> list[str]:
    results = sweep(ann, test_loader, TAUS, TIMESTEPS)
    blank = " |" * (len(TIMESTEPS) - 1)
    lines = [f"| {ann_name} | | {results['ann_accuracy']:.2f} |{blank}"]
    accuracy = {(r["neuron"], r["tau"], r["timesteps"]): r["accuracy"] for r in results["snn"]}
    for neuron, tau in [("if", None)] + [("gn", tau) for tau in TAUS]:
        lines.append(f"| {route} | {neuron_label(neuron, tau)} | " + " | ".join(f"{accuracy[neuron, tau, t]:.2f}" for t in TIMESTEPS) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits", choices=["digits", "mnist1d"])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--percentile", type=float, default=99.9)
    args = parser.parse_args()
    started = time.perf_counter()

    relu, test_loader = train_demo_ann(args.data, levels=None, epochs=args.epochs, progress=False)
    calibration_loader = data.make_loader(data.load(args.data).train, 128, train=False)
    calibrated = gs.calibrate(relu, calibration_loader, percentile=args.percentile)
    qcfs, _ = train_demo_ann(args.data, levels=8, epochs=args.epochs, progress=False)

    print("| route | neuron | " + " | ".join(f"T={t}" for t in TIMESTEPS) + " |")
    print("|---|---|" + "---|" * len(TIMESTEPS))
    print(f"| ReLU ANN | | {gs.evaluate(relu, test_loader, [1])[1]:.2f} |" + " |" * (len(TIMESTEPS) - 1))
    for line in table_rows(f"calibrated ({args.percentile} %)", "calibrated ANN (clip)", calibrated, test_loader):
        print(line)
    for line in table_rows("QCFS-trained", "QCFS ANN (L=8)", qcfs, test_loader):
        print(line)
    print(f"\n{args.data}, {args.epochs} epochs per network, {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
