"""Evaluating a converted network for T steps vs T forwards of the ReLU network it came from.

    python benchmarks/snn_eval.py [--model resnet20] [--batch 64] [--steps 4] [--tau 4] [--threads N] [--compiled]

The ReLU network, its QCFS version (L=8) and the IF and GN SNNs share their weights. An SNN is run as
``groupsnn.simulate`` and ``evaluate`` run it (``StepRunner``: the layers before the first neuron
once, the rest T times, on a copy with BatchNorm folded and channels-last convolutions); "unfolded"
is the same split on the network as it is. "gs.simulate" is the public call in a loop, as users
write it: it keeps its prepared copy between calls (``simulate.runner_for``), and checks at each
call that the network has not changed; "rebuilt" prepares it afresh every call, as it did before. Prints times and the ratios to the ReLU forwards,
measured side by side in one run: first with glibc's default malloc (what a user gets), then with
malloc keeping freed memory (``_timing.keep_freed_memory``; omitted with --default-malloc).
``--compiled`` adds GN with its per-step part under ``torch.compile`` and reports the compile time.
"""
import argparse
import time

import torch

import groupsnn as gs
from _timing import add_options, best_times, keep_freed_memory, setup
from groupsnn.simulate import StepRunner


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--input", type=int, nargs="+", default=[3, 32, 32], help="input shape without the batch")
    parser.add_argument("--steps", type=int, default=4, help="time steps T")
    parser.add_argument("--tau", type=int, default=4, help="Group Neuron members")
    parser.add_argument("--compiled", action="store_true", help="also GN with a compiled per-step part")
    add_options(parser)
    args = parser.parse_args()
    tune_malloc, args.default_malloc = not args.default_malloc, True
    print(setup(args))

    torch.manual_seed(0)
    relu = gs.models.create(args.model).eval()
    ann = gs.prepare(relu, levels=8, threshold=1.0).eval()
    x = torch.randn(args.batch, *args.input)
    steps, gn = args.steps, f"GN tau={args.tau}"
    snn = gs.convert(ann, "gn", args.tau)
    runners = {"IF": StepRunner(gs.convert(ann, "if")), gn: StepRunner(snn),
               f"{gn} unfolded": StepRunner(snn, fold=False)}
    if args.compiled:
        runners[f"{gn} compiled"] = StepRunner(snn, compile=True)
        start = time.perf_counter()
        with torch.no_grad():
            list(runners[f"{gn} compiled"].steps(x, steps))
        print(f"compiling the per-step part: {time.perf_counter() - start:.1f} s")
    candidates = {f"ReLU x{steps}": lambda: [relu(x) for _ in range(steps)],
                  f"QCFS x{steps}": lambda: [ann(x) for _ in range(steps)],
                  f"gs.simulate {gn}, T={steps}": lambda: gs.simulate(snn, x, steps),
                  f"{gn} rebuilt, T={steps}": lambda: torch.stack(list(StepRunner(snn).steps(x, steps)))}
    for name, runner in runners.items():
        candidates[f"{name}, T={steps}"] = lambda runner=runner: list(runner.steps(x, steps))

    print(f"{args.model}, batch {tuple(x.shape)}")
    for malloc in ["default malloc"] + ["malloc keeps freed memory"] * tune_malloc:
        if malloc != "default malloc" and not keep_freed_memory():
            break
        times = best_times(candidates, args.repeats, args.clock)
        base = times[f"ReLU x{steps}"]
        print(f"-- {malloc}")
        for name, t in times.items():
            print(f"{name:<32} {t * 1e3:8.1f} ms   {t / base:5.2f}x ReLU")


if __name__ == "__main__":
    main()
