"""Rewrite a network's call sites, the engine of ``prepare`` and ``convert`` (in the manner of
``torch.ao.quantization``'s prepare/convert).

Activation and pooling *call sites* are what get rewritten, found with the graph layer: a module,
a functional call in ``forward`` (``F.relu``, ``torch.relu``, ``x.relu()``), and one module instance
called at several places (each site gets its own module, since a stateful neuron shared by two
sites would mix their membranes). A rule says, for each site, the module to call there instead.
The result follows one contract:

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
from collections import Counter
from typing import Callable, NamedTuple, Optional, Union

import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .graph import (call_name, downstream, enclosing_module, first_input, is_call, is_fresh, metadata_nodes, module_of,
                    site_name, traced)
from .neurons import StatefulModule
from .ops import IN_PLACE_ACTIVATION_CALLS, PRODUCT_CALLS, RANDOM_CALLS, SITE_CALLS
from .qcfs import QCFS
from .recipe import recipe, record


class Site(NamedTuple):
    """One call site: the called module (``args`` empty) or function / method name with its
    arguments after the input (nodes computed in forward, and the model's own parameters and
    buffers as tensors); ``name`` says where it is, for messages and new module names.
    ``on_rates``: whether its input can change from step to step once the network is converted
    (it depends on a QCFS, a stateful module or a random draw; True where the graph is unknown).
    ``inputs``: how many leading arguments are the tensors the new module takes (a product: 2)."""
    target: Union[nn.Module, Callable, str]
    name: str
    args: tuple = ()
    kwargs: dict = {}
    on_rates: bool = True
    inputs: int = 1


Rule = Callable[[Site], Optional[nn.Module]]  # the module to call at a site instead, or None


def _fresh_name(model: nn.Module, parent: str, base: str) -> str:
    """``parent.base``, or ``parent.base_1``, ... whichever is free."""
    owner = model.get_submodule(parent)
    name, i = base, 0
    while hasattr(owner, name):
        i += 1
        name = f"{base}_{i}"
    return f"{parent}.{name}" if parent else name


def _writes_input(node: fx.Node, model: nn.Module) -> bool:
    """Whether the call at ``node`` writes its result into its input (``inplace=True``, ``relu_``)."""
    if node.op == "call_module":
        return getattr(model.get_submodule(node.target), "inplace", False) is True
    if is_call(node, IN_PLACE_ACTIVATION_CALLS):
        return True
    return node.target is F.relu and node.kwargs.get("inplace", len(node.args) > 1 and node.args[1]) is True


def _write_is_seen(node: fx.Node, model: nn.Module) -> bool:
    """Whether writing into the input of ``node`` can be seen elsewhere: the input is used again, or
    may share memory with another tensor (a view, the model's input, a parameter...)."""
    x = first_input(node)
    return not isinstance(x, fx.Node) or len(x.users) > 1 or not is_fresh(x, model)


def _aliases(model: nn.Module) -> dict[int, list[str]]:
    """Every name each submodule is stored under (``self.relu = self.act = nn.ReLU()``: two)."""
    names = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), []).append(name)
    return names


def _swap_modules(model: nn.Module, rule: Rule, check: Callable[[], None]) -> None:
    named = [(name, m) for name, m in model.named_modules(remove_duplicate=False) if name]
    replaced = {}
    for name, module in named:  # the rule sees every site before anything changes
        if id(module) not in replaced:
            replaced[id(module)] = rule(Site(module, name))
    check()
    for name, module in named:
        if replaced[id(module)] is not None:
            model.set_submodule(name, replaced[id(module)])


def _attribute(model: nn.Module, node: fx.Node):
    """The model's parameter or buffer that a ``get_attr`` node fetches (e.g. the weight an
    ``F.layer_norm`` call takes), else the node itself."""
    if node.op != "get_attr":
        return node
    owner, _, name = node.target.rpartition(".")
    return getattr(model.get_submodule(owner), name)


class _Edit(NamedTuple):
    node: fx.Node
    new: nn.Module
    keep_write: bool  # an in-place site whose write is seen: becomes ``x.copy_(new(x.clone()))``
    inputs: int = 1   # the node's leading arguments the new module takes


def _plan(model: nn.Module, graph: fx.Graph, rule: Rule) -> list[_Edit]:
    """The new module of each call site the rule replaces; changes nothing."""
    varying_nodes = downstream(graph, [n for n in graph.nodes if is_call(n, RANDOM_CALLS)
                                       or isinstance(module_of(model, n), (QCFS, StatefulModule))])
    sizes = metadata_nodes(graph)
    edits = []
    for node in graph.nodes:
        on_rates = any(a in varying_nodes for a in node.all_input_nodes)
        if node.op == "call_module":
            new = rule(Site(model.get_submodule(node.target), node.target, on_rates=on_rates))
        elif is_call(node, SITE_CALLS):
            kwargs = dict(node.kwargs)
            args = node.args or (kwargs.pop("input"),)
            args, kwargs = fx.node.map_arg((args[1:], kwargs), lambda a: _attribute(model, a))
            new = rule(Site(node.target, site_name(node), args, kwargs, on_rates))
        elif is_call(node, PRODUCT_CALLS) and len(node.args) >= PRODUCT_CALLS[node.target]:
            n = PRODUCT_CALLS[node.target]
            varying = sum(isinstance(a, fx.Node) and a in varying_nodes and a not in sizes for a in node.args[:n])
            if varying < 2:  # linear in the one input that changes: it commutes with averaging
                continue
            new = rule(Site(node.target, site_name(node), node.args[n:], dict(node.kwargs), True, n))
            if new is not None:
                edits.append(_Edit(node, new, False, n))
            continue
        else:
            continue
        if new is not None:
            edits.append(_Edit(node, new, _writes_input(node, model) and _write_is_seen(node, model)))
    return edits


def _graph_change(edits: list[_Edit], calls: Counter) -> Optional[str]:
    """Why ``edits`` need a new ``forward`` (None when module swaps suffice)."""
    for node, _, keep_write, _ in edits:
        if node.op != "call_module":
            return f"forward() calls {call_name(node)} at {site_name(node)!r}, which becomes a module call"
        if calls[node.target] > 1:
            return f"module {node.target!r} is called at {calls[node.target]} places, each of which gets its own"
        if keep_write:
            return f"module {node.target!r} writes into its input in place and the input is used again"
    return None


def class_path(model: nn.Module) -> str:
    """``"module:QualifiedName"`` of ``model``'s class."""
    return f"{type(model).__module__}:{type(model).__qualname__}"


def _note_source(model: nn.Module) -> None:
    """Note in ``model``'s recipe the class it was built from (checkpoints rebuild it from there),
    unless it was noted before (a rewritten model is a ``GraphModule`` or the same class)."""
    if "source" not in (recipe(model) or {}) and not isinstance(model, fx.GraphModule):
        record(model, source=class_path(model))


def rewrite(model: nn.Module, rule: Rule, what: str, inplace: bool = False,
            check: Callable[[], None] = lambda: None) -> nn.Module:
    """Apply ``rule`` at every call site of ``model`` (of a copy unless ``inplace``); returns the
    rewritten model, which follows the contract of the module docstring. ``check()`` runs once the
    rule has seen every site and before anything changes (it may raise about what the rule saw)."""
    net = model if inplace else copy.deepcopy(model)
    graph = traced(net, what, "swapped activation modules only: functional activations (F.relu, "
                   "torch.relu, x.relu()) in forward() were left as they are, a module called at several "
                   "places stays shared, and an nn.ReLU(inplace=True) no longer writes into its input")
    _note_source(net)
    if graph is None:
        _swap_modules(net, rule, check)
        return net

    edits = _plan(net, graph, rule)
    check()
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    aliases = _aliases(net)
    why = _graph_change(edits, calls)
    if why is None:
        for node, new, _, _ in edits:
            for name in aliases[id(net.get_submodule(node.target))]:
                net.set_submodule(name, new)
        return net
    if inplace:
        raise ValueError(f"{what}: inplace=True cannot rewrite {type(model).__name__} in place ({why}); "
                         "call it without inplace=True and use the torch.fx.GraphModule it returns")

    for node, new, keep_write, inputs in edits:
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
            name = _fresh_name(net, enclosing_module(node), call_name(node))
            net.set_submodule(name, new, strict=False)
        x = first_input(node)
        with graph.inserting_before(node):
            if keep_write:
                out = graph.call_method("copy_", (x, graph.call_module(name, (graph.call_method("clone", (x,)),))))
            else:
                out = graph.call_module(name, (x,) if inputs == 1 else tuple(node.args[:inputs]))
        node.replace_all_uses_with(out)
        graph.erase_node(node)
    graph.lint()
    rewritten = fx.GraphModule(net, graph)
    return record(rewritten, **(recipe(net) or {}))
