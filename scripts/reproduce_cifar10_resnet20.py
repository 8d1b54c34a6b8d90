"""Reproduce ``results/cifar10_resnet20/`` and the shipped ResNet-20 weights on real CIFAR-10.

Runs the ``groupsnn`` commands below in order, timing each: train, export the shipped weights, then
sweep, stats and the class-balanced subset on those exported weights. Gathers their outputs into
``results.json`` (the demo's schema, plus the subset the tests check), ``results.csv`` and
``README.md`` with the exact commands, the git revisions and the wall-clock times. Paths are relative
to the repository. Training resumes if its folder holds an unfinished run (the times of all its
parts add up) and is skipped once finished, so the script can be run again after an interruption::

    python scripts/reproduce_cifar10_resnet20.py --data-dir ../shared/data/cifar10

``--reevaluate`` keeps the shipped weights and the recorded train and export steps, and runs the
evaluation steps again (after a change to how networks are simulated, say); ``--report`` only
rewrites the three gathered files from the recorded outputs.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from groupsnn._io import write_json, write_text
from groupsnn.checkpoint import load_checkpoint
from groupsnn.cli import main as groupsnn
from groupsnn.report import format_table, write_csv

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = "src/groupsnn/models/weights/resnet20_cifar10_qcfs_l8.pt"
SUBSET_PER_CLASS = 100


def commands(data_dir: str, epochs: int, run: str, out: str) -> dict[str, list[str]]:
    return {
        "train": ["train", "--model", "resnet20", "--data", "cifar10-folder", "--data-dir", data_dir, "--levels", "8",
                  "--epochs", str(epochs), "--lr", "0.1", "--batch-size", "128", "--out", run],
        "export": ["export", f"{run}/checkpoint.pt", "--out", WEIGHTS, "--overwrite"],
        **evaluation_commands(WEIGHTS, data_dir, out),
    }


def evaluation_commands(weights: str, data_dir: str, out: str) -> dict[str, list[str]]:
    """Sweep (accuracy and energy), stats and the class-balanced subset of a QCFS weights file."""
    data = ["--data-dir", data_dir]
    return {
        "sweep": ["sweep", weights, *data, "--taus", "2,4,8", "--timesteps", "1,2,4,8,16,32", "--out", out,
                  "--overwrite"],
        "stats": ["stats", weights, *data, "--tau", "4", "--timesteps", "4", "--batches", "8", "--out", out,
                  "--overwrite"],
        "subset": ["evaluate", weights, *data, "--per-class", str(SUBSET_PER_CLASS), "--tau", "4",
                   "--timesteps", "1,2,4", "--out", f"{out}/subset", "--overwrite"],
    }


def git_revision() -> str:
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return rev + ("-dirty" if dirty else "")


def run_step(name: str, argv: list[str], timings: dict, timings_file: Path) -> None:
    print(f"== {name}: groupsnn {shlex.join(argv)}", flush=True)
    started = time.time()
    if groupsnn(argv) != 0:
        sys.exit(f"step {name!r} failed; fix it and run this script again (finished steps are kept)")
    earlier = timings.get(name, {}).get("seconds", 0) if "--resume" in argv else 0
    timings[name] = {"command": f"groupsnn {shlex.join(a for a in argv if a != '--resume')}",
                     "seconds": round(earlier + time.time() - started, 1),
                     "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "git_revision": git_revision()}
    write_json(timings_file, timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data/cifar10")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--run", help="training folder, not committed (default: runs/cifar10_resnet20_e<EPOCHS>/train)")
    parser.add_argument("--out", default="results/cifar10_resnet20")
    parser.add_argument("--reevaluate", action="store_true",
                        help="evaluate the shipped weights again; keep the recorded training")
    parser.add_argument("--report", action="store_true",
                        help="only rewrite results.json, results.csv and README.md from the recorded outputs")
    args = parser.parse_args()
    args.run = args.run or f"runs/cifar10_resnet20_e{args.epochs}/train"
    os.chdir(ROOT)

    out = Path(args.out)
    timings_file = out / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
    steps = commands(args.data_dir, args.epochs, args.run, args.out)
    ckpt = Path(args.run) / "checkpoint.pt"
    if args.reevaluate or args.report:
        recorded = json.loads((out / "results.json").read_text())
        training = {key: recorded[key] for key in ("epochs", "final_train_accuracy")}
    else:
        if not (ckpt.exists() and load_checkpoint(ckpt)["epoch"] >= args.epochs):
            resume = ["--resume"] if ckpt.exists() else []
            run_step("train", steps["train"] + resume, timings, timings_file)
        run_step("export", steps["export"], timings, timings_file)
        trained = load_checkpoint(ckpt)
        training = {"epochs": trained["epoch"],
                    "final_train_accuracy": round(trained["history"][-1]["train_accuracy"], 2)}
    if not args.report:
        for name in ("sweep", "stats", "subset"):
            run_step(name, steps[name], timings, timings_file)
    print(format_table(write_report(out, timings, Path(__file__).name, [], **training)))


def write_report(out: Path, timings: dict, script: str, intro: list[str], **record) -> dict:
    """``results.json`` (the demo's schema, plus ``record`` and the subset the tests check),
    ``results.csv`` and ``README.md`` from the sweep, subset and timings recorded in ``out``."""
    sweep = json.loads((out / "sweep.json").read_text())
    # the evaluate command's file (named evaluate_gn_tau4_T<steps>.json since names carry T)
    subset = json.loads(sorted((out / "subset").glob("evaluate_gn_tau4*.json"))[-1].read_text())
    energy = {key: sweep[key] for key in ("ann_energy_uj", "energy_samples") if key in sweep}
    results = {
        "ann_accuracy": sweep["ann_accuracy"], "levels": sweep["levels"], "snn": sweep["snn"], **energy,
        "dataset": "cifar10", "model": "resnet20", "seed": 0, **record,
        "seconds": round(sum(t["seconds"] for t in timings.values()), 1),
        "subset": {"per_class": SUBSET_PER_CLASS, "images": SUBSET_PER_CLASS * 10,
                   "ann_accuracy": subset["ann_accuracy"], "snn": subset["snn"]},
        "steps": timings,
    }
    write_json(out / "results.json", results)
    write_csv(out / "results.csv", results["snn"])
    write_text(out / "README.md", _readme(results, script, intro))
    return results


def _short(revision: str) -> str:
    return revision[:12] + ("-dirty" if revision.endswith("-dirty") else "")


def _readme(results: dict, script: str, intro: list[str]) -> str:
    lines = ["# QCFS ResNet-20 (L=8) on real CIFAR-10: IF vs Group Neurons", "", *intro,
             f"Made by `python scripts/{script}`, which ran these commands:", ""]
    for name, step in results["steps"].items():
        lines.append(f"- {name} ({step['seconds'] / 60:.1f} min, finished {step['finished']}, "
                     f"git {_short(step['git_revision'])}): `{step['command']}`")
    lines += ["", f"Test accuracy (10,000 images): ANN {results['ann_accuracy']:.2f} %.", "",
              "```", format_table(results), "```", "",
              f"Class-balanced subset ({results['subset']['images']} images, the first "
              f"{results['subset']['per_class']} of each class; checked by tests/test_pretrained.py): "
              f"ANN {results['subset']['ann_accuracy']:.2f} %, "
              + ", ".join(f"GN τ=4 T={r['timesteps']} {r['accuracy']:.2f} %" for r in results["subset"]["snn"]) + ".",
              "", "Plots: `accuracy_vs_T.png`, `effect_of_tau.png`, `firing_rates.png`; firing rates and "
              "energy in `stats.json`"
              + ("; accuracy against energy per image in `accuracy_vs_energy.png`." if "ann_energy_uj" in results
                 else "."), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
