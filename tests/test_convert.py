import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import groupsnn as gs
from groupsnn import GroupNeuron, IFNeuron, QCFS
from groupsnn.compensate import Compensated


def count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


class FunctionalReLUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3, self.fc4 = (nn.Linear(6, 6) for _ in range(4))

    def forward(self, x):
        x = F.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        x = self.fc3(x).relu()
        return self.fc4(x)


class SharedReLUBlock(nn.Module):
    """Calls one ReLU instance twice, like torchvision's BasicBlock."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 6), nn.Linear(6, 6)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.fc2(self.relu(self.fc1(x))) + x)


class TwoReLUBlock(SharedReLUBlock):
    def __init__(self):
        super().__init__()
        self.relu_1 = nn.ReLU()

    def forward(self, x):
        return self.relu(self.fc2(self.relu_1(self.fc1(x))) + x)


def test_prepare_replaces_functional_relu_calls():
    ann = gs.prepare(FunctionalReLUNet(), levels=4)
    assert count(ann, QCFS) == 3
    x = torch.randn(32, 6)
    assert not any(n.target in (F.relu, torch.relu, "relu") for n in torch.fx.symbolic_trace(ann).graph.nodes)
    assert torch.isfinite(ann(x)).all()


def test_prepare_replaces_maxpool_by_avgpool_and_keeps_the_class():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(18, 3))
    ann = gs.prepare(net, levels=8, threshold=2.0)
    assert type(ann) is nn.Sequential  # module swaps only: no graph rewrite needed
    assert isinstance(ann[2], nn.AvgPool2d) and isinstance(ann[1], QCFS) and ann[1].threshold.item() == 2.0
    assert isinstance(net[2], nn.MaxPool2d) and isinstance(net[1], nn.ReLU)  # input untouched
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(ann[2](x), F.avg_pool2d(x, 2))


def test_prepare_replaces_functional_maxpool():
    class Net(nn.Module):
        def forward(self, x):
            return F.max_pool2d(x, 2)

    ann = gs.prepare(Net())
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(ann(x), F.avg_pool2d(x, 2))


def test_shared_relu_gets_one_neuron_per_call_site():
    shared, separate = SharedReLUBlock(), TwoReLUBlock()
    separate.load_state_dict(shared.state_dict())
    ann_shared, ann_separate = gs.prepare(shared, levels=4), gs.prepare(separate, levels=4)
    assert count(ann_shared, QCFS) == 2
    snn_shared = gs.convert(ann_shared, neuron="gn", tau=2)
    snn_separate = gs.convert(ann_separate, neuron="gn", tau=2)
    assert count(snn_shared, GroupNeuron) == 2
    x = torch.randn(16, 6) * 3
    assert torch.equal(gs.simulate(snn_shared, x, 8), gs.simulate(snn_separate, x, 8))


def test_convert_splits_a_shared_qcfs_and_keeps_its_threshold():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.act = nn.Linear(4, 4), QCFS(4, threshold=3.0)

        def forward(self, x):
            return self.act(self.fc(self.act(x)))

    snn = gs.convert(Net(), neuron="if")
    thresholds = [m.threshold.item() for m in snn.modules() if isinstance(m, IFNeuron)]
    assert thresholds == [3.0, 3.0]


def test_convert_keeps_thresholds_and_does_not_touch_its_input():
    ann = gs.prepare(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), levels=8)
    ann[1].threshold.data.fill_(1.25)
    snn = gs.convert(ann, neuron="gn", tau=4)
    assert isinstance(snn[1], GroupNeuron) and snn[1].tau == 4 and snn[1].threshold.item() == 1.25
    assert isinstance(ann[1], QCFS)
    assert snn.state_dict().keys() == ann.state_dict().keys()  # neurons keep the name `threshold`
    same = gs.convert(ann, neuron="if", inplace=True)
    assert same is ann and isinstance(ann[1], IFNeuron)


@pytest.mark.parametrize("activation", [nn.GELU(), nn.SiLU(), nn.Sigmoid(), nn.ReLU()])
def test_convert_runs_other_activations_on_rates_and_names_an_unprepared_relu(activation):
    net = gs.prepare(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4)), levels=4)
    net.append(activation)
    if isinstance(activation, nn.ReLU):
        with pytest.raises(ValueError, match=r"'3' \(ReLU\).*run groupsnn.prepare\(\)"):
            gs.convert(net)
        snn = gs.convert(net, strict=False)
        assert isinstance(snn[3], nn.ReLU)
    else:
        snn = gs.convert(net)
        assert isinstance(snn[3], Compensated) and isinstance(snn[3].fn, type(activation))
    assert isinstance(snn[1], GroupNeuron)


def test_an_activation_before_every_neuron_stays_as_it_is():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.act, self.out = nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)

        def forward(self, x):
            return self.out(self.act(F.gelu(self.fc(x))))  # gelu's input is the same at every step

    snn = gs.convert(gs.prepare(Net(), levels=4))
    assert type(snn) is Net and not any(isinstance(m, Compensated) for m in snn.modules())


def test_convert_rejects_bad_arguments():
    ann = gs.prepare(nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
    with pytest.raises(ValueError, match="unknown neuron"):
        gs.convert(ann, neuron="lif")
    with pytest.raises(ValueError, match="tau"):
        gs.convert(ann, tau=0)
    ann[1].threshold.data.fill_(-1.0)
    with pytest.raises(ValueError, match="not positive"):
        gs.convert(ann)


def test_untraceable_model_gets_module_relus_replaced_with_a_warning():
    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.relu = nn.Linear(4, 4), nn.ReLU()

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                return F.relu(self.fc(x))
            return self.relu(self.fc(x))

    with pytest.warns(UserWarning, match="cannot trace Untraceable.*functional activations"):
        ann = gs.prepare(Untraceable())
    assert isinstance(ann.relu, QCFS)
    with warnings.catch_warnings(record=True):
        snn = gs.convert(ann)
    assert isinstance(snn.relu, GroupNeuron)
    assert gs.simulate(snn, -torch.ones(2, 4), 3).shape == (3, 2, 4)  # runs whole, step by step


class ReLU6Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2, self.fc3 = nn.Linear(4, 8), nn.ReLU6(), nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.fc3(F.relu6(self.fc2(self.act(self.fc1(x)))))


def test_relu6_becomes_a_qcfs_clipped_at_six_and_converts_exactly():
    torch.manual_seed(0)
    ann = gs.prepare(ReLU6Net(), levels=8).eval()
    qcfs = [m for m in ann.modules() if isinstance(m, QCFS)]
    assert len(qcfs) == 2 and all(m.threshold.item() == 6.0 for m in qcfs)
    x = torch.randn(16, 4) * 4
    snn = gs.convert(ann, "gn", tau=8)
    with torch.no_grad():
        assert torch.equal(gs.simulate(snn, x, 1, fold=False)[0], ann(x))  # tau = L at T = 1: the QCFS network


class ManyActivations(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.gelu, self.out = nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 2)

    def forward(self, x):
        return self.out(F.silu(self.gelu(torch.relu(self.fc(x)))).softmax(-1))


def test_every_activation_and_softmax_after_a_neuron_runs_on_rates():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # prepare has nothing to warn about: convert takes them all
        snn = gs.convert(gs.prepare(ManyActivations(), levels=4))
    compensated = {name: m.fn for name, m in snn.named_modules() if isinstance(m, Compensated)}
    assert isinstance(compensated.pop("gelu"), nn.GELU) and len(compensated) == 2
    assert {getattr(f, "func", None) for f in compensated.values()} == {F.silu, None}  # F.silu, x.softmax(-1)


def test_prepare_warns_and_convert_refuses_naming_every_site_it_cannot_take():
    layer = nn.TransformerDecoderLayer(d_model=4, nhead=2, dim_feedforward=8, batch_first=True)
    with pytest.warns(UserWarning, match=r"prepare\(\): no spiking neuron computes 1 site: '2' "
                                         r"\(TransformerDecoderLayer\)"):
        net = gs.prepare(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), layer, nn.ReLU()), levels=4)
    net[3] = nn.ReLU()  # an unprepared ReLU as well
    with pytest.raises(ValueError, match=r"cannot convert 2 sites: '2' \(TransformerDecoderLayer\), '3' \(ReLU\)"):
        gs.convert(net)
    with pytest.warns(UserWarning, match=r"convert\(\): left 2 sites"):
        gs.convert(net, strict=False)


def test_a_refused_conversion_in_place_changes_nothing():
    net = gs.prepare(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.GELU()), levels=4)
    net.append(nn.ReLU())
    with pytest.raises(ValueError, match=r"1 site: '4' \(ReLU\)"):
        gs.convert(net, inplace=True)
    assert isinstance(net[1], QCFS) and isinstance(net[3], nn.GELU)  # nothing was swapped before the refusal


def test_an_attention_layer_is_named_not_silently_left_analog():
    layer = nn.TransformerDecoderLayer(d_model=8, nhead=2, dim_feedforward=16, batch_first=True)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), layer, nn.Linear(8, 2))
    with pytest.warns(UserWarning, match=r"'2' \(TransformerDecoderLayer\)"):
        ann = gs.prepare(net, levels=4)
    with pytest.raises(ValueError, match=r"1 site: '2' \(TransformerDecoderLayer\)"):
        gs.convert(ann)


@torch.fx.wrap
def _clipped_square(x):  # a custom operation torch.fx keeps whole: nothing can run it on rates
    return x.clamp(0, 1) ** 2


class CustomOps(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.bilinear, self.out = nn.Linear(4, 4), nn.Bilinear(4, 4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = torch.relu(self.fc(x))
        return self.out(self.bilinear(_clipped_square(h), h) + torch.exp(h))


def test_an_operation_groupsnn_does_not_know_after_a_neuron_is_named_not_left_to_compute_on_spikes():
    with pytest.warns(UserWarning, match=r"prepare\(\): no spiking neuron computes 3 sites: '_clipped_square' "
                                         r"\(_clipped_square, an operation groupsnn does not know\), 'bilinear' "
                                         r"\(Bilinear, an operation groupsnn does not know\), 'exp' \(exp, "):
        ann = gs.prepare(CustomOps(), levels=4)
    with pytest.raises(ValueError, match=r"cannot convert 3 sites: '_clipped_square' .*'bilinear' .*'exp' "):
        gs.convert(ann)
    with pytest.warns(UserWarning, match=r"convert\(\): left 3 sites"):
        gs.convert(ann, strict=False)
    before_any_neuron = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unknown operation on the input, before every neuron, is fine
        gs.convert(gs.prepare(nn.Sequential(Exp(), before_any_neuron), levels=4))


class Exp(nn.Module):
    def forward(self, x):
        return torch.exp(x)


class LayerNorm2d(nn.LayerNorm):  # torchvision's: F.layer_norm over channels, with the module's weights
    def forward(self, x):
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


class NormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.norm, self.out = nn.Conv2d(3, 4, 1), LayerNorm2d(4), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.out(self.norm(torch.relu(self.conv(x))))


def test_a_functional_norm_with_the_models_weights_runs_on_rates_and_its_checkpoint_keeps_them(tmp_path):
    from groupsnn.checkpoint import load_model, save_checkpoint

    torch.manual_seed(0)
    ann = gs.prepare(NormNet(), levels=4, threshold=1.0).eval()
    with torch.no_grad():
        ann.norm.weight.uniform_(0.5, 2)
        ann.norm.bias.uniform_(-1, 1)
    snn = gs.convert(ann, "gn", tau=4)
    (norm,) = [m for m in snn.modules() if isinstance(m, Compensated)]
    assert norm.fn.fn is F.layer_norm and torch.equal(norm.fn.weight, ann.norm.weight)
    assert norm.fn.weight is not ann.norm.weight  # the SNN's own copy
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        assert torch.equal(gs.simulate(snn, x, 1, fold=False)[0], ann(x))
    save_checkpoint(tmp_path / "snn.pt", snn, {"model_kwargs": {}})
    rebuilt, _ = load_model(tmp_path / "snn.pt")
    with torch.no_grad():
        assert torch.equal(gs.simulate(rebuilt, x, 3, fold=False), gs.simulate(snn, x, 3, fold=False))
