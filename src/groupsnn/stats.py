"""Per-layer statistics of an SNN run: firing rates, synaptic operations, energy, conversion error.

``layer_stats(snn, batches, timesteps, ann)`` runs the SNN on each batch for T steps with forward
hooks attached for that call only, and returns one row per neuron layer plus totals, per input
sample. What is counted:

- ``firing_rate``: spikes per neuron per step. A Group Neuron's spikes are its member spikes,
  ``out·τ/θ`` (0 to τ per step), so its rate can exceed 1; an IF neuron's is at most 1.
- ``sops`` (synaptic operations, over all T steps): the accumulates the layer's spikes drive in
  the weighted layers (conv, linear modules) they reach, directly or through pooling, flatten or
  dropout. A spike arriving at input p of such a layer costs fan-out(p) accumulates, the number of
  weights the layer multiplies p with (fewer at padded borders). Pooling acts on spike counts as on
  spikes, so after a k-input average pool a spike counts 1/k at each pooled input.
- ``macs``: the multiply-accumulates of the same weighted layers in the ANN, one forward:
  outputs × weights per output, padding included, as dense hardware computes them.
- totals: the SNN also computes MACs in weighted layers not fed by spikes (the first layer, fed by
  the image: once per input, as ``simulate`` runs it once); energy at 0.9 pJ per accumulate and
  4.6 pJ per multiply-accumulate (32-bit float in 45 nm, Horowitz, ISSCC 2014). BatchNorm (which
  folds into the layer before it), pooling, additions and neuron updates are counted in neither.
- ``conversion_mse``: the mean squared difference between the ANN's QCFS activation and the
  neuron's output averaged over the T steps, on the same inputs (the SNN keeps the ANN's layer names).
"""
import contextlib
from collections import defaultdict
from typing import Iterable, Optional

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from .convert import trace
from .neurons import RateMaxPool, SpikingNeuron
from .qcfs import QCFS
from .runtime import check_timesteps, model_device
from .simulate import StepRunner, eval_mode

AC_PJ, MAC_PJ = 0.9, 4.6  # energy per accumulate / multiply-accumulate, 32-bit float, 45 nm (Horowitz 2014)

WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)
# between a neuron and a weighted layer, these pass spikes on (as counts, averages or reshapes)
_PASS_MODULES = (nn.Flatten, nn.Unflatten, nn.Identity, nn.modules.dropout._DropoutNd, RateMaxPool,
                 nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd)
_PASS_CALLS = {torch.flatten, F.dropout, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d,
               F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, "flatten", "view", "reshape", "contiguous"}


def spike_sources(model: nn.Module) -> dict[str, str]:
    """``{weighted layer: neuron layer}`` for each conv/linear module whose input is spikes."""
    sources = {}
    for node in trace(model).nodes:
        if node.op == "call_module" and isinstance(model.get_submodule(node.target), WEIGHTED):
            source = node.args[0]
            while isinstance(source, fx.Node) and _passes_spikes(model, source):
                source = source.args[0]
            if isinstance(source, fx.Node) and source.op == "call_module" \
                    and isinstance(model.get_submodule(source.target), SpikingNeuron):
                sources[node.target] = source.target
    return sources


def _passes_spikes(model: nn.Module, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(model.get_submodule(node.target), _PASS_MODULES)
    return node.op in ("call_function", "call_method") and node.target in _PASS_CALLS


def fan_out(layer: nn.Module, input_shape: torch.Size, device=None) -> torch.Tensor:
    """For each input element of one sample, the number of weights ``layer`` multiplies it with:
    the gradient of the layer's summed output with all weights 1 and no bias."""
    params = {name: torch.ones_like(p) if name == "weight" else torch.zeros_like(p)
              for name, p in layer.named_parameters(recurse=False)}
    z = torch.ones(1, *input_shape, device=device, requires_grad=True)
    with torch.enable_grad():
        functional_call(layer, params, (z,)).sum().backward()
    return z.grad[0]


def _spike_size(neuron: SpikingNeuron, like: torch.Tensor) -> torch.Tensor:
    """θ/τ, broadcastable against ``like`` (the neuron's output, or a flattened form of it)."""
    size = neuron.threshold.detach().to(like.dtype) / neuron.tau
    if size.numel() > 1 and size.dim() >= like.dim():  # per-channel θ [C, 1, ...], flattened input [B, C·H·W]
        size = size.reshape(-1, 1).expand(-1, like.shape[1] // size.numel()).reshape(-1)
    return size


@contextlib.contextmanager
def _hooks(modules: dict[str, nn.Module], hook):
    """``hook(name, module, input, output)`` on each module, for the ``with`` block only."""
    handles = [m.register_forward_hook(lambda m, args, out, name=name: hook(name, m, args[0], out))
               for name, m in modules.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def layer_stats(snn: nn.Module, batches: Iterable, timesteps: int, ann: Optional[nn.Module] = None,
                ac_pj: float = AC_PJ, mac_pj: float = MAC_PJ) -> dict:
    """Statistics of ``snn`` run for ``timesteps`` steps on each of ``batches`` (input tensors or
    ``(input, target)`` pairs); with ``ann`` (the network it was converted from), also the ANN's
    mean activations and the per-layer conversion error. See the module docstring for definitions.
    """
    (steps,) = check_timesteps(timesteps)
    neurons = {n: m for n, m in snn.named_modules() if isinstance(m, SpikingNeuron)}
    weighted = {n: m for n, m in snn.named_modules() if isinstance(m, WEIGHTED)}
    if not neurons:
        raise ValueError("layer_stats(): the model has no spiking neurons; convert it first")
    qcfs = {}
    if ann is not None:
        ann_modules = dict(ann.named_modules())
        missing = [n for n in neurons if not isinstance(ann_modules.get(n), QCFS)]
        if missing:
            raise ValueError(f"layer_stats(): the ANN has no QCFS layer {missing[0]!r}; "
                             "pass the ANN the SNN was converted from")
        qcfs = {n: ann_modules[n] for n in neurons}
    sources = spike_sources(snn)
    device = model_device(snn)

    acc = defaultdict(float)         # (quantity, layer) -> sum over samples (and steps)
    size, macs, arrivals = {}, {}, {}  # neurons per sample; ANN MACs per sample; spikes per input
    summed, activation = {}, {}     # this batch: SNN outputs summed over steps; ANN activations

    def on_neuron(name, neuron, _, out):
        spikes = (out / _spike_size(neuron, out)).round_()
        size[name] = out[0].numel()
        acc["spikes", name] += spikes.sum().item()
        acc["output", name] += out.sum().item()
        if qcfs:
            summed[name] = out.clone() if name not in summed else summed[name].add_(out)

    def on_weighted(name, layer, x, out):
        macs[name] = out[0].numel() * layer.weight[0].numel()
        if name in sources:  # spikes arriving at each input, summed over samples and steps
            counts = (x / _spike_size(neurons[sources[name]], x)).sum(0)
            arrivals[name] = counts if name not in arrivals else arrivals[name].add_(counts)
        else:
            acc["snn_macs", None] += macs[name] * len(x)

    def on_qcfs(name, _, __, out):
        activation[name] = out

    runner, samples = StepRunner(snn), 0
    with eval_mode(snn, *([ann] if ann is not None else [])), \
            _hooks(neurons, on_neuron), _hooks(weighted, on_weighted), _hooks(qcfs, on_qcfs):
        for batch in batches:
            x = (batch[0] if isinstance(batch, (tuple, list)) else batch).to(device)
            summed.clear()
            if ann is not None:
                ann(x)
            for _ in runner.steps(x, steps):
                pass
            for name, a in activation.items():
                acc["ann_output", name] += a.sum().item()
                acc["mse", name] += (summed[name] / steps - a).square_().sum().item()
            samples += len(x)
    if samples == 0:
        raise ValueError("layer_stats(): no input batches")
    for name, counts in arrivals.items():
        fans = fan_out(weighted[name], counts.shape, counts.device).to(counts.dtype)
        acc["sops", sources[name]] += (counts * fans).sum().item()
    return _summarise(acc, neurons, size, macs, sources, samples, steps, ann is not None, ac_pj, mac_pj)


def _summarise(acc, neurons, size, macs, sources, samples, steps, with_ann, ac_pj, mac_pj) -> dict:
    layers = []
    for name in neurons:
        if name not in size:  # never called
            continue
        n = size[name] * samples
        fed = [w for w, source in sources.items() if source == name]
        layers.append({
            "layer": name, "neurons": size[name],
            "firing_rate": acc["spikes", name] / (n * steps),
            "mean_output": acc["output", name] / (n * steps),
            "sops": acc["sops", name] / samples,
            "macs": sum(macs[w] for w in fed),
            "ann_mean_output": acc["ann_output", name] / n if with_ann else None,
            "conversion_mse": acc["mse", name] / n if with_ann else None,
        })
    sops, snn_macs, ann_macs = sum(r["sops"] for r in layers), acc["snn_macs", None] / samples, sum(macs.values())
    snn_energy, ann_energy = (sops * ac_pj + snn_macs * mac_pj) * 1e-6, ann_macs * mac_pj * 1e-6
    return {"timesteps": steps, "samples": samples, "layers": layers,
            "totals": {"sops": sops, "snn_macs": snn_macs, "ann_macs": ann_macs,
                       "snn_energy_uj": snn_energy, "ann_energy_uj": ann_energy,
                       "energy_ratio": snn_energy / ann_energy if ann_energy else None},
            "energy_pj": {"ac": ac_pj, "mac": mac_pj}}


def format_stats(stats: dict) -> str:
    """The per-layer table and the totals, as text."""
    lines = [f"{'layer':<22}{'rate':>8}{'mean out':>10}{'SOPs':>12}{'ANN MACs':>12}{'MSE vs ANN':>12}"]
    for r in stats["layers"]:
        mse = "" if r["conversion_mse"] is None else f"{r['conversion_mse']:.3g}"
        lines.append(f"{r['layer'][-22:]:<22}{r['firing_rate']:>8.3f}{r['mean_output']:>10.4f}"
                     f"{r['sops']:>12.4g}{r['macs']:>12.4g}{mse:>12}")
    t = stats["totals"]
    lines.append(f"per sample, T={stats['timesteps']}: {t['sops']:.4g} SOPs + {t['snn_macs']:.4g} MACs "
                 f"= {t['snn_energy_uj']:.4g} µJ; ANN {t['ann_macs']:.4g} MACs = {t['ann_energy_uj']:.4g} µJ")
    return "\n".join(lines)
