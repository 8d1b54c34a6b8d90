"""The ``groupsnn`` command. Each subcommand is a ``_cmd_*`` function registered in ``_parser()``.

User errors (bad arguments, missing files, ...) print one ``error: ...`` line and exit with code 2;
``--debug`` shows the traceback instead.
"""
import argparse
import sys
from pathlib import Path

from ._io import prepare_out_dir, write_json

USER_ERRORS = (ValueError, OSError, ArithmeticError)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,2,4, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,2,4, got {text!r}")
    return values


def _cmd_demo(args) -> None:
    from .demo import run_demo
    from .plots import plot_accuracy_vs_timesteps
    from .report import format_table

    out = prepare_out_dir(args.out, ["results.json", "accuracy_vs_T.png"], args.overwrite)
    results = run_demo(args.data, levels=args.levels, epochs=args.epochs, seed=args.seed,
                       taus=args.taus, timesteps=args.timesteps)
    print(format_table(results))
    write_json(out / "results.json", results)
    plot_accuracy_vs_timesteps(results, out / "accuracy_vs_T.png",
                               title=f"{results['model']} on {args.data}, QCFS L={args.levels}")
    print(f"wrote {out / 'results.json'} and {out / 'accuracy_vs_T.png'} ({results['seconds']} s)")


def _cmd_train(args) -> None:
    from .train import RunConfig, TrainConfig, train

    optim = TrainConfig(epochs=args.epochs, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                        warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing, seed=args.seed)
    run = RunConfig(model=args.model, data=args.data, data_dir=args.data_dir, levels=args.levels or None,
                    threshold=args.threshold, batch_size=args.batch_size, workers=args.workers, amp=args.amp,
                    sync_bn=args.sync_bn, optim=optim)
    path = train(run, args.out, resume=args.resume, init_from=args.init_from, overwrite=args.overwrite)
    print(f"wrote {path}")


def _test_loader(meta: dict, args):
    """The test split of the checkpoint's data set (or --data), checked against its classes."""
    from . import data

    splits = data.load(args.data or meta["data"], args.data_dir)
    if splits.num_classes != meta["num_classes"]:
        raise ValueError(f"the checkpoint has {meta['num_classes']} classes, data set "
                         f"{args.data or meta['data']!r} has {splits.num_classes}; pass the right --data")
    return data.make_loader(splits.test, args.batch_size, train=False, workers=args.workers)


def _cmd_evaluate(args) -> None:
    from .checkpoint import load_model
    from .convert import convert
    from .report import accuracy_rows, format_table, write_csv
    from .simulate import evaluate

    name = f"evaluate_{args.neuron}" + (f"_tau{args.tau}" if args.neuron == "gn" else "")
    out = prepare_out_dir(args.out or Path(args.checkpoint).parent, [f"{name}.json", f"{name}.csv"], args.overwrite)
    ann, meta = load_model(args.checkpoint)
    if not meta.get("levels"):
        raise ValueError(f"{args.checkpoint} holds a plain ReLU network; convert it with "
                         "`groupsnn convert --from-relu` (calibration) instead")
    loader = _test_loader(meta, args)
    snn = convert(ann, neuron=args.neuron, tau=args.tau)
    tau = args.tau if args.neuron == "gn" else None
    results = {"ann_accuracy": round(evaluate(ann, loader, [1], progress=True)[1], 4), "levels": meta["levels"],
               "snn": accuracy_rows(args.neuron, tau, evaluate(snn, loader, args.timesteps, progress=True)),
               "checkpoint": str(args.checkpoint), "model": meta["model"], "data": args.data or meta["data"]}
    print(format_table(results))
    write_json(out / f"{name}.json", results)
    write_csv(out / f"{name}.csv", results["snn"])
    print(f"wrote {out / name}.json and .csv")


def _add_data_options(parser: argparse.ArgumentParser, data_required: bool = False) -> None:
    parser.add_argument("--data", required=data_required, help="data set name (see groupsnn.data.list_datasets())")
    parser.add_argument("--data-dir", help="folder holding the data set files (nothing is downloaded)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: automatic)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="groupsnn", description="ANN-to-SNN conversion with Group Neurons.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="train a QCFS CNN on an embedded data set, compare IF and GN SNNs")
    demo.add_argument("--data", default="digits", choices=["digits", "mnist1d"])
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    demo.add_argument("--levels", type=int, default=8, help="QCFS quantisation levels L")
    demo.add_argument("--epochs", type=int, default=30)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--taus", type=_int_list, default=[1, 2, 4, 8], help="Group Neuron sizes, e.g. 1,2,4,8")
    demo.add_argument("--timesteps", type=_int_list, default=[1, 2, 4, 8, 16, 32])
    demo.add_argument("--overwrite", action="store_true", help="replace existing outputs in --out")
    demo.set_defaults(run=_cmd_demo)

    train = commands.add_parser("train", help="train a QCFS network (also under torchrun for DDP)")
    train.add_argument("--model", required=True, help="registry name, e.g. resnet20, vgg16, resnet34")
    _add_data_options(train, data_required=True)
    train.add_argument("--levels", type=int, default=8, help="QCFS levels L (0: train a plain ReLU network)")
    train.add_argument("--threshold", type=float, default=8.0, help="initial QCFS threshold")
    train.add_argument("--epochs", type=int, default=300)
    train.add_argument("--lr", type=float, default=0.1)
    train.add_argument("--momentum", type=float, default=0.9)
    train.add_argument("--weight-decay", type=float, default=5e-4)
    train.add_argument("--warmup-epochs", type=float, default=0.0)
    train.add_argument("--label-smoothing", type=float, default=0.0)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--no-amp", dest="amp", action="store_false", help="no mixed precision on CUDA")
    train.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under DDP")
    train.add_argument("--init-from", type=Path, help="pretrained ReLU state_dict of the same architecture")
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    train.add_argument("--out", type=Path, required=True, help="folder for checkpoint.pt and metrics.csv")
    train.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    train.set_defaults(run=_cmd_train)

    ev = commands.add_parser("evaluate", help="accuracy of a checkpoint's SNN at several T")
    ev.add_argument("checkpoint", type=Path)
    ev.add_argument("--neuron", choices=["gn", "if"], default="gn")
    ev.add_argument("--tau", type=int, default=4, help="Group Neuron members")
    ev.add_argument("--timesteps", type=_int_list, default=[1, 2, 4, 8, 16, 32])
    _add_data_options(ev)
    ev.add_argument("--out", type=Path, help="output folder (default: the checkpoint's folder)")
    ev.add_argument("--overwrite", action="store_true")
    ev.set_defaults(run=_cmd_evaluate)
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        args.run(args)
    except USER_ERRORS as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
