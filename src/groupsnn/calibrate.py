"""Convert networks that were trained without QCFS: ``calibrate`` turns a pretrained ReLU network into
one ready for ``convert`` by setting each activation's threshold θ to a high percentile of its
outputs on a few batches (the robust normalisation of Rueckauer et al., 2017), per layer or per
channel, optionally after folding BatchNorm into the preceding conv/linear (``fuse_batchnorm``).

The percentile is streamed: each activation keeps a fixed-size histogram of its positive outputs
(``StreamingHistogram``), so memory stays bounded whatever the amount of calibration data.
"""
import copy
import math
import warnings
from collections import Counter
from itertools import islice
from typing import Iterable, Optional

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from .convert import prepare, record, trace
from .qcfs import QCFS
from .runtime import model_device

_FUSE = {nn.Conv1d: fuse_conv_bn_eval, nn.Conv2d: fuse_conv_bn_eval, nn.Conv3d: fuse_conv_bn_eval,
         nn.Linear: fuse_linear_bn_eval}


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


def fuse_batchnorm(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Fold every BatchNorm that directly follows a conv or linear layer (its only user) into that
    layer, with the running statistics; the BatchNorm becomes ``nn.Identity``. In eval mode the
    outputs are unchanged up to float rounding. BatchNorm after an activation stays. (Linear ->
    BatchNorm1d is folded as on [B, C] inputs: BatchNorm1d over [B, C, L] normalises another dim.)"""
    net = model if inplace else copy.deepcopy(model)
    try:
        graph = trace(net)
    except Exception as err:  # noqa: BLE001  (anything fx raises means: cannot see the layer order)
        warnings.warn(f"fuse_batchnorm: torch.fx cannot trace {type(net).__name__} ({type(err).__name__}); "
                      "BatchNorm left unfused", stacklevel=2)
        return net
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    for node in graph.nodes:
        layer_node = node.args[0] if node.op == "call_module" and node.args else None
        if not isinstance(layer_node, torch.fx.Node) or layer_node.op != "call_module" \
                or len(layer_node.users) != 1 or calls[node.target] != 1 or calls[layer_node.target] != 1:
            continue
        bn, layer = net.get_submodule(node.target), net.get_submodule(layer_node.target)
        fuse = _FUSE.get(type(layer))
        if fuse is not None and isinstance(bn, _BatchNorm) and bn.track_running_stats:
            net.set_submodule(layer_node.target, fuse(layer.eval(), bn.eval()))
            net.set_submodule(node.target, nn.Identity())
    return record(net, fuse_bn=True)


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
              fuse_bn: bool = False, inplace: bool = False, bins: int = 2048) -> nn.Module:
    """Return the trained ReLU network ``model`` ready for ``convert``, without retraining.

    Every ReLU call site becomes a QCFS with ``levels`` (None: clip only, ``clamp(x, 0, θ)``) whose
    threshold θ is the ``percentile``-th percentile (100: the maximum) of that ReLU's positive
    outputs over the first ``batches`` batches of ``loader`` (None: all of it; use training data),
    one θ per layer or, with ``per_channel``, per channel (dim 1). Max-pooling is kept
    (``maxpool="keep"``; ``convert`` makes it a ``RateMaxPool``, exact on rates) or replaced by
    average pooling (``"avg"``, as in ``prepare``; it breaks networks trained with max-pooling).
    ``fuse_bn`` folds BatchNorm into the preceding conv/linear. The result is in eval mode and
    follows ``prepare``'s contract (``inplace=True`` rewrites ``model`` itself or raises); its recipe
    notes these settings, so a checkpoint of it rebuilds the same network.
    """
    QCFS(levels)  # validates levels before any work
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")
    if batches is not None and batches < 1:
        raise ValueError(f"batches must be a positive integer or None (all), got {batches!r}")
    # threshold ∞ with no levels is ReLU exactly: the statistics are those of the original network
    net = prepare(model, levels=None, threshold=math.inf, maxpool=maxpool, inplace=inplace).eval()
    if fuse_bn:
        fuse_batchnorm(net, inplace=True)
    activations = {m: name for name, m in net.named_modules() if isinstance(m, QCFS)}
    histograms, shapes = {}, {}

    def observe(module: nn.Module, inputs, out: torch.Tensor) -> None:
        if module not in histograms:
            channels = out.shape[1] if per_channel else 1
            histograms[module] = StreamingHistogram(channels, bins, out.device)
            shapes[module] = (channels, *[1] * (out.dim() - 2)) if per_channel else ()
        flat = out.transpose(0, 1).reshape(out.shape[1], -1) if per_channel else out.reshape(1, -1)
        histograms[module].update(flat)

    hooks = [m.register_forward_hook(observe) for m in activations]
    device = model_device(net)
    try:
        for batch in islice(loader, batches):
            net(batch[0].to(device) if isinstance(batch, (tuple, list)) else batch.to(device))
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
