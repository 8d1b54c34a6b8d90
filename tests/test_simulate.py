import sys

import pytest
import torch
import torch.nn as nn

import groupsnn as gs
from groupsnn.simulate import StepRunner


def small_snn(neuron="gn", tau=2):
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 8),
                        nn.ReLU(), nn.Linear(8, 3))
    ann = gs.prepare(net, levels=4, threshold=1.0).eval()
    return gs.convert(ann, neuron=neuron, tau=tau)


def test_simulate_returns_per_step_outputs_and_resets_first():
    snn, x = small_snn(), torch.randn(5, 1, 8, 8)
    out = gs.simulate(snn, x, timesteps=6)
    assert out.shape == (6, 5, 3)
    assert torch.equal(gs.simulate(snn, x, timesteps=6), out)  # state from the last run is cleared


def test_step_independent_layers_run_once():
    snn, calls = small_snn(), []
    snn[0].register_forward_hook(lambda *_: calls.append("conv"))
    snn[4].register_forward_hook(lambda *_: calls.append("linear"))
    gs.simulate(snn, torch.randn(2, 1, 8, 8), timesteps=5)
    assert calls.count("conv") == 1 and calls.count("linear") == 5


def test_split_simulation_equals_running_the_whole_model_each_step():
    snn, x = small_snn(), torch.randn(7, 1, 8, 8)
    gs.reset(snn)
    expected = torch.stack([snn(x) for _ in range(9)])
    assert torch.equal(gs.simulate(snn, x, 9), expected)


def test_evaluate_from_one_run_equals_separate_runs():
    snn = small_snn("if", None)
    loader = [(torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))) for _ in range(3)]
    together = gs.evaluate(snn, loader, timesteps=[1, 3, 8])
    for t in (1, 3, 8):
        separate = gs.evaluate(snn, loader, timesteps=[t])[t]
        assert together[t] == separate
        correct = sum((gs.simulate(snn, x, t).mean(0).argmax(1) == y).sum().item() for x, y in loader)
        assert together[t] == pytest.approx(100 * correct / 48)


def test_evaluate_restores_training_mode():
    snn = small_snn().train()
    gs.evaluate(snn, [(torch.randn(4, 1, 8, 8), torch.zeros(4, dtype=torch.long))], timesteps=[2])
    assert snn.training


@pytest.mark.parametrize("bad", [0, -1, [], [2, 0], 1.5])
def test_bad_timesteps_are_rejected(bad):
    with pytest.raises(ValueError, match="timesteps"):
        gs.evaluate(small_snn(), [], timesteps=bad if isinstance(bad, list) else [bad])


def test_nan_input_is_a_clear_error():
    x = torch.randn(2, 1, 8, 8)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        gs.simulate(small_snn(), x, 2)


def test_reset_clears_every_neuron():
    snn = small_snn()
    snn(torch.randn(2, 1, 8, 8))
    assert all(m.state is not None for m in snn.modules() if isinstance(m, gs.GroupNeuron))
    gs.reset(snn)
    assert all(m.state is None for m in snn.modules() if isinstance(m, gs.GroupNeuron))


def test_multi_step_neurons_are_refused_rather_than_mixing_the_batch_into_time():
    ann = gs.prepare(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), levels=4)
    with pytest.raises(ValueError, match="multi-step mode"):
        gs.simulate(gs.convert(ann, step_mode="m"), torch.randn(3, 4), 2)


def test_simulate_runs_a_train_mode_snn_in_eval_mode_and_leaves_it_untouched():
    snn, x = small_snn(), torch.randn(6, 1, 8, 8)
    bn = snn[1]
    bn.running_mean.uniform_(-0.5, 0.5)
    before = {k: v.clone() for k, v in snn.state_dict().items()}
    expected = gs.simulate(snn.eval(), x, 4)
    out = gs.simulate(snn.train(), x, 4)
    assert torch.equal(out, expected)  # BatchNorm used its running statistics, not the batch's
    assert snn.training and all(m.training for m in snn.modules())
    assert all(torch.equal(v, before[k]) for k, v in snn.state_dict().items())  # running stats unchanged
    assert all(m.state is None for m in snn.modules() if isinstance(m, gs.GroupNeuron))  # no membranes kept


class InPlaceAfterNeuron(nn.Module):
    """``y`` is computed before the first neuron and changed in place after it."""

    def __init__(self):
        super().__init__()
        self.lin, self.act, self.fc = nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)

    def forward(self, x):
        y = self.lin(x)
        z = self.act(y)
        y.add_(z)
        return self.fc(y)


class OutArgumentAfterNeuron(InPlaceAfterNeuron):
    def forward(self, x):
        y = self.lin(x)
        z = self.act(y)
        torch.add(y, z, out=y)
        return self.fc(y)


class DrawsPerStep(InPlaceAfterNeuron):
    def forward(self, x):
        noise = torch.randn_like(x)  # before the first neuron, yet a new draw at every step
        return self.fc(self.act(self.lin(x + noise)))


@pytest.mark.parametrize("model", [InPlaceAfterNeuron, OutArgumentAfterNeuron, DrawsPerStep])
@pytest.mark.parametrize("fold", [False, True])
def test_split_keeps_in_place_writes_and_random_draws_per_step(model, fold):
    torch.manual_seed(0)
    snn = gs.convert(gs.prepare(model(), levels=4, threshold=1.0), "gn", tau=2).eval()
    x = torch.randn(5, 4)
    gs.reset(snn)
    torch.manual_seed(1)
    with torch.no_grad():
        expected = torch.stack([snn(x) for _ in range(4)])
    torch.manual_seed(1)
    with torch.no_grad():
        got = torch.stack(list(StepRunner(snn, fold=fold).steps(x, 4)))
    assert torch.equal(got, expected)


def test_a_model_of_two_inputs_is_a_clear_error():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 2)

        def forward(self, x, y):
            return self.lin(x + y)

    with pytest.raises(ValueError, match="one input tensor.*takes 2"):
        gs.simulate(TwoInputs(), torch.randn(2, 4), 2)


def test_an_output_kept_by_a_hook_is_not_overwritten_by_a_neuron_firing_in_place():
    snn, x = small_snn(), torch.randn(3, 1, 8, 8)
    kept = []
    snn[4].register_forward_hook(lambda m, i, out: kept.append(out))  # the linear layer before a neuron
    gs.simulate(snn, x, 3)
    with torch.no_grad():
        h = snn[3](snn[2](snn[1](snn[0](x))))  # the first neuron at step 1 (reset by simulate)
        assert torch.equal(kept[0], snn[4](h))
    gs.reset(snn)


def test_the_folded_copy_has_no_batchnorm_and_shares_the_neurons():
    snn = small_snn()
    static, dynamic = StepRunner(snn).plan(torch.randn(2, 1, 8, 8)).fast
    folded = [m for part in (static, dynamic) for m in part.modules()]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded)
    assert {id(m) for m in folded if isinstance(m, gs.GroupNeuron)} == \
        {id(m) for m in snn.modules() if isinstance(m, gs.GroupNeuron)}


class AliasedSum(nn.Module):
    """``z = y; z += 1`` changes ``y`` too: plain torch.fx traces it out of place."""

    def __init__(self):
        super().__init__()
        self.fc, self.act, self.out = nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)

    def forward(self, x):
        y = self.fc(x)
        z = y
        z += 1
        return self.out(self.act(y))


@pytest.mark.parametrize("fold", [True, False])
def test_an_augmented_assignment_through_an_alias_is_computed_as_eager_pytorch_does(fold):
    torch.manual_seed(0)
    ann = gs.prepare(AliasedSum(), levels=4, threshold=1.0).eval()
    snn, x = gs.convert(ann, "gn", tau=4), torch.randn(5, 4)
    with torch.no_grad():
        expected = ann(x)
        assert torch.equal(gs.simulate(ann, x, 1, fold=fold)[0], expected)
        gs.reset(snn)
        stepped = torch.stack([snn(x) for _ in range(3)])
        gs.reset(snn)
    assert torch.equal(gs.simulate(snn, x, 3, fold=fold), stepped)


def test_a_kept_runner_follows_new_weights_and_thresholds():
    torch.manual_seed(0)
    snn, other, x = small_snn(), small_snn(), torch.randn(5, 1, 8, 8)
    for m in other.modules():
        if isinstance(m, gs.GroupNeuron):
            m.threshold.data.fill_(0.5)
    runner = StepRunner(snn)
    list(runner.steps(x, 2))
    snn.load_state_dict(other.state_dict())
    # the same path on both sides: a fresh runner of the other network
    assert torch.equal(torch.stack(list(runner.steps(x, 2))), torch.stack(list(StepRunner(other).steps(x, 2))))
    with torch.no_grad():
        snn[0].weight.mul_(2)
        other[0].weight.mul_(2)
    assert torch.equal(torch.stack(list(runner.steps(x, 2))), torch.stack(list(StepRunner(other).steps(x, 2))))
    snn[1].running_var.data.mul_(3)  # through .data: no version counter moves
    other[1].running_var.data.mul_(3)
    assert torch.equal(torch.stack(list(runner.steps(x, 2))), torch.stack(list(StepRunner(other).steps(x, 2))))


def test_simulate_prepares_a_network_once_and_again_when_it_changes(monkeypatch):
    simulate_module = sys.modules["groupsnn.simulate"]  # gs.simulate is the function
    built = []
    original = simulate_module._folded_copy
    monkeypatch.setattr(simulate_module, "_folded_copy", lambda *a: built.append(1) or original(*a))
    snn, x = small_snn(), torch.randn(5, 1, 8, 8)
    first = gs.simulate(snn, x, 2)
    for _ in range(3):
        assert torch.equal(gs.simulate(snn, x, 2), first)
    gs.evaluate(snn, [(x, torch.zeros(5, dtype=torch.long))], [1, 2])
    assert len(built) == 1
    with torch.no_grad():
        snn[4].bias.add_(1.0)
    assert not torch.equal(gs.simulate(snn, x, 2), first) and len(built) == 2
    snn[6] = nn.Linear(8, 3)  # a new module: a new plan
    gs.simulate(snn, x, 2)
    assert len(built) == 3


def test_the_runner_cache_does_not_keep_a_network_alive():
    import gc
    import weakref
    snn = small_snn()
    gs.simulate(snn, torch.randn(2, 1, 8, 8), 1)
    ref = weakref.ref(snn)
    del snn
    gc.collect()
    assert ref() is None


class LeNetView(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.act, self.fc = nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        h = self.act(self.conv(x))
        return self.fc(h.view(h.size(0), -1))


def test_view_after_a_convolution_works_on_the_channels_last_copy():
    torch.manual_seed(0)
    net, x = LeNetView().eval(), torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        # a plain ReLU network: channels-last convolutions sum in another order, so close, not equal
        torch.testing.assert_close(gs.simulate(net, x, 1)[0], net(x), rtol=1e-5, atol=1e-6)
    snn = gs.convert(gs.prepare(net, levels=4, threshold=1.0), "gn", tau=4)
    assert gs.simulate(snn, x, 2).shape == (2, 5, 3)


def test_simulate_outputs_are_contiguous_in_the_networks_layout():
    snn = gs.convert(gs.prepare(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3)), levels=4,
                                threshold=1.0), "gn", tau=4)
    out = gs.simulate(snn, torch.randn(3, 1, 8, 8), 2)
    assert out.shape == (2, 3, 2, 4, 4) and out.is_contiguous()
