"""Rewrite networks: ``prepare`` (ReLU -> QCFS, MaxPool -> AvgPool) and ``convert`` (QCFS -> IF or
Group Neuron), in the manner of ``torch.ao.quantization``'s prepare/convert.

Activation *call sites* are what get rewritten, found with ``torch.fx``: a ReLU module, a functional
``F.relu`` / ``torch.relu`` / ``x.relu()`` call in ``forward``, and one module instance called at
several places (each site gets its own module, since a stateful neuron shared by two sites would mix
their membranes). The result follows one contract:

- when module swaps suffice (every site is a module called once), the result is the input's own
  class, with its methods; every name a swapped module is stored under gets the new module;
- otherwise it is a ``torch.fx.GraphModule`` (named so): the traced ``forward``, the same submodule
  names plus the new ones, and none of the input's other methods. ``inplace=True`` refuses such
  models with a ValueError naming the site, before anything is changed;
- an in-place site whose write is seen later (``F.relu_(h)`` as a statement, ``nn.ReLU(inplace=True)``
  on a tensor used again) keeps its effect: it becomes ``h.copy_(new(h.clone()))``.

Models that ``torch.fx`` cannot trace get their activation modules swapped, with a warning.
"""
import copy
import operator
import warnings
from collections import Counter
from typing import Callable, NamedTuple, Optional, Union

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .neurons import GroupNeuron, IFNeuron, RateMaxPool, StatefulModule
from .qcfs import QCFS

RECIPE = "groupsnn_recipe"  # where prepare/calibrate/fuse_batchnorm note how they made a model


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

_IN_PLACE_CALLS = {torch.relu_, "relu_", "sigmoid_", "tanh_"}  # F.relu_ is torch.relu_
# layers whose output is a new tensor that nothing else holds: writing into it in place is unseen
# by the rest of the network when its one user is the in-place site
_FRESH_MODULES = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._NormBase, nn.GroupNorm,
                  nn.LayerNorm, QCFS)
_FRESH_CALLS = {operator.add, operator.sub, operator.mul, torch.add, torch.sub, torch.mul, torch.cat}


class _Tracer(fx.Tracer):
    """Keeps QCFS, neurons and other stateful modules as leaves (they are not in ``torch.nn``)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (QCFS, StatefulModule)) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.Graph:
    return _Tracer().trace(model)


def _recipe_store(model: nn.Module) -> dict:
    # a GraphModule's deepcopy keeps its ``meta`` dict but not other attributes
    return model.meta if isinstance(model, fx.GraphModule) else model.__dict__


def recipe(model: nn.Module) -> Optional[dict]:
    """How groupsnn made ``model`` (``prepare``, ``calibrate``, ``fuse_batchnorm``), or None."""
    return _recipe_store(model).get(RECIPE)


def record(model: nn.Module, **fields) -> nn.Module:
    """Add ``fields`` to ``model``'s recipe (checkpoints save it to rebuild the model)."""
    store = _recipe_store(model)
    store[RECIPE] = {**store.get(RECIPE, {}), **fields}
    return model


def is_call(node: fx.Node, calls: set) -> bool:
    """Whether ``node`` calls one of ``calls`` (functions, or method names)."""
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


def _call_name(node: fx.Node) -> str:
    return getattr(node.target, "__name__", node.target)


def _input(node: fx.Node):
    return node.args[0] if node.args else node.kwargs.get("input")


def _writes_input(node: fx.Node, model: nn.Module) -> bool:
    """Whether the call at ``node`` writes its result into its input (``inplace=True``, ``relu_``)."""
    if node.op == "call_module":
        return getattr(model.get_submodule(node.target), "inplace", False) is True
    if is_call(node, _IN_PLACE_CALLS):
        return True
    return node.target is F.relu and node.kwargs.get("inplace", len(node.args) > 1 and node.args[1]) is True


def _write_is_seen(node: fx.Node, model: nn.Module) -> bool:
    """Whether writing into the input of ``node`` can be seen elsewhere: the input is used again, or
    may share memory with another tensor (a view, the model's input, a parameter...)."""
    x = _input(node)
    return not isinstance(x, fx.Node) or len(x.users) > 1 or not is_fresh(x, model)


def is_fresh(node: fx.Node, model: nn.Module) -> bool:
    """Whether ``node`` makes a new tensor (a conv, linear, norm or QCFS output, a sum, product or
    concatenation), rather than a view of its input or the input itself."""
    if node.op == "call_module":
        return isinstance(model.get_submodule(node.target), _FRESH_MODULES)
    return is_call(node, _FRESH_CALLS)


def _aliases(model: nn.Module) -> dict[int, list[str]]:
    """Every name each submodule is stored under (``self.relu = self.act = nn.ReLU()``: two)."""
    names = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), []).append(name)
    return names


def _swap_modules(model: nn.Module, rule: Rule) -> None:
    replaced = {}
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if not name:
            continue
        if id(module) not in replaced:
            replaced[id(module)] = rule(Site(module, name))
        if replaced[id(module)] is not None:
            model.set_submodule(name, replaced[id(module)])


class _Edit(NamedTuple):
    node: fx.Node
    new: nn.Module
    keep_write: bool  # an in-place site whose write is seen: becomes ``x.copy_(new(x.clone()))``


def _plan(model: nn.Module, graph: fx.Graph, rule: Rule) -> list[_Edit]:
    """The new module of each call site the rule replaces; changes nothing."""
    edits = []
    for node in graph.nodes:
        if node.op == "call_module":
            new = rule(Site(model.get_submodule(node.target), node.target))
        elif is_call(node, SITE_CALLS):
            kwargs = dict(node.kwargs)
            args = node.args or (kwargs.pop("input"),)
            new = rule(Site(node.target, _site_name(node), args[1:], kwargs))
        else:
            continue
        if new is not None:
            edits.append(_Edit(node, new, _writes_input(node, model) and _write_is_seen(node, model)))
    return edits


def _graph_change(edits: list[_Edit], calls: Counter) -> Optional[str]:
    """Why ``edits`` need a new ``forward`` (None when module swaps suffice)."""
    for node, _, keep_write in edits:
        if node.op != "call_module":
            return f"forward() calls {_call_name(node)} at {_site_name(node)!r}, which becomes a module call"
        if calls[node.target] > 1:
            return f"module {node.target!r} is called at {calls[node.target]} places, each of which gets its own"
        if keep_write:
            return f"module {node.target!r} writes into its input in place and the input is used again"
    return None


def rewrite(model: nn.Module, rule: Rule, what: str, inplace: bool = False) -> nn.Module:
    """Apply ``rule`` at every call site of ``model`` (of a copy unless ``inplace``); returns the
    rewritten model, which follows the contract of the module docstring."""
    net = model if inplace else copy.deepcopy(model)
    try:
        graph = trace(net)
    except Exception as err:  # noqa: BLE001  (anything fx raises means: fall back to module swap)
        warnings.warn(
            f"{what}: torch.fx cannot trace {type(model).__name__} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); swapped activation modules only. "
            "Functional activations (F.relu, torch.relu, x.relu()) in forward() were left as they "
            "are, a module called at several places stays shared, and an nn.ReLU(inplace=True) "
            "no longer writes into its input.", stacklevel=3)
        _swap_modules(net, rule)
        return net

    edits = _plan(net, graph, rule)
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    aliases = _aliases(net)
    why = _graph_change(edits, calls)
    if why is None:
        for node, new, _ in edits:
            for name in aliases[id(net.get_submodule(node.target))]:
                net.set_submodule(name, new)
        return net
    if inplace:
        raise ValueError(f"{what}: inplace=True cannot rewrite {type(model).__name__} in place ({why}); "
                         "call it without inplace=True and use the torch.fx.GraphModule it returns")

    for node, new, keep_write in edits:
        if node.op == "call_module":
            calls[node.target] -= 1
            if calls[node.target] == 0:  # the last site keeps the original name (all of them)
                name = node.target
                for alias in aliases[id(net.get_submodule(name))]:
                    net.set_submodule(alias, new)
            else:
                parent, _, leaf = node.target.rpartition(".")
                name = _fresh_name(net, parent, leaf)
                net.set_submodule(name, new, strict=False)
        else:
            name = _fresh_name(net, _enclosing_module(node), _call_name(node))
            net.set_submodule(name, new, strict=False)
        x = _input(node)
        with graph.inserting_before(node):
            if keep_write:
                out = graph.call_method("copy_", (x, graph.call_module(name, (graph.call_method("clone", (x,)),))))
            else:
                out = graph.call_module(name, (x,))
        node.replace_all_uses_with(out)
        graph.erase_node(node)
    graph.lint()
    rewritten = fx.GraphModule(net, graph)
    return record(rewritten, **(recipe(net) or {}))


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
    ``maxpool="keep"`` keeps max-pooling (for networks trained with it, see ``calibrate``).

    The result is ``model``'s class when module swaps suffice, else a ``torch.fx.GraphModule``
    (see the module docstring); ``inplace=True`` rewrites ``model`` itself or raises. It notes
    ``levels`` and ``maxpool`` in its recipe, which checkpoints save."""
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

    return record(rewrite(model, rule, "prepare()", inplace), levels=levels, maxpool=maxpool)


def convert(model: nn.Module, neuron: str = "gn", tau: int = 4, strict: bool = True,
            inplace: bool = False, step_mode: str = "s", signed: bool = False) -> nn.Module:
    """Return the SNN: each QCFS call site becomes an IF neuron (``neuron="if"``) or a Group Neuron of
    ``tau`` members (``neuron="gn"``), keeping its threshold, and each max-pooling a ``RateMaxPool``.
    Any other activation raises, naming the layer, unless ``strict=False`` (then it is left as it is).
    The result follows ``prepare``'s contract (its class, or a ``torch.fx.GraphModule``).
    ``signed=True`` makes neurons that also emit negative spikes to take back earlier ones (not in
    the paper; see ``groupsnn.neurons``): at τ·T = L they remove most of the unevenness error.

    The SNN takes one time step per call, ``[B, ...]`` (``step_mode="s"``, the only mode for whole
    networks; run T steps with ``groupsnn.simulate``). It is for inference: its neurons have no
    gradient (their spike counts are floors), so a backward pass through them raises
    (no training through time)."""
    if step_mode != "s":
        raise ValueError(f"convert(): step_mode={step_mode!r} is not supported: a converted network's "
                         "layers take one time step [B, ...], so multi-step mode ([T, B, ...] input) would "
                         "fold time into them; convert with step_mode='s' and run the steps with "
                         "groupsnn.simulate, or call the SNN on x[t] for each t")
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
                return GroupNeuron(target.threshold, tau, signed=signed)
            return IFNeuron(target.threshold, signed=signed)
        if type(target) in MAX_TO_AVG_POOL:
            return RateMaxPool(target)
        if target in MAX_TO_AVG_POOL_CALLS:
            return RateMaxPool(_max_pool_module(site))
        is_module = isinstance(target, nn.Module)
        if strict and (isinstance(target, NONLINEAR_MODULES) or (not is_module and target in NONLINEAR_CALLS)):
            kind = type(target).__name__ if is_module else getattr(target, "__name__", target)
            hint = ("run groupsnn.prepare() and train, or groupsnn.calibrate(), first"
                    if isinstance(target, nn.ReLU) or (not is_module and target in RELU_CALLS)
                    else "replace it by ReLU and prepare()")
            raise ValueError(f"convert(): cannot convert activation {site.name!r} ({kind}) to a spiking "
                             f"neuron; {hint}, or pass strict=False to leave it as it is")
        return None

    return rewrite(model, rule, "convert()", inplace)
