"""Converting a pretrained ReLU network without retraining: calibrate -> convert."""
import json

import pytest
import torch
import torch.nn as nn

import groupsnn as gs
from groupsnn.calibrate import StreamingHistogram, fuse_batchnorm
from groupsnn.compensate import Compensated
from groupsnn.cli import main
from groupsnn.neurons import RateMaxPool


def predictions(model, loader, timesteps):
    return torch.cat([gs.simulate(model, x, timesteps).mean(0).argmax(1) for x, _ in loader])


def test_streaming_percentile_is_within_one_percent_of_torch_quantile():
    # per layer: the scale grows batch by batch, so the histogram's range doubles many times
    chunks = [torch.randn(1, 20_000).exp() * 1.5 ** k - 0.5 for k in range(12)]
    # per channel: scales 10^7 apart, one histogram range each
    scales = torch.tensor([1e-3, 1.0, 50.0, 1e4])[:, None]
    channel_chunks = [torch.randn(4, 5_000).abs() * scales * (1 + k) for k in range(8)]
    for stream in (chunks, channel_chunks):
        hist = StreamingHistogram(len(stream[0]))
        for chunk in stream:
            hist.update(chunk)
        x = torch.cat(stream, dim=1).double()
        for q in (99.0, 99.9, 99.99):
            expected = torch.stack([torch.quantile(row[row > 0], q / 100) for row in x])
            torch.testing.assert_close(hist.percentile(q), expected, rtol=0.01, atol=0)
        assert torch.equal(hist.percentile(100), x.amax(dim=1))


def test_calibrated_relu_network_gn_matches_the_ann_at_one_step_where_if_collapses(digits_relu):
    relu, calibration, test = digits_relu
    ann_accuracy = gs.evaluate(relu, test, [1])[1]
    ann = gs.calibrate(relu, calibration, percentile=99.9)
    gn = gs.evaluate(gs.convert(ann, neuron="gn", tau=8), test, [1])
    if_ = gs.evaluate(gs.convert(ann, neuron="if"), test, [1, 32])
    assert ann_accuracy >= 95.0
    assert abs(gn[1] - ann_accuracy) <= 1.0, (gn, ann_accuracy)
    assert if_[1] <= ann_accuracy - 20, (if_, ann_accuracy)
    assert if_[32] >= ann_accuracy - 2, (if_, ann_accuracy)


def test_gn_with_tau_equal_levels_at_one_step_is_the_calibrated_ann_with_maxpool_kept(digits_relu):
    relu, calibration, test = digits_relu
    ann = gs.calibrate(relu, calibration, levels=8, per_channel=True, maxpool="keep")
    snn = gs.convert(ann, neuron="gn", tau=8)
    assert sum(isinstance(m, nn.MaxPool2d) for m in ann.modules()) == 2
    assert sum(isinstance(m, RateMaxPool) for m in snn.modules()) == 2
    assert {m.threshold.shape for m in snn.modules() if isinstance(m, gs.GroupNeuron)} == \
        {(32, 1, 1), (64, 1, 1), (128, 1, 1)}
    with torch.no_grad():
        for x, _ in test:
            # like with like (unfolded vs as is, folded vs folded): folded against unfolded rounds differently
            assert torch.equal(gs.simulate(snn, x, 1, fold=False)[0], ann(x))
            assert torch.equal(gs.simulate(snn, x, 1)[0], gs.simulate(ann, x, 1)[0])
    assert torch.equal(predictions(snn, test, 1), predictions(ann, test, 1))  # both folded


def test_fuse_batchnorm_keeps_the_outputs():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.BatchNorm2d(8),  # BN after ReLU stays
                        nn.Flatten(), nn.Linear(8 * 6 * 6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))
    for bn in (net[1], net[3], net[6]):
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 2)
        bn.bias.data.uniform_(-1, 1)
    net.eval()
    x = torch.randn(16, 3, 8, 8)
    fused = fuse_batchnorm(net, example_input=x)  # the example shows the linear output is [B, features]
    assert [type(m) for m in fused] == [nn.Conv2d, nn.Identity, nn.ReLU, nn.BatchNorm2d, nn.Flatten, nn.Linear,
                                       nn.Identity, nn.ReLU, nn.Linear]
    with torch.no_grad():
        torch.testing.assert_close(fused(x), net(x), rtol=1e-5, atol=1e-5)
    # without an example, Linear -> BatchNorm1d stays: its input could be [B, tokens, features]
    assert [type(m) for m in fuse_batchnorm(net)][5:7] == [nn.Linear, nn.BatchNorm1d]


class Tokens(nn.Module):
    """Linear -> BatchNorm1d on [B, tokens, features]: BatchNorm1d normalises the tokens' dim."""

    def __init__(self, tokens=6, features=6):
        super().__init__()
        self.fc, self.bn, self.act, self.head = (nn.Linear(features, features), nn.BatchNorm1d(tokens), nn.ReLU(),
                                                 nn.Linear(tokens * features, 3))

    def forward(self, x):
        return self.head(self.act(self.bn(self.fc(x))).flatten(1))


@pytest.mark.parametrize("tokens", [6, 5])  # tokens == features folded silently wrong; else an AssertionError
def test_linear_then_batchnorm1d_over_tokens_is_never_folded(tokens):
    torch.manual_seed(0)
    net = Tokens(tokens).eval()
    net.bn.running_mean.uniform_(-1, 1), net.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(8, tokens, 6)
    fused = fuse_batchnorm(net, example_input=x)
    assert isinstance(fused.bn, nn.BatchNorm1d)
    calibrated = gs.calibrate(net, [x], fuse_bn=True)
    assert isinstance(calibrated.bn, nn.BatchNorm1d)
    snn = gs.convert(gs.prepare(net, levels=4, threshold=1.0), "gn", tau=4)
    # nothing is foldable, so the folded path runs the same operations as the network itself
    assert torch.equal(gs.simulate(snn, x, 2), gs.simulate(snn, x, 2, fold=False))


def test_an_activation_after_a_calibrated_relu_runs_on_rates():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 2))
    ann = gs.calibrate(net, [torch.randn(32, 4)])
    snn = gs.convert(ann)
    assert isinstance(snn[3], Compensated) and snn[3].fn is not ann[3]  # the SNN has its own copy


def test_cli_convert_writes_the_accuracy_table(digits_relu, tmp_path, capsys):
    checkpoint, out = tmp_path / "relu.pt", tmp_path / "convert"
    torch.save(digits_relu[0].state_dict(), checkpoint)
    code = main(["convert", "--from-relu", str(checkpoint), "--model", "digits_cnn", "--data", "digits",
                 "--neuron", "both", "--taus", "8", "--timesteps", "1,4", "--out", str(out)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert {(r["neuron"], r["tau"], r["timesteps"]) for r in results["snn"]} == \
        {(n, tau, t) for n, tau in [("if", None), ("gn", 8)] for t in (1, 4)}
    assert results["ann_accuracy"] >= 95.0 and results["levels"] is None
    header = (out / "results.csv").read_text().splitlines()[0]
    assert header == "neuron,tau,timesteps,accuracy,sops,snn_energy_uj,pareto"
    assert (out / "accuracy_vs_T.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ReLU ANN" in capsys.readouterr().out
