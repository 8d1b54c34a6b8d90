"""A ReLU ResNet-20 on real CIFAR-10, then calibrated to QCFS (L = 8) and fine-tuned: the shipped
``cifar10-relu`` weights, and the experiment in ``results/cifar10_resnet20_relu_finetune/``.

Runs the ``groupsnn`` commands below in order, timing each: train a plain ReLU ResNet-20, export it
(the shipped ``cifar10-relu`` weights), calibrate it to QCFS with L = 8 and fine-tune it, export that
(under ``runs/``: it is not shipped, see docs/cifar10.md), then sweep, stats and the class-balanced
subset on it. Gathers their outputs into ``results.json`` (the demo's schema, plus the training
record), ``results.csv`` and ``README.md`` with the exact commands, the git revisions and the
wall-clock times. Training resumes if its folder holds an unfinished run and is skipped once
finished, as is a finished fine-tuning, so the script can be run again after an interruption::

    python scripts/relu_then_qcfs_cifar10.py --data-dir ../shared/data/cifar10

``--reevaluate`` keeps the recorded training steps and runs the evaluation steps again.
"""
import argparse
import json
import os
from pathlib import Path

from groupsnn.checkpoint import load_checkpoint
from groupsnn.report import format_table
# the same pipeline steps and report (scripts/ is on sys.path)
from reproduce_cifar10_resnet20 import evaluation_commands, run_step, write_report

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = "runs/cifar10_resnet20_relu_e80/resnet20_cifar10_qcfs_l8_finetuned.pt"  # not shipped
RELU_WEIGHTS = "src/groupsnn/models/weights/resnet20_cifar10_relu.pt"
FINETUNE_LR = 0.01


def commands(data_dir: str, epochs: int, finetune_epochs: int, run: str, out: str) -> dict[str, list[str]]:
    data = ["--data-dir", data_dir]
    cifar = ["--model", "resnet20", "--data", "cifar10-folder", *data]
    return {
        "train-relu": ["train", *cifar, "--activation", "relu", "--augment", "crop-flip", "--epochs", str(epochs),
                       "--lr", "0.1", "--batch-size", "128", "--seed", "0", "--out", f"{run}/relu"],
        "export-relu": ["export", f"{run}/relu/checkpoint.pt", "--out", RELU_WEIGHTS, "--overwrite"],
        "finetune": ["convert", "--from-relu", f"{run}/relu/checkpoint.pt", *cifar, "--levels", "8",
                     "--augment", "crop-flip", "--finetune-epochs", str(finetune_epochs), "--finetune-lr",
                     str(FINETUNE_LR), "--seed", "0", "--neuron", "gn", "--taus", "4", "--timesteps", "2",
                     "--out", f"{run}/qcfs", "--overwrite"],
        "export": ["export", f"{run}/qcfs/checkpoint.pt", "--out", WEIGHTS, "--overwrite"],
        **evaluation_commands(WEIGHTS, data_dir, out),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data/cifar10")
    parser.add_argument("--epochs", type=int, default=80, help="epochs of the ReLU training")
    parser.add_argument("--finetune-epochs", type=int, default=10, help="epochs of the QCFS fine-tuning")
    parser.add_argument("--run", help="training folder, not committed (default: runs/cifar10_resnet20_relu_e<EPOCHS>)")
    parser.add_argument("--out", default="results/cifar10_resnet20_relu_finetune")
    parser.add_argument("--reevaluate", action="store_true",
                        help="evaluate the shipped weights again; keep the recorded training")
    args = parser.parse_args()
    args.run = args.run or f"runs/cifar10_resnet20_relu_e{args.epochs}"
    os.chdir(ROOT)

    out = Path(args.out)
    timings_file = out / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
    steps = commands(args.data_dir, args.epochs, args.finetune_epochs, args.run, args.out)
    relu_ckpt, qcfs_ckpt = Path(args.run) / "relu" / "checkpoint.pt", Path(args.run) / "qcfs" / "checkpoint.pt"
    if args.reevaluate:
        training = json.loads((out / "results.json").read_text())["training"]
    else:
        if not (relu_ckpt.exists() and load_checkpoint(relu_ckpt)["epoch"] >= args.epochs):
            resume = ["--resume"] if relu_ckpt.exists() else []
            run_step("train-relu", steps["train-relu"] + resume, timings, timings_file)
        run_step("export-relu", steps["export-relu"], timings, timings_file)
        if not qcfs_ckpt.exists():
            run_step("finetune", steps["finetune"], timings, timings_file)
        run_step("export", steps["export"], timings, timings_file)
        relu = load_checkpoint(relu_ckpt)["history"][-1]
        tuned = json.loads((qcfs_ckpt.parent / "results.json").read_text())
        training = {"relu_epochs": args.epochs, "relu_final_train_accuracy": round(relu["train_accuracy"], 2),
                    "relu_test_accuracy": relu["test_accuracy"], "finetune_epochs": args.finetune_epochs,
                    "finetune_lr": FINETUNE_LR, "calibrated_then_finetuned_ann_accuracy": tuned["calibrated_ann_accuracy"]}
    for name in ("sweep", "stats", "subset"):
        run_step(name, steps[name], timings, timings_file)

    intro = ["A plain ReLU ResNet-20 trained {relu_epochs} epochs (crop and flip), calibrated to QCFS with L = 8 "
             "and fine-tuned {finetune_epochs} epochs at lr {finetune_lr}.".format(**training), ""]
    print(format_table(write_report(out, timings, Path(__file__).name, intro, training=training)))


if __name__ == "__main__":
    main()
