"""Run an SNN over T time steps: ``simulate`` (per-step outputs) and ``evaluate`` (accuracy vs T).

``StepRunner`` prepares a network for stepping, once per call of ``simulate`` or ``evaluate``:

- **Static split.** The input is the same at every step, so everything computed before the first
  stateful module (usually the first conv + BN) is computed once per input; the traced graph is
  split into a static part and a per-step (dynamic) part. Whatever a per-step node changes in place
  (``y.add_(z)``, ``out=``), and random ops, belong to the per-step part, so the split never changes
  what stepping the whole model computes.
- **Folded copy.** It steps a copy of the network in which each BatchNorm after a conv or linear
  layer is folded into that layer (``calibrate.fuse_batchnorm``) and 2-D convolutions run in the
  channels-last layout. Only the stateless layers are copied: the neurons are the network's own, so
  their state and ``reset`` work as before. Folding changes float rounding, so compare an SNN with
  its ANN both run through ``simulate``/``evaluate`` (the ANN is folded the same way): with τ = L at
  T = 1 the two are equal bit for bit. ``StepRunner(model, fold=False)`` steps the network as it is.
- **Neurons fire in place.** In the per-step part, a neuron whose input is a temporary (a conv,
  BatchNorm or linear output, or a sum, used by nothing else) writes its output into it, as
  ``nn.ReLU(inplace=True)`` does: a step allocates no memory for neurons.

With forward hooks on the network (``stats.layer_stats`` counts spikes with them) the runner steps
the network's own modules, unfolded, and fires nothing in place, so each hook sees what it hooks.

Measured on 2 idle CPU threads with glibc's default malloc (ResNet-20, batch 64, T = 4,
``benchmarks/snn_eval.py``): the unfolded split took 1.54x the time of four forwards of the ReLU
network, the folded channels-last copy 0.84x; compiling the per-step part (``compile=True``) gave
0.93x after a 7 s compile, so it is off by default. Running all T steps at once through the stateless layers (T folded
into the batch) was no faster and takes T times the memory, so steps run one by one.
"""
import contextlib
import copy
import inspect
import operator
import warnings
from typing import Iterable, Iterator, Optional, Sequence

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .calibrate import fuse_batchnorm
from .convert import is_call, is_fresh, trace
from .neurons import SpikingNeuron
from .progress import progress_bar
from .runtime import check_timesteps, model_device

# calls whose result differs from call to call: each step must make its own draw
_RANDOM_CALLS = {torch.rand, torch.randn, torch.randint, torch.rand_like, torch.randn_like,
                 torch.randint_like, torch.bernoulli, torch.multinomial, torch.normal, torch.poisson,
                 F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout,
                 "bernoulli", "uniform_", "normal_", "random_", "exponential_", "geometric_", "cauchy_",
                 "log_normal_"}


def reset(model: nn.Module) -> None:
    """Reset every stateful module (anything with a ``reset()``, as in SpikingJelly)."""
    for m in model.modules():
        if m is not model and _is_stateful(m):
            m.reset()


@contextlib.contextmanager
def eval_mode(*models: nn.Module):
    """The models in eval mode inside the block, back in their own modes after it."""
    modes = [m.training for m in models]
    try:
        yield [m.eval() for m in models]
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)


def _is_stateful(module: nn.Module) -> bool:
    return callable(getattr(module, "reset", None))


def _has_hooks(model: nn.Module) -> bool:
    global_hooks = nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks
    return bool(global_hooks) or any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def _mutates(model: nn.Module, node: fx.Node) -> list[fx.Node]:
    """The nodes whose tensors ``node`` writes into: the first argument of an in-place call
    (``y.add_(z)``, ``F.relu_(y)``, ``y[i] = z``, a module with ``inplace=True``) and ``out=``."""
    written = [node.kwargs["out"]] if isinstance(node.kwargs.get("out"), fx.Node) else []
    if node.op == "call_module":
        in_place = getattr(model.get_submodule(node.target), "inplace", False) is True
    elif node.op in ("call_method", "call_function"):
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
        in_place = node.target is operator.setitem or (name.endswith("_") and not name.endswith("__"))
    else:
        in_place = False
    if in_place and node.args and isinstance(node.args[0], fx.Node):
        written.append(node.args[0])
    return written


class _Unsplittable(Exception):
    pass


def _per_step_nodes(model: nn.Module, graph: fx.Graph) -> set[fx.Node]:
    """The nodes to run at every step: stateful modules, random calls, the output, what depends on
    them, and every tensor a per-step node writes into (with what it may be a view of), which must
    then be made afresh at each step as stepping the whole model would."""
    dynamic: set[fx.Node] = set()
    while True:
        for node in graph.nodes:
            stateful = node.op == "call_module" and _is_stateful(model.get_submodule(node.target))
            if stateful or is_call(node, _RANDOM_CALLS) or node.op == "output" or any(a in dynamic for a in node.all_input_nodes):
                dynamic.add(node)
        overwritten = [a for n in dynamic for a in _mutates(model, n) if a not in dynamic]
        if not overwritten:
            return dynamic
        for node in overwritten:
            while node is not None and node not in dynamic:
                if node.op in ("placeholder", "get_attr"):
                    raise _Unsplittable(f"a per-step operation writes into {node.op} {node.name!r} in place")
                dynamic.add(node)
                source = node.args[0] if node.args else None
                node = source if not is_fresh(node, model) and isinstance(source, fx.Node) else None


def _split_static(model: nn.Module, graph: fx.Graph, fire_in_place: bool) -> tuple[fx.GraphModule, fx.GraphModule]:
    """``static(x) -> boundary values`` and ``dynamic(*boundary) -> output`` for one time step."""
    dynamic = _per_step_nodes(model, graph)
    boundary = [n for n in graph.nodes if n not in dynamic and any(u in dynamic for u in n.users)]

    static_graph, env = fx.Graph(), {}
    for node in graph.nodes:
        if node not in dynamic:
            env[node] = static_graph.node_copy(node, env.__getitem__)
    static_graph.output(tuple(env[n] for n in boundary))

    dynamic_graph, env = fx.Graph(), {}
    for n in boundary:
        env[n] = dynamic_graph.placeholder(n.name)
    for node in graph.nodes:
        if node in dynamic:
            env[node] = dynamic_graph.node_copy(node, env.__getitem__)
    if fire_in_place:
        _fire_in_place(model, dynamic_graph)
    # GraphModule shares (does not copy) the submodules, so neuron state lives in ``model``.
    return fx.GraphModule(model, static_graph), fx.GraphModule(model, dynamic_graph)


def _fire_in_place(model: nn.Module, graph: fx.Graph) -> None:
    """Call each neuron whose input is a temporary used by it alone with ``inplace=True``."""
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(model.get_submodule(node.target), SpikingNeuron):
            continue
        arg = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if isinstance(arg, fx.Node) and is_fresh(arg, model) and len(arg.users) == 1:
            node.kwargs = {"inplace": True}


def _drop_identities(model: nn.Module, graph: fx.Graph) -> None:
    for node in list(graph.nodes):
        if node.op == "call_module" and isinstance(model.get_submodule(node.target), nn.Identity):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)


def _folded_copy(model: nn.Module) -> nn.Module:
    """``model`` with BatchNorm folded into the layer before it and 2-D convolutions channels-last;
    the stateful modules (neurons) are ``model``'s own, everything else is copied."""
    stateful = [m for m in model.modules() if m is not model and _is_stateful(m)]
    net = copy.deepcopy(model, memo={id(m): m for m in stateful})
    for m in net.modules():
        if not _is_stateful(m):  # the neurons keep their flag and hooks: they belong to the caller
            m.training = False
            m._forward_hooks.clear()  # with hooks on the network, ``steps`` does not use this copy
            m._forward_pre_hooks.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # traceable: ``StepRunner`` traced it already
        net = fuse_batchnorm(net, inplace=True)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            m.to(memory_format=torch.channels_last)
    return net


def _input_count(model: nn.Module) -> int:
    params = inspect.signature(model.forward).parameters.values()
    return sum(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


class StepRunner:
    """Runs ``model`` for T steps on one input, computing its step-independent part once, on a
    folded copy of its stateless layers unless ``fold=False`` (see the module docstring).
    ``compile=True`` runs the per-step part under ``torch.compile`` (compiled at the first step)."""

    def __init__(self, model: nn.Module, fold: bool = True, compile: bool = False):
        if any(getattr(m, "step_mode", "s") != "s" for m in model.modules()):
            raise ValueError("the SNN has modules in multi-step mode (step_mode='m'); simulate() and "
                             "evaluate() feed one step at a time: convert with step_mode='s'")
        if _input_count(model) != 1:
            raise ValueError(f"simulate() and evaluate() feed one input tensor, but {type(model).__name__}."
                             f"forward takes {_input_count(model)} required inputs; wrap the model so "
                             "that forward(x) takes one")
        self.model, self.channels_last = model, False
        self.fast = self.hooked = None  # (static, dynamic) graph modules; None: step the whole model
        with eval_mode(model):
            try:
                graph = trace(model)
                self.hooked = _split_static(model, graph, fire_in_place=False)
            except Exception as err:  # noqa: BLE001  (whatever fx raises: the model cannot be split)
                warnings.warn(f"simulate(): cannot split {type(model).__name__} into a static part and a "
                              f"per-step part ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                              "running the whole model at every step", stacklevel=3)
                return
            net = _folded_copy(model) if fold else model
            if fold:
                graph = trace(net)
                _drop_identities(net, graph)
                self.channels_last = any(isinstance(m, nn.Conv2d) for m in net.modules())
            static, dynamic = _split_static(net, graph, fire_in_place=True)
            self.fast = static, torch.compile(dynamic) if compile else dynamic

    def steps(self, x: torch.Tensor, timesteps: int) -> Iterator[torch.Tensor]:
        """Reset the model, then yield its output (in eval mode) at steps 1..T; the model is reset
        and back in its own mode when the last step is taken (or the caller stops early)."""
        if not torch.isfinite(x).all():
            raise ValueError("the SNN input contains NaN or Inf values; clean the data first")
        hooked = _has_hooks(self.model)
        parts = self.hooked if hooked else self.fast
        if self.channels_last and not hooked and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with eval_mode(self.model):
            reset(self.model)
            try:
                if parts is None:
                    for _ in range(timesteps):
                        yield self.model(x)
                    return
                static, dynamic = parts
                boundary = static(x)
                for _ in range(timesteps):
                    yield dynamic(*boundary)
            finally:
                reset(self.model)


@torch.no_grad()
def simulate(snn: nn.Module, x: torch.Tensor, timesteps: int, fold: bool = True) -> torch.Tensor:
    """Run ``snn`` in eval mode for ``timesteps`` steps on the constant input ``x``; returns the
    per-step outputs, shape ``[T, *output_shape]`` (their mean over the first t steps is the SNN's
    prediction at time t). ``snn`` is left reset and in its own mode. ``fold=False`` runs the
    network as it is (see ``evaluate``)."""
    (timesteps,) = check_timesteps(timesteps)
    return torch.stack(list(StepRunner(snn, fold=fold).steps(x, timesteps)))


@torch.no_grad()
def evaluate(snn: nn.Module, loader: Iterable, timesteps: Sequence[int] = (1, 2, 4, 8),
             device: Optional[torch.device] = None, progress: bool = False, fold: bool = True) -> dict[int, float]:
    """Top-1 accuracy in percent at each T of ``timesteps``, from one run of max(T) steps per batch.

    The prediction at T is the argmax of the outputs summed over steps 1..T. Works on an ANN too
    (its output is the same at every step). ``snn`` runs in eval mode and is left in its own mode.
    ``fold=False`` runs the network as it is instead of a copy with BatchNorm folded (``StepRunner``):
    slower, and bit for bit what the network's own forward computes.
    """
    steps = check_timesteps(timesteps)
    device = device or model_device(snn)
    runner = StepRunner(snn, fold=fold)
    correct, seen = dict.fromkeys(steps, 0), 0
    for x, y in progress_bar(loader, desc="evaluate", leave=False, disable=not progress):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        summed = None
        for t, out in enumerate(runner.steps(x, steps[-1]), start=1):
            summed = out if summed is None else summed + out
            if t in correct:
                correct[t] += (summed.argmax(dim=1) == y).sum().item()
        seen += len(y)
    if seen == 0:
        raise ValueError("evaluate(): the data loader yielded no samples")
    return {t: 100.0 * c / seen for t, c in correct.items()}
