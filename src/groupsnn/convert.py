"""Rewrite networks by module swap: ``prepare`` (ReLU -> QCFS, MaxPool -> AvgPool) and ``convert``
(QCFS -> IF or Group Neuron), in the manner of ``torch.ao.quantization``'s prepare/convert.

Activation *call sites* are what get rewritten, found with ``torch.fx``: a ReLU module, a functional
``F.relu`` / ``torch.relu`` / ``x.relu()`` call in ``forward``, and one module instance called at
several places (each site gets its own module, since a stateful neuron shared by two sites would mix
their membranes). When nothing but module swaps is needed the result keeps the input's class;
otherwise it is a ``torch.fx.GraphModule`` with the same submodule names plus the new ones.
Models that ``torch.fx`` cannot trace get their activation modules swapped, with a warning.
"""
import copy
import warnings
from collections import Counter
from typing import Callable, NamedTuple, Optional, Union

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .neurons import GroupNeuron, IFNeuron, RateMaxPool, StatefulModule
from .qcfs import QCFS



class Site(NamedTuple):
    """One call site: the called module (``args`` empty) or function / method name with its
    arguments after the input; ``name`` says where it is, for messages and new module names."""
    target: Union[nn.Module, Callable, str]
    name: str
    args: tuple = ()
    kwargs: dict = {}


Rule = Callable[[Site], Optional[nn.Module]]  # the module to call at a site instead, or None

RELU_CALLS = {F.relu, F.relu_, torch.relu, torch.relu_, "relu", "relu_"}
NONLINEAR_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Softsign,
    nn.LogSigmoid, nn.Tanhshrink, nn.Softshrink, nn.Hardshrink, nn.Threshold, nn.GLU,
)
NONLINEAR_CALLS = RELU_CALLS | {
    F.relu6, F.leaky_relu, F.prelu, F.rrelu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish,
    F.sigmoid, F.tanh, F.hardtanh, F.hardswish, F.hardsigmoid, F.softplus, F.softsign, F.logsigmoid,
    F.glu, torch.sigmoid, torch.tanh, torch.selu, "sigmoid", "tanh", "sigmoid_", "tanh_",
}
MAX_TO_AVG_POOL = {
    nn.MaxPool1d: nn.AvgPool1d, nn.MaxPool2d: nn.AvgPool2d, nn.MaxPool3d: nn.AvgPool3d,
    nn.AdaptiveMaxPool1d: nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool2d: nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool3d: nn.AdaptiveAvgPool3d,
}
_MAX_POOL_FUNCTIONS = {
    nn.MaxPool1d: F.max_pool1d, nn.MaxPool2d: F.max_pool2d, nn.MaxPool3d: F.max_pool3d,
    nn.AdaptiveMaxPool1d: F.adaptive_max_pool1d, nn.AdaptiveMaxPool2d: F.adaptive_max_pool2d,
    nn.AdaptiveMaxPool3d: F.adaptive_max_pool3d,
}
MAX_TO_AVG_POOL_CALLS = set(_MAX_POOL_FUNCTIONS.values())
SITE_CALLS = NONLINEAR_CALLS | MAX_TO_AVG_POOL_CALLS  # the function calls a rule gets to see


class _Tracer(fx.Tracer):
    """Keeps QCFS, neurons and other stateful modules as leaves (they are not in ``torch.nn``)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (QCFS, StatefulModule)) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.Graph:
    return _Tracer().trace(model)


def _is_call(node: fx.Node, calls: set) -> bool:
    return node.op in ("call_function", "call_method") and _hashable(node.target) and node.target in calls


def _hashable(target) -> bool:
    try:
        hash(target)
        return True
    except TypeError:
        return False


def _enclosing_module(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return next(reversed(stack.values()))[0] if stack else ""


def _fresh_name(model: nn.Module, parent: str, base: str) -> str:
    """``parent.base``, or ``parent.base_1``, ... whichever is free."""
    owner = model.get_submodule(parent)
    name, i = base, 0
    while hasattr(owner, name):
        i += 1
        name = f"{base}_{i}"
    return f"{parent}.{name}" if parent else name


def _site_name(node: fx.Node) -> str:
    where = _enclosing_module(node)
    return f"{node.name} in {where!r}" if where else node.name


def _swap_modules(model: nn.Module, rule: Rule) -> None:
    replaced = {}
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if not name:
            continue
        if id(module) not in replaced:
            replaced[id(module)] = rule(Site(module, name))
        if replaced[id(module)] is not None:
            model.set_submodule(name, replaced[id(module)])


def rewrite(model: nn.Module, rule: Rule, what: str) -> nn.Module:
    """Apply ``rule`` at every call site of ``model`` (in place); returns the rewritten model."""
    try:
        graph = trace(model)
    except Exception as err:  # noqa: BLE001  (anything fx raises means: fall back to module swap)
        warnings.warn(
            f"{what}: torch.fx cannot trace {type(model).__name__} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); swapped activation modules only. "
            "Functional activations (F.relu, torch.relu, x.relu()) in forward() were left as they "
            "are, and a module called at several places stays shared.", stacklevel=3)
        _swap_modules(model, rule)
        return model

    originals = {n.target: model.get_submodule(n.target) for n in graph.nodes if n.op == "call_module"}
    calls_left = Counter(n.target for n in graph.nodes if n.op == "call_module")
    graph_changed = False
    for node in list(graph.nodes):
        if node.op == "call_module":
            new = rule(Site(originals[node.target], node.target))
            if new is None:
                continue
            calls_left[node.target] -= 1
            if calls_left[node.target] == 0:  # the last site keeps the original name
                model.set_submodule(node.target, new)
            else:
                parent, _, leaf = node.target.rpartition(".")
                node.target = _fresh_name(model, parent, leaf)
                model.set_submodule(node.target, new, strict=False)
                graph_changed = True
        elif _is_call(node, SITE_CALLS):
            kwargs = dict(node.kwargs)
            args = node.args or (kwargs.pop("input"),)
            new = rule(Site(node.target, _site_name(node), args[1:], kwargs))
            if new is None:
                continue
            name = _fresh_name(model, _enclosing_module(node), getattr(node.target, "__name__", node.target))
            model.set_submodule(name, new, strict=False)
            with graph.inserting_before(node):
                node.replace_all_uses_with(graph.call_module(name, args[:1]))
            graph.erase_node(node)
            graph_changed = True
    if not graph_changed:
        return model
    graph.lint()
    return fx.GraphModule(model, graph, class_name=type(model).__name__)


def _avg_pool_like(pool: nn.Module) -> nn.Module:
    avg = MAX_TO_AVG_POOL[type(pool)]
    if isinstance(pool, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)):
        return avg(pool.output_size)
    if pool.dilation not in (1, (1,), (1, 1), (1, 1, 1)) or pool.return_indices:
        raise ValueError(f"prepare(): cannot replace {pool} by average pooling (dilation or "
                         "return_indices); replace it in the model first")
    return avg(pool.kernel_size, pool.stride, pool.padding, ceil_mode=pool.ceil_mode, count_include_pad=False)


def _max_pool_module(site: Site) -> nn.Module:
    """The ``nn.MaxPool*`` module equivalent to a functional ``F.max_pool*`` call site."""
    module_type = {fn: m for m, fn in _MAX_POOL_FUNCTIONS.items()}[site.target]
    if any(isinstance(a, fx.Node) for a in (*site.args, *site.kwargs.values())):
        raise ValueError(f"{site.name} has max-pooling arguments computed in forward(); "
                         "use a fixed-size nn.MaxPool module instead")
    return module_type(*site.args, **site.kwargs)


def prepare(model: nn.Module, levels: Optional[int] = 8, threshold: float = 8.0, inplace: bool = False,
            maxpool: str = "avg") -> nn.Module:
    """Return ``model`` with every ReLU call site replaced by a QCFS (``levels``, initial ``threshold``)
    and every max-pooling by average pooling; ready for QCFS training and then ``convert``.
    ``maxpool="keep"`` keeps max-pooling (for networks trained with it, see ``calibrate``)."""
    QCFS(levels, threshold)  # validates the arguments before any work
    if maxpool not in ("avg", "keep"):
        raise ValueError(f"maxpool must be 'avg' (replace by average pooling) or 'keep', got {maxpool!r}")

    def rule(site: Site) -> Optional[nn.Module]:
        if isinstance(site.target, nn.ReLU) or site.target in RELU_CALLS:
            return QCFS(levels, threshold)
        if maxpool == "keep":
            return None
        if type(site.target) in MAX_TO_AVG_POOL:
            return _avg_pool_like(site.target)
        if site.target in MAX_TO_AVG_POOL_CALLS:
            return _avg_pool_like(_max_pool_module(site))
        return None

    return rewrite(model if inplace else copy.deepcopy(model), rule, "prepare()")


def convert(model: nn.Module, neuron: str = "gn", tau: int = 4, strict: bool = True,
            inplace: bool = False, step_mode: str = "s") -> nn.Module:
    """Return the SNN: each QCFS call site becomes an IF neuron (``neuron="if"``) or a Group Neuron of
    ``tau`` members (``neuron="gn"``), keeping its threshold, and each max-pooling a ``RateMaxPool``.
    Any other activation raises, naming the layer, unless ``strict=False`` (then it is left as it is)."""
    if neuron not in ("gn", "if"):
        raise ValueError(f"unknown neuron {neuron!r}; use 'gn' (Group Neuron) or 'if' (integrate-and-fire)")
    if neuron == "gn":
        GroupNeuron(1.0, tau)  # validates tau before any work

    def rule(site: Site) -> Optional[nn.Module]:
        target = site.target
        if isinstance(target, QCFS):
            if not bool((target.threshold > 0).all()):
                raise ValueError(f"convert(): threshold of {site.name!r} is not positive "
                                 f"({target.threshold.min().item():.4g}); retrain or recalibrate it")
            if neuron == "gn":
                return GroupNeuron(target.threshold, tau, step_mode)
            return IFNeuron(target.threshold, step_mode)
        if type(target) in MAX_TO_AVG_POOL:
            return RateMaxPool(target, step_mode)
        if target in MAX_TO_AVG_POOL_CALLS:
            return RateMaxPool(_max_pool_module(site), step_mode)
        is_module = isinstance(target, nn.Module)
        if strict and (isinstance(target, NONLINEAR_MODULES) or (not is_module and target in NONLINEAR_CALLS)):
            kind = type(target).__name__ if is_module else getattr(target, "__name__", target)
            hint = ("run groupsnn.prepare() and train, or groupsnn.calibrate(), first"
                    if isinstance(target, nn.ReLU) or (not is_module and target in RELU_CALLS)
                    else "replace it by ReLU and prepare()")
            raise ValueError(f"convert(): cannot convert activation {site.name!r} ({kind}) to a spiking "
                             f"neuron; {hint}, or pass strict=False to leave it as it is")
        return None

    return rewrite(model if inplace else copy.deepcopy(model), rule, "convert()")
