"""Accuracy for IF and Group Neurons of several sizes τ at several T (the paper's Figs. 1 and 3), with
the synaptic operations and energy per image of each (neuron, τ, T) and its accuracy-energy front."""
from itertools import islice
from typing import Iterable, Sequence

import torch.nn as nn

from .convert import convert
from .progress import progress_bar
from .qcfs import QCFS
from .report import accuracy_rows
from .simulate import evaluate
from .stats import energy_by_timesteps


def mark_pareto(rows: list[dict]) -> list[dict]:
    """Set each row's ``pareto``: true where no other row is at least as accurate and at most as
    costly (``snn_energy_uj``), with one of the two strict."""
    for row in rows:
        row["pareto"] = not any(
            other["accuracy"] >= row["accuracy"] and other["snn_energy_uj"] <= row["snn_energy_uj"]
            and (other["accuracy"] > row["accuracy"] or other["snn_energy_uj"] < row["snn_energy_uj"])
            for other in rows)
    return rows


def sweep(ann: nn.Module, loader: Iterable, taus: Sequence[int] = (1, 2, 4, 8),
          timesteps: Sequence[int] = (1, 2, 4, 8, 16, 32), progress: bool = False,
          include_if: bool = True, energy_batches: int = 4, signed: bool = False) -> dict:
    """``{"ann_accuracy", "levels", "snn": rows}`` for the QCFS network ``ann`` converted to IF (unless
    not ``include_if``) and to GN with each of ``taus``; each (neuron, τ) gives accuracies at every T
    from one run of max(T) steps (``evaluate``). Rows as ``report.accuracy_rows``, accuracies in %.

    With ``energy_batches`` > 0 the first that many batches of ``loader`` also run with spike
    counting (``stats.energy_by_timesteps``, the accounting of ``stats.layer_stats``): each row
    gains ``sops`` and ``snn_energy_uj`` per image over steps 1..T, and ``pareto`` (see
    ``mark_pareto``); the result gains ``ann_energy_uj`` and ``energy_samples``. ``signed=True``
    converts to signed neurons (``convert``'s ``signed``; their rows say so).
    """
    if isinstance(energy_batches, bool) or not isinstance(energy_batches, int) or energy_batches < 0:
        raise ValueError(f"energy_batches must be a non-negative integer, got {energy_batches!r}")
    energy_data = list(islice(loader, energy_batches))
    rows, cost = [], None
    configs = [("if", None)] * include_if + [("gn", tau) for tau in taus]
    for neuron, tau in progress_bar(configs, desc="convert + simulate", disable=not progress):
        snn = convert(ann, neuron, tau or 1, signed=signed)
        config_rows = accuracy_rows(neuron, tau, evaluate(snn, loader, timesteps, progress=False), signed)
        if energy_data:
            cost = energy_by_timesteps(snn, energy_data, timesteps)
            for row in config_rows:
                row.update({k: cost["timesteps"][row["timesteps"]][k] for k in ("sops", "snn_energy_uj")})
        rows += config_rows
    levels = next((m.levels for m in ann.modules() if isinstance(m, QCFS)), None)
    results = {"ann_accuracy": round(evaluate(ann, loader, [1], progress=False)[1], 4), "levels": levels, "snn": rows}
    if cost is not None:
        mark_pareto(rows)
        results.update(ann_energy_uj=cost["ann_energy_uj"], energy_samples=cost["samples"])
    return results
