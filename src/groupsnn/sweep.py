"""Accuracy for IF and Group Neurons of several sizes τ at several T (the paper's Figs. 1 and 3)."""
from typing import Iterable, Sequence

import torch.nn as nn

from .convert import convert
from .progress import progress_bar
from .qcfs import QCFS
from .report import accuracy_rows
from .simulate import evaluate


def sweep(ann: nn.Module, loader: Iterable, taus: Sequence[int] = (1, 2, 4, 8),
          timesteps: Sequence[int] = (1, 2, 4, 8, 16, 32), progress: bool = False,
          include_if: bool = True) -> dict:
    """``{"ann_accuracy", "levels", "snn": rows}`` for the QCFS network ``ann`` converted to IF (unless
    not ``include_if``) and to GN with each of ``taus``; each (neuron, τ) gives accuracies at every T
    from one run of max(T) steps (``evaluate``). Rows as ``report.accuracy_rows``, accuracies in %."""
    rows = []
    configs = [("if", None)] * include_if + [("gn", tau) for tau in taus]
    for neuron, tau in progress_bar(configs, desc="convert + simulate", disable=not progress):
        rows += accuracy_rows(neuron, tau, evaluate(convert(ann, neuron, tau or 1), loader, timesteps))
    levels = next((m.levels for m in ann.modules() if isinstance(m, QCFS)), None)
    return {"ann_accuracy": round(evaluate(ann, loader, [1])[1], 4), "levels": levels, "snn": rows}
