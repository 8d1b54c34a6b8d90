"""Training-free correction of a converted SNN: ``correct`` shifts the initial membrane potential of
each neuron, per channel, so that its mean output over T steps matches the ANN's activation.

An SNN's output averaged over T steps is a quantisation of the ANN's activation whose error is not
zero on average: inputs that vary from step to step (every layer after the first) and activations
clustered near zero bias each channel's mean. Shifting a channel's initial membrane by Δv (in units
of one spike) adds about Δv spikes over T steps, so its mean output moves by Δv·θ/(τ·T): the
potential correction of SNN calibration (Li et al., ICML 2021) and the initial-membrane offsets of
COS (Hao et al., ICLR 2023). Layers are corrected in the order the network runs them, each after
the layers before it, on the same few batches. Only the neurons' ``v_init`` buffers change; weights,
biases and thresholds do not, so it works on any graph ``convert`` makes (residual sums, max-pooling
kept as ``RateMaxPool``).
"""
from itertools import islice
from typing import Iterable

import torch
import torch.nn as nn
from torch import fx

from .graph import traced
from .neurons import SpikingNeuron
from .qcfs import QCFS
from .runtime import model_device
from .runtime import eval_mode
from .simulate import StepRunner

MAX_SCALE = 4.0  # the most the secant step may enlarge a shift (it removed at least a quarter of the error)


def _channel_sum(out: torch.Tensor) -> torch.Tensor:
    """``out`` [B, C, ...] summed over all dims but the channels, shaped ``[C, 1, ...]`` (float64)."""
    dims = (0, *range(2, out.dim()))
    return out.to(torch.float64).sum(dim=dims).reshape(out.shape[1], *[1] * (out.dim() - 2))


def _paired_layers(snn: nn.Module, ann: nn.Module) -> dict[str, tuple[SpikingNeuron, QCFS]]:
    """``{name: (neuron, QCFS)}``: each neuron of ``snn`` with the ANN activation of the same name."""
    neurons = {n: m for n, m in snn.named_modules() if isinstance(m, SpikingNeuron)}
    activations = {n: m for n, m in ann.named_modules() if isinstance(m, QCFS)}
    if not neurons:
        raise ValueError("correct(): the SNN has no spiking neurons; pass the network groupsnn.convert returned")
    if neurons.keys() != activations.keys():
        odd = sorted(neurons.keys() ^ activations.keys())
        raise ValueError(f"correct(): the SNN's {len(neurons)} neurons and the ANN's {len(activations)} QCFS "
                         f"layers do not match (e.g. {odd[0]!r} is in one only); pass the ANN the SNN was "
                         "converted from")
    return {n: (neurons[n], activations[n]) for n in neurons}


def _per_channel_means(model: nn.Module, modules: dict[str, nn.Module], run) -> dict[str, torch.Tensor]:
    """The mean output per channel of each of ``modules`` over all calls while ``run()`` runs, in
    the order they first ran."""
    sums, counts = {}, {}

    def hook(name: str, out: torch.Tensor) -> None:
        if out.dim() < 2:
            raise ValueError(f"correct(): layer {name!r} gives outputs of shape {tuple(out.shape)}; "
                             "it needs [batch, channels, ...]")
        sums[name] = sums[name] + _channel_sum(out) if name in sums else _channel_sum(out)
        counts[name] = counts.get(name, 0) + out.numel() // out.shape[1]

    handles = [m.register_forward_hook(lambda m, args, out, name=name: hook(name, out)) for name, m in modules.items()]
    try:
        with eval_mode(model):
            run()
    finally:
        for handle in handles:
            handle.remove()
    return {name: s / counts[name] for name, s in sums.items()}


def _up_to(model: nn.Module, name: str) -> nn.Module:
    """``model`` cut after its module ``name``, returning that module's output (the layers after it
    do not change it, and correcting it need not run them), sharing ``model``'s modules; ``model``
    itself where it cannot be traced."""
    graph = traced(model, "correct()", "each layer is corrected by running the whole network")
    if graph is None:
        return model
    nodes = list(graph.nodes)
    cut = next((i for i, n in enumerate(nodes) if n.op == "call_module" and n.target == name), None)
    if cut is None:  # called through an alias or from inside a leaf: keep the whole model
        return model
    output = nodes[-1]
    output.args = (nodes[cut],)
    for node in reversed(nodes[cut + 1:-1]):
        graph.erase_node(node)
    return fx.GraphModule(model, graph)


@torch.no_grad()
def correct(snn: nn.Module, ann: nn.Module, loader: Iterable, timesteps: int, batches: int = 10) -> nn.Module:
    """Correct ``snn`` in place, without training, for ``timesteps`` steps; returns ``snn``.

    ``ann`` is the QCFS network ``snn`` was converted from (``gs.prepare`` + training, or
    ``gs.calibrate``); ``loader`` yields inputs or ``(input, target)`` pairs, of which the first
    ``batches`` are used (training data). Layer by layer in the order the network runs them, each
    neuron's initial membrane ``v_init`` (one per channel, in units of one spike; 1/2 as ``convert``
    leaves it) is shifted by ``(a - s)·τ·T/θ``, where ``a`` is the ANN activation and ``s`` the SNN's
    output averaged over the T steps, both averaged per channel over the batches, with the layers
    before it already corrected; a second run then enlarges the shift by one secant step (at most
    ``MAX_SCALE`` times). A layer whose means already agree exactly is left as it is.

    Weights, biases and thresholds are unchanged. The correction is made for this T: at other T a
    channel's mean output moves by Δv·θ/(τ·T) instead, less for longer runs.
    """
    for value, what in ((timesteps, "timesteps (the one T to correct for)"), (batches, "batches")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"correct(): {what} must be a positive integer, got {value!r}")
    layers = _paired_layers(snn, ann)
    device = model_device(snn)
    inputs = [(b[0] if isinstance(b, (tuple, list)) else b).to(device) for b in islice(loader, batches)]
    if not inputs:
        raise ValueError("correct(): the data loader yielded no batches")

    def run_ann():
        for x in inputs:
            ann(x)

    targets = _per_channel_means(ann, {n: qcfs for n, (_, qcfs) in layers.items()}, run_ann)

    for name in targets:  # the order the layers ran in
        neuron = layers[name][0]
        runner = StepRunner(_up_to(snn, name), fold=False)

        def run_snn():
            for x in inputs:
                for _ in runner.steps(x, timesteps):
                    pass

        error = targets[name] - _per_channel_means(snn, {name: neuron}, run_snn)[name]
        if not error.any():
            continue
        start = torch.full_like(error, 0.5) if neuron.v_init is None else neuron.v_init.to(torch.float64)
        shift = error * (timesteps * neuron.tau) / neuron.threshold.detach().to(torch.float64)
        neuron.v_init = (start + shift).to(torch.float32)
        # Clamped elements (never firing, or at every step) do not respond, so the shift undershoots:
        # one secant step scales it by how much of the error it removed
        remaining = targets[name] - _per_channel_means(snn, {name: neuron}, run_snn)[name]
        removed = error - remaining
        scale = torch.where(removed * error > 0, error / removed, 1.0).clamp_(1.0, MAX_SCALE)
        neuron.v_init = (start + shift * scale).to(torch.float32)
    return snn
