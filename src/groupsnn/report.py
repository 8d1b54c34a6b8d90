"""Results tables: rows of ``{"neuron", "tau", "timesteps", "accuracy"}`` as text and CSV."""
import csv
import io
from pathlib import Path

from ._io import PathLike, write_text

FIELDS = ("neuron", "tau", "timesteps", "accuracy")


def accuracy_rows(neuron: str, tau, accuracies: dict[int, float]) -> list[dict]:
    return [{"neuron": neuron, "tau": tau, "timesteps": t, "accuracy": round(a, 4)} for t, a in accuracies.items()]


def neuron_label(neuron: str, tau) -> str:
    return "IF" if neuron == "if" else f"GN τ={tau}"


def format_table(results: dict) -> str:
    """Accuracy (%) with one line per neuron and one column per T, under the ANN's accuracy."""
    steps = sorted({r["timesteps"] for r in results["snn"]})
    table: dict[tuple, dict[int, float]] = {}
    for r in results["snn"]:
        table.setdefault((r["neuron"], r["tau"]), {})[r["timesteps"]] = r["accuracy"]
    ann = results.get("ann", f"QCFS ANN (L={results['levels']})")  # e.g. "ReLU ANN" (groupsnn convert)
    lines = [f"{ann}: {results['ann_accuracy']:.2f} %",
             f"{'neuron':<10}" + "".join(f"{'T=' + str(t):>8}" for t in steps)]
    for (neuron, tau), accs in table.items():
        name = neuron_label(neuron, tau)
        lines.append(f"{name:<10}" + "".join(f"{accs[t]:>8.2f}" if t in accs else f"{'':>8}" for t in steps))
    return "\n".join(lines)


def write_csv(path: PathLike, rows: list[dict], fields=FIELDS) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return write_text(path, buffer.getvalue())
