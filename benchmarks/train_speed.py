"""Training speed of QCFS against ReLU through ``groupsnn.train.Trainer``, from one run.

    python benchmarks/train_speed.py [--model resnet20] [--batch 128] [--steps 5] [--threads N] [--no-compile]

Each candidate trains the same network (ReLU, or QCFS with L=8) for a few steps of random images
per round, through ``Trainer`` on one path: eager fp32 (what ``Trainer`` did before the fast path),
``amp=True`` (bf16 autocast + channels-last on CPUs with bf16 units, fp16 on CUDA) and ``amp=True,
compile=True``. Rounds run every candidate in turn and the best round is kept. Prints images/s, the
QCFS/ReLU step ratio on each path and the speed-up of each QCFS path over eager fp32 QCFS, and the
time of the first round (compiling) beyond a steady one.
"""
import argparse
import copy
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

import groupsnn as gs
from _timing import add_options, best_times, setup
from groupsnn.train import Trainer, TrainConfig

PATHS = {"fp32 eager": {}, "amp": {"amp": True}, "amp + compile": {"amp": True, "compile": True}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--input", type=int, nargs="+", default=[3, 32, 32], help="input shape without the batch")
    parser.add_argument("--steps", type=int, default=5, help="train steps per timed round")
    parser.add_argument("--no-compile", action="store_true", help="leave out the compiled path (slow to build)")
    add_options(parser, repeats=3)
    args = parser.parse_args()
    print(setup(args))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    torch.manual_seed(0)
    images = torch.randn(args.batch * args.steps, *args.input)
    labels = torch.randint(0, 10, (len(images),))
    loader = DataLoader(TensorDataset(images, labels), batch_size=args.batch)
    relu = gs.models.create(args.model, in_channels=args.input[0])
    nets = {"ReLU": relu, "QCFS": gs.prepare(relu, levels=8, threshold=2.0)}
    paths = {k: v for k, v in PATHS.items() if not (args.no_compile and v.get("compile"))}

    rounds, first, described = {}, {}, {}
    for path, options in paths.items():
        for name, net in nets.items():
            trainer = Trainer(copy.deepcopy(net).to(device), loader, TrainConfig(epochs=10 ** 6, lr=0.01), device, **options)
            key = f"{name}, {path}"
            described[path] = trainer.describe()
            rounds[key] = lambda trainer=trainer: trainer.train_epoch(progress=False)
            start = time.perf_counter()
            rounds[key]()  # the warm-up round: compiling, oneDNN's first calls
            first[key] = time.perf_counter() - start
    times = best_times(rounds, args.repeats, args.clock, grad=True, warm_up=False)

    print(f"{args.model}, batch {args.batch}, {args.steps} steps a round; "
          + "; ".join(f"{path} = {what}" for path, what in described.items()))
    for key, t in times.items():
        print(f"{key:<26} {args.batch * args.steps / t:8.0f} images/s   first round {first[key] - t:+6.1f} s")
    base = times["QCFS, fp32 eager"]
    for path in paths:
        print(f"{path:<14} QCFS/ReLU step {times[f'QCFS, {path}'] / times[f'ReLU, {path}']:.2f}x   "
              f"QCFS speed-up over fp32 eager QCFS {base / times[f'QCFS, {path}']:.2f}x")


if __name__ == "__main__":
    main()
