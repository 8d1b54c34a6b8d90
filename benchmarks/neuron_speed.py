"""Group Neuron on one membrane vs the τ-member Group Neuron as the paper describes it vs IF.

    python benchmarks/neuron_speed.py [--shape 128 64 32 32] [--steps 8] [--repeats 3]

Prints times and the ratios measured side by side in this one run (absolute times are noisy).
"""
import argparse
import time

import torch

from groupsnn.neurons import gn_step, if_step


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


def best_time(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[128, 64, 32, 32])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--taus", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    x_steps = [torch.randn(args.shape) * 0.5 for _ in range(args.steps)]
    theta = torch.tensor(1.0)
    print(f"input {tuple(args.shape)} x {args.steps} steps, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    t_if = best_time(lambda: run_steps(lambda x, s: if_step(x, s, theta), x_steps), args.repeats)
    print(f"IF                 {t_if * 1e3:8.1f} ms")
    for tau in args.taus:
        t_gn = best_time(lambda: run_steps(lambda x, s: gn_step(x, s, theta, tau), x_steps), args.repeats)
        t_members = best_time(lambda: tau_member_gn(x_steps, 1.0, tau), args.repeats)
        print(f"tau={tau}: GN {t_gn * 1e3:8.1f} ms   tau-member {t_members * 1e3:8.1f} ms   "
              f"tau-member/GN = {t_members / t_gn:5.2f}x   GN/IF = {t_gn / t_if:4.2f}x")


if __name__ == "__main__":
    main()
