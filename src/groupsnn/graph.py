"""The torch.fx layer under every rewrite and every run: tracing, the one policy for models that
cannot be traced, in-place writes and aliasing, tensor shapes, and the static prefix.

- **Tracing.** QCFS and stateful modules (neurons) stay leaves. Augmented assignments
  (``z = y; z += 1``) are traced as the in-place operators they are (``operator.iadd``): plain
  ``torch.fx`` traces them out of place, and code that reads ``y`` afterwards would then compute
  something else than ``model(x)``.
- **Untraceable models.** ``traced(model, what, fallback)`` is the one policy: every caller that
  can do without a graph warns once, saying what it does instead; a caller that cannot raises a
  ValueError with the same explanation.
- **Static prefix.** A network's input is the same at every time step, so the nodes that depend
  neither on a stateful module nor on a random draw, and that no per-step node writes into, are the
  same at every step: ``per_step_nodes`` is the one definition, which ``simulate`` (computing them
  once per input) and ``stats`` (charging their MACs once per input) share.
"""
import warnings
from typing import Iterable, Optional

import torch
import torch.fx as fx
import torch.nn as nn

from .neurons import StatefulModule
from .ops import FRESH_CALLS, FRESH_MODULES, IN_PLACE_OPERATORS, RANDOM_CALLS
from .qcfs import QCFS
from .runtime import is_stateful, trial_run


class _Proxy(fx.Proxy):
    """A proxy whose augmented assignments are recorded as in-place operator calls."""


for _in_place in IN_PLACE_OPERATORS:
    setattr(_Proxy, f"__{_in_place.__name__}__",
            lambda self, other, op=_in_place: self.tracer.create_proxy("call_function", op, (self, other), {}))


class Tracer(fx.Tracer):
    """Keeps QCFS, neurons and other stateful modules as leaves; traces ``+=`` as in place."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (QCFS, StatefulModule)) or super().is_leaf_module(m, qualname)

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _Proxy(node, self)


def trace(model: nn.Module) -> fx.Graph:
    """``model``'s graph; raises whatever torch.fx raises (see ``traced`` for the policy)."""
    return Tracer().trace(model)


def traced(model: nn.Module, what: str, fallback: Optional[str] = None) -> Optional[fx.Graph]:
    """``model``'s graph, or, when torch.fx cannot trace it, None after a warning that ``what``
    does ``fallback`` instead; with ``fallback=None`` a ValueError instead of the warning."""
    try:
        return trace(model)
    except Exception as err:  # noqa: BLE001  (anything fx raises means: no graph)
        first = next(iter(str(err).strip().splitlines()), "")
        why = (f"{what}: torch.fx cannot trace {type(model).__name__} ({type(err).__name__}: {first[:120]})")
        if fallback is None:
            raise ValueError(f"{why}; make forward() traceable (no Python control flow on tensor "
                             "values, or wrap that part in a leaf module)") from None
        warnings.warn(f"{why}; {fallback}", stacklevel=3)
        return None


# -- nodes

def is_call(node: fx.Node, calls: set) -> bool:
    """Whether ``node`` calls one of ``calls`` (functions, or method names)."""
    return node.op in ("call_function", "call_method") and _hashable(node.target) and node.target in calls


def _hashable(target) -> bool:
    try:
        hash(target)
        return True
    except TypeError:
        return False


def module_of(model: nn.Module, node: fx.Node) -> Optional[nn.Module]:
    """The module ``node`` calls, or None."""
    return model.get_submodule(node.target) if node.op == "call_module" else None


def first_input(node: fx.Node):
    return node.args[0] if node.args else node.kwargs.get("input")


def enclosing_module(node: fx.Node) -> str:
    """The qualified name of the module whose forward made ``node`` ("" for the model itself)."""
    stack = node.meta.get("nn_module_stack") or {}
    return next(reversed(stack.values()))[0] if stack else ""


def site_name(node: fx.Node) -> str:
    """Where ``node`` is, for messages: its name and the module it is in."""
    where = enclosing_module(node)
    return f"{node.name} in {where!r}" if where else node.name


def call_name(node: fx.Node) -> str:
    return getattr(node.target, "__name__", node.target)


def qualified_name(obj) -> str:
    """``"package.module.Name"`` of a class or function: how groupsnn names another library's layers
    and functions without importing that library."""
    return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"


def flat_nodes(args) -> list[fx.Node]:
    """The nodes inside ``args`` (nested tuples, lists and dicts), in order."""
    nodes = []
    fx.node.map_arg(args, nodes.append)
    return nodes


def downstream(graph: fx.Graph, sources: Iterable[fx.Node]) -> set[fx.Node]:
    """``sources`` and every node that depends on one of them."""
    found = set(sources)
    for node in graph.nodes:
        if any(a in found for a in node.all_input_nodes):
            found.add(node)
    return found


_METADATA_METHODS = {"size", "dim", "numel"}


def metadata_nodes(graph: fx.Graph) -> set[fx.Node]:
    """The nodes whose values are sizes, not tensors: ``x.shape``, ``x.size()``, ``x.dim()``, and
    arithmetic or indexing on those alone (``width // heads``, ``x.shape[1]``)."""
    found = set()
    for node in graph.nodes:
        inputs = node.all_input_nodes
        if ((node.op == "call_function" and node.target is getattr and node.args[1] in ("shape", "ndim"))
                or (node.op == "call_method" and node.target in _METADATA_METHODS)
                or (node.op == "call_function" and getattr(node.target, "__module__", "") == "_operator"
                    and inputs and all(a in found for a in inputs))):
            found.add(node)
    return found


# -- memory: what writes into what, what is a new tensor

def writes_into(model: nn.Module, node: fx.Node) -> list[fx.Node]:
    """The nodes whose tensors ``node`` writes into: the first argument of an in-place call
    (``y.add_(z)``, ``y += z``, ``F.relu_(y)``, ``y[i] = z``, a module with ``inplace=True``), and ``out=``."""
    written = [node.kwargs["out"]] if isinstance(node.kwargs.get("out"), fx.Node) else []
    if node.op == "call_module":
        in_place = getattr(model.get_submodule(node.target), "inplace", False) is True
    elif node.op in ("call_method", "call_function"):
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
        in_place = (is_call(node, IN_PLACE_OPERATORS.keys() | {"__setitem__"}) or name == "setitem"
                    or (name.endswith("_") and not name.endswith("__")))
    else:
        in_place = False
    if in_place and node.args and isinstance(node.args[0], fx.Node):
        written.append(node.args[0])
    return written


def is_fresh(node: fx.Node, model: nn.Module) -> bool:
    """Whether ``node`` makes a new tensor that nothing else holds (a conv, linear, norm or QCFS
    output, a sum, product or concatenation, or an in-place update of such a tensor used by
    nothing else), rather than a view of its input or the input itself."""
    if node.op == "call_module":
        return isinstance(model.get_submodule(node.target), FRESH_MODULES)
    if is_call(node, IN_PLACE_OPERATORS.keys()):
        target = node.args[0]
        return isinstance(target, fx.Node) and len(target.users) == 1 and is_fresh(target, model)
    return is_call(node, FRESH_CALLS)


# -- shapes

def tensor_shapes(model: nn.Module, graph: fx.Graph, *inputs: torch.Tensor) -> dict[fx.Node, torch.Size]:
    """The shape of each tensor ``graph`` computes on ``inputs``, from one ``trial_run``."""
    shapes = {}

    class Recorder(fx.Interpreter):
        def run_node(self, node):
            out = super().run_node(node)
            if isinstance(out, torch.Tensor):
                shapes[node] = out.shape
            return out

    with trial_run(model, *inputs):
        Recorder(fx.GraphModule(model, graph)).run(*inputs)
    return shapes


# -- the static prefix

class Unsplittable(ValueError):
    """A per-step operation writes into the model's input or a parameter: nothing is static."""


def per_step_nodes(model: nn.Module, graph: fx.Graph) -> set[fx.Node]:
    """The nodes to run at every time step: stateful modules, random calls, the output, what
    depends on them, and every tensor a per-step node writes into (with what it may be a view of),
    which must then be made afresh at each step as stepping the whole model would. Raises
    ``Unsplittable`` when a per-step node writes into the input or a parameter."""
    dynamic: set[fx.Node] = set()
    while True:
        for node in graph.nodes:
            if (is_stateful(module_of(model, node)) or is_call(node, RANDOM_CALLS) or node.op == "output"
                    or any(a in dynamic for a in node.all_input_nodes)
                    or _writes_what_a_step_reads(model, node, dynamic)):
                dynamic.add(node)
        overwritten = [a for n in dynamic for a in writes_into(model, n) if a not in dynamic]
        if not overwritten:
            return dynamic
        for node in overwritten:
            while node is not None and node not in dynamic:
                if node.op in ("placeholder", "get_attr"):
                    raise Unsplittable(f"a per-step operation writes into {node.op} {node.name!r} in place")
                dynamic.add(node)
                source = node.args[0] if node.args else None
                node = source if not is_fresh(node, model) and isinstance(source, fx.Node) else None


def _writes_what_a_step_reads(model: nn.Module, node: fx.Node, dynamic: set) -> bool:
    """Whether ``node`` writes in place into a tensor (or a view of it) that a per-step node reads:
    the static part runs before every step, so the write would come before a read it follows."""
    for written in writes_into(model, node):
        root = written
        while not is_fresh(root, model) and root.args and isinstance(root.args[0], fx.Node):
            root = root.args[0]  # what ``written`` may be a view of
        views, seen = [root], {root}
        while views:
            for user in views.pop().users:
                if user in dynamic:
                    return True
                if user not in seen and not is_fresh(user, model):
                    seen.add(user)
                    views.append(user)
    return False


def static_nodes(model: nn.Module, graph: fx.Graph) -> set[fx.Node]:
    """The nodes computed once per input (the complement of ``per_step_nodes``; none when unsplittable)."""
    try:
        dynamic = per_step_nodes(model, graph)
    except Unsplittable:
        return set()
    return {n for n in graph.nodes if n not in dynamic}


def split_static(model: nn.Module, graph: fx.Graph) -> tuple[fx.GraphModule, fx.GraphModule]:
    """``static(x) -> boundary values`` and ``dynamic(*boundary) -> output``, one time step of
    ``graph`` split at its static prefix. Both share (do not copy) ``model``'s submodules."""
    dynamic = per_step_nodes(model, graph)
    boundary = [n for n in graph.nodes if n not in dynamic and any(u in dynamic for u in n.users)]
    static_graph, env = _subgraph(n for n in graph.nodes if n not in dynamic)
    static_graph.output(tuple(env[n] for n in boundary))
    dynamic_graph, _ = _subgraph((n for n in graph.nodes if n in dynamic), placeholders=boundary)
    return fx.GraphModule(model, static_graph), fx.GraphModule(model, dynamic_graph)


def _subgraph(nodes: Iterable[fx.Node], placeholders: Iterable[fx.Node] = ()) -> tuple[fx.Graph, dict]:
    """A new graph of copies of ``nodes`` with ``placeholders`` as its inputs, and the map from
    each original node to its copy."""
    graph, env = fx.Graph(), {}
    for node in placeholders:
        env[node] = graph.placeholder(node.name)
    for node in nodes:
        env[node] = graph.node_copy(node, env.__getitem__)
    return graph, env
