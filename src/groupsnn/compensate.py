"""Expectation compensation: operations that do not commute with averaging over time, run on rates.

What a spiking layer passes on is a rate: its outputs averaged over the steps so far. An operation
f that is not linear (GELU, SiLU, sigmoid, softmax, LayerNorm, ...) applied to each step's input
gives the mean of f(x_t), not f of the mean. A compensated f keeps the running sum of its inputs and
at step t emits what makes the sum of its outputs equal t·f(mean input so far), the expectation
compensation of Huang et al. (ACM MM 2024) and SpikeZIP-TF (ICML 2024). Step 1 emits f(x_1) itself,
so at T = 1 the SNN computes the ANN's operations exactly; under constant input the outputs are
f(x) at every step, up to float rounding.

Such an operation multiplies: ``stats`` charges it, as it charges the layers its output feeds, as
multiply-accumulates, not as synaptic operations of spikes.
"""
from typing import Callable, NamedTuple, Optional

import torch

from .neurons import StatefulModule


class CompensatedState(NamedTuple):
    total: torch.Tensor    # the inputs summed over the steps so far
    emitted: torch.Tensor  # the outputs summed so far: t·f(total / t)
    steps: int


def compensated_step(x: torch.Tensor, state: Optional[CompensatedState], fn: Callable):
    """One step of ``fn`` on rates; returns ``(out, new_state)``. The outputs of steps 1..t sum to
    ``t·fn(mean of x_1..x_t)``; step 1 is ``fn(x)``. Pure: neither ``x`` nor ``state`` is modified."""
    if state is None:
        out = fn(x)
        return out, CompensatedState(x.clone(), out.clone(), 1)
    steps = state.steps + 1
    total = state.total + x
    emitted = fn(total / steps) * steps
    return emitted - state.emitted, CompensatedState(total, emitted, steps)


class Compensated(StatefulModule):
    """``fn`` (a module or a function of one tensor) applied to rates; see ``compensated_step``."""

    def __init__(self, fn: Callable, step_mode: str = "s"):
        super().__init__(step_mode)
        self.fn = fn

    def _single_step(self, x: torch.Tensor) -> torch.Tensor:
        out, self.state = compensated_step(x, self.state, self.fn)
        return out

    def extra_repr(self) -> str:
        return "" if isinstance(self.fn, torch.nn.Module) else f"fn={self.fn!r}"
