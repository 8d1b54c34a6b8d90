"""A network with GELU, SiLU, LayerNorm, softmax attention or gates, as a spiking network:
training-free, then after a short quantised fine-tune.

Takes a float network that ``groupsnn train --activation relu`` made (its own activations, no QCFS;
the commands are in docs/transformers.md), calibrates it to QCFS with L = 8 and spike inputs
(two-sided quantisers in front of every weight layer fed by a non-linear operation; 99.9th
percentile, 10 shuffled training batches), converts it to signed Group Neurons τ = 4, 8, 16 and
evaluates T = 1, 2, 4, 8. Then fine-tunes the quantised network ``--finetune-epochs`` (AdamW, cosine)
and does the same again. Firing rates and energy of GN τ = 8, signed, at T = 4 come from the first
``--stats-batches`` test batches. Writes ``results.json``, ``results.csv``, ``accuracy_vs_T_*.png``,
``firing_rates.png`` and, with ``--export``, the fine-tuned network as a groupsnn checkpoint::

    python scripts/modern_to_snn.py runs/vit_cifar10/checkpoint.pt --data-dir ../shared/data/cifar10 \\
        --per-class 200 --out results/cifar10_vit
    python scripts/modern_to_snn.py runs/silu_se_digits/checkpoint.pt --out results/digits_silu_se
"""
import argparse
import copy
import time
from pathlib import Path

import torch

import groupsnn as gs
from groupsnn import data
from groupsnn._io import write_json
from groupsnn.checkpoint import load_model, make_meta, save_checkpoint
from groupsnn.plots import plot_accuracy_vs_timesteps, plot_firing_rates
from groupsnn.report import accuracy_rows, neuron_label, write_csv
from groupsnn.stats import layer_stats
from groupsnn.train import TrainConfig, fit

LEVELS, TAUS, TIMESTEPS = 8, (4, 8, 16), [1, 2, 4, 8]
STATS_TAU, STATS_T = 8, 4


def spiking_rows(ann, test, stage: str) -> list[dict]:
    rows = []
    for tau in TAUS:
        accuracy = gs.evaluate(gs.convert(ann, "gn", tau, signed=True), test, TIMESTEPS)
        rows += [{**row, "stage": stage} for row in accuracy_rows("gn", tau, accuracy, signed=True)]
        print(f"  {neuron_label('gn', tau, True):<16}" + "".join(f"  T={t}: {a:6.2f}" for t, a in accuracy.items()),
              flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="the float network that groupsnn train --activation relu wrote")
    parser.add_argument("--data-dir", default="../shared/data/cifar10")
    parser.add_argument("--per-class", type=int, help="evaluate on the first N test images of each class (default: all)")
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--finetune-lr", type=float, default=1e-4)
    parser.add_argument("--stats-batches", type=int, default=4)
    parser.add_argument("--export", type=Path, help="also save the fine-tuned QCFS network here")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    started = time.time()

    net, meta = load_model(args.checkpoint)
    splits = data.load(meta["data"], args.data_dir, augment="crop-flip" if meta["data"].startswith("cifar") else False)
    test_set = data.fixed_order(splits.test if args.per_class is None
                                else data.class_balanced_subset(splits.test, args.per_class))
    test = data.make_loader(test_set, 128, train=False)
    train = data.make_loader(splits.train, 128, train=True, seed=0)
    results = {"model": meta["model"], "model_kwargs": meta.get("model_kwargs"), "data": meta["data"],
               "levels": LEVELS, "test_images": len(test_set),
               "float_accuracy": gs.evaluate(net, test, [1])[1], "stages": {}}
    print(f"float {meta['model']}: {results['float_accuracy']:.2f} %", flush=True)

    ann = gs.calibrate(net, train, 99.9, levels=LEVELS, batches=10, spike_inputs=True)
    stages = [("training-free", ann)]
    if args.finetune_epochs:
        tuned = fit(copy.deepcopy(ann), train,
                    TrainConfig(epochs=args.finetune_epochs, lr=args.finetune_lr, optimizer="adamw",
                                weight_decay=0.05, seed=0), "cpu").eval()
        stages.append((f"fine-tuned {args.finetune_epochs} epoch(s)", tuned))
    rows = []
    for stage, network in stages:
        accuracy = gs.evaluate(network, test, [1])[1]
        print(f"{stage}: QCFS ANN (L={LEVELS}, spike inputs) {accuracy:.2f} %", flush=True)
        stage_rows = spiking_rows(network, test, stage)
        results["stages"][stage] = {"ann_accuracy": accuracy, "snn": stage_rows}
        rows += [{**row, "ann_accuracy": accuracy} for row in stage_rows]
        title = f"{meta['model']} on {meta['data']}, {stage}"
        slug = "training_free" if stage == "training-free" else "finetuned"
        plot_accuracy_vs_timesteps({"ann_accuracy": accuracy, "ann": f"QCFS ANN (L={LEVELS})", "snn": stage_rows},
                                   args.out / f"accuracy_vs_T_{slug}.png", title)

    network = stages[-1][1]
    batches = [x for x, _ in zip(test, range(args.stats_batches))]
    stats = layer_stats(gs.convert(network, "gn", STATS_TAU, signed=True), [x for x, _ in batches], STATS_T, ann=network)
    results["stats"] = {"stage": stages[-1][0], "neuron": "gn", "tau": STATS_TAU, "signed": True, **stats}
    plot_firing_rates([{"neuron": "gn", "tau": STATS_TAU, "layers": stats["layers"]}], args.out / "firing_rates.png",
                      f"{meta['model']} on {meta['data']}, GN τ={STATS_TAU} signed, T={STATS_T}")
    totals = stats["totals"]
    print(f"GN τ={STATS_TAU} signed, T={STATS_T}: {totals['sops']:.4g} SOPs + {totals['snn_macs']:.4g} MACs per image, "
          f"ANN {totals['ann_macs']:.4g} MACs; energy ratio {totals['energy_ratio']:.3f}", flush=True)
    if args.export is not None:
        save_checkpoint(args.export, network, make_meta(meta["model"], meta["num_classes"], LEVELS, meta["data"], 0,
                                                        model_kwargs=meta.get("model_kwargs") or {},
                                                        input_shape=meta.get("input_shape")))
    results["seconds"] = round(time.time() - started, 1)
    write_json(args.out / "results.json", results)
    write_csv(args.out / "results.csv", rows)


if __name__ == "__main__":
    main()
