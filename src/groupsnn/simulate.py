"""Run an SNN over T time steps: ``simulate`` (per-step outputs) and ``evaluate`` (accuracy vs T).

``StepRunner`` steps a network; what it prepares (its *plan*) is built at the first input and
reused while the network's modules, settings, parameters and buffers and the input's shape stay
the same: at every call it compares them with a snapshot taken with the plan (values too, since a
write through ``.data`` leaves no version counter behind), so it never mixes old copies with new
values. The snapshot costs one more copy of the weights and one pass over them per call.
``simulate`` and ``evaluate`` keep one runner per network, so calling them in a loop prepares the
network once. A plan is:

- **Static split.** The input is the same at every step, so everything computed before the first
  stateful module (usually the first conv + BN) is computed once per input: the graph layer's
  static prefix (``graph.per_step_nodes``), which ``stats`` charges the same way.
- **Folded copy.** It steps a copy of the network in which each BatchNorm after a conv or linear
  layer is folded into that layer where sound (``groupsnn.fold``, checked on the input's shapes) and
  2-D convolutions run in the channels-last layout (``x.view`` becomes ``x.reshape`` there, which
  is the same where ``view`` works; outputs are made contiguous). Only the stateless layers are
  copied: the neurons are the network's own, so their state and ``reset`` work as before. Folding
  changes float rounding, so compare an SNN with its ANN both run through ``simulate``/``evaluate``
  (the ANN is folded the same way): with τ = L at T = 1 the two are equal bit for bit.
  ``fold=False`` steps the network as it is: bit for bit what its own forward computes.
- **Neurons fire in place.** In the per-step part, a neuron whose input is a temporary (a conv,
  BatchNorm or linear output, or a sum, used by nothing else) writes its output into it, as
  ``nn.ReLU(inplace=True)`` does: a step allocates no memory for neurons.

With forward hooks on the network (``stats.layer_stats`` counts spikes with them) the runner steps
the network's own modules, unfolded, and fires nothing in place, so each hook sees what it hooks.

Measured on 2 idle CPU threads (ResNet-20, batch 64, T = 4, ``benchmarks/snn_eval.py``): see
docs/benchmarks.md. Compiling the per-step part (``compile=True``) was no faster after a 7 s
compile, so it is off by default. Running all T steps at once through the stateless layers (T
folded into the batch) was no faster and takes T times the memory, so steps run one by one.
"""
import copy
import inspect
import itertools
import warnings
import weakref
from typing import Iterable, Iterator, NamedTuple, Optional, Sequence

import torch
import torch.fx as fx
import torch.nn as nn

from .fold import fold_pairs, foldable_pairs
from .graph import Unsplittable, is_fresh, split_static, tensor_shapes, trace, traced, writes_into
from .neurons import SpikingNeuron
from .progress import progress_bar
from .runtime import check_timesteps, eval_mode, is_stateful, model_device, reset

__all__ = ["simulate", "evaluate", "reset", "StepRunner"]


def _has_hooks(model: nn.Module) -> bool:
    global_hooks = nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks
    return bool(global_hooks) or any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


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


def _views_to_reshapes(model: nn.Module, graph: fx.Graph) -> None:
    """``x.view(shape)`` -> ``x.reshape(shape)`` where neither tensor is written in place: the same
    values, and it also works on the channels-last tensors that ``view`` refuses."""
    written = {a for n in graph.nodes for a in writes_into(model, n)}
    for node in graph.nodes:
        if (node.op == "call_method" and node.target == "view" and node not in written
                and node.args[0] not in written and not any(isinstance(a, torch.dtype) for a in node.args[1:])):
            node.target = "reshape"


def _folded_copy(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, fx.Graph]:
    """``model`` with BatchNorm folded where sound and 2-D convolutions channels-last, and its
    graph; the stateful modules (neurons) are ``model``'s own, everything else is copied."""
    stateful = [m for m in model.modules() if m is not model and is_stateful(m)]
    net = copy.deepcopy(model, memo={id(m): m for m in stateful})
    for m in net.modules():
        if not is_stateful(m):  # the neurons keep their flag and hooks: they belong to the caller
            m.training = False
            m._forward_hooks.clear()  # with hooks on the network, ``steps`` does not use this copy
            m._forward_pre_hooks.clear()
    graph = trace(net)
    fold_pairs(net, foldable_pairs(net, graph, tensor_shapes(net, graph, x[:1])))
    graph = trace(net)
    _drop_identities(net, graph)
    if any(isinstance(m, nn.Conv2d) for m in net.modules()):
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.to(memory_format=torch.channels_last)
        _views_to_reshapes(net, graph)
    return net, graph


def _input_count(model: nn.Module) -> int:
    params = inspect.signature(model.forward).parameters.values()
    return sum(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


_SETTINGS = (bool, int, float, str, type(None))


def fingerprint(model: nn.Module, tensors: list[tuple[str, torch.Tensor]]) -> tuple:
    """What a plan depends on besides the values of the tensors: which module sits where with which
    plain settings (``levels``, ``tau``, ``inplace``...), and each of ``tensors`` (the model's named
    parameters and buffers)'s identity and memory."""
    modules = tuple((name, id(m), tuple((k, v) for k, v in vars(m).items()
                                        if k != "training" and not k.startswith("_") and isinstance(v, _SETTINGS)))
                    for name, m in model.named_modules(remove_duplicate=False))
    return modules, tuple((name, id(t), t.data_ptr()) for name, t in tensors)


def _tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return list(itertools.chain(model.named_parameters(), model.named_buffers()))


class _Plan(NamedTuple):
    key: tuple
    snapshot: list            # the values of the parameters and buffers the plan was built from
    fast: Optional[tuple]     # (static, dynamic) graph modules on the folded copy; None: whole model
    hooked: Optional[tuple]   # (static, dynamic) on the network's own modules, for hooks
    channels_last: bool


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
        self._model, self._ref = model, weakref.ref(model)
        self.fold, self.compile = fold, compile
        self._plan: Optional[_Plan] = None

    @property
    def model(self) -> nn.Module:
        return self._ref()

    def plan(self, x: torch.Tensor) -> _Plan:
        """The plan for inputs like ``x``: the kept one while nothing it depends on changed."""
        tensors = _tensors(self.model)
        key = (fingerprint(self.model, tensors), tuple(x.shape[1:]), x.dtype, x.device)
        if (self._plan is None or self._plan.key != key
                or not all(torch.equal(t, s) for (_, t), s in zip(tensors, self._plan.snapshot))):
            self._plan = None  # never keep a stale plan, even if building the new one fails
            self._plan = self._build(key, x, [t.detach().clone() for _, t in tensors])
        return self._plan

    def _build(self, key: tuple, x: torch.Tensor, snapshot: list) -> _Plan:
        model = self.model
        with eval_mode(model):
            graph = traced(model, "simulate()", "running the whole model at every step")
            try:
                hooked = None if graph is None else split_static(model, graph)
            except Unsplittable as err:
                warnings.warn(f"simulate(): {err}; running the whole model at every step", stacklevel=4)
                hooked = None
            if hooked is None:
                return _Plan(key, snapshot, None, None, False)
            net, graph = _folded_copy(model, x) if self.fold else (model, graph)
            static, dynamic = split_static(net, graph)
            _fire_in_place(net, dynamic.graph)
            dynamic.recompile()
            channels_last = self.fold and any(isinstance(m, nn.Conv2d) for m in net.modules())
            dynamic = torch.compile(dynamic) if self.compile else dynamic
            return _Plan(key, snapshot, (static, dynamic), hooked, channels_last)

    def steps(self, x: torch.Tensor, timesteps: int) -> Iterator[torch.Tensor]:
        """Reset the model, then yield its output (in eval mode) at steps 1..T; the model is reset
        and back in its own mode when the last step is taken (or the caller stops early)."""
        if not torch.isfinite(x).all():
            raise ValueError("the SNN input contains NaN or Inf values; clean the data first")
        model, plan = self.model, self.plan(x)
        hooked = _has_hooks(model)
        parts = plan.hooked if hooked else plan.fast
        channels_last = plan.channels_last and not hooked
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with eval_mode(model):
            reset(model)
            try:
                if parts is None:
                    for _ in range(timesteps):
                        yield model(x)
                    return
                static, dynamic = parts
                boundary = static(x)
                for _ in range(timesteps):
                    out = dynamic(*boundary)
                    yield out.contiguous() if channels_last and isinstance(out, torch.Tensor) else out
            finally:
                reset(model)


_RUNNERS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def runner_for(model: nn.Module, fold: bool = True) -> StepRunner:
    """The ``StepRunner`` that ``simulate`` and ``evaluate`` keep for ``model`` (it holds the model
    weakly, so the cache never keeps a network alive)."""
    runners = _RUNNERS.setdefault(model, {})
    if fold not in runners:
        runner = StepRunner(model, fold=fold)
        runner._model = None  # keep only the weak reference: a cached runner must not keep its key alive
        runners[fold] = runner
    return runners[fold]


@torch.no_grad()
def simulate(snn: nn.Module, x: torch.Tensor, timesteps: int, fold: bool = True) -> torch.Tensor:
    """Run ``snn`` in eval mode for ``timesteps`` steps on the constant input ``x``; returns the
    per-step outputs, shape ``[T, *output_shape]`` (their mean over the first t steps is the SNN's
    prediction at time t). ``snn`` is left reset and in its own mode. ``fold=False`` runs the
    network as it is (see ``evaluate``)."""
    (timesteps,) = check_timesteps(timesteps)
    return torch.stack(list(runner_for(snn, fold).steps(x, timesteps)))


@torch.no_grad()
def evaluate(snn: nn.Module, loader: Iterable, timesteps: Sequence[int] = (1, 2, 4, 8),
             device: Optional[torch.device] = None, progress: bool = True, fold: bool = True) -> dict[int, float]:
    """Top-1 accuracy in percent at each T of ``timesteps``, from one run of max(T) steps per batch.

    The prediction at T is the argmax of the outputs summed over steps 1..T. Works on an ANN too
    (its output is the same at every step). ``snn`` runs in eval mode and is left in its own mode.
    ``fold=False`` runs the network as it is instead of a copy with BatchNorm folded (``StepRunner``):
    slower, and bit for bit what the network's own forward computes.
    """
    steps = check_timesteps(timesteps)
    device = device or model_device(snn)
    runner = runner_for(snn, fold)
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
