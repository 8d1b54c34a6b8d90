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
from typing import Callable, Iterable, Optional

import torch
import torch.nn as nn
from torch import fx

from .graph import is_call, module_of, per_step_nodes, trace, traced
from .neurons import SpikingNeuron
from .ops import RANDOM_CALLS
from .progress import progress_bar
from .qcfs import QCFS
from .runtime import eval_mode, is_stateful, model_device, reset
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


def _reset_module(module: nn.Module) -> None:
    module.reset()
    reset(module)  # and any stateful module inside it


class _LayerByLayer:
    """Runs a traced SNN one graph node at a time over all batches and steps, keeping each node's
    values (one per batch for the static prefix, one per batch and step after it) until its last user
    has run: each neuron layer is then measured by running that layer alone on its kept inputs.

    Every node computes what stepping the whole network computes: a node's value at step t depends
    on values of earlier nodes at step t and, for a stateful module, on its own earlier steps, which
    it takes in order (reset before each batch). In-place writes land in the values of the same
    step, as when stepping. So the values, and the corrections, are bit for bit those of running the
    network cut after the layer (``_rerun_up_to``; tests/test_correct.py checks it), at the
    cost of one run through the network instead of two per neuron layer. The memory is the values
    live between two layers for all batches and steps: for ResNet-20 at T steps about
    ``2·T·batches`` activations of one batch.

    ``build`` returns None where this order could differ from stepping, and ``correct`` reruns the
    cut network instead: a graph that cannot be traced or split (``graph.per_step_nodes``), with
    random draws (they would come in another order), a stateful module called at two places or
    only from inside another module, or neurons that do not run in ``order``.
    """

    def __init__(self, model: nn.Module, graph: fx.Graph, dynamic: set, inputs: list, timesteps: int):
        self.model, self.inputs, self.timesteps, self.dynamic = model, inputs, timesteps, dynamic
        self.interpreter = fx.Interpreter(fx.GraphModule(model, graph))  # runs one node (shares the modules)
        self.nodes = iter(graph.nodes)
        self.values: dict[fx.Node, list] = {}
        self.users_left = {n: len(n.users) for n in graph.nodes}
        self.node_of = {n.target: n for n in graph.nodes if n.op == "call_module"}
        self.pending: Optional[fx.Node] = None  # the layer ``up_to`` stopped at

    @classmethod
    def build(cls, model: nn.Module, inputs: list, timesteps: int, order: list[str]) -> Optional["_LayerByLayer"]:
        try:
            graph = trace(model)
            dynamic = per_step_nodes(model, graph)
        except Exception:  # noqa: BLE001  untraceable (the reruns warn, graph.traced) or Unsplittable
            return None
        nodes = list(graph.nodes)
        called = [module_of(model, n) for n in nodes if n.op == "call_module" and is_stateful(module_of(model, n))]
        inside_called = {id(m) for c in called for m in c.modules()}
        stateful = [m for m in model.modules() if m is not model and is_stateful(m)]
        neurons_in_graph_order = [n.target for n in nodes if n.op == "call_module" and n.target in set(order)]
        if (sum(n.op == "placeholder" for n in nodes) != 1 or any(is_call(n, RANDOM_CALLS) for n in nodes)
                or len({id(m) for m in called}) != len(called)
                or any(id(m) not in inside_called for m in stateful) or neurons_in_graph_order != order):
            return None
        return cls(model, graph, dynamic, inputs, timesteps)

    def _value(self, node: fx.Node, batch: int, step: int):
        values = self.values[node][batch]
        return values[step] if node in self.dynamic else values

    def _args(self, node: fx.Node, batch: int, step: int) -> tuple:
        pick = lambda a: self._value(a, batch, step)  # noqa: E731
        return fx.node.map_arg(node.args, pick), fx.node.map_arg(node.kwargs, pick)

    def _call(self, node: fx.Node, batch: int, step: int):
        if node.op == "placeholder":
            return self.inputs[batch]
        args, kwargs = self._args(node, batch, step)
        return getattr(self.interpreter, node.op)(node.target, args, kwargs)

    def _run(self, node: fx.Node) -> None:
        """Compute ``node`` for every batch (and step, after the static prefix); free the values
        whose users have all run."""
        module = module_of(self.model, node)
        batches = range(len(self.inputs))
        if node not in self.dynamic:
            self.values[node] = [self._call(node, b, 0) for b in batches]
        else:
            self.values[node] = []
            for b in batches:
                if is_stateful(module):
                    _reset_module(module)
                self.values[node].append([self._call(node, b, t) for t in range(self.timesteps)])
            if is_stateful(module):
                _reset_module(module)
        for arg in node.all_input_nodes:
            self.users_left[arg] -= 1
            if self.users_left[arg] == 0:
                del self.values[arg]
        if not node.users:  # used by nothing (an in-place write is used through the value it wrote)
            del self.values[node]

    def up_to(self, name: str) -> Callable[[], None]:
        """Compute every node before the call of module ``name``; return a function that runs
        that module alone on its kept inputs, over all batches and steps."""
        target = self.node_of[name]
        for node in self.nodes:
            if node is target:
                break
            if node.op != "output":
                self._run(node)
        module = self.model.get_submodule(name)

        def run_layer() -> None:
            for b in range(len(self.inputs)):
                _reset_module(module)
                for t in range(self.timesteps):
                    args, kwargs = self._args(target, b, t)
                    module(*args, **kwargs)
            _reset_module(module)

        self.pending = target
        return run_layer

    def finish(self) -> None:
        """Compute the outputs of the layer ``up_to`` stopped at (corrected now), for the layers after it."""
        self._run(self.pending)


def _correct_layer(snn: nn.Module, name: str, neuron: SpikingNeuron, target: torch.Tensor, run, timesteps: int):
    """Shift ``neuron.v_init`` so that its mean output while ``run()`` runs moves to ``target``."""
    error = target - _per_channel_means(snn, {name: neuron}, run)[name]
    if not error.any():
        return
    start = torch.full_like(error, 0.5) if neuron.v_init is None else neuron.v_init.to(torch.float64)
    shift = error * (timesteps * neuron.tau) / neuron.threshold.detach().to(torch.float64)
    neuron.v_init = (start + shift).to(torch.float32)
    # Clamped elements (never firing, or at every step) do not respond, so the shift undershoots:
    # one secant step scales it by how much of the error it removed
    remaining = target - _per_channel_means(snn, {name: neuron}, run)[name]
    removed = error - remaining
    scale = torch.where(removed * error > 0, error / removed, 1.0).clamp_(1.0, MAX_SCALE)
    neuron.v_init = (start + shift * scale).to(torch.float32)


def _rerun_up_to(snn: nn.Module, name: str, inputs: list, timesteps: int) -> Callable[[], None]:
    """A function that runs ``snn`` cut after module ``name`` on all ``inputs`` for ``timesteps``
    steps: the slow way, from the input at every call (for graphs ``_LayerByLayer`` does not take)."""
    runner = StepRunner(_up_to(snn, name), fold=False)

    def run_snn():
        for x in inputs:
            for _ in runner.steps(x, timesteps):
                pass
    return run_snn


@torch.no_grad()
def correct(snn: nn.Module, ann: nn.Module, loader: Iterable, timesteps: int, batches: int = 10,
            progress: bool = True) -> nn.Module:
    """Correct ``snn`` in place, without training, for ``timesteps`` steps; returns ``snn``.

    ``ann`` is the QCFS network ``snn`` was converted from (``gs.prepare`` + training, or
    ``gs.calibrate``); ``loader`` yields inputs or ``(input, target)`` pairs, of which the first
    ``batches`` are used (training data). Layer by layer in the order the network runs them, each
    neuron's initial membrane ``v_init`` (one per channel, in units of one spike; 1/2 as ``convert``
    leaves it) is shifted by ``(a - s)·τ·T/θ``, where ``a`` is the ANN activation and ``s`` the SNN's
    output averaged over the T steps, both averaged per channel over the batches, with the layers
    before it already corrected; a second run of that layer then enlarges the shift by one secant
    step (at most ``MAX_SCALE`` times). A layer whose means already agree exactly is left as it is.
    ``progress`` shows a bar over the layers (one line per layer in a log; ``groupsnn.progress``).

    The SNN runs once, layer by layer, keeping what runs between two layers for all batches and
    steps (``_LayerByLayer``: memory about 2·T·``batches`` activations of one batch for ResNet-20);
    graphs it does not take run again from the input for each layer, with the same result.

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
    order = list(targets)  # the order the layers ran in
    with eval_mode(snn):
        reset(snn)
        try:
            stepper = _LayerByLayer.build(snn, inputs, timesteps, order)
            for name in progress_bar(order, desc="correct", total=len(order), disable=not progress):
                run = stepper.up_to(name) if stepper else _rerun_up_to(snn, name, inputs, timesteps)
                _correct_layer(snn, name, layers[name][0], targets[name], run, timesteps)
                if stepper and name != order[-1]:
                    stepper.finish()
        finally:
            reset(snn)
    return snn
