"""Expectation compensation: operations that do not commute with averaging over time, run on rates.

What a spiking layer passes on is a rate: its outputs averaged over the steps so far. An operation
f that is not linear (GELU, SiLU, sigmoid, softmax, LayerNorm, ...) applied to each step's input
gives the mean of f(x_t), not f of the mean. A compensated f keeps the running sum of its inputs and
at step t emits what makes the sum of its outputs equal t·f(mean input so far), the expectation
compensation of Huang et al. (ACM MM 2024) and SpikeZIP-TF (ICML 2024). Step 1 emits f(x_1) itself,
so at T = 1 the SNN computes the ANN's operations exactly; under constant input the outputs are
f(x) at every step, up to float rounding.

Such an operation multiplies: ``stats`` charges it as multiply-accumulates at every step (and a
weight layer its output feeds directly, without a quantiser in front, too).
"""
from typing import Callable, NamedTuple, Optional

import torch

from .neurons import StatefulModule


class CompensatedState(NamedTuple):
    totals: tuple          # each input summed over the steps so far
    emitted: torch.Tensor  # the outputs summed so far: t·f(totals / t)
    steps: int


def compensated_step(xs: tuple, state: Optional[CompensatedState], fn: Callable):
    """One step of ``fn`` on rates; returns ``(out, new_state)``. ``xs`` are this step's inputs (one
    for an activation, two for a product q·kᵀ). The outputs of steps 1..t sum to ``t·fn(means of the
    inputs over steps 1..t)``; step 1 is ``fn(*xs)``. Pure: neither ``xs`` nor ``state`` is modified."""
    if state is None:
        out = fn(*xs)
        return out, CompensatedState(tuple(x.clone() for x in xs), out.clone(), 1)
    steps = state.steps + 1
    totals = tuple(total + x for total, x in zip(state.totals, xs))
    emitted = fn(*(total / steps for total in totals)) * steps
    return emitted - state.emitted, CompensatedState(totals, emitted, steps)


class TensorMethod:
    """``TensorMethod("softmax", -1)(x)`` is ``x.softmax(-1)``; further tensors come before the
    arguments (``TensorMethod("matmul")(a, b)`` is ``a.matmul(b)``). A named, copyable callable."""

    def __init__(self, name: str, *args, **kwargs):
        self.name, self.args, self.kwargs = name, args, kwargs

    def __call__(self, first: torch.Tensor, *tensors: torch.Tensor):
        return getattr(first, self.name)(*tensors, *self.args, **self.kwargs)

    def __repr__(self) -> str:
        return f"Tensor.{self.name}"


class BoundCall(torch.nn.Module):
    """``fn(*xs, *args, **kwargs)``, holding the tensors among ``args`` and ``kwargs`` (the weight
    and bias an ``F.layer_norm`` call takes, say) as its own parameters and buffers, so that the
    network's state dict carries them."""

    def __init__(self, fn: Callable, args: tuple, kwargs: dict):
        super().__init__()
        self.fn = fn

        def hold(name: str, value):
            if not isinstance(value, torch.Tensor):
                return value
            if isinstance(value, torch.nn.Parameter):
                self.register_parameter(name, value)
            else:
                self.register_buffer(name, value)
            return _Slot(name)

        self.args = tuple(hold(f"arg{i}", a) for i, a in enumerate(args))
        self.kwargs = {k: hold(k, v) for k, v in kwargs.items()}

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        def value(a):
            return getattr(self, a.name) if isinstance(a, _Slot) else a
        return self.fn(*xs, *map(value, self.args), **{k: value(v) for k, v in self.kwargs.items()})

    def extra_repr(self) -> str:
        return getattr(self.fn, "__name__", repr(self.fn))


class _Slot(NamedTuple):
    name: str  # the BoundCall attribute holding a tensor argument


class Compensated(StatefulModule):
    """``fn`` (a module, or a function of one or more tensors) applied to rates; see
    ``compensated_step``."""

    def __init__(self, fn: Callable, step_mode: str = "s"):
        super().__init__(step_mode)
        self.fn = fn

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "s":
            return self._single_step(*xs)
        return torch.stack([self._single_step(*step) for step in zip(*xs)])

    def _single_step(self, *xs: torch.Tensor) -> torch.Tensor:
        out, self.state = compensated_step(xs, self.state, self.fn)
        return out

    def extra_repr(self) -> str:
        return "" if isinstance(self.fn, torch.nn.Module) else f"fn={self.fn!r}"
