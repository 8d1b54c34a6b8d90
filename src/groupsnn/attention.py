"""Traceable twins of torch's attention layers: the same weights and computation, written as
linear layers, matrix products and a softmax, so that ``prepare`` and ``convert`` see every
operation (torch's own ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` compute inside
fused kernels the converter cannot enter). ``twins(model)`` swaps them in; masks are not supported.
"""
import copy
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


def _no_masks(*masks: Optional[torch.Tensor]) -> None:
    if any(m is not None and m is not False for m in masks):
        raise ValueError("the traceable attention twins (groupsnn.attention) take no attention masks or causal "
                         "flag; convert an unmasked network, or write the masking into forward() yourself")


class MultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` (one embedding size for query, key and value, no added key/value
    biases or zero attention) as q, k, v projections, ``softmax(q·kᵀ/√d)·v`` and the output projection."""

    def __init__(self, torch_attention: nn.MultiheadAttention):
        super().__init__()
        a = torch_attention
        if not a._qkv_same_embed_dim or a.bias_k is not None or a.add_zero_attn:
            raise ValueError("MultiheadAttention with kdim/vdim, add_bias_kv or add_zero_attn has no traceable twin")
        width, bias = a.embed_dim, a.in_proj_bias is not None
        self.heads, self.batch_first, self.dropout = a.num_heads, a.batch_first, a.dropout
        self.q, self.k, self.v = (nn.Linear(width, width, bias=bias) for _ in range(3))
        for i, projection in enumerate((self.q, self.k, self.v)):
            projection.weight = nn.Parameter(a.in_proj_weight.detach()[i * width:(i + 1) * width].clone())
            if bias:
                projection.bias = nn.Parameter(a.in_proj_bias.detach()[i * width:(i + 1) * width].clone())
        self.out_proj = a.out_proj

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        _no_masks(key_padding_mask, attn_mask, is_causal)
        if not self.batch_first:  # [tokens, batch, width] -> [batch, tokens, width]
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        batch, tokens, width = query.shape
        heads = self.q(query).reshape(batch, tokens, self.heads, -1).transpose(1, 2)
        keys = self.k(key).reshape(batch, key.shape[1], self.heads, -1).transpose(1, 2)
        values = self.v(value).reshape(batch, value.shape[1], self.heads, -1).transpose(1, 2)
        weights = (heads @ keys.transpose(-2, -1) * (width // self.heads) ** -0.5).softmax(dim=-1)
        weights = F.dropout(weights, self.dropout, self.training)
        out = self.out_proj((weights @ values).transpose(1, 2).reshape(batch, tokens, width))
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out, (weights.mean(dim=1) if average_attn_weights else weights) if need_weights else None


class TransformerEncoderLayer(nn.Module):
    """``nn.TransformerEncoderLayer`` with its attention as a ``MultiheadAttention`` twin and its
    activation as a module (ReLU or GELU), post-norm or pre-norm as the original."""

    def __init__(self, layer: nn.TransformerEncoderLayer):
        super().__init__()
        self.self_attn = MultiheadAttention(layer.self_attn)
        self.linear1, self.linear2, self.norm1, self.norm2 = layer.linear1, layer.linear2, layer.norm1, layer.norm2
        self.dropout, self.dropout1, self.dropout2 = layer.dropout, layer.dropout1, layer.dropout2
        activation = layer.activation
        self.activation = {F.relu: nn.ReLU(), F.gelu: nn.GELU()}.get(activation, activation)
        if not isinstance(self.activation, nn.Module):
            raise ValueError(f"TransformerEncoderLayer activation {activation!r} has no traceable twin; "
                             "pass activation='relu', 'gelu' or a module")
        self.norm_first = layer.norm_first

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout1(self.self_attn(x, x, x, need_weights=False)[0])

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        _no_masks(src_mask, src_key_padding_mask, is_causal)
        if self.norm_first:
            src = src + self._attention(self.norm1(src))
            return src + self._feed_forward(self.norm2(src))
        src = self.norm1(src + self._attention(src))
        return self.norm2(src + self._feed_forward(src))


class TransformerEncoder(nn.Module):
    """``nn.TransformerEncoder``: its layers' twins in turn, then its norm if it has one."""

    def __init__(self, encoder: nn.TransformerEncoder):
        super().__init__()
        self.layers = nn.ModuleList(TransformerEncoderLayer(layer) for layer in encoder.layers)
        self.norm = encoder.norm

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        _no_masks(mask, src_key_padding_mask, is_causal)
        for layer in self.layers:
            src = layer(src)
        return src if self.norm is None else self.norm(src)


ATTENTION_TWINS = {nn.TransformerEncoder: TransformerEncoder, nn.TransformerEncoderLayer: TransformerEncoderLayer,
                   nn.MultiheadAttention: MultiheadAttention}


def twins(model: nn.Module, inplace: bool = False) -> nn.Module:
    """``model`` (a copy unless ``inplace``) with each torch attention layer replaced by its twin;
    in eval mode the outputs are the same up to float rounding."""
    net = model if inplace else copy.deepcopy(model)
    if type(net) in ATTENTION_TWINS:
        return ATTENTION_TWINS[type(net)](net)
    _swap_children(net)
    return net


def _swap_children(module: nn.Module) -> None:
    for name, child in module.named_children():
        if type(child) in ATTENTION_TWINS:
            setattr(module, name, ATTENTION_TWINS[type(child)](child))  # a twin makes its own inner twins
        else:
            _swap_children(child)
