"""Run an SNN over T time steps: ``simulate`` (per-step outputs) and ``evaluate`` (accuracy vs T).

The input is the same at every step, so everything computed before the first stateful module
(usually the first conv + BN) is computed once and reused: ``StepRunner`` splits the traced graph
into a static part, run once per input, and a dynamic part, run once per step. In the dynamic part,
a neuron whose input is a temporary (a conv, BatchNorm or linear output, or a sum, used by nothing
else) writes its output into it, as ``nn.ReLU(inplace=True)`` does: a step allocates no memory for
neurons, which matters on CPUs, where the neuron step is memory-bound.

Running all T steps at once through the stateless layers (T folded into the batch) was measured
no faster on CPU (ResNet-20, batch 64, T=4: 1.12-1.26x the time of T ReLU forwards, against
1.10-1.17x step by step) and takes T times the memory, so steps run one by one.
"""
import contextlib
import operator
from typing import Iterable, Iterator, Optional, Sequence

import torch
import torch.fx as fx
import torch.nn as nn

from .convert import trace
from .neurons import SpikingNeuron
from .progress import progress_bar
from .runtime import check_timesteps, model_device

# modules and functions whose output is a new tensor (not a view or their input itself)
_FRESH_MODULES = (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.Linear)
_FRESH_FUNCTIONS = {operator.add, torch.add}


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


def _split_static(model: nn.Module, graph: fx.Graph) -> tuple[fx.GraphModule, fx.GraphModule]:
    """``static(x) -> boundary values`` and ``dynamic(*boundary) -> output`` for one time step."""
    dynamic = set()
    for node in graph.nodes:
        stateful = node.op == "call_module" and _is_stateful(model.get_submodule(node.target))
        if stateful or node.op == "output" or any(a in dynamic for a in node.all_input_nodes):
            dynamic.add(node)
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
    _fire_in_place(model, dynamic_graph)
    # GraphModule shares (does not copy) the submodules, so neuron state lives in ``model``.
    return fx.GraphModule(model, static_graph), fx.GraphModule(model, dynamic_graph)


def _fire_in_place(model: nn.Module, graph: fx.Graph) -> None:
    """Call each neuron whose input is a temporary used by it alone with ``inplace=True``."""
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(model.get_submodule(node.target), SpikingNeuron):
            continue
        arg = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        fresh = isinstance(arg, fx.Node) and (
            (arg.op == "call_module" and isinstance(model.get_submodule(arg.target), _FRESH_MODULES))
            or (arg.op == "call_function" and arg.target in _FRESH_FUNCTIONS))
        if fresh and len(arg.users) == 1:
            node.kwargs = {"inplace": True}


class StepRunner:
    """Runs ``model`` for T steps on one input, computing its step-independent part once."""

    def __init__(self, model: nn.Module):
        if any(getattr(m, "step_mode", "s") != "s" for m in model.modules()):
            raise ValueError("the SNN has modules in multi-step mode (step_mode='m'); simulate() and "
                             "evaluate() feed one step at a time: convert with step_mode='s'")
        self.model = model
        try:
            self.static, self.dynamic = _split_static(model, trace(model))
        except Exception:  # noqa: BLE001  (untraceable: run the whole model at every step)
            self.static = self.dynamic = None

    def steps(self, x: torch.Tensor, timesteps: int) -> Iterator[torch.Tensor]:
        """Reset the model, then yield its output at steps 1..T."""
        if not torch.isfinite(x).all():
            raise ValueError("the SNN input contains NaN or Inf values; clean the data first")
        reset(self.model)
        if self.static is None:
            for _ in range(timesteps):
                yield self.model(x)
            return
        boundary = self.static(x)
        for _ in range(timesteps):
            yield self.dynamic(*boundary)


@torch.no_grad()
def simulate(snn: nn.Module, x: torch.Tensor, timesteps: int) -> torch.Tensor:
    """Reset ``snn``, run it for ``timesteps`` steps on the constant input ``x``; returns the
    per-step outputs, shape ``[T, *output_shape]`` (their mean over the first t steps is the
    SNN's prediction at time t)."""
    (timesteps,) = check_timesteps(timesteps)
    return torch.stack(list(StepRunner(snn).steps(x, timesteps)))


@torch.no_grad()
def evaluate(snn: nn.Module, loader: Iterable, timesteps: Sequence[int] = (1, 2, 4, 8),
             device: Optional[torch.device] = None, progress: bool = False) -> dict[int, float]:
    """Top-1 accuracy in percent at each T of ``timesteps``, from one run of max(T) steps per batch.

    The prediction at T is the argmax of the outputs summed over steps 1..T. Works on an ANN too
    (its output is the same at every step). ``snn`` is put in eval mode for the run.
    """
    steps = check_timesteps(timesteps)
    device = device or model_device(snn)
    runner = StepRunner(snn)
    correct, seen = dict.fromkeys(steps, 0), 0
    with eval_mode(snn):
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
