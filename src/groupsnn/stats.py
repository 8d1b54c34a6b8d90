"""Per-layer statistics of an SNN run: firing rates, synaptic operations, energy, conversion error.

``layer_stats(snn, batches, timesteps, ann)`` runs the SNN's traced graph node by node for T steps
on each batch, following spikes through the network, and returns one row per neuron layer plus
totals, per input sample. What is counted:

- ``firing_rate``: spikes per neuron per step. A Group Neuron's spikes are its member spikes,
  ``out·τ/θ`` (0 to τ per step), so its rate can exceed 1; an IF neuron's is at most 1. Signed
  neurons' negative spikes count as spikes (they drive synapses too); ``negative_rate`` counts
  them alone, per neuron per step (0 for plain neurons).
- ``sops`` (synaptic operations, over all T steps): the accumulates the layer's spikes drive in
  the weighted layers (conv, linear modules) they reach, directly or through operations that
  are linear in spike counts: views and reshapes, flatten, dropout, average pooling, means and
  sums along dims, ``torch.cat``, ``chunk`` and ``split``, indexing, additions of tensors (``+=``
  too); and through max-pooling on rates (``RateMaxPool``) of one layer's spikes. A spike arriving
  at input p of such a layer costs fan-out(p) accumulates, the number of weights the layer
  multiplies p with (fewer at padded borders). These operations act on spike counts as on
  spikes, so after a k-input average pool or mean a spike counts 1/k at each pooled input (after a
  sum, 1). Spikes of several layers meeting in a ``cat`` or a sum are each charged to their own layer.
- ``macs``: the multiply-accumulates of the same weighted layers in the ANN, one forward:
  outputs × weights per output, padding included, as dense hardware computes them. A layer fed by
  several sources (spikes of several layers, or spikes and other values) is split among them in
  proportion to the inputs each provides, weighted by fan-out (half each for a ``cat`` of two equal
  halves, or for a sum), so the rows add up to at most the ANN's total.
- totals: the SNN also computes MACs in weighted layers not fed by spikes: once per input for
  those in the static prefix (``graph.static_nodes``: they depend on no neuron and no random draw,
  and ``simulate`` computes them once per input), once per step for the others; a layer fed by
  spikes and other values (``cat`` of spikes with the image, spikes plus a dense tensor) pays
  fan-out(p) MACs per step for each non-spike input p. Energy at 0.9 pJ per accumulate and 4.6 pJ
  per multiply-accumulate (32-bit float in 45 nm, Horowitz, ISSCC 2014). Operations run on rates
  (``groupsnn.compensate``: activations other than ReLU, softmax, norms, products of two per-step
  tensors) multiply at every step: their MACs (a matrix product's inner dimension per output, one
  per output for the others) are in the SNN's MACs at every step and in the ANN's once. BatchNorm
  (which folds into the layer before it), pooling, additions and neuron updates are counted in neither.
- ``conversion_mse``: the mean squared difference between the ANN's QCFS activation and the
  neuron's output averaged over the T steps, on the same inputs (the SNN keeps the ANN's layer names).
"""
import contextlib
from collections import defaultdict
from typing import Iterable, Optional

import torch
import torch.fx as fx
import torch.nn as nn
from torch.func import functional_call

from .compensate import Compensated
from .graph import flat_nodes, is_call, module_of, static_nodes, traced
from .neurons import RateMaxPool, SpikingNeuron
from .ops import IN_PLACE_OPERATORS, SPIKE_LINEAR_CALLS, SPIKE_LINEAR_MODULES, SUM_CALLS, WEIGHTED
from .qcfs import QCFS
from .runtime import check_timesteps, eval_mode, model_device, reset, trial_run

AC_PJ, MAC_PJ = 0.9, 4.6  # energy per accumulate / multiply-accumulate, 32-bit float, 45 nm (Horowitz 2014)

DENSE = ""  # the key of values that are not spikes (no neuron is named "": that is the model itself)


def _data_args(model: nn.Module, node: fx.Node) -> int:
    """How many leading arguments of ``node`` carry spike counts through it (0: it stops them)."""
    if node.op == "call_module":
        return 1 if isinstance(model.get_submodule(node.target), SPIKE_LINEAR_MODULES) else 0
    if not node.args:
        return 0
    if is_call(node, SUM_CALLS):
        return 2 if len(node.args) == 2 and not node.kwargs and all(isinstance(a, fx.Node) for a in node.args) else 0
    return 1 if is_call(node, SPIKE_LINEAR_CALLS) else 0


def spike_keys(model: nn.Module, graph: fx.Graph) -> dict[fx.Node, frozenset]:
    """For each node whose value holds spikes, the neuron layers they come from (and ``DENSE`` for
    other values mixed in linearly)."""
    keys = {}
    for node in graph.nodes:
        module = module_of(model, node)
        if isinstance(module, SpikingNeuron):
            keys[node] = frozenset([node.target])
        elif isinstance(module, RateMaxPool):
            source = keys.get(node.args[0])
            if source is not None and len(source) == 1 and DENSE not in source:
                keys[node] = source
        elif _data_args(model, node):
            found = [keys.get(a, frozenset([DENSE])) for a in flat_nodes(node.args[:_data_args(model, node)])]
            if any(k != {DENSE} for k in found):
                keys[node] = frozenset().union(*found)
    # keep the nodes whose spikes reach a weighted layer (the others feed neurons, or nothing)
    reach = set()
    for node in reversed(graph.nodes):
        if isinstance(module_of(model, node), WEIGHTED) and node.args and node.args[0] in keys:
            reach.add(node.args[0])
        elif node in reach and _data_args(model, node):
            reach.update(a for a in flat_nodes(node.args[:_data_args(model, node)]) if a in keys)
    return {node: k for node, k in keys.items() if node in reach}


def _trace(model: nn.Module) -> fx.Graph:
    return traced(model, "layer_stats()")  # statistics follow spikes through the graph: no fallback


def spike_sources(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """``{weighted layer: neuron layers}`` for each conv/linear module whose input holds spikes."""
    graph = _trace(model)
    keys = spike_keys(model, graph)
    sources = {}
    for node in graph.nodes:
        if isinstance(module_of(model, node), WEIGHTED) and node.args[0] in keys:
            found = keys[node.args[0]] - {DENSE}
            sources[node.target] = tuple(sorted(set(sources.get(node.target, ())) | found))
    return sources


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
    """θ/τ in ``like``'s dtype (broadcasts against the neuron's output)."""
    return neuron.threshold.detach().to(like.dtype) / neuron.tau


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


class _SpikeFollower(fx.Interpreter):
    """Runs one step of the SNN node by node; alongside each value that holds spikes it carries
    their counts per source layer (``counts[node][source]``, the value's shape), and at each
    weighted layer adds the spikes arriving per input to ``arrivals[(layer node, source)]``."""

    def __init__(self, gm: fx.GraphModule, on_neuron, ones: bool = False):
        super().__init__(gm)
        self.keys = spike_keys(gm, gm.graph)
        self.static = static_nodes(gm, gm.graph)
        self.on_neuron = on_neuron
        self.ones = ones  # footprints: one spike per neuron output; dense inputs as they are, not 0/1
        self.counts, self.arrivals, self.dense_macs, self.macs = {}, defaultdict(int), 0.0, {}
        self.step = 0

    def run_steps(self, x: torch.Tensor, steps: int, after_step=None) -> None:
        """Run ``steps`` steps on ``x`` from the model's current state; ``after_step(t)`` after step t."""
        for self.step in range(steps):
            self.counts.clear()
            self.run(x)
            if after_step is not None:
                after_step(self.step + 1)
        self.counts.clear()

    def run_node(self, node: fx.Node):
        out = super().run_node(node)
        module = module_of(self.module, node)
        if isinstance(module, WEIGHTED):
            self._weighted(node, module, out)
        if isinstance(module, Compensated):
            self.macs[node] = _operation_macs(module.fn, [self.env[a] for a in node.all_input_nodes], out) / len(out)
            self.dense_macs += self.macs[node] * len(out)  # it multiplies at every step
        if isinstance(module, SpikingNeuron):
            self.on_neuron(node.target, module, out)
        if node in self.keys:
            # spikes drive accumulates whatever their sign (signed neurons, and max-pooling of them)
            if isinstance(module, SpikingNeuron):
                self.counts[node] = {node.target: self._spikes(module, out)}
            elif isinstance(module, RateMaxPool):
                (source,) = self.keys[node]
                self.counts[node] = {source: self._spikes(self.module.get_submodule(source), out)}
            else:
                self.counts[node] = {key: self._pass(node, key) for key in self.keys[node]}
        return out

    def _spikes(self, neuron: SpikingNeuron, out: torch.Tensor) -> torch.Tensor:
        """The spikes per output of ``neuron`` (1 each with ``ones``)."""
        return torch.ones_like(out) if self.ones else (out / _spike_size(neuron, out)).abs_()

    def _pass(self, node: fx.Node, key: str):
        """``node``'s operation applied to the spike counts of ``key`` (zeros where other layers'
        spikes are; for ``DENSE``, ones where other values are)."""
        data = _data_args(self.module, node)

        def counts_of(arg: fx.Node):
            if key in self.counts.get(arg, ()):
                return self.counts[arg][key]
            return _filled(self.env[arg], 1 if key == DENSE and arg not in self.counts else 0)

        args = (*fx.node.map_arg(node.args[:data], counts_of),
                *fx.node.map_arg(node.args[data:], self.env.__getitem__))
        # an in-place sum must not add into the counts of its argument, which other nodes may read
        target = IN_PLACE_OPERATORS[node.target] if is_call(node, IN_PLACE_OPERATORS.keys()) else node.target
        return getattr(self, node.op)(target, args, fx.node.map_arg(node.kwargs, self.env.__getitem__))

    def _weighted(self, node: fx.Node, layer: nn.Module, out: torch.Tensor) -> None:
        self.macs[node] = out[0].numel() * layer.weight[0].numel()
        counts = self.counts.get(node.args[0])
        if counts is None:  # dense input: once per input in the static prefix, else every step
            if self.step == 0 or node not in self.static:
                self.dense_macs += self.macs[node] * len(out)
            return
        for key, c in counts.items():
            arrived = (c != 0).to(c.dtype) if key == DENSE and not self.ones else c
            self.arrivals[node, key] = self.arrivals[node, key] + arrived.sum(0)


def _operation_macs(fn, inputs: list, out: torch.Tensor) -> float:
    """Multiply-accumulates of one call of an operation run on rates (``Compensated``): a matrix
    product, its inner dimension per output; scaled dot-product attention, its two products; any
    other, one per output (a lower bound for softmax, LayerNorm, GELU)."""
    name = getattr(fn, "name", getattr(getattr(fn, "func", fn), "__name__", ""))  # TensorMethod, partial
    if name in ("matmul", "bmm"):
        return out.numel() * inputs[0].shape[-1]
    if name == "scaled_dot_product_attention":
        q, k, v = inputs[:3]
        return q.numel() // q.shape[-1] * k.shape[-2] * (q.shape[-1] + v.shape[-1])
    return out.numel()


def _filled(value, fill: float):
    """A tensor like ``value`` (or a tuple or list of them, as ``chunk`` returns) filled with ``fill``."""
    if isinstance(value, (tuple, list)):
        return type(value)(_filled(v, fill) for v in value)
    return torch.full_like(value, fill)


def _input(batch, device: torch.device) -> torch.Tensor:
    """The input tensor of ``batch`` (a tensor or an ``(input, target)`` pair) on ``device``."""
    x = (batch[0] if isinstance(batch, (tuple, list)) else batch).to(device)
    if not torch.isfinite(x).all():
        raise ValueError("the SNN input contains NaN or Inf values; clean the data first")
    return x


def _weigh(snn: nn.Module, arrivals: dict) -> dict:
    """``{(weighted layer node, source): Σ over the layer's inputs of arrivals × fan-out}``."""
    weighed = {}
    for (node, key), counts in arrivals.items():
        fans = fan_out(snn.get_submodule(node.target), counts.shape, counts.device).to(counts.dtype)
        weighed[node, key] = (counts * fans).sum().item()
    return weighed


def _charge(snn: nn.Module, arrivals: dict) -> dict:
    """``{source: accumulates}`` of spikes that arrived per input of each weighted layer (``DENSE``:
    the MACs of its non-spike inputs): arrivals times fan-out."""
    charged = defaultdict(float)
    for (_, key), accumulates in _weigh(snn, arrivals).items():
        charged[key] += accumulates
    return charged


def _shares(gm: fx.GraphModule, x: torch.Tensor) -> dict:
    """``{(weighted layer node, source): the share of the layer's inputs, weighted by fan-out, that
    the source provides}`` for each layer fed by spikes: from one step on one sample with one spike
    at every neuron output (``DENSE`` values count as they are)."""
    follower = _SpikeFollower(gm, on_neuron=lambda *_: None, ones=True)
    with trial_run(gm, x):
        follower.run_steps(x[:1], 1)
    footprints, total = _weigh(gm, follower.arrivals), defaultdict(float)
    for (node, _), weight in footprints.items():
        total[node] += weight
    return {(node, key): weight / total[node] for (node, key), weight in footprints.items() if total[node]}


@torch.no_grad()
def layer_stats(snn: nn.Module, batches: Iterable, timesteps: int, ann: Optional[nn.Module] = None,
                ac_pj: float = AC_PJ, mac_pj: float = MAC_PJ) -> dict:
    """Statistics of ``snn`` run for ``timesteps`` steps on each of ``batches`` (input tensors or
    ``(input, target)`` pairs); with ``ann`` (the network it was converted from), also the ANN's
    mean activations and the per-layer conversion error. See the module docstring for definitions.
    """
    (steps,) = check_timesteps(timesteps)
    neurons = {n: m for n, m in snn.named_modules() if isinstance(m, SpikingNeuron)}
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
    device = model_device(snn)

    acc = defaultdict(float)         # (quantity, layer) -> sum over samples (and steps)
    size = {}                        # neurons per sample
    summed, activation = {}, {}     # this batch: SNN outputs summed over steps; ANN activations

    def on_neuron(name, neuron, out):
        spikes = (out / _spike_size(neuron, out)).round_()
        size[name] = out[0].numel()
        acc["spikes", name] += spikes.abs().sum().item()
        acc["negative", name] += spikes.clamp(max=0).sum().item()
        acc["output", name] += out.sum().item()
        if qcfs:
            summed[name] = out.clone() if name not in summed else summed[name].add_(out)

    def on_qcfs(name, _, __, out):
        activation[name] = out

    gm = fx.GraphModule(snn, _trace(snn))
    follower, samples = _SpikeFollower(gm, on_neuron), 0
    with eval_mode(snn, *([ann] if ann is not None else [])), _hooks(qcfs, on_qcfs):
        for batch in batches:
            x = _input(batch, device)
            summed.clear()
            if ann is not None:
                ann(x)
            reset(snn)
            follower.run_steps(x, steps)
            for name, a in activation.items():
                acc["ann_output", name] += a.sum().item()
                acc["mse", name] += (summed[name] / steps - a).square_().sum().item()
            samples += len(x)
    reset(snn)
    if samples == 0:
        raise ValueError("layer_stats(): no input batches")
    for key, charged in _charge(snn, follower.arrivals).items():
        acc["dense_macs" if key == DENSE else "sops", key or None] += charged
    acc["snn_macs", None] = follower.dense_macs + acc["dense_macs", None]
    for (node, key), share in _shares(gm, x).items():
        acc["macs", key or None] += follower.macs[node] * share
    return _summarise(acc, neurons, size, sum(follower.macs.values()), samples, steps, ann is not None, ac_pj, mac_pj)


@torch.no_grad()
def energy_by_timesteps(snn: nn.Module, batches: Iterable, timesteps, ac_pj: float = AC_PJ,
                        mac_pj: float = MAC_PJ) -> dict:
    """Per sample, the cost of steps 1..T of ``snn`` for each T of ``timesteps``, from one run of
    max(T) steps per batch, counted as ``layer_stats`` counts it (its totals at T are these):
    ``{"samples", "ann_macs", "ann_energy_uj", "timesteps": {T: {"sops", "snn_macs",
    "snn_energy_uj"}}}``."""
    steps = check_timesteps(timesteps)
    if not any(isinstance(m, SpikingNeuron) for m in snn.modules()):
        raise ValueError("energy_by_timesteps(): the model has no spiking neurons; convert it first")
    follower = _SpikeFollower(fx.GraphModule(snn, _trace(snn)), on_neuron=lambda *_: None)
    arrivals = {t: defaultdict(int) for t in steps}  # up to step t, summed over the batches
    dense_macs, samples, device = dict.fromkeys(steps, 0.0), 0, model_device(snn)

    def after_step(t: int) -> None:
        if t in arrivals:
            for key, counts in follower.arrivals.items():
                arrivals[t][key] = arrivals[t][key] + counts
            dense_macs[t] += follower.dense_macs

    with eval_mode(snn):
        for batch in batches:
            x = _input(batch, device)
            follower.arrivals, follower.dense_macs = defaultdict(int), 0.0  # this batch's
            reset(snn)
            follower.run_steps(x, steps[-1], after_step)
            samples += len(x)
    reset(snn)
    if samples == 0:
        raise ValueError("energy_by_timesteps(): no input batches")
    by_t = {}
    for t in steps:
        charged = _charge(snn, arrivals[t])
        sops = sum(v for k, v in charged.items() if k != DENSE) / samples
        snn_macs = (dense_macs[t] + charged[DENSE]) / samples
        by_t[t] = {"sops": sops, "snn_macs": snn_macs, "snn_energy_uj": (sops * ac_pj + snn_macs * mac_pj) * 1e-6}
    ann_macs = sum(follower.macs.values())
    return {"samples": samples, "ann_macs": ann_macs, "ann_energy_uj": ann_macs * mac_pj * 1e-6, "timesteps": by_t}


def _summarise(acc, neurons, size, ann_macs, samples, steps, with_ann, ac_pj, mac_pj) -> dict:
    layers = []
    for name in neurons:
        if name not in size:  # never called
            continue
        n = size[name] * samples
        layers.append({
            "layer": name, "neurons": size[name],
            "firing_rate": acc["spikes", name] / (n * steps),
            "negative_rate": -acc["negative", name] / (n * steps),
            "mean_output": acc["output", name] / (n * steps),
            "sops": acc["sops", name] / samples,
            "macs": acc["macs", name],
            "ann_mean_output": acc["ann_output", name] / n if with_ann else None,
            "conversion_mse": acc["mse", name] / n if with_ann else None,
        })
    sops, snn_macs = sum(r["sops"] for r in layers), acc["snn_macs", None] / samples
    snn_energy, ann_energy = (sops * ac_pj + snn_macs * mac_pj) * 1e-6, ann_macs * mac_pj * 1e-6
    return {"timesteps": steps, "samples": samples, "layers": layers,
            "totals": {"sops": sops, "snn_macs": snn_macs, "ann_macs": ann_macs,
                       "snn_energy_uj": snn_energy, "ann_energy_uj": ann_energy,
                       "energy_ratio": snn_energy / ann_energy if ann_energy else None},
            "energy_pj": {"ac": ac_pj, "mac": mac_pj}}


def format_stats(stats: dict) -> str:
    """The per-layer table and the totals, as text (with a column of negative spikes where there are)."""
    signed = any(r.get("negative_rate") for r in stats["layers"])
    lines = [f"{'layer':<22}{'rate':>8}" + f"{'neg rate':>10}" * signed
             + f"{'mean out':>10}{'SOPs':>12}{'ANN MACs':>12}{'MSE vs ANN':>12}"]

    def fixed(x: float, width: int, digits: int) -> str:  # 0.000, never -0.000
        return f"{round(x, digits) + 0.0:>{width}.{digits}f}"

    for r in stats["layers"]:
        mse = "" if r["conversion_mse"] is None else f"{r['conversion_mse']:.3g}"
        lines.append(f"{r['layer'][-22:]:<22}{fixed(r['firing_rate'], 8, 3)}"
                     + fixed(r.get("negative_rate", 0), 10, 3) * signed
                     + f"{fixed(r['mean_output'], 10, 4)}{r['sops']:>12.4g}{r['macs']:>12.4g}{mse:>12}")
    t = stats["totals"]
    lines.append(f"per sample, T={stats['timesteps']}: {t['sops']:.4g} SOPs + {t['snn_macs']:.4g} MACs "
                 f"= {t['snn_energy_uj']:.4g} µJ; ANN {t['ann_macs']:.4g} MACs = {t['ann_energy_uj']:.4g} µJ")
    return "\n".join(lines)
