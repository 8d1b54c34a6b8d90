"""What groupsnn knows about torch operations, as tables: which are activations (and which of them
are ReLU), which pooling becomes what, which write into their input, which make a new tensor, which
draw random numbers, and which carry spike counts linearly. The graph layer, ``prepare``/``convert``
and ``stats`` ask these tables; a new operation is taught to all of them here.

A function table holds ``torch``/``F``/``operator`` functions and, as strings, the tensor method
names of the same operations (``x.relu()`` is traced as the method ``"relu"``).
"""
import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

from .qcfs import QCFS

# -- activations: ReLU sites become QCFS (prepare), the others are refused by convert
RELU_CALLS = {F.relu, F.relu_, torch.relu, torch.relu_, "relu", "relu_"}
NONLINEAR_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Softsign,
    nn.LogSigmoid, nn.Tanhshrink, nn.Softshrink, nn.Hardshrink, nn.Threshold, nn.GLU,
)
NONLINEAR_CALLS = RELU_CALLS | {
    F.relu6, F.leaky_relu, F.prelu, F.rrelu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish,
    F.sigmoid, F.tanh, F.hardtanh, F.hardswish, F.hardsigmoid, F.softplus, F.softsign, F.logsigmoid,
    F.glu, torch.sigmoid, torch.tanh, torch.selu, "sigmoid", "tanh", "sigmoid_", "tanh_",
}
IN_PLACE_ACTIVATION_CALLS = {torch.relu_, "relu_", "sigmoid_", "tanh_"}  # F.relu_ is torch.relu_
CLIPPED_RELU_CALLS = {F.relu6}  # ReLU6: a QCFS whose threshold is at most 6
# layers that run their activations and softmax inside torch's own code, out of the converter's reach
OPAQUE_MODULES = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer,
                  nn.TransformerEncoder, nn.TransformerDecoder, nn.Transformer)

# -- pooling: max-pooling becomes average pooling (prepare) or max-pooling on rates (convert)
MAX_TO_AVG_POOL = {
    nn.MaxPool1d: nn.AvgPool1d, nn.MaxPool2d: nn.AvgPool2d, nn.MaxPool3d: nn.AvgPool3d,
    nn.AdaptiveMaxPool1d: nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool2d: nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool3d: nn.AdaptiveAvgPool3d,
}
MAX_POOL_FUNCTIONS = {
    nn.MaxPool1d: F.max_pool1d, nn.MaxPool2d: F.max_pool2d, nn.MaxPool3d: F.max_pool3d,
    nn.AdaptiveMaxPool1d: F.adaptive_max_pool1d, nn.AdaptiveMaxPool2d: F.adaptive_max_pool2d,
    nn.AdaptiveMaxPool3d: F.adaptive_max_pool3d,
}
MAX_POOL_CALLS = set(MAX_POOL_FUNCTIONS.values())

# -- operations that do not commute with averaging over time: convert runs them on rates
# (compensate.py); the activations other than ReLU (RReLU draws at random: not one function of its
# input), softmax and the normalisations over features
COMPENSATED_MODULES = (*(m for m in NONLINEAR_MODULES if m not in (nn.ReLU, nn.ReLU6, nn.RReLU)),
                       nn.Softmax, nn.LogSoftmax, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)
COMPENSATED_CALLS = (NONLINEAR_CALLS - RELU_CALLS - {F.relu6, F.rrelu}) | {
    F.softmax, F.log_softmax, torch.softmax, torch.log_softmax, "softmax", "log_softmax",
    F.layer_norm, F.group_norm, F.rms_norm}
# operations of several tensors that are not linear in each: run on rates when two or more of their
# inputs change from step to step (q·kᵀ, attention·v, gating x·s); the number of tensor inputs
PRODUCT_CALLS = {operator.mul: 2, torch.mul: 2, "mul": 2, operator.matmul: 2, torch.matmul: 2, "matmul": 2,
                 torch.bmm: 2, "bmm": 2, operator.truediv: 2, torch.div: 2, "div": 2,
                 F.scaled_dot_product_attention: 3}
SITE_CALLS = NONLINEAR_CALLS | CLIPPED_RELU_CALLS | COMPENSATED_CALLS | MAX_POOL_CALLS  # what a rewrite rule sees

# -- memory: augmented assignments (``y += z``) and the out-of-place operation each stands for
IN_PLACE_OPERATORS = {
    operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
    operator.itruediv: operator.truediv, operator.ifloordiv: operator.floordiv, operator.imod: operator.mod,
    operator.ipow: operator.pow, operator.imatmul: operator.matmul, operator.iand: operator.and_,
    operator.ior: operator.or_, operator.ixor: operator.xor, operator.ilshift: operator.lshift,
    operator.irshift: operator.rshift,
}
# layers and calls whose output is a new tensor that nothing else holds (not a view of an input)
FRESH_MODULES = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._NormBase, nn.GroupNorm,
                 nn.LayerNorm, QCFS)
FRESH_CALLS = {operator.add, operator.sub, operator.mul, torch.add, torch.sub, torch.mul, torch.cat}

# calls whose result differs from call to call: each time step must make its own draw
RANDOM_CALLS = {torch.rand, torch.randn, torch.randint, torch.rand_like, torch.randn_like,
                torch.randint_like, torch.bernoulli, torch.multinomial, torch.normal, torch.poisson,
                F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout,
                "bernoulli", "uniform_", "normal_", "random_", "exponential_", "geometric_", "cauchy_",
                "log_normal_"}

# -- spikes (stats): weighted layers, and operations linear in spike counts, through which spikes
# reach them; their first argument is the data (a tensor, a list of tensors for cat, a tuple of
# them for getitem after chunk or split), the others are sizes, dims or indices
WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)
SPIKE_LINEAR_MODULES = (nn.Flatten, nn.Unflatten, nn.Identity, nn.modules.dropout._DropoutNd,
                        nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd)
SPIKE_LINEAR_CALLS = {torch.flatten, torch.reshape, torch.cat, torch.squeeze, torch.unsqueeze, torch.transpose,
                      torch.permute, torch.chunk, torch.split, torch.mean, torch.sum, operator.getitem,
                      F.dropout, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d,
                      F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, "flatten", "view", "reshape", "contiguous",
                      "squeeze", "unsqueeze", "transpose", "permute", "chunk", "split", "mean", "sum"}
SUM_CALLS = {operator.add, operator.iadd, torch.add, "add"}  # data: the first two arguments, both tensors

# -- operations that commute with averaging over time (affine in their per-step inputs, given the
# others): they may compute on each step's spikes. After the first neuron, convert refuses any
# operation that is neither these nor one its rules take (neurons, max-pooling, compensation).
# Functions of other libraries that torch.fx keeps whole (torch.fx.wrap) are named by their
# qualified name, so that groupsnn knows them without importing them.
LINEAR_MODULES = (*WEIGHTED, *SPIKE_LINEAR_MODULES, nn.modules.batchnorm._BatchNorm, nn.modules.padding._ConstantPadNd,
                  nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d, nn.ReplicationPad1d,
                  nn.ReplicationPad2d, nn.ReplicationPad3d, nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle,
                  nn.ChannelShuffle)
LINEAR_CALLS = SPIKE_LINEAR_CALLS | SUM_CALLS | {
    operator.sub, operator.isub, torch.sub, "sub", operator.neg, torch.neg, "neg", operator.pos,
    torch.stack, torch.roll, "roll", torch.narrow, "narrow", torch.select, "select", torch.unbind, "unbind",
    torch.movedim, "movedim", "swapaxes", "t", "expand", "expand_as", "repeat", "view_as", "reshape_as",
    "unflatten", "clone", torch.clone, "copy_", "add_", "sub_", "neg_", "to", "float", "type_as", "detach",
    torch.cumsum, "cumsum",
    F.pad, F.interpolate, F.pixel_shuffle, F.pixel_unshuffle, torch.channel_shuffle, F.linear, F.conv1d, F.conv2d,
    F.conv3d, F.batch_norm, torch._assert, getattr,
}
FOREIGN_LINEAR_CALLS = {
    "torchvision.ops.stochastic_depth.stochastic_depth",  # identity in eval mode, as simulate runs
    "torchvision.models.swin_transformer._patch_merging_pad",  # pads and slices
    "torchvision.models.swin_transformer._get_relative_position_bias",  # of the weights alone
}
