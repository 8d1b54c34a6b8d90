"""PNG figures of accuracy against time steps (matplotlib, headless)."""
from collections import defaultdict
from pathlib import Path

from ._io import PathLike, atomic_write


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


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
    ax.axhline(results["ann_accuracy"], color="k", linewidth=1, label="QCFS ANN")
    ax.set(xscale="log", xlabel="time steps T", ylabel="test accuracy (%)", title=title, ylim=(0, 101))
    ax.set_xticks(sorted({row["timesteps"] for row in results["snn"]}))
    ax.get_xaxis().set_major_formatter(plt.ScalarFormatter())
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return Path(path)
