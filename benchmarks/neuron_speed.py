"""Group Neuron on one membrane vs the τ-member Group Neuron as the paper describes it vs IF.

    python benchmarks/neuron_speed.py [--shape 128 64 32 32] [--steps 8] [--threads N] [--compiled]

Prints times and the ratios measured side by side in this one run (absolute times are noisy).
``--compiled`` adds ``compiled_gn_step`` (``torch.compile``; compiling takes ~20 s per τ on a CPU).
"""
import argparse

import torch

from _timing import add_options, best_times, setup
from groupsnn.neurons import compiled_gn_step, gn_step, if_step


def tau_member_gn(x_steps, threshold, tau):
    """τ separate membranes with thresholds iθ/τ, each reset by the emitted amount (the paper)."""
    v = [torch.full_like(x_steps[0], threshold / (2 * tau)) for _ in range(tau)]
    outs = []
    for x in x_steps:
        v = [v_i + x for v_i in v]
        count = sum((v_i >= i * threshold / tau).to(x.dtype) for i, v_i in enumerate(v, start=1))
        out = count * (threshold / tau)
        v = [v_i - out for v_i in v]
        outs.append(out)
    return outs


def run_steps(step, x_steps):
    state, outs = None, []
    for x in x_steps:
        out, _, state = step(x, state)
        outs.append(out)
    return outs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[128, 64, 32, 32])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--taus", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--compiled", action="store_true", help="also time compiled_gn_step")
    add_options(parser, repeats=3)
    args = parser.parse_args()
    print(f"input {tuple(args.shape)} x {args.steps} steps, {setup(args)}")

    torch.manual_seed(0)
    x_steps = [torch.randn(args.shape) * 0.5 for _ in range(args.steps)]
    theta = torch.tensor(1.0)
    candidates = {"IF": lambda: run_steps(lambda x, s: if_step(x, s, theta), x_steps)}
    for tau in args.taus:
        candidates[f"GN {tau}"] = lambda tau=tau: run_steps(lambda x, s: gn_step(x, s, theta, tau), x_steps)
        candidates[f"members {tau}"] = lambda tau=tau: tau_member_gn(x_steps, 1.0, tau)
        if args.compiled:
            candidates[f"compiled {tau}"] = lambda tau=tau: run_steps(
                lambda x, s: compiled_gn_step(x, s, theta, tau), x_steps)
    t = best_times(candidates, args.repeats, args.clock)

    print(f"IF                 {t['IF'] * 1e3:8.1f} ms")
    for tau in args.taus:
        gn, members = t[f"GN {tau}"], t[f"members {tau}"]
        line = (f"tau={tau}: GN {gn * 1e3:8.1f} ms   tau-member {members * 1e3:8.1f} ms   "
                f"tau-member/GN = {members / gn:5.2f}x   GN/IF = {gn / t['IF']:4.2f}x")
        if args.compiled:
            compiled = t[f"compiled {tau}"]
            line += (f"   compiled {compiled * 1e3:8.1f} ms   GN/compiled = {gn / compiled:4.2f}x   "
                     f"tau-member/compiled = {members / compiled:5.2f}x")
        print(line)


if __name__ == "__main__":
    main()
