"""From a pretrained ReLU ResNet-20 to SNNs on real CIFAR-10, in four stages (``results/cifar10_relu_stages/``).

1. calibrated: ``gs.calibrate`` (99.9th percentile, clip only), no training;
2. corrected: stage 1, each SNN then corrected by ``gs.correct`` for its own T (still no training);
3. fine-tuned 1 epoch and 4. 3 epochs: ``gs.calibrate(levels=8)`` then ``groupsnn.train.fit`` at
   lr 0.01 on the augmented training set (thresholds from the calibration, learned further).

Each stage converts to IF and GN τ = 4, 8, 16 and measures accuracy on all 10,000 test images and the
synaptic operations and energy per image (``stats`` accounting, on the first ``--energy-batches``
test batches of a fixed random order) at T = 1, 2, 4. Writes ``stages.json``, ``stages.csv``,
``README.md`` (the table) and an ``accuracy_vs_energy_<stage>.png`` per stage. ``--compare-fp32``
also trains the last fine-tuning in fp32 eager, to check that the fast path costs no accuracy::

    python scripts/relu_to_snn_cifar10.py --data-dir ../shared/data/cifar10
"""
import argparse
import time
from pathlib import Path

import torch

import groupsnn as gs
from groupsnn import data, models
from groupsnn._io import write_json, write_text
from groupsnn.plots import plot_accuracy_vs_energy
from groupsnn.report import ENERGY_FIELDS, FIELDS, write_csv
from groupsnn.simulate import evaluate
from groupsnn.stats import energy_by_timesteps
from groupsnn.sweep import mark_pareto, sweep
from groupsnn.train import TrainConfig, fit, load_relu_weights

ROOT = Path(__file__).resolve().parents[1]
TAUS, TIMESTEPS = (4, 8, 16), (1, 2, 4)
CONFIGS = [("if", None)] + [("gn", tau) for tau in TAUS]


def corrected_rows(ann, calibration, test, energy_data, batches: int) -> list[dict]:
    """Stage 2: one SNN per (neuron, τ, T), corrected for that T, then measured at that T."""
    rows = []
    for neuron, tau in CONFIGS:
        for t in TIMESTEPS:
            snn = gs.correct(gs.convert(ann, neuron, tau or 1), ann, calibration, timesteps=t, batches=batches)
            cost = energy_by_timesteps(snn, energy_data, [t])["timesteps"][t]
            rows.append({"neuron": neuron, "tau": tau, "timesteps": t, "accuracy": round(evaluate(snn, test, [t])[t], 4),
                         "sops": cost["sops"], "snn_energy_uj": cost["snn_energy_uj"]})
    return mark_pareto(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data/cifar10")
    parser.add_argument("--relu", default="cifar10-relu",
                        help="pretrained tag of resnet20 (default: the shipped ReLU twin) or a state_dict/checkpoint file")
    parser.add_argument("--out", type=Path, default=ROOT / "results/cifar10_relu_stages")
    parser.add_argument("--finetune-epochs", type=lambda s: [int(x) for x in s.split(",") if x], default=[1, 3],
                        help="fine-tuning runs, e.g. 1,3 (empty: none)")
    parser.add_argument("--finetune-lr", type=float, default=0.01)
    parser.add_argument("--per-channel", action="store_true", help="calibrate one threshold per channel")
    parser.add_argument("--correct-batches", type=int, default=10)
    parser.add_argument("--energy-batches", type=int, default=4)
    parser.add_argument("--per-class", type=int, help="test on this many images per class (default: all)")
    parser.add_argument("--compare-fp32", action="store_true",
                        help="fine-tune the last stage again in fp32 eager and compare it with the fast path (bf16 + compile)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    splits = data.load("cifar10-folder", args.data_dir)
    test_set = data.class_balanced_subset(splits.test, args.per_class) if args.per_class else splits.test
    test = data.make_loader(data.fixed_order(test_set), 128, train=False)
    calibration = data.make_loader(splits.train, 128, train=True, seed=args.seed)  # shuffled, not augmented
    augmented = data.make_loader(data.load("cifar10-folder", args.data_dir, augment="crop-flip").train, 128,
                                 train=True, seed=args.seed)
    energy_data = [batch for _, batch in zip(range(args.energy_batches), test)]

    def relu_net():
        if Path(args.relu).is_file():
            net = models.create("resnet20", num_classes=10)
            load_relu_weights(net, args.relu)
            return net.eval()
        return models.create("resnet20", pretrained=args.relu)

    started = time.time()
    relu = relu_net()
    results = {"relu_ann_accuracy": round(evaluate(relu, test, [1])[1], 4), "relu": args.relu,
               "per_channel": args.per_channel, "correct_batches": args.correct_batches,
               "test_images": len(test_set), "energy_samples": sum(len(x) for x, _ in energy_data),
               "taus": list(TAUS), "timesteps": list(TIMESTEPS), "stages": {}}
    print(f"ReLU ANN: {results['relu_ann_accuracy']:.2f} %", flush=True)

    def record(stage: str, rows: list[dict], ann_accuracy: float, seconds: float) -> None:
        results["stages"][stage] = {"ann_accuracy": ann_accuracy, "seconds": round(seconds, 1), "rows": rows}
        print(f"{stage}: ANN {ann_accuracy:.2f} %, " + ", ".join(
            f"{r['neuron']}{r['tau'] or ''} T{r['timesteps']} {r['accuracy']:.2f}" for r in rows), flush=True)
        write_json(args.out / "stages.json", results)

    args.out.mkdir(parents=True, exist_ok=True)
    clock = time.time()
    calibrated = gs.calibrate(relu_net(), calibration, percentile=99.9, per_channel=args.per_channel)
    swept = sweep(calibrated, test, TAUS, TIMESTEPS, progress=True, energy_batches=args.energy_batches)
    results["ann_energy_uj"] = swept["ann_energy_uj"]
    record("calibrated", swept["snn"], swept["ann_accuracy"], time.time() - clock)

    clock = time.time()
    rows = corrected_rows(calibrated, calibration, test, energy_data, args.correct_batches)
    record("calibrated + corrected", rows, swept["ann_accuracy"], time.time() - clock)

    def finetuned(epochs: int, fast: bool):
        ann = gs.calibrate(relu_net(), calibration, percentile=99.9, per_channel=args.per_channel, levels=8)
        cfg = TrainConfig(epochs=epochs, lr=args.finetune_lr, seed=args.seed)
        clock = time.time()
        ann = fit(ann, augmented, cfg, torch.device("cpu"), amp=fast, compile=fast).eval()
        return ann, time.time() - clock

    for epochs in args.finetune_epochs:
        clock = time.time()
        ann, train_seconds = finetuned(epochs, fast=True)
        swept = sweep(ann, test, TAUS, TIMESTEPS, progress=True, energy_batches=args.energy_batches)
        record(f"fine-tuned {epochs} epoch{'s' * (epochs > 1)}", swept["snn"], swept["ann_accuracy"],
               time.time() - clock)

    if args.compare_fp32 and args.finetune_epochs:  # is bf16 + compile as accurate as fp32? (same seed)
        epochs, check = args.finetune_epochs[-1], {}
        for path, (net, seconds) in (("bf16 + compile", (ann, train_seconds)),
                                     ("fp32 eager", finetuned(epochs, fast=False))):
            check[path] = {"train_seconds": round(seconds, 1), **sweep(net, test, (4, 8), (1, 2), energy_batches=0)}
            print(f"{path}: {check[path]}", flush=True)
        results["fp32_vs_fast"] = {"epochs": epochs, **check}

    results["seconds"] = round(time.time() - started, 1)
    write_json(args.out / "stages.json", results)
    flat = [{"stage": stage, **row} for stage, s in results["stages"].items() for row in s["rows"]]
    write_csv(args.out / "stages.csv", flat, fields=["stage", *FIELDS, *ENERGY_FIELDS])
    write_text(args.out / "README.md", _readme(results))
    for stage, s in results["stages"].items():
        plot_accuracy_vs_energy({"snn": s["rows"], "ann": "ReLU ANN", "ann_accuracy": results["relu_ann_accuracy"],
                                 "ann_energy_uj": results["ann_energy_uj"]},
                                args.out / f"accuracy_vs_energy_{stage.replace(' + ', '_').replace(' ', '_')}.png",
                                title=f"ReLU ResNet-20 on CIFAR-10, {stage}")
    print(f"wrote {args.out} ({results['seconds'] / 60:.1f} min)")


def _readme(results: dict) -> str:
    head = ["stage", "ANN %"] + [f"{n.upper()}{f' τ={t}' if t else ''} T={s}" for n, t in CONFIGS for s in TIMESTEPS]
    lines = ["# From a pretrained ReLU ResNet-20 to SNNs on CIFAR-10: four stages", "",
             "Made by `python scripts/relu_to_snn_cifar10.py`. "
             f"ReLU ANN {results['relu_ann_accuracy']:.2f} % on {results['test_images']:,} JPEG test images; "
             f"energy per image on {results['energy_samples']} of them (ReLU ANN {results['ann_energy_uj']:.1f} µJ).",
             "", "Accuracy (%) / energy per image (µJ):", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for stage, s in results["stages"].items():
        cells = {(r["neuron"], r["tau"], r["timesteps"]): r for r in s["rows"]}
        row = [stage, f"{s['ann_accuracy']:.2f}"] + [
            f"{cells[n, t, T]['accuracy']:.2f} / {cells[n, t, T]['snn_energy_uj']:.1f}" for n, t in CONFIGS for T in TIMESTEPS]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines + [""])


if __name__ == "__main__":
    main()
