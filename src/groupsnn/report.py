"""Results tables: rows of ``{"neuron", "tau", "timesteps", "accuracy"}`` as text and CSV."""
import csv
import io
from pathlib import Path

from ._io import PathLike, write_text

FIELDS = ("neuron", "tau", "timesteps", "accuracy")
ENERGY_FIELDS = ("sops", "snn_energy_uj", "pareto")  # rows of a sweep that counted spikes


def accuracy_rows(neuron: str, tau, accuracies: dict[int, float], signed: bool = False) -> list[dict]:
    """One row per T; rows of signed neurons carry ``"signed": True`` (plain ones have no such key)."""
    mark = {"signed": True} if signed else {}
    return [{"neuron": neuron, "tau": tau, **mark, "timesteps": t, "accuracy": round(a, 4)}
            for t, a in accuracies.items()]


def neuron_label(neuron: str, tau, signed: bool = False) -> str:
    return ("IF" if neuron == "if" else f"GN τ={tau}") + " signed" * signed


def _grid(rows: list[dict], key: str, number: str) -> list[str]:
    """``key`` of ``rows`` with one line per neuron and one column per T."""
    steps = sorted({r["timesteps"] for r in rows})
    table: dict[tuple, dict[int, float]] = {}
    for r in rows:
        table.setdefault((r["neuron"], r["tau"], r.get("signed", False)), {})[r["timesteps"]] = r[key]
    width = max([10, *(len(neuron_label(*config)) + 1 for config in table)])
    lines = [f"{'neuron':<{width}}" + "".join(f"{'T=' + str(t):>8}" for t in steps)]
    for config, values in table.items():
        lines.append(f"{neuron_label(*config):<{width}}"
                     + "".join(f"{values[t]:>8{number}}" if t in values else f"{'':>8}" for t in steps))
    return lines


def format_table(results: dict) -> str:
    """Accuracy (%) with one line per neuron and one column per T, under the ANN's accuracy; then,
    for rows with ``snn_energy_uj``, the energy per image the same way."""
    ann = results.get("ann", f"QCFS ANN (L={results['levels']})")  # e.g. "ReLU ANN" (groupsnn convert)
    lines = [f"{ann}: {results['ann_accuracy']:.2f} %"] if "ann_accuracy" in results else []  # a saved SNN: none
    lines += _grid(results["snn"], "accuracy", ".2f")
    if results["snn"] and "snn_energy_uj" in results["snn"][0]:
        lines += [f"energy per image (µJ; ANN {results['ann_energy_uj']:.4g}):",
                  *_grid(results["snn"], "snn_energy_uj", ".4g")]
    return "\n".join(lines)


def row_fields(rows: list[dict]) -> tuple:
    """The CSV columns of result rows: ``FIELDS``, then ``signed`` and ``ENERGY_FIELDS`` where they have them."""
    has = {key for row in rows for key in row}
    return FIELDS + ("signed",) * ("signed" in has) + ENERGY_FIELDS * ("snn_energy_uj" in has)


def write_csv(path: PathLike, rows: list[dict], fields=None) -> Path:
    """``rows`` as CSV with the columns ``fields`` (default: ``row_fields(rows)``)."""
    fields = row_fields(rows) if fields is None else fields
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return write_text(path, buffer.getvalue())
