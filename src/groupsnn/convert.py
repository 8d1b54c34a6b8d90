"""``prepare`` (ReLU -> QCFS, MaxPool -> AvgPool) and ``convert`` (QCFS -> IF or Group Neuron, other
non-linear operations -> run on rates): the two rewrites of the conversion, each a rule applied at
every call site by ``groupsnn.rewrite`` (which says what the result is: the input's class, or a
``torch.fx.GraphModule``)."""
import functools
import warnings
from collections import Counter
from typing import Callable, Optional

import torch
import torch.fx as fx
import torch.nn as nn

from .attention import twin_of, twins
from .compensate import BoundCall, Compensated, TensorMethod
from .graph import downstream, flat_nodes, is_call, metadata_nodes, module_of, qualified_name, site_name, trace
from .neurons import GroupNeuron, IFNeuron, RateMaxPool, StatefulModule
from .ops import (CLIPPED_RELU_CALLS, COMPENSATED_CALLS, COMPENSATED_MODULES, FOREIGN_LINEAR_CALLS, LINEAR_CALLS,
                  LINEAR_MODULES, MAX_POOL_CALLS, MAX_POOL_FUNCTIONS, MAX_TO_AVG_POOL, NONLINEAR_CALLS, NONLINEAR_MODULES,
                  OPAQUE_MODULES, PRODUCT_CALLS, RANDOM_CALLS, RELU_CALLS, SITE_CALLS, SPIKE_LINEAR_CALLS,
                  SPIKE_LINEAR_MODULES, SUM_CALLS, WEIGHTED)
from .qcfs import QCFS
from .recipe import record
from .rewrite import Site, rewrite


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
    module_type = {fn: m for m, fn in MAX_POOL_FUNCTIONS.items()}[site.target]
    if any(isinstance(a, fx.Node) for a in (*site.args, *site.kwargs.values())):
        raise ValueError(f"{site.name} has max-pooling arguments computed in forward(); "
                         "use a fixed-size nn.MaxPool module instead")
    return module_type(*site.args, **site.kwargs)


def prepare(model: nn.Module, levels: Optional[int] = 8, threshold: float = 8.0, inplace: bool = False,
            maxpool: str = "avg", spike_inputs: bool = False) -> nn.Module:
    """Return ``model`` with every ReLU call site replaced by a QCFS (``levels``, initial ``threshold``;
    a ReLU6 clips at 6, so its QCFS starts at most there) and every max-pooling by average pooling;
    ready for QCFS training and then ``convert``. ``maxpool="keep"`` keeps max-pooling (for networks
    trained with it, see ``calibrate``). Other activations stay as they are (``convert`` runs them on
    rates). ``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer``, ``nn.TransformerEncoder`` and
    torchvision's Swin window attention become their traceable twins (``groupsnn.attention``);
    operations ``convert`` cannot take (other layers whose softmax runs inside torch, operations
    groupsnn does not know) stay, with a warning that lists every such site.

    ``spike_inputs=True`` also puts a two-sided QCFS (levels -L..L) in front of every convolution
    and linear layer whose input comes after a non-linear operation but is not already a ReLU's
    output (after GELU, softmax, LayerNorm, a product...): the layer becomes ``Sequential(QCFS,
    layer)``, and in the SNN every such weighted sum receives spikes.

    The result is ``model``'s class when module swaps suffice, else a ``torch.fx.GraphModule``
    (see ``groupsnn.rewrite``); ``inplace=True`` rewrites ``model`` itself or raises. It notes
    ``levels``, ``maxpool`` and ``spike_inputs`` in its recipe, which checkpoints save."""
    QCFS(levels, threshold)  # validates the arguments before any work
    if maxpool not in ("avg", "keep"):
        raise ValueError(f"maxpool must be 'avg' (replace by average pooling) or 'keep', got {maxpool!r}")

    analog = []

    def rule(site: Site) -> Optional[nn.Module]:
        if isinstance(site.target, nn.ReLU) or site.target in RELU_CALLS:
            return QCFS(levels, threshold)
        if isinstance(site.target, nn.ReLU6) or site.target in CLIPPED_RELU_CALLS:
            return QCFS(levels, min(threshold, 6.0))
        if _analog_kind(site) and not _compensable(site):
            analog.append(site)
        if maxpool == "keep":
            return None
        if type(site.target) in MAX_TO_AVG_POOL:
            return _avg_pool_like(site.target)
        if site.target in MAX_POOL_CALLS:
            return _avg_pool_like(_max_pool_module(site))
        return None

    if any(twin_of(m) is not None for m in model.modules()):  # attention torch.fx cannot enter: its twin
        model = twins(model, inplace=inplace)
    unspiked = _unspiked_layers(model) if spike_inputs else set()

    def quantising_rule(site: Site) -> Optional[nn.Module]:
        if isinstance(site.target, nn.Module) and site.name in unspiked:
            return nn.Sequential(QCFS(levels, threshold, two_sided=True), site.target)
        return rule(site)

    prepared = rewrite(model, quantising_rule, "prepare()", inplace)
    analog += _unknown_operations(prepared)
    if analog:
        warnings.warn(f"prepare(): no spiking neuron computes {_listed(analog)}; they stay as they are and "
                      "convert() will refuse them: replace them before prepare()", stacklevel=2)
    return record(prepared, levels=levels, maxpool=maxpool, **({"spike_inputs": True} if spike_inputs else {}))


def _unspiked_layers(model: nn.Module) -> set[str]:
    """The conv/linear modules, each called once, whose input comes after a non-linear operation
    but is not spikes-to-be (a ReLU's or QCFS's output, through operations linear in spike counts)."""
    try:
        graph = trace(model)
    except Exception:  # noqa: BLE001  (rewrite warns that the graph is unknown: no quantisers then)
        return set()
    nonlinear = [n for n in graph.nodes if isinstance(module_of(model, n), (*NONLINEAR_MODULES, *COMPENSATED_MODULES,
                                                                           *OPAQUE_MODULES, QCFS))
                 or is_call(n, SITE_CALLS) or is_call(n, PRODUCT_CALLS)]
    after = downstream(graph, nonlinear)
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    return {n.target for n in graph.nodes if isinstance(module_of(model, n), WEIGHTED) and calls[n.target] == 1
            and n.args and n.args[0] in after and not _spikes(model, n.args[0])}


def _spikes(model: nn.Module, node) -> bool:
    """Whether ``node`` holds what neurons will emit: a ReLU's or QCFS's output, or what operations
    linear in spike counts (views, pooling, sums, cat...) make of such outputs only."""
    if not isinstance(node, fx.Node):
        return False
    module = module_of(model, node)
    if isinstance(module, (nn.ReLU, nn.ReLU6, QCFS)) or is_call(node, RELU_CALLS | CLIPPED_RELU_CALLS):
        return True
    passes_spikes = isinstance(module, (*SPIKE_LINEAR_MODULES, *MAX_TO_AVG_POOL))
    if passes_spikes or is_call(node, SPIKE_LINEAR_CALLS | MAX_POOL_CALLS):
        return all(_spikes(model, a) for a in flat_nodes(node.args[:1]))
    if is_call(node, SUM_CALLS):
        return all(_spikes(model, a) for a in node.args[:2])
    return False


def _analog_kind(site: Site) -> Optional[str]:
    """What ``site`` computes, if no spiking neuron computes it (an activation, a product of two
    per-step tensors, a layer with activations and softmax inside torch's own code), else None."""
    target = site.target
    if isinstance(target, (*NONLINEAR_MODULES, *OPAQUE_MODULES)):
        return type(target).__name__
    if not isinstance(target, nn.Module) and (target in NONLINEAR_CALLS | COMPENSATED_CALLS or site.inputs > 1):
        return getattr(target, "__name__", str(target))
    return None


def _compensable(site: Site) -> bool:
    """Whether ``convert`` can run ``site`` on rates (``groupsnn.compensate``)."""
    target = site.target
    if isinstance(target, nn.Module):
        return isinstance(target, COMPENSATED_MODULES)
    fixed = not any(isinstance(a, fx.Node) for a in (*site.args, *site.kwargs.values()))
    # arguments computed in forward (a mask, a shape) cannot be baked into the function; a tensor
    # method's tensor arguments neither
    fixed = fixed and not (isinstance(target, str) and any(isinstance(a, torch.Tensor) for a in site.args))
    return (site.inputs > 1 or target in COMPENSATED_CALLS) and fixed


def _function(site: Site) -> Callable:
    """The site's operation as a function of its input tensors alone."""
    if isinstance(site.target, nn.Module):
        return site.target
    if isinstance(site.target, str):  # a tensor method, x.softmax(-1)
        return TensorMethod(site.target, *site.args, **site.kwargs)
    if any(isinstance(a, torch.Tensor) for a in (*site.args, *site.kwargs.values())):
        return BoundCall(site.target, site.args, site.kwargs)  # the model's weights it takes
    return functools.partial(site.target, *site.args, **site.kwargs) if site.args or site.kwargs else site.target


def _unknown_operations(model: nn.Module) -> list[Site]:
    """The operations after the first neuron-to-be that ``convert``'s rules do not take and that
    groupsnn does not know to commute with averaging over time (``ops.LINEAR_*``): they would
    compute on each step's spikes. Empty where the model cannot be traced (``rewrite`` warns)."""
    try:
        graph = trace(model)
    except Exception:  # noqa: BLE001
        return []
    sizes, varying = metadata_nodes(graph), set()
    for node in graph.nodes:
        if (isinstance(module_of(model, node), (QCFS, StatefulModule)) or is_call(node, RANDOM_CALLS)
                or any(a in varying for a in node.all_input_nodes if a not in sizes)) and node not in sizes:
            varying.add(node)
    taken = (QCFS, StatefulModule, *LINEAR_MODULES, *NONLINEAR_MODULES, *COMPENSATED_MODULES, *OPAQUE_MODULES,
             *MAX_TO_AVG_POOL)
    unknown = []
    for node in graph.nodes:
        if node not in varying or node.op not in ("call_function", "call_method", "call_module"):
            continue
        module = module_of(model, node)
        known = isinstance(module, taken) if module is not None else (
            is_call(node, LINEAR_CALLS | SITE_CALLS | set(PRODUCT_CALLS) | RANDOM_CALLS)
            or qualified_name(node.target) in FOREIGN_LINEAR_CALLS)
        if not known:
            unknown.append(Site(module if module is not None else node.target,
                                node.target if module is not None else site_name(node)))
    return unknown


def _listed(sites: list[Site]) -> str:
    """``"3 sites: 'a' (GELU), 'b' (Sigmoid), ..."``: every one of them."""
    return f"{len(sites)} site{'s' * (len(sites) != 1)}: " + ", ".join(
        f"{s.name!r} ({_analog_kind(s) or _unknown_kind(s)})" for s in sites)


def _unknown_kind(site: Site) -> str:
    target = site.target
    name = type(target).__name__ if isinstance(target, nn.Module) else getattr(target, "__name__", str(target))
    return f"{name}, an operation groupsnn does not know"


def convert(model: nn.Module, neuron: str = "gn", tau: Optional[int] = None, strict: bool = True,
            inplace: bool = False, step_mode: str = "s", signed: bool = False) -> nn.Module:
    """Return the SNN: each QCFS call site becomes an IF neuron (``neuron="if"``; it has one member, so
    a ``tau`` other than 1 raises) or a Group Neuron of ``tau`` members (``neuron="gn"``; default 4),
    keeping its threshold, and each max-pooling a ``RateMaxPool``. Any other activation, softmax and
    LayerNorm/GroupNorm/RMSNorm whose input changes from step to step (after a neuron) runs on rates
    (``groupsnn.compensate.Compensated``); before the first neuron it stays as it is (its input is
    the same at every step). What no rule takes (an unprepared ReLU, an attention layer whose
    softmax runs inside torch) raises, naming every such site, unless ``strict=False`` (then they
    stay as they are, with a warning naming them).
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
        tau = 4 if tau is None else tau
        GroupNeuron(1.0, tau)  # validates tau before any work
    elif tau not in (None, 1):  # one member is what an IF neuron is
        raise ValueError(f"convert(): tau is for Group Neurons; an IF neuron has one member: drop tau or use "
                         f"neuron='gn' (got tau={tau!r})")

    def rule(site: Site) -> Optional[nn.Module]:
        target = site.target
        if isinstance(target, QCFS):
            if not bool((target.threshold > 0).all()):
                raise ValueError(f"convert(): threshold of {site.name!r} is not positive "
                                 f"({target.threshold.min().item():.4g}); retrain or recalibrate it")
            two_sided = getattr(target, "two_sided", False)
            if neuron == "gn":
                return GroupNeuron(target.threshold, tau, signed=signed, two_sided=two_sided)
            return IFNeuron(target.threshold, signed=signed, two_sided=two_sided)
        if type(target) in MAX_TO_AVG_POOL:
            return RateMaxPool(target)
        if target in MAX_POOL_CALLS:
            return RateMaxPool(_max_pool_module(site))
        if _compensable(site):
            return Compensated(_function(site)) if site.on_rates else None
        if _analog_kind(site):
            analog.append(site)
        return None

    def check() -> None:
        analog.extend(unknown)
        if not analog:
            return
        relu = any(isinstance(s.target, nn.ReLU) or s.target in RELU_CALLS for s in analog)
        hint = ("run groupsnn.prepare() and train, or groupsnn.calibrate(), first" if relu
                else "replace them by operations groupsnn knows, or by ReLU and prepare()")
        if strict:
            raise ValueError(f"convert(): cannot convert {_listed(analog)} to spiking neurons; {hint}, or pass "
                             "strict=False to leave them as they are")
        warnings.warn(f"convert(): left {_listed(analog)} as they are (strict=False): they compute on each "
                      "step's spikes, not on rates", stacklevel=3)

    analog, unknown = [], _unknown_operations(model)
    snn = rewrite(model, rule, "convert()", inplace, check)
    return record(snn, snn={"neuron": neuron, "tau": tau if neuron == "gn" else 1, "signed": signed})
