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
"""
from typing import NamedTuple, Optional

import torch
import torch.nn as nn



class NeuronState(NamedTuple):
    v: torch.Tensor  # membrane potential in units of one spike (θ/τ for GN, θ for IF)


def gn_step(x: torch.Tensor, state: Optional[NeuronState], threshold: torch.Tensor, tau: int):
    """One step of a Group Neuron with ``tau`` members; returns ``(out, spikes, new_state)``.

    ``spikes`` counts the members that fired (integers in [0, τ], as floats); ``out = spikes·θ/τ``.
    ``state=None`` starts from the initial state.
    """
    threshold = threshold.to(x.dtype)
    v = x * (tau / threshold)
    v += 0.5 if state is None else state.v  # x·τ/θ + 1/2 at the first step: QCFS's float ops
    spikes = torch.floor(v).clamp_(0, tau)
    v -= spikes
    return spikes * (threshold / tau), spikes, NeuronState(v)


def if_step(x: torch.Tensor, state: Optional[NeuronState], threshold: torch.Tensor):
    """One step of an integrate-and-fire neuron; returns ``(out, spikes, new_state)``."""
    threshold = threshold.to(x.dtype)
    v = x * (1 / threshold)
    v += 0.5 if state is None else state.v
    spikes = (v >= 1).to(x.dtype)
    v -= spikes
    return spikes * threshold, spikes, NeuronState(v)


class SpikingNeuron(nn.Module):
    """Stateful wrapper around a step function, SpikingJelly-style.

    ``step_mode="s"``: input ``[B, ...]`` is one time step. ``step_mode="m"``: input ``[T, B, ...]``
    is T steps, run in order. The membrane persists across calls until ``reset()``.
    """

    def __init__(self, threshold, step_mode: str = "s"):
        super().__init__()
        if step_mode not in ("s", "m"):
            raise ValueError(f"step_mode must be 's' (single step) or 'm' (multi step), got {step_mode!r}")
        self.threshold = nn.Parameter(torch.as_tensor(threshold, dtype=torch.float32).detach().clone())
        self.step_mode = step_mode
        self.state: Optional[NeuronState] = None

    def reset(self) -> None:
        self.state = None

    def step(self, x: torch.Tensor, state: Optional[NeuronState]):
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "s":
            return self._single_step(x)
        return torch.stack([self._single_step(x_t) for x_t in x])

    def _single_step(self, x: torch.Tensor) -> torch.Tensor:
        out, _, self.state = self.step(x, self.state)
        return out


class IFNeuron(SpikingNeuron):
    """Integrate-and-fire neuron: threshold θ, membrane starts at θ/2, reset by subtraction."""

    def step(self, x, state):
        return if_step(x, state, self.threshold)

    def extra_repr(self) -> str:
        return f"step_mode={self.step_mode!r}"


class GroupNeuron(SpikingNeuron):
    """Group Neuron of ``tau`` IF members (thresholds iθ/τ) sharing one membrane; see ``gn_step``."""

    def __init__(self, threshold, tau: int, step_mode: str = "s"):
        super().__init__(threshold, step_mode)
        if int(tau) != tau or tau < 1:
            raise ValueError(f"tau (members per Group Neuron) must be a positive integer, got {tau!r}")
        self.tau = int(tau)

    def step(self, x, state):
        return gn_step(x, state, self.threshold, self.tau)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, step_mode={self.step_mode!r}"
