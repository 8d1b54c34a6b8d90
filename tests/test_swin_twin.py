"""torchvision's Swin attention through its traceable twin (groupsnn.attention.ShiftedWindowAttention):
the same outputs as torchvision's, and a converted Swin whose window softmax and products all run on
rates, at map sizes with shifted windows, with padding, and with the shift switched off (one window
covers the map), and T = 1 is the quantised network bit for bit."""
import operator

import pytest
import torch

import groupsnn as gs
from groupsnn.attention import ShiftedWindowAttention, twins
from groupsnn.compensate import Compensated
from groupsnn.graph import is_call, metadata_nodes, module_of, static_nodes, trace
from groupsnn.ops import PRODUCT_CALLS, SITE_CALLS

try:
    import torchvision.models.swin_transformer as swin
except Exception:  # absent, or a CUDA build whose compiled ops do not register beside a CPU torch
    pytest.skip("torchvision's model definitions do not import here", allow_module_level=True)

# input sizes -> feature maps of the two stages (window 4): 64: 16 and 8, shifted windows in both;
# 40: 10 and 5, padded to 12 and 8; 16: 4 and 2 (padded to 4), one window: no shift; 16x64: no
# shift along the height only
SIZES = [(64, 64), (40, 40), (16, 16), (16, 64)]


def _swin() -> torch.nn.Module:
    torch.manual_seed(0)
    return swin.SwinTransformer(patch_size=[4, 4], embed_dim=24, depths=[2, 2], num_heads=[2, 4],
                                window_size=[4, 4], num_classes=10).eval()


@pytest.mark.parametrize("size", SIZES)
def test_the_twin_computes_what_torchvision_computes(size):
    net = _swin()
    twin = twins(net).eval()
    assert sum(isinstance(m, ShiftedWindowAttention) for m in twin.modules()) == 4
    assert not any(type(m) is swin.ShiftedWindowAttention for m in twin.modules())
    x = torch.randn(2, 3, *size)
    with torch.no_grad():  # the same operations in the same order: equal on this CPU, allowed float rounding
        torch.testing.assert_close(twin(x), net(x), rtol=1e-5, atol=1e-6)


def test_the_twin_has_torchvisions_parameter_and_buffer_names():
    net, other = _swin(), twins(_swin())
    assert twins(net).state_dict().keys() == net.state_dict().keys()
    other.load_state_dict(net.state_dict())
    net.load_state_dict(other.state_dict())


def test_swin_v2_attention_is_left_as_it_is():
    attention = swin.ShiftedWindowAttentionV2(16, [4, 4], [2, 2], 2)
    assert type(twins(torch.nn.Sequential(attention))[0]) is swin.ShiftedWindowAttentionV2


def _analog(snn: torch.nn.Module, graph) -> list[str]:
    """The softmax and products left computing on each step's values (none should be)."""
    static, sizes = static_nodes(snn, graph), metadata_nodes(graph)
    return [n.name for n in graph.nodes if n not in static and (is_call(n, SITE_CALLS) or (
        is_call(n, PRODUCT_CALLS) and sum(a not in static and a not in sizes for a in n.all_input_nodes) > 1))]


@pytest.mark.parametrize("size", SIZES)
def test_a_converted_swin_runs_every_window_softmax_and_product_on_rates(size):
    ann = gs.prepare(_swin(), levels=4, threshold=1.0, spike_inputs=True).eval()
    snn = gs.convert(ann, "gn", tau=4)
    graph = trace(snn)
    assert not any("shifted_window_attention" in str(n.target) for n in graph.nodes)
    assert _analog(snn, graph) == []
    blocks = [name for name, m in ann.named_modules() if isinstance(m, ShiftedWindowAttention)]
    assert len(blocks) == 4
    for block in blocks:
        compensated = [module_of(snn, n).fn for n in graph.nodes if n.op == "call_module"
                       and n.target.startswith(f"{block}.") and isinstance(module_of(snn, n), Compensated)]
        assert [getattr(fn, "name", fn) for fn in compensated] == [operator.matmul, "softmax", operator.matmul]
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        assert torch.equal(gs.simulate(snn, x, 1, fold=False)[0], ann(x))  # tau = L at T = 1
