"""Every network groupsnn makes survives ``save_checkpoint``/``load_model`` bit for bit: QCFS,
calibrated per channel, IF, GN, signed and corrected SNNs, with their neuron kind and τ."""
import json

import pytest
import torch

import groupsnn as gs
from groupsnn.checkpoint import load_model, make_meta, save_checkpoint
from groupsnn.cli import main
from groupsnn.neurons import SpikingNeuron


def _digits_batches(n=3, size=16):
    return [(torch.rand(size, 1, 8, 8), torch.randint(0, 10, (size,))) for _ in range(n)]


def _qcfs():
    return gs.prepare(gs.models.create("digits_cnn"), levels=8, threshold=1.0).eval()


def _per_channel():
    return gs.calibrate(gs.models.create("digits_cnn").eval(), _digits_batches(), per_channel=True, levels=8)


def _corrected():
    ann = _per_channel()
    return gs.correct(gs.convert(ann, "gn", tau=4), ann, _digits_batches(), timesteps=2)


KINDS = {
    "qcfs": _qcfs,
    "calibrated per channel": _per_channel,
    "if": lambda: gs.convert(_qcfs(), "if"),
    "gn": lambda: gs.convert(_qcfs(), "gn", tau=2),
    "signed gn": lambda: gs.convert(_per_channel(), "gn", tau=4, signed=True),
    "corrected gn": _corrected,
}


def _neurons(model):
    return {n: (type(m).__name__, m.tau, m.signed, tuple(m.threshold.shape),
                None if m.v_init is None else tuple(m.v_init.shape))
            for n, m in model.named_modules() if isinstance(m, SpikingNeuron)}


@pytest.mark.parametrize("kind", KINDS)
def test_a_saved_network_reloads_as_itself_bit_for_bit(kind, tmp_path):
    torch.manual_seed(0)
    model = KINDS[kind]()
    for m in model.modules():  # thresholds other than the defaults, so that a fresh network differs
        if isinstance(getattr(m, "threshold", None), torch.nn.Parameter):
            m.threshold.data.mul_(1 + torch.rand_like(m.threshold))
    save_checkpoint(tmp_path / "net.pt", model, make_meta("digits_cnn", 10, 8, "digits"))
    loaded, _ = load_model(tmp_path / "net.pt")
    assert _neurons(loaded) == _neurons(model)
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
    if kind == "corrected gn":
        assert any(m.v_init is not None for m in loaded.modules() if isinstance(m, SpikingNeuron))
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(gs.simulate(loaded, x, 3), gs.simulate(model, x, 3))  # the same path on both


def test_groupsnn_evaluate_on_a_saved_snn_evaluates_that_snn(digits_checkpoint, tmp_path, capsys):
    ann, meta = load_model(digits_checkpoint)
    save_checkpoint(tmp_path / "snn.pt", gs.convert(ann, "gn", tau=2), meta)
    args = ["--timesteps", "1,2", "--per-class", "5"]
    assert main(["evaluate", str(digits_checkpoint), "--tau", "2", "--out", str(tmp_path / "ann"), *args]) == 0
    assert main(["evaluate", str(tmp_path / "snn.pt"), "--out", str(tmp_path / "snn"), *args]) == 0
    from_ann = json.loads((tmp_path / "ann" / "evaluate_gn_tau2_T1,2.json").read_text())
    from_snn = json.loads((tmp_path / "snn" / "evaluate_gn_tau2_T1,2.json").read_text())
    assert from_snn["snn"] == from_ann["snn"] and {r["tau"] for r in from_snn["snn"]} == {2}
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "snn.pt"), "--tau", "4", "--out", str(tmp_path / "x"), *args]) == 2
    assert "holds an SNN of GN τ=2 neurons" in capsys.readouterr().err
