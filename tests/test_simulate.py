import pytest
import torch
import torch.nn as nn

import groupsnn as gs


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
    snn = small_snn("if")
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
