"""QCFS: the quantisation-clip-floor-shift activation of Bu et al. (ICLR 2022).

    y = θ/L · clamp(floor(x·L/θ + 1/2), 0, L)

θ (``threshold``) is learnable, one per layer (or one per channel, broadcast against the input).
Gradients follow the straight-through estimator of the QCFS reference code, i.e. autograd of
``θ · floor_ste(clamp(x/θ, 0, 1)·L + 1/2) / L`` with ``floor_ste`` passing gradients through:

    dy/dx = 1 where 0 <= x <= θ, else 0
    dy/dθ = (y - x)/θ where 0 <= x <= θ, 1 where x > θ, 0 where x < 0

``levels=None`` clips without quantising, ``y = clamp(x, 0, θ)`` (a calibrated ReLU network, see
``groupsnn.calibrate``), with the same gradients (there y = x inside, so dy/dθ = 0 there).
"""
from typing import Optional, Union

import torch
import torch.nn as nn


# The two functions below are the whole of "τ = L at T = 1 is the QCFS network bit for bit": QCFS
# and the Group Neuron's first step both compute their level with ``shifted`` and their output
# with ``level_value``, the same float operations in the same order.

def shifted(x: torch.Tensor, scale: torch.Tensor, shift=0.5) -> torch.Tensor:
    """``x·scale + shift`` as a new tensor: QCFS's pre-floor value (``scale = L/θ``), and a Group
    Neuron's membrane after its first input (``scale = τ/θ``, ``shift`` its initial membrane)."""
    v = x * scale
    return v.add_(shift)


def level_value(n: torch.Tensor, levels: int, threshold: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """The value of level ``n`` of ``levels``, ``(n/L)·θ`` (in ``n`` itself if ``inplace``), rather
    than ``n·(θ/L)``: the top level is then exactly θ whatever the rounding. For L = 2^k both are
    the exact product rounded once, so one multiplication by θ/L gives the same bits in one pass."""
    if levels & (levels - 1) == 0:
        step = threshold / levels
        return n.mul_(step) if inplace else n * step
    return n.div_(levels).mul_(threshold) if inplace else n / levels * threshold


def quantize(x: torch.Tensor, scale: torch.Tensor, levels: int, lower: int = 0) -> torch.Tensor:
    """Level index ``clamp(floor(x·scale + 1/2), lower, levels)`` with ``scale = levels/θ``."""
    return shifted(x, scale).floor_().clamp_(lower, levels)


class QCFSFunction(torch.autograd.Function):
    """QCFS with the straight-through gradients above, saving only ``x`` and θ for backward.

    The backward pass recomputes what it needs from ``x`` (element-wise work that a compiler fuses
    into the pass it makes anyway) instead of keeping the output alive from forward to backward.
    With ``u = x·L/θ`` and ``n`` the level, ``dy/dθ = (y - x)/θ = (n - u)/L`` inside [0, θ] and
    ``n/L`` (1 above θ, 0 below 0) elsewhere: one expression, ``(n - u·[0 <= x <= θ])/L``.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, threshold: torch.Tensor, levels: int, two_sided: bool = False) -> torch.Tensor:
        ctx.levels, ctx.two_sided = levels, two_sided
        ctx.save_for_backward(x, threshold)
        threshold = threshold.to(x.dtype)
        level = quantize(x, levels / threshold, levels, -levels if two_sided else 0)
        return level_value(level, levels, threshold, inplace=True)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        x, threshold = ctx.saved_tensors
        levels, th = ctx.levels, threshold.to(x.dtype)
        inside = (x >= (-th if ctx.two_sided else 0)) & (x <= th)
        grad_x = grad_th = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.where(inside, grad_y, 0)
        if ctx.needs_input_grad[1]:
            u = x * (levels / th)
            n = torch.add(u, 0.5).floor_().clamp_(-levels if ctx.two_sided else 0, levels)  # the forward's level
            grad = n.sub_(u.mul_(inside)).mul_(grad_y)
            # summed in at least float32: a half-precision sum over B·C·H·W overflows under AMP's loss scale
            grad_th = grad.to(torch.promote_types(grad.dtype, torch.float32)).sum_to_size(threshold.shape) / levels
        return grad_x, grad_th, None, None


def qcfs(x: torch.Tensor, threshold: torch.Tensor, levels: Optional[int], two_sided: bool = False) -> torch.Tensor:
    """Functional QCFS; ``threshold`` broadcasts against ``x`` (a scalar, or e.g. [C, 1, 1]).
    ``levels=None``: clip only, ``clamp(x, 0, θ)``. ``two_sided``: levels -L..L, over [-θ, θ]."""
    th = threshold.to(x.dtype)
    if levels is None:
        return torch.maximum(torch.minimum(x, th), -th) if two_sided else torch.minimum(torch.relu(x), th)
    return QCFSFunction.apply(x, threshold, levels, two_sided)


class QCFS(nn.Module):
    """QCFS activation with L ``levels`` (None: clip only) and a learnable ``threshold`` θ (a
    drop-in for ReLU). ``two_sided=True`` quantises [-θ, θ] to the levels -L..L: the quantiser
    ``prepare(spike_inputs=True)`` puts in front of a weight layer whose input can be negative."""

    def __init__(self, levels: Optional[int] = 8, threshold: Union[float, torch.Tensor] = 8.0,
                 two_sided: bool = False):
        super().__init__()
        if levels is not None and (int(levels) != levels or levels < 1):
            raise ValueError(f"QCFS levels must be a positive integer or None (clip only), got {levels!r}")
        self.levels = None if levels is None else int(levels)
        self.threshold = nn.Parameter(torch.as_tensor(threshold, dtype=torch.float32).clone())
        self.two_sided = two_sided

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return qcfs(x, self.threshold, self.levels, self.two_sided)

    def extra_repr(self) -> str:
        th = self.threshold
        shown = f"threshold={th.item():.4g}" if th.numel() == 1 else f"threshold=per-channel{tuple(th.shape)}"
        return f"levels={self.levels}, {shown}" + ", two_sided=True" * self.two_sided
