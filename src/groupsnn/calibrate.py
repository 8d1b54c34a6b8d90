"""Convert networks that were trained without QCFS: ``calibrate`` turns a pretrained ReLU network into
one ready for ``convert`` by setting each activation's threshold θ to a high percentile of its
outputs on a few batches (the robust normalisation of Rueckauer et al., 2017), per layer or per
channel, optionally after folding BatchNorm into the preceding conv/linear (``fuse_batchnorm``).

The percentile is streamed: each activation keeps a fixed-size histogram of its positive outputs
(``StreamingHistogram``), so memory stays bounded whatever the amount of calibration data.
"""
import math
from itertools import chain, islice
from typing import Iterable, Optional

import torch
import torch.nn as nn

from .convert import prepare
from .fold import fuse_batchnorm
from .progress import progress_bar
from .qcfs import QCFS
from .recipe import record
from .runtime import model_device


class StreamingHistogram:
    """Counts of the positive values of each of ``channels`` streams in ``bins`` equal bins over [0, hi].

    A stream's ``hi`` starts at its first maximum and doubles (as often as needed) when a larger
    value arrives; pairs of adjacent bins then merge, which loses nothing because the old bin
    edges are edges of the new bins. A percentile is known to within one bin, hi/bins < 2·max/bins.
    """

    def __init__(self, channels: int = 1, bins: int = 2048, device=None):
        if bins < 2 or bins & (bins - 1):
            raise ValueError(f"bins must be a power of two (bins merge pairwise), got {bins}")
        self.counts = torch.zeros(channels, bins, dtype=torch.int64, device=device)
        self.hi = torch.zeros(channels, dtype=torch.float64, device=device)  # 0: nothing positive yet
        self.max = torch.zeros(channels, dtype=torch.float64, device=device)

    def update(self, x: torch.Tensor) -> None:
        """Add ``x`` of shape [channels, n]; values <= 0 are ignored."""
        x = x.detach().to(torch.float64)
        channels, bins = self.counts.shape
        self.max = torch.maximum(self.max, x.amax(dim=1))
        grow = self.max > self.hi
        if grow.any():
            doublings = torch.ceil(torch.log2(self.max / self.hi)).clamp(min=0)
            factor = torch.where(grow & (self.hi > 0), 2.0 ** doublings, 1.0)
            merged = torch.div(torch.arange(bins, device=x.device), factor[:, None], rounding_mode="floor")
            self.counts = torch.zeros_like(self.counts).scatter_add_(1, merged.long(), self.counts)
            self.hi = torch.where(grow, torch.where(self.hi > 0, self.hi * factor, self.max), self.hi)
        channel, i = torch.nonzero(x > 0, as_tuple=True)
        index = (x[channel, i] * (bins / self.hi[channel])).long().clamp_(max=bins - 1)
        self.counts += torch.bincount(channel * bins + index, minlength=channels * bins).view(channels, bins)

    def percentile(self, q: float) -> torch.Tensor:
        """The ``q``-th percentile (0 < q <= 100) of each stream's positive values, as
        ``torch.quantile`` defines it with values spread evenly inside each bin (exact at q = 100:
        the maximum); 0 for a stream with none."""
        if q == 100:
            return self.max.clamp(min=0)
        counts = self.counts.to(torch.float64)
        cdf = counts.cumsum(dim=1)
        # torch.quantile's value is the order statistic at q·(n-1) (from 0); the k-th value in a bin
        # of m evenly spread values sits at (k - 1/2)/m of the bin's width
        rank = (cdf[:, -1:] - 1).clamp(min=0) * (q / 100) + 0.5
        b = torch.searchsorted(cdf, rank).clamp_(max=counts.shape[1] - 1)  # first bin reaching rank
        in_bin = counts.gather(1, b)
        below = cdf.gather(1, b) - in_bin
        position = b + ((rank - below) / in_bin.clamp(min=1)).clamp(0, 1)
        return torch.minimum(position.squeeze(1) * self.hi / counts.shape[1], self.max.clamp(min=0))


def _threshold(hist: StreamingHistogram, percentile: float, shape: tuple, name: str) -> torch.Tensor:
    theta = hist.percentile(percentile)
    if not bool((theta > 0).any()):
        raise ValueError(f"calibrate(): activation {name!r} had no positive output on the calibration "
                         "data; check the data (normalisation?) or use more batches")
    # a channel that never fired gets the layer's largest threshold (any positive value would do)
    theta = torch.where(theta > 0, theta, theta.max())
    return theta.to(torch.float32).reshape(shape)


@torch.no_grad()
def calibrate(model: nn.Module, loader: Iterable, percentile: float = 99.9, per_channel: bool = False,
              levels: Optional[int] = None, batches: Optional[int] = 10, maxpool: str = "keep",
              fuse_bn: bool = False, inplace: bool = False, bins: int = 2048, progress: bool = True,
              spike_inputs: bool = False) -> nn.Module:
    """Return the trained ReLU network ``model`` ready for ``convert``, without retraining.

    Every ReLU call site becomes a QCFS with ``levels`` (None: clip only, ``clamp(x, 0, θ)``) whose
    threshold θ is the ``percentile``-th percentile (100: the maximum) of that ReLU's positive
    outputs over the first ``batches`` batches of ``loader`` (None: all of it; use training data),
    one θ per layer or, with ``per_channel``, per channel (dim 1). Max-pooling is kept
    (``maxpool="keep"``; ``convert`` makes it a ``RateMaxPool``, exact on rates) or replaced by
    average pooling (``"avg"``, as in ``prepare``; it breaks networks trained with max-pooling).
    ``fuse_bn`` folds BatchNorm into the preceding conv/linear where sound (``groupsnn.fold``). The
    result is in eval mode and follows ``prepare``'s contract (``inplace=True`` rewrites ``model``
    itself or raises); its recipe notes these settings, so a checkpoint of it rebuilds the same network. ``progress`` shows a bar
    over the batches on a terminal (``groupsnn.progress``). ``spike_inputs`` as in ``prepare``: the
    two-sided quantisers it adds get θ from a percentile of their inputs' magnitudes.
    """
    QCFS(levels)  # validates levels before any work
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")
    if batches is not None and batches < 1:
        raise ValueError(f"batches must be a positive integer or None (all), got {batches!r}")
    # threshold ∞ with no levels is ReLU exactly: the statistics are those of the original network
    net = prepare(model, levels=None, threshold=math.inf, maxpool=maxpool, inplace=inplace,
                  spike_inputs=spike_inputs).eval()
    device = model_device(net)
    inputs = ((b[0] if isinstance(b, (tuple, list)) else b).to(device) for b in islice(loader, batches))
    first = next(inputs, None)
    if first is None:
        raise ValueError("calibrate(): the data loader yielded no batches")
    if fuse_bn:  # the first batch shows where folding is sound (see groupsnn.fold)
        fuse_batchnorm(net, example_input=first[:1], inplace=True)
    activations = {m: name for name, m in net.named_modules() if isinstance(m, QCFS)}
    histograms, shapes = {}, {}

    def observe(module: nn.Module, inputs, out: torch.Tensor) -> None:
        if module not in histograms:
            channels = out.shape[1] if per_channel else 1
            histograms[module] = StreamingHistogram(channels, bins, out.device)
            shapes[module] = (channels, *[1] * (out.dim() - 2)) if per_channel else ()
        flat = out.transpose(0, 1).reshape(out.shape[1], -1) if per_channel else out.reshape(1, -1)
        if module.two_sided:  # a quantiser of [-θ, θ]: θ is a percentile of |x|
            flat = flat.abs()
        histograms[module].update(flat)

    hooks = [m.register_forward_hook(observe) for m in activations]
    length = len(loader) if hasattr(loader, "__len__") else None
    total = length if batches is None else batches if length is None else min(batches, length)
    try:
        for x in progress_bar(chain([first], inputs), desc="calibrate", total=total, leave=False,
                              disable=not progress):
            net(x)
    finally:
        for hook in hooks:
            hook.remove()
    for m, name in activations.items():
        if m not in histograms:
            raise ValueError(f"calibrate(): activation {name!r} never ran on the calibration data")
        m.threshold = nn.Parameter(_threshold(histograms[m], percentile, shapes[m], name).to(device))
        m.levels = levels
    return record(net, levels=levels, calibration={"percentile": percentile, "per_channel": per_channel,
                                                   "batches": batches, "bins": bins})
