"""PNG figures (matplotlib, headless): accuracy against time steps, τ and energy; firing rates."""
from collections import defaultdict
from pathlib import Path

from ._io import PathLike, atomic_write
from .report import neuron_label


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: PathLike) -> Path:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    _pyplot().close(fig)
    return Path(path)


def _accuracy_axes(ax, results: dict, xlabel: str, xticks, title: str) -> None:
    """Log x axis labelled with ``xticks``, accuracy in percent, the ANN's accuracy as a line."""
    ax.axhline(results["ann_accuracy"], color="k", linewidth=1, label=results.get("ann", "QCFS ANN"))
    ax.set(xscale="log", xlabel=xlabel, ylabel="test accuracy (%)", title=title, ylim=(0, 101))
    ax.set_xticks(sorted(xticks))
    ax.get_xaxis().set_major_formatter(_pyplot().ScalarFormatter())
    ax.get_xaxis().set_minor_formatter(_pyplot().NullFormatter())
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")


def plot_accuracy_vs_timesteps(results: dict, path: PathLike, title: str = "") -> Path:
    """One curve per (neuron, τ) from ``results["snn"]`` rows, IF dashed, the ANN as a line."""
    plt = _pyplot()
    curves = defaultdict(list)
    for row in results["snn"]:
        curves[(row["neuron"], row["tau"])].append((row["timesteps"], row["accuracy"]))
    fig, ax = plt.subplots(figsize=(6, 4))
    # IF last and dashed, so it stays visible on top of GN τ=1 (the same neuron)
    for (neuron, tau), points in sorted(curves.items(), key=lambda kv: (kv[0][0] == "if", kv[0][1] or 0)):
        ts, accs = zip(*sorted(points))
        if neuron == "if":
            ax.plot(ts, accs, "k--", marker="s", markerfacecolor="none", label="IF")
        else:
            ax.plot(ts, accs, "-", marker="o", label=f"GN τ={tau}")
    _accuracy_axes(ax, results, "time steps T", {row["timesteps"] for row in results["snn"]}, title)
    return _save(fig, path)


def plot_effect_of_tau(results: dict, path: PathLike, title: str = "") -> Path:
    """Accuracy against the Group Neuron size τ, one curve per T (the paper's Fig. 3), from the GN
    rows of ``results["snn"]``; the ANN as a line."""
    plt = _pyplot()
    curves = defaultdict(list)
    for row in results["snn"]:
        if row["neuron"] == "gn":
            curves[row["timesteps"]].append((row["tau"], row["accuracy"]))
    if not curves:
        raise ValueError("plot_effect_of_tau(): the results have no Group Neuron rows")
    fig, ax = plt.subplots(figsize=(6, 4))
    for t, points in sorted(curves.items()):
        taus, accs = zip(*sorted(points))
        ax.plot(taus, accs, "-", marker="o", label=f"T={t}")
    _accuracy_axes(ax, results, "Group Neuron size τ", {tau for points in curves.values() for tau, _ in points}, title)
    return _save(fig, path)


def plot_accuracy_vs_energy(results: dict, path: PathLike, title: str = "") -> Path:
    """Accuracy against energy per image of each (neuron, τ, T) row of a sweep that counted spikes,
    one curve per (neuron, τ) through its T, the rows marked ``pareto`` joined as the front, the
    ANN's energy as a vertical line and its accuracy as a horizontal one."""
    plt = _pyplot()
    rows = results["snn"]
    if not rows or "snn_energy_uj" not in rows[0]:
        raise ValueError("plot_accuracy_vs_energy(): the results have no energy (run sweep with energy_batches > 0)")
    curves = defaultdict(list)
    for row in rows:
        curves[(row["neuron"], row["tau"])].append((row["snn_energy_uj"], row["accuracy"]))
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for (neuron, tau), points in sorted(curves.items(), key=lambda kv: (kv[0][0] == "if", kv[0][1] or 0)):
        energies, accs = zip(*sorted(points))
        style = dict(linestyle="--", marker="s", color="k", markerfacecolor="none") if neuron == "if" \
            else dict(linestyle="-", marker="o")
        ax.plot(energies, accs, alpha=0.6, label=neuron_label(neuron, tau), **style)
    front = sorted((r["snn_energy_uj"], r["accuracy"]) for r in rows if r["pareto"])
    ax.step(*zip(*front), where="post", color="crimson", linewidth=2, zorder=3, label="Pareto front")
    ax.plot(*zip(*front), "o", color="crimson", markersize=8, markerfacecolor="none", zorder=3)
    ax.axvline(results["ann_energy_uj"], color="gray", linestyle=":", label="ANN energy")
    ax.axhline(results["ann_accuracy"], color="k", linewidth=1, label=results.get("ann", "QCFS ANN"))
    ax.set(xscale="log", xlabel="energy per image (µJ)", ylabel="test accuracy (%)", title=title, ylim=(0, 101))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_firing_rates(runs: list[dict], path: PathLike, title: str = "") -> Path:
    """Firing rate (spikes per neuron per step) of each layer, one bar per run side by side (the
    paper's Fig. 2); ``runs`` are ``stats.layer_stats`` results with ``"neuron"`` and ``"tau"``."""
    plt = _pyplot()
    layers = [r["layer"] for r in runs[0]["layers"]]
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(layers) * len(runs) + 1.5), 4))
    for i, run in enumerate(runs):
        rates = [r["firing_rate"] for r in run["layers"]]
        label = neuron_label(run["neuron"], run["tau"])
        ax.bar([j + (i - (len(runs) - 1) / 2) * width for j in range(len(layers))], rates, width, label=label)
    ax.set_xticks(range(len(layers)), layers, rotation=90, fontsize=7)
    ax.set(xlabel="layer", ylabel="spikes per neuron per step", title=title)
    top = max(r["firing_rate"] for run in runs for r in run["layers"])
    ax.set_ylim(0, 1.3 * top or 1)  # room for the legend above the bars
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="upper right")
    return _save(fig, path)
