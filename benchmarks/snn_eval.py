"""Evaluating a converted network for T steps vs T forwards of the ReLU network it came from.

    python benchmarks/snn_eval.py [--model resnet20] [--batch 64] [--steps 4] [--tau 4] [--threads N]

The ReLU network, its QCFS version (L=8) and the IF and GN SNNs share their weights. An SNN is run as
``groupsnn.evaluate`` runs it (``StepRunner``: the layers before the first neuron once, the rest T
times). Prints times and the ratios to the ReLU forwards, measured side by side in this one run.
"""
import argparse

import torch

import groupsnn as gs
from _timing import add_options, best_times, setup
from groupsnn.simulate import StepRunner


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--input", type=int, nargs="+", default=[3, 32, 32], help="input shape without the batch")
    parser.add_argument("--steps", type=int, default=4, help="time steps T")
    parser.add_argument("--tau", type=int, default=4, help="Group Neuron members")
    parser.add_argument("--compiled", action="store_true", help="also GN with compiled neuron steps")
    add_options(parser)
    args = parser.parse_args()
    print(setup(args))

    torch.manual_seed(0)
    relu = gs.models.create(args.model).eval()
    ann = gs.prepare(relu, levels=8, threshold=1.0).eval()
    x = torch.randn(args.batch, *args.input)
    steps = args.steps
    snns = {"IF": gs.convert(ann, "if"), f"GN tau={args.tau}": gs.convert(ann, "gn", args.tau)}
    if args.compiled:
        snns[f"GN tau={args.tau} compiled"] = compiled = gs.convert(ann, "gn", args.tau)
        for m in compiled.modules():
            if isinstance(m, gs.neurons.SpikingNeuron):
                m.compiled = True
    candidates = {f"ReLU x{steps}": lambda: [relu(x) for _ in range(steps)],
                  f"QCFS x{steps}": lambda: [ann(x) for _ in range(steps)]}
    for name, snn in snns.items():
        runner = StepRunner(snn)
        candidates[f"{name}, T={steps}"] = lambda runner=runner: list(runner.steps(x, steps))

    times = best_times(candidates, args.repeats, args.clock)
    base = times[f"ReLU x{steps}"]
    print(f"{args.model}, batch {tuple(x.shape)}")
    for name, t in times.items():
        print(f"{name:<28} {t * 1e3:8.1f} ms   {t / base:5.2f}x ReLU")


if __name__ == "__main__":
    main()
