"""The ``groupsnn`` command. Each subcommand is a ``_cmd_*`` function registered in ``_parser()``.

User errors (bad arguments, missing files, ...) print one ``error: ...`` line and exit with code 2;
``--debug`` shows the traceback instead.
"""
import argparse
import sys
from pathlib import Path

from ._io import prepare_out_dir, write_json

USER_ERRORS = (ValueError, OSError)


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
