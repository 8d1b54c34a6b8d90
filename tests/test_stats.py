import json
import operator

import pytest
import torch
import torch.nn as nn

import groupsnn as gs
from groupsnn.cli import main
from groupsnn.graph import trace
from groupsnn.stats import energy_by_timesteps, fan_out, layer_stats, spike_sources
from groupsnn.train import RunConfig, TrainConfig, train


def two_layer_network():
    """Linear(2→3) → QCFS (L=2, θ=1) → Linear(3→2), no biases, known first-layer weights."""
    net = nn.Sequential(nn.Linear(2, 3, bias=False), nn.ReLU(), nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    return gs.prepare(net, levels=2, threshold=1.0).eval()


def test_two_layer_network_matches_hand_computed_values():
    ann = two_layer_network()
    x = torch.tensor([[0.6, 0.2]])  # hidden input h = [0.6, 0.2, 0.8] at every step
    stats = layer_stats(gs.convert(ann, "gn", tau=2), [x], timesteps=2, ann=ann)
    # GN τ=2, θ=1, membrane in units of θ/τ = 0.5, starting at 1/2; each step adds 2h = [1.2, 0.4, 1.6]:
    #   step 1: v = [1.7, 0.9, 2.1] -> spikes [1, 0, 2], v = [0.7, 0.9, 0.1], out [0.5, 0, 1]
    #   step 2: v = [1.9, 1.3, 1.7] -> spikes [1, 1, 1], v = [0.9, 0.3, 0.7], out [0.5, 0.5, 0.5]
    (layer,) = stats["layers"]
    assert layer["layer"] == "1" and layer["neurons"] == 3
    assert layer["firing_rate"] == pytest.approx(6 / (3 * 2))      # 6 member spikes, 3 neurons, 2 steps
    assert layer["mean_output"] == pytest.approx(3.0 / 6)
    assert layer["sops"] == pytest.approx(6 * 2)                   # each spike reaches 2 outputs
    assert layer["macs"] == 3 * 2                                  # Linear(3→2) in the ANN
    # ANN: QCFS(h) = 0.5·[1, 0, 2]; SNN averaged over 2 steps: [0.5, 0.25, 0.75]
    assert layer["ann_mean_output"] == pytest.approx(1.5 / 3)
    assert layer["conversion_mse"] == pytest.approx((0 + 0.25 ** 2 + 0.25 ** 2) / 3)
    totals = stats["totals"]
    assert totals["sops"] == pytest.approx(12)
    assert totals["snn_macs"] == 6  # Linear(2→3) sees the input, once (before the first neuron)
    assert totals["ann_macs"] == 12
    assert totals["snn_energy_uj"] == pytest.approx((12 * 0.9 + 6 * 4.6) * 1e-6)
    assert totals["ann_energy_uj"] == pytest.approx(12 * 4.6 * 1e-6)


def test_if_neuron_spikes_and_energy_options():
    ann = two_layer_network()
    x = torch.tensor([[0.6, 0.2], [0.0, 0.0]])
    stats = layer_stats(gs.convert(ann, "if"), [x], timesteps=2, ann=ann, ac_pj=1.0, mac_pj=10.0)
    # IF, θ=1, v from 1/2, adds h each step. Sample 1: h = [0.6, 0.2, 0.8]:
    #   step 1: v = [1.1, 0.7, 1.3] -> spikes [1, 0, 1], v = [0.1, 0.7, 0.3]
    #   step 2: v = [0.7, 0.9, 1.1] -> spikes [0, 0, 1]
    # Sample 2 (h = 0): no spikes.
    (layer,) = stats["layers"]
    assert stats["samples"] == 2
    assert layer["firing_rate"] == pytest.approx(3 / (3 * 2 * 2))
    assert layer["sops"] == pytest.approx(3 * 2 / 2)  # per sample
    assert stats["totals"]["snn_energy_uj"] == pytest.approx((3 * 1.0 + 6 * 10.0) * 1e-6)


def test_sops_count_the_fan_out_at_padded_borders():
    net = nn.Sequential(nn.Conv1d(1, 1, 1, bias=False), nn.ReLU(), nn.Conv1d(1, 1, 3, padding=1, bias=False))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
    ann = gs.prepare(net, levels=1, threshold=1.0).eval()
    x = torch.tensor([[[0.6, 0.2, 0.7, 0.9]]])  # IF at T=1: v = x + 1/2 -> spikes [1, 0, 1, 1]
    stats = layer_stats(gs.convert(ann, "if"), [x], timesteps=1)
    assert torch.equal(fan_out(net[2], torch.Size([1, 4])), torch.tensor([[2.0, 3.0, 3.0, 2.0]]))
    (layer,) = stats["layers"]
    assert layer["sops"] == pytest.approx(2 + 3 + 2)
    assert layer["macs"] == 4 * 3  # dense hardware multiplies the padding too
    assert layer["conversion_mse"] is None  # no ANN given


def test_per_channel_thresholds_through_pooling_and_flatten():
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 5))
    ann = gs.prepare(net, levels=4, threshold=1.0).eval()
    ann[1].threshold.data = torch.tensor([1.0, 3.0]).view(2, 1, 1)
    snn = gs.convert(ann, "gn", tau=4)
    assert spike_sources(snn) == {"4": ("1",)}  # the linear layer is fed by the neurons' spikes
    x = torch.randn(3, 1, 2, 2)
    stats = layer_stats(snn, [x], timesteps=3)
    spikes = sum(gs.simulate(snn[:2], x, 3).sum(0).sum((0, 2, 3)) / torch.tensor([0.25, 0.75]))
    (layer,) = stats["layers"]
    assert layer["firing_rate"] == pytest.approx(spikes.item() / (3 * 8 * 3))
    # the average pool passes a quarter of each spike to the linear layer, whose fan-out is 5
    assert layer["sops"] == pytest.approx(spikes.item() / 4 * 5 / 3)


def test_gn_with_tau_equal_levels_at_one_step_has_no_conversion_error():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(),
                        nn.Flatten(), nn.Linear(64, 3))
    ann = gs.prepare(net, levels=4, threshold=1.0).eval()
    stats = layer_stats(gs.convert(ann, "gn", tau=4), [torch.randn(8, 1, 8, 8)], timesteps=1, ann=ann)
    assert [r["conversion_mse"] for r in stats["layers"]] == [0.0, 0.0]
    assert all(0 < r["firing_rate"] <= 4 for r in stats["layers"])


def test_hooks_exist_only_during_the_run():
    ann = two_layer_network()
    snn = gs.convert(ann, "gn", tau=2)
    layer_stats(snn, [torch.randn(2, 2)], timesteps=2, ann=ann)
    bad = torch.tensor([[float("nan"), 0.0]])
    with pytest.raises(ValueError, match="NaN"):
        layer_stats(snn, [bad], timesteps=2, ann=ann)
    assert not any(m._forward_hooks for model in (snn, ann) for m in model.modules())


def test_a_network_without_neurons_is_refused():
    with pytest.raises(ValueError, match="no spiking neurons"):
        layer_stats(two_layer_network(), [torch.randn(1, 2)], timesteps=1)


def test_stats_command_writes_json_and_firing_rate_plot(digits_checkpoint, tmp_path, capsys):
    out = tmp_path / "stats"
    assert main(["stats", str(digits_checkpoint), "--tau", "4", "--timesteps", "2", "--batches", "1",
                 "--batch-size", "32", "--out", str(out)]) == 0
    results = json.loads((out / "stats.json").read_text())
    assert [(r["neuron"], r["tau"]) for r in results["snn"]] == [("gn", 4), ("if", None)]
    for run in results["snn"]:
        assert run["samples"] == 32 and run["timesteps"] == 2 and len(run["layers"]) == 7
    gn, if_ = (run["layers"] for run in results["snn"])
    # τ·T = 8 = L: GN's time-averaged outputs track the ANN far better than IF's (a silent layer
    # of this one-epoch network can have zero error in both)
    assert all(g["conversion_mse"] <= i["conversion_mse"] for g, i in zip(gn, if_))
    assert sum(g["conversion_mse"] for g in gn) < 0.5 * sum(i["conversion_mse"] for i in if_)
    png = (out / "firing_rates.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "GN τ=4, 32 samples" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["stats", "sweep"])
def test_plain_relu_checkpoint_is_a_one_line_error(command, tmp_path, capsys):
    relu = train(RunConfig(model="digits_cnn", data="digits", levels=None, optim=TrainConfig(epochs=1)),
                 tmp_path / "relu", progress=False)
    assert main([command, str(relu), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "plain ReLU network" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


class TwoBranches(nn.Module):
    """Two Linear(2→3) + ReLU branches whose spikes meet in ``join`` before the last layer."""

    def __init__(self, join):
        super().__init__()
        self.join = join
        self.fc1, self.fc2, self.relu1, self.relu2 = nn.Linear(2, 3), nn.Linear(2, 3), nn.ReLU(), nn.ReLU()
        self.fc3 = nn.Linear({"add": 3, "image": 5}.get(join, 6), 2)

    def forward(self, x):
        a, b = self.relu1(self.fc1(x)), self.relu2(self.fc2(x))
        if self.join == "add":
            return self.fc3(a + b)
        if self.join == "image":  # spikes of one branch beside the input itself
            return self.fc3(torch.cat([a, x], 1))
        joined = torch.cat([a, b], dim=1)
        return self.fc3(joined.view(-1, 2, 3).flatten(1) if self.join == "cat-view" else joined)


@pytest.mark.parametrize("join", ["cat", "cat-view", "add", "image"])
def test_spikes_are_followed_through_cat_add_and_views(join):
    ann = gs.prepare(TwoBranches(join), levels=2, threshold=1.0).eval()
    stats = layer_stats(gs.convert(ann, "gn", tau=2), [torch.randn(4, 2) * 2], timesteps=3)
    for layer in stats["layers"]:
        spikes = layer["firing_rate"] * layer["neurons"] * 3  # per sample, over the 3 steps
        assert spikes > 0
        fed = join != "image" or layer["layer"] == "relu1"
        assert layer["sops"] == pytest.approx(spikes * 2 if fed else 0)  # each spike reaches 2 outputs
    # fc1 and fc2 (2x3 weights) see the input once; in "image", fc3 also multiplies the 2 input
    # values by its 2 output rows at each of the 3 steps
    assert stats["totals"]["snn_macs"] == pytest.approx(12 + (2 * 2 * 3 if join == "image" else 0))


def test_a_dense_layer_after_the_neurons_costs_macs_at_every_step():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.relu, self.fc2 = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2)

        def forward(self, x):
            return self.fc2(torch.exp(self.relu(self.fc1(x))))  # exp: not spikes any more

    with pytest.warns(UserWarning, match=r"'exp' \(exp, an operation groupsnn does not know\)"):
        ann = gs.prepare(Net(), levels=2).eval()
        snn = gs.convert(ann, "gn", tau=2, strict=False)  # exp left to compute on each step's spikes
    stats = layer_stats(snn, [torch.randn(4, 2)], 3)
    assert stats["totals"]["snn_macs"] == 6 + 6 * 3 and stats["totals"]["sops"] == 0


def test_an_untraceable_model_is_a_clear_error():
    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.relu = nn.Linear(2, 2), nn.ReLU()

        def forward(self, x):
            return self.relu(self.fc(x)) if x.sum() > 0 else self.fc(x)

    with pytest.warns(UserWarning):
        snn = gs.convert(gs.prepare(Untraceable(), levels=2))
    with pytest.raises(ValueError, match="cannot trace Untraceable"):
        layer_stats(snn, [torch.ones(1, 2)], timesteps=1)


class Halves(nn.Module):
    """Linear(2→6) + ReLU whose spikes reach Linear(3→4) and Linear(3→5) through ``route``."""

    def __init__(self, route):
        super().__init__()
        self.route = route
        self.fc, self.relu, self.fc_a, self.fc_b = nn.Linear(2, 6), nn.ReLU(), nn.Linear(3, 4), nn.Linear(3, 5)

    def forward(self, x):
        h = self.relu(self.fc(x))
        a, b = {
            "chunk": lambda: h.chunk(2, dim=1),
            "torch.chunk": lambda: torch.chunk(h, 2, 1),
            "split": lambda: h.split(3, dim=1),
            "torch.split": lambda: torch.split(h, [3, 3], dim=1),
            "index": lambda: (h[:, :3], h[:, 3:]),
            "mean": lambda: (h.view(-1, 2, 3).mean(1), torch.mean(h.view(-1, 3, 2), dim=2)),
            "sum": lambda: (h.view(-1, 2, 3).sum(1), torch.sum(h.view(-1, 3, 2), dim=2)),
        }[self.route]()
        return torch.cat([self.fc_a(a), self.fc_b(b)], 1)


@pytest.mark.parametrize("route", ["chunk", "torch.chunk", "split", "torch.split", "index", "mean", "sum"])
def test_spikes_are_followed_through_chunk_split_mean_sum_and_indexing(route):
    ann = gs.prepare(Halves(route), levels=2, threshold=1.0).eval()
    snn, x = gs.convert(ann, "gn", tau=2), torch.randn(8, 2) * 2
    stats = layer_stats(snn, [x], timesteps=3)
    neuron = snn.relu
    spikes = gs.simulate(nn.Sequential(snn.fc, neuron), x, 3).sum((0, 1)) * neuron.tau / neuron.threshold
    first, second = spikes[:3].sum().item(), spikes[3:].sum().item()
    assert first > 0 and second > 0
    # a spike at input p of a linear layer costs its out_features accumulates; after a mean over 2
    # values it counts 1/2 there, after a sum 1
    expected = {"mean": (first + second) * (4 + 5) / 2,
                "sum": (first + second) * (4 + 5)}.get(route, first * 4 + second * 5)
    (layer,) = stats["layers"]
    assert layer["sops"] == pytest.approx(expected / 8)
    assert stats["totals"]["snn_macs"] == pytest.approx(2 * 6)  # only fc, once per input


def test_spikes_are_followed_through_an_in_place_sum():
    class Net(TwoBranches):
        def forward(self, x):
            a, b = self.relu1(self.fc1(x)), self.relu2(self.fc2(x))
            a += b
            return self.fc3(a) + self.fc3(b)

    ann = gs.prepare(Net("add"), levels=2, threshold=1.0).eval()
    snn = gs.convert(ann, "gn", tau=2)
    assert any(n.target is operator.iadd for n in trace(snn).nodes)  # traced as in place
    stats = layer_stats(snn, [torch.randn(4, 2) * 2], timesteps=3)
    spikes = {r["layer"]: r["firing_rate"] * r["neurons"] * 3 for r in stats["layers"]}
    assert spikes["relu1"] > 0 and spikes["relu2"] > 0
    # relu1's spikes reach fc3 once, relu2's twice (in a += b and in fc3(b)); fc3 has 2 outputs
    assert {r["layer"]: r["sops"] for r in stats["layers"]} == pytest.approx(
        {"relu1": spikes["relu1"] * 2, "relu2": spikes["relu2"] * 2 * 2})


class NoisyInput(nn.Module):
    """Linear(2→3) on the input plus noise, ReLU, Linear(3→2): the first layer is not static."""

    def __init__(self):
        super().__init__()
        self.fc1, self.relu, self.fc2 = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x + torch.randn_like(x))))


def test_a_layer_after_a_random_draw_costs_macs_at_every_step():
    snn = gs.convert(gs.prepare(NoisyInput(), levels=2).eval(), "gn", tau=2)
    x = torch.randn(4, 2)
    stats = layer_stats(snn, [x], timesteps=3)
    assert stats["totals"]["snn_macs"] == pytest.approx(6 * 3)  # fc1's 2x3 MACs at each of 3 steps
    assert stats["totals"]["sops"] > 0
    by_t = energy_by_timesteps(snn, [x], [1, 3])["timesteps"]
    assert [by_t[t]["snn_macs"] for t in (1, 3)] == pytest.approx([6, 18])


class UnequalCat(nn.Module):
    """Linear(2→2) + ReLU and Linear(2→4) + ReLU whose spikes are concatenated into Linear(6→3)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.relu1, self.relu2 = nn.Linear(2, 2), nn.Linear(2, 4), nn.ReLU(), nn.ReLU()
        self.fc3 = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc3(torch.cat([self.relu1(self.fc1(x)), self.relu2(self.fc2(x))], 1))


@pytest.mark.parametrize("net, macs", [
    (TwoBranches("cat"), {"relu1": 6, "relu2": 6}),        # Linear(6→2), fed half by each
    (TwoBranches("cat-view"), {"relu1": 6, "relu2": 6}),
    (TwoBranches("add"), {"relu1": 3, "relu2": 3}),        # Linear(3→2) on a + b
    (TwoBranches("image"), {"relu1": 6, "relu2": 0}),      # Linear(5→2): 3 of 5 inputs are spikes
    (UnequalCat(), {"relu1": 6, "relu2": 12}),             # Linear(6→3): 2 and 4 of 6 inputs
], ids=["cat", "cat-view", "add", "image", "unequal-cat"])
def test_a_layer_fed_by_several_sources_splits_its_ann_macs_among_them(net, macs):
    ann = gs.prepare(net, levels=2, threshold=1.0).eval()
    stats = layer_stats(gs.convert(ann, "gn", tau=2), [torch.randn(4, 2)], timesteps=2)
    assert {r["layer"]: r["macs"] for r in stats["layers"]} == pytest.approx(macs)
    assert sum(r["macs"] for r in stats["layers"]) <= stats["totals"]["ann_macs"]
