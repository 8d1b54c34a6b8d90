"""The ``groupsnn`` command. Each subcommand is a ``_cmd_*`` function registered in ``_parser()``.

User errors (bad arguments, missing files, ...) print one ``error: ...`` line and exit with code 2;
``--debug`` (before or after the subcommand) shows the traceback instead. Results go to ``--out``, by
default ``runs/<command>-<what was run>`` in the current folder, never beside the input. Heavy modules
(torch) are imported inside the commands, so ``groupsnn --help`` answers at once.
"""
import argparse
import re
import sys
from pathlib import Path

from . import __version__
from ._io import check_out_dir, write_json

USER_ERRORS = (ValueError, OSError, ArithmeticError)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, like every other user error (subcommand parsers inherit this)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


class _CommandParser(_Parser):
    """A subcommand's parser: arguments it does not know are its errors, with its help hint (argparse
    would hand them up to ``groupsnn``'s)."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


class _Help(argparse.HelpFormatter):
    """Help that names each option's default (lists as 1,2,4), where its text does not already."""

    def _get_help_string(self, action) -> str:
        text, default = action.help or "", action.default
        nothing = any(default is v for v in (None, False, argparse.SUPPRESS))
        if not action.option_strings or "default" in text or nothing:
            return text  # a positional, a default the text tells, or none to tell
        shown = ",".join(map(str, default)) if isinstance(default, list) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,2,4, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,2,4, got {text!r}")
    return values


def _device_name(text: str) -> str:
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    return text


def _device(args):
    """The ``torch.device`` of ``--device`` (default: the GPU where there is one), checked to exist."""
    import torch

    if args.device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device, count = torch.device(args.device), torch.cuda.device_count()
    if device.type == "cuda" and (device.index or 0) >= count:
        raise ValueError(f"--device {args.device}: this machine has {count or 'no'} CUDA GPU{'s' * (count != 1)}; "
                         "choose another --device, e.g. cpu")
    return device


def _default_out(args, *settings: str) -> Path:
    """``runs/<command>-<checkpoint>[-<data>][-<N>-per-class]-<settings>`` in the current folder: what tells
    these results from another run's. Never the checkpoint's folder (shipped weights live inside the
    installed package). <checkpoint> is the file's name, or its folder's for a ``checkpoint.pt``."""
    path = Path(args.checkpoint)
    name = path.resolve().parent.name if path.stem == "checkpoint" else path.stem
    parts = [args.command, name, args.data, args.per_class and f"{args.per_class}-per-class", *settings,
             "signed" * args.signed]
    return Path("runs", "-".join(str(p) for p in parts if p))


def _list(values) -> str:
    return ",".join(map(str, values))


def _cmd_demo(args) -> None:
    from .demo import run_demo
    from .plots import plot_accuracy_vs_timesteps
    from .report import format_table

    out = check_out_dir(args.out, ["results.json", "accuracy_vs_T.png"], args.overwrite)
    results = run_demo(args.data, levels=args.levels, epochs=args.epochs, seed=args.seed,
                       taus=args.taus, timesteps=args.timesteps)
    print(format_table(results))
    write_json(out / "results.json", results)
    plot_accuracy_vs_timesteps(results, out / "accuracy_vs_T.png",
                               title=f"{results['model']} on {args.data}, QCFS L={args.levels}")
    print(f"wrote {out / 'results.json'} and {out / 'accuracy_vs_T.png'} ({results['seconds']} s)")


def _cmd_train(args) -> None:
    from .train import RunConfig, TrainConfig, train

    optim = TrainConfig(epochs=args.epochs, lr=args.lr, optimizer=args.optimizer, momentum=args.momentum, weight_decay=args.weight_decay,
                        warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing, seed=args.seed)
    if args.activation == "relu" and args.levels is not None:
        raise ValueError("--levels sets the QCFS levels; --activation relu trains a plain ReLU network without them")
    levels = None if args.activation == "relu" else args.levels or 8
    run = RunConfig(model=args.model, data=args.data, data_dir=args.data_dir, levels=levels,
                    threshold=args.threshold, batch_size=args.batch_size, workers=args.workers,
                    augment=args.augment, amp=args.amp, compile=args.compile, sync_bn=args.sync_bn, optim=optim)
    path = train(run, args.out, resume=args.resume, init_from=args.init_from, overwrite=args.overwrite,
                 device=str(_device(args)))
    print(f"wrote {path}")


def _test_loader(meta: dict, args):
    """The test split of the checkpoint's data set (or --data), checked against its classes."""
    from . import data

    splits = data.load(args.data or meta["data"], args.data_dir)
    if splits.num_classes != meta["num_classes"]:
        raise ValueError(f"the checkpoint has {meta['num_classes']} classes, data set "
                         f"{args.data or meta['data']!r} has {splits.num_classes}; pass the right --data")
    if meta.get("input_shape") and list(splits.input_shape) != list(meta["input_shape"]):
        raise ValueError(f"the checkpoint's model takes inputs of shape {meta['input_shape']} ({meta['data']}), "
                         f"data set {args.data!r} gives {list(splits.input_shape)}; pass the right --data")
    test = data.class_balanced_subset(splits.test, args.per_class) if args.per_class else splits.test
    return data.make_loader(data.fixed_order(test), args.batch_size, train=False, workers=args.workers)


def _source(args, meta: dict) -> dict:
    """What a checkpoint command's results were measured on, for its JSON."""
    return {"checkpoint": str(args.checkpoint), "model": meta["model"], "data": args.data or meta["data"],
            **({"per_class": args.per_class} if args.per_class else {}),
            **({"signed": True} if args.signed else {})}


def _load_network(path: Path, snn_allowed: bool = False):
    """``(model, meta)`` of a checkpoint holding a QCFS network (one that converts to an SNN), or,
    where ``snn_allowed``, an SNN."""
    from .checkpoint import load_model
    from .neurons import SpikingNeuron
    from .qcfs import QCFS

    model, meta = load_model(path)
    if any(isinstance(m, SpikingNeuron) for m in model.modules()):
        if not snn_allowed:
            raise ValueError(f"{path} holds an SNN; this command converts a QCFS network itself: give it the "
                             "checkpoint of the QCFS network the SNN was converted from")
    elif not any(isinstance(m, QCFS) for m in model.modules()):  # what its meta["network"] rebuilt
        raise ValueError(f"{path} holds a plain ReLU network; convert it with "
                         "`groupsnn convert --from-relu` (calibration) instead")
    return model, meta


def _load_qcfs(path: Path):
    return _load_network(path)


def _saved_neurons(args, snn_recipe: dict) -> tuple[str, int, bool]:
    """The neurons of a saved SNN, refusing options that ask for others."""
    saved = (snn_recipe["neuron"], snn_recipe["tau"], snn_recipe["signed"])
    asked = (args.neuron, args.tau if args.neuron != "if" else 1, args.signed or None)
    if any(a is not None and a != b for a, b in zip(asked, saved)):
        from .report import neuron_label
        raise ValueError(f"{args.checkpoint} holds an SNN of {neuron_label(saved[0], saved[1], saved[2])} neurons; "
                         "drop --neuron/--tau/--signed, or evaluate the QCFS checkpoint it was converted from")
    return saved


def _cmd_evaluate(args) -> None:
    from .convert import convert
    from .recipe import recipe
    from .report import accuracy_rows, format_table, write_csv
    from .simulate import evaluate

    if args.neuron == "if" and args.tau not in (None, 1):
        raise ValueError("--tau is for Group Neurons; an IF neuron has one member: drop --tau or use --neuron gn")
    model, meta = _load_network(args.checkpoint, snn_allowed=True)
    saved = (recipe(model) or {}).get("snn")
    if saved:
        args.neuron, args.tau, args.signed = _saved_neurons(args, saved)
    else:
        args.neuron, args.tau = args.neuron or "gn", args.tau or 4
    tau = args.tau if args.neuron == "gn" else None
    name = (f"evaluate_{args.neuron}" + f"_tau{tau}" * bool(tau) + "_signed" * args.signed
            + f"_T{_list(args.timesteps)}")
    out = check_out_dir(args.out or _default_out(args), [f"{name}.json", f"{name}.csv"], args.overwrite)
    loader = _test_loader(meta, args)
    model = model.to(_device(args))
    snn = model if saved else convert(model, neuron=args.neuron, tau=tau, signed=args.signed)
    results = {**({} if saved else {"ann_accuracy": round(evaluate(model, loader, [1], progress=True)[1], 4)}),
               "levels": meta["levels"],
               "snn": accuracy_rows(args.neuron, tau, evaluate(snn, loader, args.timesteps, progress=True),
                                    args.signed),
               **_source(args, meta)}
    print(format_table(results))
    write_json(out / f"{name}.json", results)
    write_csv(out / f"{name}.csv", results["snn"])
    print(f"wrote {out / name}.json and .csv")


def _cmd_convert(args) -> None:
    from . import data, models
    from .calibrate import calibrate
    from .plots import plot_accuracy_vs_timesteps
    from .report import format_table, write_csv
    from .simulate import evaluate
    from .sweep import sweep
    from .train import default_model_kwargs, load_relu_weights

    if not args.from_relu.is_file():
        raise FileNotFoundError(f"--from-relu: {args.from_relu} not found")
    device = _device(args)
    files = ["results.json", "results.csv", "accuracy_vs_T.png"] + ["checkpoint.pt"] * bool(args.finetune_epochs)
    out = check_out_dir(args.out, files, args.overwrite)
    splits = data.load(args.data, args.data_dir)
    model_kwargs = default_model_kwargs(args.model, splits.input_shape)
    relu = models.create(args.model, num_classes=splits.num_classes, **model_kwargs)
    models.check_input_shape(relu, splits.input_shape, f"model {args.model!r} on data set {args.data!r}")
    skipped = load_relu_weights(relu, args.from_relu)
    if skipped:
        raise ValueError(f"{args.from_relu}: {skipped[0]} has another shape than in {args.model!r} "
                         f"with {splits.num_classes} classes; pass the right --model and --data")
    relu = relu.to(device)
    # shuffled (data sets stored class by class would otherwise calibrate on one class), not augmented
    calibration = data.make_loader(splits.train, args.batch_size, train=True, workers=args.workers, seed=args.seed)
    test_set = data.class_balanced_subset(splits.test, args.per_class) if args.per_class else splits.test
    test = data.make_loader(data.fixed_order(test_set), args.batch_size, train=False, workers=args.workers)
    ann = calibrate(relu, calibration, args.calibrate, per_channel=args.per_channel, levels=args.levels,
                    batches=args.calibration_batches, maxpool=args.maxpool, fuse_bn=args.fuse_bn)
    if args.finetune_epochs:
        ann = _finetune(ann, args, splits.num_classes, model_kwargs, list(splits.input_shape), out / "checkpoint.pt",
                        device)
    calibrated = sweep(ann, test, args.taus if args.neuron in ("gn", "both") else [], args.timesteps,
                       progress=True, include_if=args.neuron in ("if", "both"), signed=args.signed)
    results = {"ann": "ReLU ANN", "ann_accuracy": round(evaluate(relu, test, [1])[1], 4), "levels": args.levels,
               "snn": calibrated["snn"], "calibrated_ann_accuracy": calibrated["ann_accuracy"],
               **{k: calibrated[k] for k in ("ann_energy_uj", "energy_samples") if k in calibrated},
               "checkpoint": str(args.from_relu), "model": args.model, "data": args.data,
               **({"per_class": args.per_class} if args.per_class else {}),
               "percentile": args.calibrate, "per_channel": args.per_channel, "maxpool": args.maxpool,
               "fuse_bn": args.fuse_bn, "finetune_epochs": args.finetune_epochs or 0,
               **({"signed": True} if args.signed else {})}
    print(format_table(results))
    tuned = f", fine-tuned {args.finetune_epochs} epoch(s) at lr {args.finetune_lr}" if args.finetune_epochs else ""
    print(f"calibrated ANN ({args.calibrate}th percentile, L={args.levels or 'none: clip only'}{tuned}): "
          f"{results['calibrated_ann_accuracy']:.2f} %")
    write_json(out / "results.json", results)
    write_csv(out / "results.csv", results["snn"])
    plot_accuracy_vs_timesteps(results, out / "accuracy_vs_T.png",
                               title=f"{args.model} on {args.data}, calibrated at {args.calibrate}%"
                               + ", signed neurons" * args.signed)
    print(f"wrote {out / 'results.json'}, results.csv and accuracy_vs_T.png")


def _finetune(ann, args, num_classes: int, model_kwargs: dict, input_shape: list, path: Path, device):
    """``ann`` (calibrated) trained ``--finetune-epochs`` epochs at ``--finetune-lr`` on the augmented
    training split on ``device``, on ``groupsnn train``'s fast path where it pays, saved to ``path`` as
    a checkpoint that evaluate, sweep and stats read."""
    from . import data
    from .checkpoint import make_meta, save_checkpoint
    from .train import TrainConfig, amp_pays, fit

    train = data.load(args.data, args.data_dir, augment=args.augment).train
    loader = data.make_loader(train, args.batch_size, train=True, workers=args.workers, seed=args.seed)
    cfg = TrainConfig(epochs=args.finetune_epochs, lr=args.finetune_lr, seed=args.seed)
    amp = args.amp if args.amp is not None else amp_pays(ann, tuple(input_shape), device)
    ann = fit(ann, loader, cfg, device, amp=amp, compile=None).eval()
    meta = make_meta(args.model, num_classes, args.levels, args.data, args.seed, model_kwargs=model_kwargs,
                     input_shape=input_shape, finetune={"from_relu": str(args.from_relu), "epochs": cfg.epochs,
                                                        "lr": cfg.lr})
    save_checkpoint(path, ann, meta)
    return ann


def _cmd_sweep(args) -> None:
    from .plots import plot_accuracy_vs_energy, plot_accuracy_vs_timesteps, plot_effect_of_tau
    from .report import format_table, write_csv
    from .sweep import sweep

    files = ["sweep.json", "sweep.csv", "accuracy_vs_T.png", "effect_of_tau.png"]
    files += ["accuracy_vs_energy.png"] * bool(args.energy_batches)
    out = check_out_dir(args.out or _default_out(args, f"taus{_list(args.taus)}", f"T{_list(args.timesteps)}"),
                        files, args.overwrite)
    ann, meta = _load_qcfs(args.checkpoint)
    ann = ann.to(_device(args))
    results = {**sweep(ann, _test_loader(meta, args), args.taus, args.timesteps, progress=True,
                       energy_batches=args.energy_batches, signed=args.signed), **_source(args, meta)}
    print(format_table(results))
    write_json(out / "sweep.json", results)
    write_csv(out / "sweep.csv", results["snn"])
    title = f"{meta['model']} on {results['data']}, QCFS L={meta['levels']}" + ", signed neurons" * args.signed
    plot_accuracy_vs_timesteps(results, out / "accuracy_vs_T.png", title)
    plot_effect_of_tau(results, out / "effect_of_tau.png", title)
    if args.energy_batches:
        plot_accuracy_vs_energy(results, out / "accuracy_vs_energy.png", title)
    print(f"wrote {', '.join(files)} to {out}")


def _cmd_stats(args) -> None:
    from itertools import islice

    from .convert import convert
    from .plots import plot_firing_rates
    from .report import neuron_label
    from .stats import format_stats, layer_stats

    out = check_out_dir(args.out or _default_out(args, args.neuron, f"tau{args.tau}", f"T{args.timesteps}"),
                        ["stats.json", "firing_rates.png"], args.overwrite)
    ann, meta = _load_qcfs(args.checkpoint)
    ann = ann.to(_device(args))
    batches = list(islice(_test_loader(meta, args), args.batches))
    runs = []
    for neuron in (args.neuron, "if" if args.neuron == "gn" else "gn"):  # the other one for comparison
        snn = convert(ann, neuron, args.tau if neuron == "gn" else None, signed=args.signed)
        stats = layer_stats(snn, batches, args.timesteps, ann, args.ac_pj, args.mac_pj)
        runs.append({"neuron": neuron, "tau": args.tau if neuron == "gn" else None,
                     **({"signed": True} if args.signed else {}), **stats})
        print(f"{neuron_label(neuron, args.tau, args.signed)}, {stats['samples']} samples:")
        print(format_stats(stats))
    results = {**_source(args, meta), "levels": meta["levels"], "snn": runs}
    write_json(out / "stats.json", results)
    plot_firing_rates(sorted(runs, key=lambda r: r["neuron"] != "if"), out / "firing_rates.png",
                      title=f"{meta['model']} on {results['data']}, T={args.timesteps}"
                      + ", signed neurons" * args.signed)
    print(f"wrote {out / 'stats.json'} and {out / 'firing_rates.png'}")


def _cmd_export(args) -> None:
    from .checkpoint import export_checkpoint

    if args.out.is_dir():
        raise IsADirectoryError(f"--out {args.out} is a folder; give a file name, e.g. {args.out / 'model.pt'}")
    if args.out.resolve() == args.checkpoint.resolve():
        raise ValueError(f"--out {args.out} is the checkpoint itself; exporting onto it would lose the "
                         "training state that --resume needs; choose another --out")
    check_out_dir(args.out.parent, [args.out.name], args.overwrite)
    sha256 = export_checkpoint(args.checkpoint, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes, sha256 {sha256})")


DEBUG_HELP = "show tracebacks instead of one-line errors"
TIMESTEPS_HELP = "time steps T, e.g. 1,2,4,8"


def _add_data_options(parser: argparse.ArgumentParser, data_required: bool = False) -> None:
    parser.add_argument("--data", required=data_required, help="data set name (see groupsnn.data.list_datasets())")
    parser.add_argument("--data-dir", help="folder holding the data set files (nothing is downloaded)")
    parser.add_argument("--batch-size", type=_positive_int, default=128, help="images per batch")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: automatic)")


def _add_augment_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--augment", choices=["autoaugment", "crop-flip"], default="autoaugment",
                        help="CIFAR training augmentation: autoaugment (default, the QCFS recipe: crop, flip, "
                             "AutoAugment, Cutout) or crop-flip (lighter, for short runs of small networks)")


def _add_signed_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--signed", action="store_true",
                        help="signed neurons: they also emit negative spikes to take back early over-firing, which "
                             "removes most of the unevenness error at tau*T = L (not in the paper; see "
                             "docs/signed_neurons.md)")


def _add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", type=_device_name,
                        help="where the networks run: cpu, cuda or cuda:N (default: cuda if there is a GPU, else cpu)")


def _command(commands, name: str, help: str, run) -> argparse.ArgumentParser:
    """A subcommand whose help shows the defaults, and that takes --debug after its name too."""
    parser = commands.add_parser(name, help=help, description=help, formatter_class=_Help)
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    parser.set_defaults(run=run)
    return parser


def _checkpoint_command(commands, name: str, help: str, run, out: str) -> argparse.ArgumentParser:
    """A subcommand that reads a ``groupsnn train`` checkpoint and writes results to --out (default:
    ``runs/<name>-<checkpoint>-<out>``)."""
    parser = _command(commands, name, help, run)
    parser.add_argument("checkpoint", type=Path, help="a checkpoint written by groupsnn train")
    _add_data_options(parser)
    parser.add_argument("--per-class", type=_positive_int, metavar="N",
                        help="only the first N test images of each class (a fixed class-balanced subset)")
    _add_signed_option(parser)
    _add_device_option(parser)
    parser.add_argument("--out", type=Path,
                        help=f"output folder (default: runs/{name}-CKPT[-DATA][-N-per-class]{out}[-signed] in the "
                             "current folder; CKPT: the checkpoint's file name, or its folder's for checkpoint.pt)")
    parser.add_argument("--overwrite", action="store_true", help="replace earlier outputs in --out")
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="groupsnn", description="ANN-to-SNN conversion with Group Neurons.", formatter_class=_Help)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_CommandParser)

    demo = _command(commands, "demo", "train a QCFS CNN on an embedded data set, compare IF and GN SNNs", _cmd_demo)
    demo.add_argument("--data", default="digits", choices=["digits", "mnist1d"], help="embedded data set")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    demo.add_argument("--levels", type=_positive_int, default=8, help="QCFS quantisation levels L")
    demo.add_argument("--epochs", type=_positive_int, default=30, help="training epochs")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--taus", type=_int_list, default=[1, 2, 4, 8], help="Group Neuron sizes, e.g. 1,2,4,8")
    demo.add_argument("--timesteps", type=_int_list, default=[1, 2, 4, 8, 16, 32], help=TIMESTEPS_HELP)
    demo.add_argument("--overwrite", action="store_true", help="replace existing outputs in --out")

    train = _command(commands, "train", "train a QCFS or ReLU network (also under torchrun for DDP)", _cmd_train)
    train.add_argument("--model", required=True, help="registry name, e.g. resnet20, vgg16, resnet34")
    _add_data_options(train, data_required=True)
    train.add_argument("--activation", choices=["qcfs", "relu"], default="qcfs",
                       help="qcfs (default): QCFS activations, ready for conversion; relu: the network's own "
                            "activations, unquantised (a ReLU baseline, or any network for groupsnn convert "
                            "--from-relu / gs.calibrate)")
    train.add_argument("--levels", type=_positive_int, help="QCFS levels L (default 8)")
    _add_augment_option(train)
    train.add_argument("--threshold", type=float, default=8.0, help="initial QCFS threshold")
    train.add_argument("--epochs", type=_positive_int, default=300, help="training epochs")
    train.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd",
                       help="sgd (with momentum, the paper's recipe) or adamw (for transformers, e.g. --lr 1e-3 "
                            "--weight-decay 0.05)")
    train.add_argument("--lr", type=float, default=0.1, help="learning rate (cosine schedule)")
    train.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    train.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay (of conv and linear weights)")
    train.add_argument("--warmup-epochs", type=float, default=0.0, help="epochs of learning-rate warm-up")
    train.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing of the loss")
    train.add_argument("--seed", type=int, default=0, help="random seed")
    train.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                       help="mixed precision: bf16 autocast + channels-last on CPUs with bf16 units, fp16 on CUDA "
                            "(default: where it pays: on CUDA, and for 2-D conv nets on images of 32x32 or more; on a CPU "
                            "transformers train faster in fp32)")
    train.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="run the model under torch.compile (default: for runs of at least 2000 steps)")
    train.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under DDP")
    train.add_argument("--init-from", type=Path, help="pretrained ReLU state_dict of the same architecture")
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    train.add_argument("--out", type=Path, required=True, help="folder for checkpoint.pt and metrics.csv")
    _add_device_option(train)
    train.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")

    ev = _checkpoint_command(commands, "evaluate", "accuracy of a checkpoint's SNN at several T", _cmd_evaluate,
                             "")
    ev.add_argument("--neuron", choices=["gn", "if"],
                    help="neuron kind (default: gn; a saved SNN: its own)")
    ev.add_argument("--tau", type=_positive_int, help="Group Neuron members (default: 4; a saved SNN: its own)")
    ev.add_argument("--timesteps", type=_int_list, default=[1, 2, 4, 8, 16, 32], help=TIMESTEPS_HELP)
    ev.description += ": evaluate_NEURON[_tauTAU][_signed]_TTIMESTEPS.json and .csv in --out"

    sw = _checkpoint_command(commands, "sweep", "accuracy of IF and GN of several sizes at several T, with plots",
                             _cmd_sweep, "-tausTAUS-TTIMESTEPS")
    sw.add_argument("--taus", type=_int_list, default=[1, 2, 4, 8], help="Group Neuron sizes, e.g. 1,2,4,8")
    sw.add_argument("--timesteps", type=_int_list, default=[1, 2, 4, 8, 16, 32], help=TIMESTEPS_HELP)
    sw.add_argument("--energy-batches", type=int, default=4, metavar="N",
                    help="count spikes on the first N test batches for SOPs, energy and the Pareto front (0: none)")

    st = _checkpoint_command(commands, "stats", "per-layer firing rates, synaptic operations, energy, "
                             "conversion error", _cmd_stats, "-NEURON-tauTAU-TTIMESTEPS")
    st.add_argument("--neuron", choices=["gn", "if"], default="gn", help="shown first; the other is compared")
    st.add_argument("--tau", type=_positive_int, default=4, help="Group Neuron members")
    st.add_argument("--timesteps", type=_positive_int, default=4, help="time steps T")
    st.add_argument("--batches", type=_positive_int, default=4, help="test batches to run")
    st.add_argument("--ac-pj", type=_positive_float, default=0.9, help="energy per accumulate, pJ (Horowitz 2014)")
    st.add_argument("--mac-pj", type=_positive_float, default=4.6, help="energy per multiply-accumulate, pJ (Horowitz 2014)")

    ex = _command(commands, "export", "a checkpoint's network alone (no training state), e.g. to ship it",
                  _cmd_export)
    ex.add_argument("checkpoint", type=Path, help="a checkpoint written by groupsnn train")
    ex.add_argument("--out", type=Path, required=True, help="file to write (a groupsnn checkpoint)")
    ex.add_argument("--overwrite", action="store_true", help="replace --out if it exists")

    cv = _command(commands, "convert", "calibrate a pretrained ReLU network (optionally fine-tune it), compare SNNs",
                  _cmd_convert)
    cv.add_argument("--from-relu", type=Path, required=True, metavar="CKPT",
                    help="state_dict (.pt) of a ReLU network of --model (or a groupsnn checkpoint of one)")
    cv.add_argument("--model", required=True, help="registry name, e.g. digits_cnn, resnet18")
    _add_data_options(cv, data_required=True)
    cv.add_argument("--per-class", type=_positive_int, metavar="N",
                    help="test on the first N test images of each class only (a fixed class-balanced subset)")
    cv.add_argument("--calibrate", type=float, default=99.9, metavar="PERCENTILE",
                    help="threshold = this percentile of each activation (100: its maximum)")
    cv.add_argument("--calibration-batches", type=_positive_int, default=10, help="training batches to calibrate on")
    cv.add_argument("--per-channel", action="store_true", help="one threshold per channel")
    cv.add_argument("--levels", type=int, help="quantise activations to L levels (default: clip only)")
    cv.add_argument("--maxpool", choices=["keep", "avg"], default="keep",
                    help="keep max-pooling (default) or replace it by average pooling")
    cv.add_argument("--fuse-bn", action="store_true", help="fold BatchNorm into the preceding conv/linear")
    cv.add_argument("--finetune-epochs", type=_positive_int, metavar="N",
                    help="then train the calibrated network N epochs (thresholds from the calibration) and "
                         "write OUT/checkpoint.pt for evaluate, sweep and stats")
    _add_augment_option(cv)
    cv.add_argument("--finetune-lr", type=_positive_float, default=0.01, help="learning rate of the fine-tuning")
    cv.add_argument("--seed", type=int, default=0, help="seed of the fine-tuning")
    cv.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                    help="fine-tune in mixed precision (default: where it pays, as groupsnn train)")
    cv.add_argument("--neuron", choices=["gn", "if", "both"], default="gn", help="neuron kind (both: IF and GN)")
    cv.add_argument("--taus", type=_int_list, default=[8], help="Group Neuron sizes, e.g. 4,8,16")
    _add_signed_option(cv)
    cv.add_argument("--timesteps", type=_int_list, default=[1, 2, 4, 8, 16, 32], help=TIMESTEPS_HELP)
    _add_device_option(cv)
    cv.add_argument("--out", type=Path, default=Path("runs/convert"), help="output folder")
    cv.add_argument("--overwrite", action="store_true", help="replace existing outputs in --out")
    return parser


def _message(err: Exception) -> str:
    """``err``'s message; for an error a DataLoader worker raised, the worker's own message (the
    DataLoader re-raises it with the worker's traceback in the message)."""
    text = str(err).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].removeprefix(f"{type(err).__name__}: ")
    return text


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        args.run(args)
    except USER_ERRORS as err:
        if args.debug:
            raise
        print(f"error: {_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
