"""Checkpoints of a user's own network class (not in the model registry), as ANN and as SNN."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import groupsnn as gs
from groupsnn.checkpoint import load_model, save_checkpoint


class OwnNet(nn.Module):
    """Functional relu, max-pooling and a residual sum: prepare makes it a GraphModule."""

    def __init__(self, width: int = 8, classes: int = 3):
        super().__init__()
        self.stem, self.conv = nn.Conv2d(1, width, 3, padding=1), nn.Conv2d(width, width, 3, padding=1)
        self.pool, self.head = nn.MaxPool2d(2), nn.Linear(width * 4 * 4, classes)

    def forward(self, x):
        h = F.relu(self.stem(x))
        h = F.relu(self.conv(h) + h)
        return self.head(self.pool(h).flatten(1))


def _trained_like():
    torch.manual_seed(0)
    ann = gs.prepare(OwnNet(width=6), levels=4, threshold=1.0).eval()
    for m in ann.modules():
        if isinstance(m, gs.QCFS):
            m.threshold.data.uniform_(0.5, 2.0)
    return ann


@pytest.mark.parametrize("kind", ["relu", "qcfs", "gn"])
def test_an_own_network_reloads_bit_for_bit(kind, tmp_path):
    ann = _trained_like()
    model = {"relu": OwnNet(width=6).eval(), "qcfs": ann, "gn": gs.convert(ann, "gn", tau=4)}[kind]
    save_checkpoint(tmp_path / "own.pt", model, {"model_kwargs": {"width": 6}})
    loaded, meta = load_model(tmp_path / "own.pt")
    assert meta["model"] == f"{__name__}:OwnNet"
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert [type(m) for m in loaded.modules()][1:] == [type(m) for m in model.modules()][1:]
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x)) if kind != "gn" else \
            torch.equal(gs.simulate(loaded, x, 3, fold=False), gs.simulate(model, x, 3, fold=False))


def test_a_network_that_cannot_be_rebuilt_is_refused_when_saved(tmp_path):
    with pytest.raises(ValueError, match=r"OwnNet\(\*\*\{\}\) rebuilds a network whose weights differ .*model_kwargs"):
        save_checkpoint(tmp_path / "a.pt", gs.prepare(OwnNet(width=6), levels=4), {})  # width not given

    class Local(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

    with pytest.raises(ValueError, match="cannot be imported elsewhere; define the class at the top level"):
        save_checkpoint(tmp_path / "b.pt", Local(), {})
    with pytest.raises(ValueError, match="unknown model 'resnet2'"):
        save_checkpoint(tmp_path / "c.pt", OwnNet(), {"model": "resnet2"})
    assert not list(tmp_path.iterdir())  # nothing written
