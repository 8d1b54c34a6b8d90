"""``gs.correct`` layer by layer (one run through the SNN) against rerunning the network cut after
each layer from the input (two runs per layer, as before), on the shipped ReLU ResNet-20.

    python benchmarks/correct_speed.py [--batches 2] [--batch 64] [--steps 2] [--tau 8] [--data-dir D] [--threads N]

The ReLU twin (``pretrained="cifar10-relu"``) is calibrated per channel to QCFS (L = 8) and
converted to GN; both ways then correct a fresh copy of the same SNN on the same batches (the first
of CIFAR-10's training split under ``--data-dir``, else random inputs). Prints each time, their
ratio measured in this run, and whether the corrections (every neuron's ``v_init``) are equal bit
for bit. The reruns are ``correct``'s own fallback path (``_LayerByLayer.build`` returning None).
"""
import argparse
import importlib
from pathlib import Path

import torch

import groupsnn as gs
from _timing import add_options, best_times, setup
from groupsnn.neurons import SpikingNeuron

correct_module = importlib.import_module("groupsnn.correct")


def inputs(data_dir: Path, batches: int, batch: int) -> list:
    if (data_dir / "train.tar.gz").exists() or (data_dir / "cifar-10-batches-py").exists():
        train = gs.data.fixed_order(gs.data.load("cifar10", str(data_dir)).train)
        return list(zip(range(batches), gs.data.make_loader(train, batch, train=False, workers=0)))
    print(f"no CIFAR-10 under {data_dir}: random inputs")
    return [(i, (torch.randn(batch, 3, 32, 32), torch.zeros(batch, dtype=torch.long))) for i in range(batches)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2, help="batches correct uses (its default is 10)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2, help="the T to correct for")
    parser.add_argument("--tau", type=int, default=8)
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/cifar10")
    add_options(parser, repeats=1)
    args = parser.parse_args()
    print(setup(args))

    data = [b for _, b in inputs(args.data_dir, args.batches, args.batch)]
    relu = gs.models.create("resnet20", pretrained="cifar10-relu")
    ann = gs.calibrate(relu, data, per_channel=True, levels=8, progress=False)
    snns = {}

    def run(name: str, by_reruns: bool) -> None:
        snns[name] = gs.convert(ann, "gn", tau=args.tau)
        build = correct_module._LayerByLayer.build
        if by_reruns:
            correct_module._LayerByLayer.build = classmethod(lambda cls, *a: None)
        try:
            gs.correct(snns[name], ann, data, timesteps=args.steps, batches=args.batches, progress=False)
        finally:
            correct_module._LayerByLayer.build = build

    times = best_times({"layer by layer": lambda: run("layer by layer", False),
                        "reruns (before)": lambda: run("reruns (before)", True)},
                       args.repeats, args.clock, warm_up=False)
    print(f"resnet20 GN tau={args.tau}, T={args.steps}, {args.batches} batches of {args.batch}")
    for name, seconds in times.items():
        print(f"  {name:16s} {seconds:8.1f} s")
    print(f"  speed-up: {times['reruns (before)'] / times['layer by layer']:.1f}x")
    shifts = [[m.v_init for m in snn.modules() if isinstance(m, SpikingNeuron)] for snn in snns.values()]
    same = all(torch.equal(a, b) for a, b in zip(*shifts))
    print(f"  the same v_init bit for bit in all {len(shifts[0])} layers: {same}")


if __name__ == "__main__":
    main()
