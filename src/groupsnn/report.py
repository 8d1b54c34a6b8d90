"""Results tables: rows of ``{"neuron", "tau", "timesteps", "accuracy"}`` as text and CSV."""
import csv
import io
from pathlib import Path

from ._io import PathLike, write_text

FIELDS = ("neuron", "tau", "timesteps", "accuracy")
ENERGY_FIELDS = ("sops", "snn_energy_uj", "pareto")  # rows of a sweep that counted spikes


def accuracy_rows(neuron: str, tau, accuracies: dict[int, float]) -> list[dict]:
    return [{"neuron": neuron, "tau": tau, "timesteps": t, "accuracy": round(a, 4)} for t, a in accuracies.items()]


def neuron_label(neuron: str, tau) -> str:
    return "IF" if neuron == "if" else f"GN τ={tau}"


def _grid(rows: list[dict], key: str, number: str) -> list[str]:
    """``key`` of ``rows`` with one line per neuron and one column per T."""
    steps = sorted({r["timesteps"] for r in rows})
    table: dict[tuple, dict[int, float]] = {}
    for r in rows:
        table.setdefault((r["neuron"], r["tau"]), {})[r["timesteps"]] = r[key]
    lines = [f"{'neuron':<10}" + "".join(f"{'T=' + str(t):>8}" for t in steps)]
    for (neuron, tau), values in table.items():
        lines.append(f"{neuron_label(neuron, tau):<10}"
                     + "".join(f"{values[t]:>8{number}}" if t in values else f"{'':>8}" for t in steps))
    return lines


def format_table(results: dict) -> str:
    """Accuracy (%) with one line per neuron and one column per T, under the ANN's accuracy; then,
    for rows with ``snn_energy_uj``, the energy per image the same way."""
    ann = results.get("ann", f"QCFS ANN (L={results['levels']})")  # e.g. "ReLU ANN" (groupsnn convert)
    lines = [f"{ann}: {results['ann_accuracy']:.2f} %", *["signed neurons:"] * bool(results.get("signed")),
             *_grid(results["snn"], "accuracy", ".2f")]
    if results["snn"] and "snn_energy_uj" in results["snn"][0]:
        lines += [f"energy per image (µJ; ANN {results['ann_energy_uj']:.4g}):",
                  *_grid(results["snn"], "snn_energy_uj", ".4g")]
    return "\n".join(lines)


def write_csv(path: PathLike, rows: list[dict], fields=FIELDS) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return write_text(path, buffer.getvalue())
