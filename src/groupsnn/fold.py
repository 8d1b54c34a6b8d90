"""Folding BatchNorm into the convolution or linear layer before it, only where that is sound.

BatchNorm normalises dim 1. A convolution's output ``[B, C, ...]`` has its channels there, so
conv -> BatchNorm (with matching channels) always folds. A linear layer's features are its last
dim: ``Linear -> BatchNorm1d`` folds only where the linear output is ``[B, features]``, which only
an example input can show (on ``[B, tokens, features]`` BatchNorm1d normalises the tokens' dim).
"""
import copy
from collections import Counter
from typing import Iterable, Optional

import torch
import torch.fx as fx
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from .graph import tensor_shapes, traced
from .recipe import record

_CONVS = {nn.Conv1d: 3, nn.Conv2d: 4, nn.Conv3d: 5}  # the output's dims with a batch


def foldable_pairs(model: nn.Module, graph: fx.Graph,
                   shapes: Optional[dict] = None) -> list[tuple[str, str]]:
    """``(layer, batchnorm)`` names of each BatchNorm that directly follows a conv or linear layer
    (its only user, each called once) and can be folded into it; ``shapes`` (``graph.tensor_shapes``)
    lets linear layers fold too."""
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    pairs = []
    for node in graph.nodes:
        layer_node = node.args[0] if node.op == "call_module" and node.args else None
        if not isinstance(layer_node, fx.Node) or layer_node.op != "call_module" \
                or len(layer_node.users) != 1 or calls[node.target] != 1 or calls[layer_node.target] != 1:
            continue
        bn, layer = model.get_submodule(node.target), model.get_submodule(layer_node.target)
        if not isinstance(bn, _BatchNorm) or not bn.track_running_stats or bn.running_mean is None:
            continue
        if type(layer) in _CONVS:
            sound = layer.out_channels == bn.num_features and (
                shapes is None or len(shapes.get(layer_node, ())) == _CONVS[type(layer)])
        elif type(layer) is nn.Linear:
            sound = (shapes is not None and len(shapes.get(layer_node, ())) == 2
                     and layer.out_features == bn.num_features)
        else:
            sound = False
        if sound:
            pairs.append((layer_node.target, node.target))
    return pairs


def fold_pairs(model: nn.Module, pairs: Iterable[tuple[str, str]]) -> nn.Module:
    """Fold each ``(layer, batchnorm)`` of ``pairs`` in ``model`` itself (the BatchNorm becomes
    ``nn.Identity``) and note them in its recipe; returns ``model``."""
    pairs = [tuple(p) for p in pairs]
    for layer_name, bn_name in pairs:
        layer, bn = model.get_submodule(layer_name), model.get_submodule(bn_name)
        fuse = fuse_linear_bn_eval if isinstance(layer, nn.Linear) else fuse_conv_bn_eval
        model.set_submodule(layer_name, fuse(layer.eval(), bn.eval()))
        model.set_submodule(bn_name, nn.Identity())
    return record(model, fuse_bn=[list(p) for p in pairs])


def fuse_batchnorm(model: nn.Module, example_input: Optional[torch.Tensor] = None,
                   inplace: bool = False) -> nn.Module:
    """Fold every BatchNorm that directly follows a conv or linear layer into that layer, with its
    running statistics (the module docstring says where that is sound; ``example_input``, one batch,
    lets linear layers fold). In eval mode the outputs are unchanged up to float rounding. BatchNorm
    after an activation stays; an untraceable model is returned unfolded, with a warning."""
    net = model if inplace else copy.deepcopy(model)
    graph = traced(net, "fuse_batchnorm()", "BatchNorm left unfolded")
    if graph is None:
        return net
    shapes = None if example_input is None else tensor_shapes(net, graph, example_input)
    return fold_pairs(net, foldable_pairs(net, graph, shapes))
