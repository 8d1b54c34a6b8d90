"""Spiking neurons for converted networks: pure step functions plus thin stateful modules.

Both neurons keep their membrane potential *normalised* by the size of one spike, so a spike is
worth 1 in state units and ``threshold/tau`` (GN) or ``threshold`` (IF) in output units:

    GN membrane v (in units of θ/τ):  v += x·τ/θ;  n = clamp(floor(v), 0, τ);  v -= n;  out = n·θ/τ

This is the τ-member Group Neuron of Lv et al. (ICASSP 2024): members with thresholds iθ/τ share
one input and are all reset by the emitted amount, so they share one membrane and the number of
members that fire is ``floor(v)`` — one membrane, whatever τ. Its initial potential θ/(2τ) is 1/2 in
these units. Working in these units makes the first step compute exactly QCFS's float operations
(``floor(x·L/θ + 1/2)``), so an SNN with τ = L at T = 1 *is* the QCFS network. The IF neuron is the
classic one (threshold θ, starts at θ/2, reset by subtraction), which equals GN with τ = 1.
``RateMaxPool`` is max-pooling between neurons, made exact on rates (``max_pool_step``).

``signed=True`` (not in the paper) lets a neuron also emit negative spikes, up to τ a step and never
more than it has emitted in all: ``n = clamp(floor(v), -min(c, τ), τ)`` with ``c`` its net count so
far, as in the signed neuron with memory of SNM (Wang et al., IJCAI 2022). It takes back what early
steps over-fired, so after T steps its net count is ``floor(Σx·τ/θ + 1/2)`` (initial membrane 1/2)
clamped to [0, τT], the QCFS of the *mean* input with τT levels whatever the input's order in time,
unless spikes are still owed after the last step (a step emits or takes back at most τ). At τ·T = L
the network then computes its QCFS network's output wherever those per-step bounds do not bind.

The neurons are for inference. Their spike counts are floors, whose gradient is zero almost
everywhere, so gradients through time (SNN training, surrogate gradients) are not a feature: a
backward pass that reaches a neuron raises. Train the QCFS ANN instead and convert it.
"""
import functools
from typing import NamedTuple, Optional

import torch
import torch.nn as nn

from .qcfs import level_value, shifted


class NeuronState(NamedTuple):
    v: torch.Tensor  # membrane potential in units of one spike (θ/τ for GN, θ for IF)
    count: Optional[torch.Tensor] = None  # signed neurons: net spikes emitted so far (never negative)


def _integrate(x: torch.Tensor, state: Optional[NeuronState], scale: torch.Tensor, inplace: bool,
               v_init: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The membrane after input ``x``: ``x·scale + v_init`` at the first step (with ``v_init`` None:
    ``+ 1/2``, QCFS's float ops), else ``v + x·scale``, written into ``state.v`` when ``inplace``."""
    if state is None:
        return shifted(x, scale, 0.5 if v_init is None else v_init.to(x.dtype))
    return state.v.addcmul_(x, scale) if inplace else torch.addcmul(state.v, x, scale)


def _fire(v: torch.Tensor, tau: int, out: Optional[torch.Tensor] = None,
          emitted: Optional[torch.Tensor] = None, lower: int = 0) -> torch.Tensor:
    """Spike counts ``clamp(floor(v), lower, τ)`` (into ``out`` if given); subtracts them from ``v``.
    With ``emitted`` (a signed neuron's net count so far) the lower bound is ``-min(emitted, τ)``.
    In-place operations only: no memory per step, and usable with autograd on."""
    spikes = torch.floor(v, out=out)
    if emitted is None:
        spikes.clamp_(lower, tau)
    else:  # max(n, -min(c, τ)) = -min(-n, c, τ)
        spikes.neg_().clamp_(max=emitted).clamp_(max=tau).neg_().clamp_(max=tau)
    v -= spikes
    return spikes


def _gn_update(x: torch.Tensor, state: Optional[NeuronState], threshold: torch.Tensor, tau: int,
               inplace: bool, out: Optional[torch.Tensor] = None, v_init: Optional[torch.Tensor] = None,
               signed: bool = False, two_sided: bool = False):
    """(spikes, new state, θ in x's dtype) of one GN step; ``inplace`` updates ``state``'s tensors
    themselves and ``out`` receives the spike counts."""
    threshold = threshold.to(x.dtype)
    v = _integrate(x, state, tau / threshold, inplace, v_init)
    if two_sided:  # up to τ negative spikes a step, whatever was emitted before: nothing to remember
        return _fire(v, tau, out, lower=-tau), NeuronState(v), threshold
    if not signed:
        return _fire(v, tau, out), NeuronState(v), threshold
    if state is None:  # nothing emitted yet: the first step is the unsigned one
        spikes = _fire(v, tau, out)  # the count is a float32 copy: exact in any dtype of x, never aliased
        return spikes, NeuronState(v, spikes.to(torch.float32, copy=True)), threshold
    spikes = _fire(v, tau, out, emitted=state.count)
    count = state.count.add_(spikes) if inplace else state.count + spikes
    return spikes, NeuronState(v, count), threshold


def gn_step(x: torch.Tensor, state: Optional[NeuronState], threshold: torch.Tensor, tau: int,
            v_init: Optional[torch.Tensor] = None, signed: bool = False, two_sided: bool = False):
    """One step of a Group Neuron with ``tau`` members; returns ``(out, spikes, new_state)``.

    ``spikes`` counts the members that fired (integers in [0, τ], as floats; in [-τ, τ] when
    ``signed``, see the module docstring, or ``two_sided``: the neuron of a two-sided QCFS, whose
    first step is ``clamp(floor(x·τ/θ + 1/2), -τ, τ)``); ``out = spikes·θ/τ``. ``state=None`` starts
    from the initial state: the membrane ``v_init`` (in units of one spike, broadcast against ``x``;
    None: 1/2) before the first input. Pure: neither ``x`` nor ``state`` is modified.
    """
    spikes, state, threshold = _gn_update(x, state, threshold, tau, inplace=False, v_init=v_init, signed=signed,
                                          two_sided=two_sided)
    return level_value(spikes, tau, threshold), spikes, state


def if_step(x: torch.Tensor, state: Optional[NeuronState], threshold: torch.Tensor,
            v_init: Optional[torch.Tensor] = None, signed: bool = False, two_sided: bool = False):
    """One step of an integrate-and-fire neuron; returns ``(out, spikes, new_state)``.
    It is the Group Neuron with one member: ``clamp(floor(v), 0, 1)`` is ``v >= 1``."""
    return gn_step(x, state, threshold, 1, v_init, signed, two_sided)


@functools.cache
def _compile_gn_step():
    return torch.compile(gn_step)


def compiled_gn_step(x: torch.Tensor, state: Optional[NeuronState], threshold: torch.Tensor, tau: int,
                     v_init: Optional[torch.Tensor] = None, signed: bool = False, two_sided: bool = False):
    """``gn_step`` compiled by ``torch.compile`` into one fused pass over memory, for long runs.

    The first call for each τ, dtype and shape compiles (about 20 s on a CPU, which needs a C++
    compiler). Spike counts and states equal ``gn_step``'s up to float rounding.
    """
    return _compile_gn_step()(x, state, threshold, tau, v_init, signed, two_sided)


class _NoGradient(torch.autograd.Function):
    """The identity on a neuron's output, whose backward raises: a floor passes no gradient, and a
    silent zero would read as a network that cannot learn."""

    @staticmethod
    def forward(ctx, out: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        return out.view_as(out)

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError("backward through a groupsnn spiking neuron: its spike counts have no gradient, "
                           "so SNN training through time is not supported; train the QCFS network "
                           "(groupsnn.prepare) and convert it")


class StatefulModule(nn.Module):
    """A module of an SNN with state, SpikingJelly-style.

    ``step_mode="s"``: input ``[B, ...]`` is one time step. ``step_mode="m"``: input ``[T, B, ...]``
    is T steps, run in order. The state persists across calls until ``reset()``.
    """

    def __init__(self, step_mode: str = "s"):
        super().__init__()
        if step_mode not in ("s", "m"):
            raise ValueError(f"step_mode must be 's' (single step) or 'm' (multi step), got {step_mode!r}")
        self.step_mode = step_mode
        self.state: Optional[tuple] = None

    def reset(self) -> None:
        self.state = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "s":
            return self._single_step(x)
        return torch.stack([self._single_step(x_t) for x_t in x])

    def _single_step(self, x: torch.Tensor) -> torch.Tensor:
        """The output of one step from ``self.state``, which it advances."""
        raise NotImplementedError


class SpikingNeuron(StatefulModule):
    """A Group Neuron of ``tau`` members (IF: one) with ``threshold`` θ; ``step(x, state) -> (out,
    spikes, new_state)`` is ``gn_step``. ``compiled=True`` runs ``compiled_gn_step`` instead.

    ``forward(x, inplace=True)`` (single-step mode, under ``torch.no_grad()``) writes the output into
    ``x``, which must not be needed afterwards: no memory is allocated per step, as with
    ``nn.ReLU(inplace=True)``. The membrane is always updated in place (the module owns its state).

    The buffer ``v_init`` is the initial membrane (in units of one spike, e.g. one per channel,
    shape ``[C, 1, 1]``); None, as ``convert`` makes it, is 1/2 everywhere. ``groupsnn.correct``
    sets it. ``signed=True`` also emits negative spikes (see the module docstring); ``two_sided=True``
    up to τ a step whatever came before (the neuron of a two-sided QCFS).
    """

    tau = 1

    def __init__(self, threshold, step_mode: str = "s", compiled: bool = False, signed: bool = False,
                 two_sided: bool = False):
        super().__init__(step_mode)
        self.threshold = nn.Parameter(torch.as_tensor(threshold, dtype=torch.float32).detach().clone())
        self.register_buffer("v_init", None)
        self.compiled = compiled
        self.signed = signed
        self.two_sided = two_sided

    def step(self, x: torch.Tensor, state: Optional[NeuronState]):
        step = compiled_gn_step if self.compiled else gn_step
        return step(x, state, self.threshold, self.tau, self.v_init, self.signed, self.two_sided)

    def forward(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        if inplace and self.step_mode == "s" and not torch.is_grad_enabled():
            return self._single_step(x, inplace=True)
        return super().forward(x)

    def _single_step(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        out = self._advance(x, inplace)
        if torch.is_grad_enabled() and (x.requires_grad or self.threshold.requires_grad):
            return _NoGradient.apply(out, x, self.threshold)
        return out

    def _advance(self, x: torch.Tensor, inplace: bool) -> torch.Tensor:
        if self.compiled:
            out, _, self.state = self.step(x, self.state)
            return out
        # gn_step's operations, in the buffers of the state and (if allowed) of the input
        spikes, self.state, threshold = _gn_update(x, self.state, self.threshold, self.tau, inplace=True,
                                                   out=x if inplace else None, v_init=self.v_init,
                                                   signed=self.signed, two_sided=self.two_sided)
        return level_value(spikes, self.tau, threshold, inplace=True)

    def extra_repr(self) -> str:
        return f"step_mode={self.step_mode!r}" + ", signed=True" * self.signed + ", two_sided=True" * self.two_sided


class IFNeuron(SpikingNeuron):
    """Integrate-and-fire neuron: threshold θ, membrane starts at θ/2, reset by subtraction."""


class GroupNeuron(SpikingNeuron):
    """Group Neuron of ``tau`` IF members (thresholds iθ/τ) sharing one membrane; see ``gn_step``."""

    def __init__(self, threshold, tau: int, step_mode: str = "s", compiled: bool = False, signed: bool = False,
                 two_sided: bool = False):
        super().__init__(threshold, step_mode, compiled, signed, two_sided)
        if int(tau) != tau or tau < 1:
            raise ValueError(f"tau (members per Group Neuron) must be a positive integer, got {tau!r}")
        self.tau = int(tau)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, " + super().extra_repr()


class PoolState(NamedTuple):
    total: torch.Tensor   # the inputs summed over the steps so far
    pooled: torch.Tensor  # pool(total)


def max_pool_step(x: torch.Tensor, state: Optional[PoolState], pool: nn.Module):
    """One step of max-pooling on rates; returns ``(out, new_state)``.

    ``out`` is the increase of ``pool`` applied to the inputs summed so far, so the outputs of steps
    1..T sum to ``pool(x_1 + ... + x_T)``: the pooled rate is exact at every T. (Max-pooling each
    step's spikes alone over-counts: any spike in the window passes.) Step 1 is exactly ``pool(x)``;
    the increase is at most the window's largest input, so spike counts stay within [0, τ]
    ([-τ, τ] for signed neurons).
    """
    if state is None:
        pooled = pool(x)
        return pooled, PoolState(x, pooled)
    total = state.total + x
    pooled = pool(total)
    return pooled - state.pooled, PoolState(total, pooled)


class RateMaxPool(StatefulModule):
    """A max-pooling module ``pool`` of an SNN, applied to rates; see ``max_pool_step``."""

    def __init__(self, pool: nn.Module, step_mode: str = "s"):
        super().__init__(step_mode)
        self.pool = pool

    def _single_step(self, x: torch.Tensor) -> torch.Tensor:
        out, self.state = max_pool_step(x, self.state, self.pool)
        return out
