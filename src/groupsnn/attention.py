"""Traceable twins of torch's attention layers: the same weights and computation, written as
linear layers, matrix products and a softmax, so that ``prepare`` and ``convert`` see every
operation (torch's own ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` compute inside
fused kernels the converter cannot enter, and torchvision's Swin attention inside a function that
torch.fx records as one call). ``twins(model)`` swaps them in; masks are not supported.
"""
import copy
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .graph import qualified_name


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


@torch.fx.wrap
def _cyclic_shift(height: int, width: int, window: list[int], shift: list[int]) -> tuple[int, int]:
    """The shift of a map padded to ``height`` x ``width``, none along a side one window covers (as
    torchvision). A function of sizes that tracing records as one call, so the graph has no branch."""
    return tuple(0 if w >= size else s for w, s, size in zip(window, shift, (height, width)))


@torch.fx.wrap
def _shift_mask(height: int, width: int, window: list[int], shift: tuple[int, int], dtype: torch.dtype,
                device: torch.device) -> torch.Tensor:
    """torchvision's mask of shifted windows on a padded ``height`` x ``width`` map, ``[windows, 1,
    tokens, tokens]``: -100 between tokens the cyclic shift brought from different regions, else 0
    (all 0 without a shift). Like ``_cyclic_shift``, a function of sizes; its dtype and device are the
    model's, so that nothing of it comes from the data but its shape: ``convert`` sees a constant,
    not an operation on spikes."""
    regions = torch.zeros(height, width, dtype=dtype, device=device)
    count = 0
    for rows in (slice(0, -window[0]), slice(-window[0], -shift[0]), slice(-shift[0], None)):
        for cols in (slice(0, -window[1]), slice(-window[1], -shift[1]), slice(-shift[1], None)):
            regions[rows, cols] = count
            count += 1
    regions = regions.view(height // window[0], window[0], width // window[1], window[1])
    regions = regions.permute(0, 2, 1, 3).reshape(-1, window[0] * window[1])
    different = regions.unsqueeze(1) != regions.unsqueeze(2)
    return torch.zeros_like(different, dtype=dtype).masked_fill(different, -100.0).unsqueeze(1)


class ShiftedWindowAttention(nn.Module):
    """torchvision's ``ShiftedWindowAttention`` (Swin V1): pad the ``[B, H, W, C]`` map to whole
    windows, shift it cyclically, attend within each window (with the relative position bias and
    the mask of shifted windows), shift back and crop. torchvision computes this in a function that
    torch.fx records as one call, so its softmax and products would run analog in the SNN; here the
    sizes, shift and mask come from functions of sizes alone, the shift and mask are always applied
    (a shift of 0 and a zero mask change nothing), and the projections are the module's linear layers."""

    def __init__(self, swin_attention: nn.Module):
        super().__init__()
        a = swin_attention
        self.window_size, self.shift_size, self.num_heads = list(a.window_size), list(a.shift_size), a.num_heads
        self.attention_dropout, self.dropout = a.attention_dropout, a.dropout
        self.qkv, self.proj = a.qkv, a.proj
        self.relative_position_bias_table = a.relative_position_bias_table
        self.register_buffer("relative_position_index", a.relative_position_index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = x.shape
        (rows, cols), heads = self.window_size, self.num_heads
        tokens = rows * cols
        x = F.pad(x, (0, 0, 0, -width % cols, 0, -height % rows))
        padded_height, padded_width = x.shape[1], x.shape[2]
        shift = _cyclic_shift(padded_height, padded_width, self.window_size, self.shift_size)
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        windows = x.view(batch, padded_height // rows, rows, padded_width // cols, cols, channels)
        windows = windows.permute(0, 1, 3, 2, 4, 5).reshape(batch, -1, tokens, channels)  # [B, windows, tokens, C]
        qkv = self.qkv(windows).reshape(batch, -1, tokens, 3, heads, channels // heads).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv[0] * (channels // heads) ** -0.5, qkv[1], qkv[2]  # [B, windows, heads, tokens, C/heads]
        attn = q @ k.transpose(-2, -1) + self._relative_position_bias()
        table = self.relative_position_bias_table
        attn = attn + _shift_mask(padded_height, padded_width, self.window_size, shift, table.dtype, table.device)
        attn = F.dropout(attn.softmax(-1), self.attention_dropout, self.training)
        out = self.proj((attn @ v).transpose(2, 3).reshape(batch, -1, tokens, channels))
        out = F.dropout(out, self.dropout, self.training)
        out = out.view(batch, padded_height // rows, padded_width // cols, rows, cols, channels)
        out = out.permute(0, 1, 3, 2, 4, 5).reshape(batch, padded_height, padded_width, channels)
        out = torch.roll(out, shifts=(shift[0], shift[1]), dims=(1, 2))
        return out[:, :height, :width, :].contiguous()

    def _relative_position_bias(self) -> torch.Tensor:
        tokens = self.window_size[0] * self.window_size[1]
        bias = self.relative_position_bias_table[self.relative_position_index].view(tokens, tokens, -1)
        return bias.permute(2, 0, 1)  # [heads, tokens, tokens]


# the twin of each layer class, by its qualified name: groupsnn recognises torchvision's layers
# without importing it. Swin V2's attention (cosine attention, a ReLU MLP making the position
# bias) has no twin: it stays one call, which convert refuses as an operation it does not know.
ATTENTION_TWINS = {
    **{qualified_name(layer): twin for layer, twin in ((nn.TransformerEncoder, TransformerEncoder),
                                                        (nn.TransformerEncoderLayer, TransformerEncoderLayer),
                                                        (nn.MultiheadAttention, MultiheadAttention))},
    "torchvision.models.swin_transformer.ShiftedWindowAttention": ShiftedWindowAttention,
}


def twin_of(layer: nn.Module) -> Optional[type]:
    """The twin class of ``layer``, or None."""
    return ATTENTION_TWINS.get(qualified_name(type(layer)))


def twins(model: nn.Module, inplace: bool = False) -> nn.Module:
    """``model`` (a copy unless ``inplace``) with each torch attention layer (and torchvision's Swin
    V1 window attention) replaced by its twin; in eval mode the outputs are the same up to float rounding."""
    net = model if inplace else copy.deepcopy(model)
    if twin_of(net) is not None:
        return twin_of(net)(net)
    _swap_children(net)
    return net


def _swap_children(module: nn.Module) -> None:
    for name, child in module.named_children():
        if twin_of(child) is not None:
            setattr(module, name, twin_of(child)(child))  # a twin makes its own inner twins
        else:
            _swap_children(child)
