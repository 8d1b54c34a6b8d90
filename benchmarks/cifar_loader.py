"""Is a CIFAR-10 epoch bound by the network or by the data? Images/s of each part, in one run.

    python benchmarks/cifar_loader.py [--data-dir ../shared/data/cifar10] [--batches 40] [--threads N]

Measures: decoding the JPEG test archive (what the on-disk cache saves), the augmented training
loader alone (crop, flip, AutoAugment, Cutout on uint8 tensors, default workers), and a training step
(forward, backward, SGD) of ResNet-20 with ReLU and with QCFS (L=8) at batch 128.
"""
import argparse
import time
from itertools import islice
from pathlib import Path

import torch
import torch.nn.functional as F

import groupsnn as gs
from groupsnn import data
from groupsnn.data.folder import load_image_tree


def images_per_second(run, images: int) -> float:
    start = time.perf_counter()
    run()
    return images / (time.perf_counter() - start)


def train_steps(model: torch.nn.Module, batch: tuple, steps: int) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = batch
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/cifar10"))
    parser.add_argument("--batches", type=int, default=40, choices=range(1, 391), metavar="1..390",
                        help="loader batches of 128 to time")
    parser.add_argument("--steps", type=int, default=10, choices=range(1, 1001), metavar="1..1000",
                        help="train steps to time per network")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{torch.get_num_threads()} threads, wall clock, torch {torch.__version__}")

    decode = images_per_second(lambda: load_image_tree(args.data_dir / "test.tar.gz", cache=False), 10_000)
    print(f"decode test.tar.gz (JPEG):        {decode:8,.0f} images/s")

    train = data.load("cifar10-folder", str(args.data_dir), augment=True).train
    loader = data.make_loader(train, 128, train=True)
    consume = lambda: sum(1 for _ in islice(loader, args.batches))  # noqa: E731
    rate = {"loader": images_per_second(consume, 128 * args.batches)}
    print(f"augmented loader (workers: {loader.num_workers}):     {rate['loader']:8,.0f} images/s")

    batch = next(iter(data.make_loader(train, 128, train=True, workers=0)))
    torch.manual_seed(0)
    relu = gs.models.create("resnet20").train()
    for name, model in {"ReLU": relu, "QCFS": gs.prepare(relu, levels=8).train()}.items():
        train_steps(model, batch, 2)  # warm-up
        rate[name] = images_per_second(lambda: train_steps(model, batch, args.steps), 128 * args.steps)
        print(f"ResNet-20 {name} train step:       {rate[name]:8,.0f} images/s")
    print(f"loader / QCFS train step: {rate['loader'] / rate['QCFS']:.1f}x  "
          f"(>1: the network, not the data, bounds an epoch); QCFS step costs "
          f"{rate['ReLU'] / rate['QCFS']:.2f}x a ReLU step")


if __name__ == "__main__":
    main()
