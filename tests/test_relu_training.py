"""groupsnn train --activation relu: the plain ReLU baseline."""
import torch.nn as nn

from groupsnn.checkpoint import load_model
from groupsnn.cli import main
from groupsnn.qcfs import QCFS


def test_train_activation_relu_writes_a_plain_relu_network(tmp_path, capsys):
    out = tmp_path / "relu"
    assert main(["train", "--model", "digits_cnn", "--data", "digits", "--activation", "relu", "--epochs", "1",
                 "--no-compile", "--out", str(out)]) == 0
    net, meta = load_model(out / "checkpoint.pt")
    assert meta["levels"] is None and meta["run"]["levels"] is None
    assert not any(isinstance(m, QCFS) for m in net.modules())
    assert any(isinstance(m, nn.ReLU) for m in net.modules())
    assert any(isinstance(m, nn.MaxPool2d) for m in net.modules())  # as the model defines it
    capsys.readouterr()
    assert main(["train", "--model", "digits_cnn", "--data", "digits", "--activation", "relu", "--levels", "4",
                 "--out", str(tmp_path / "both")]) == 2
    assert "--activation relu trains a plain ReLU network" in capsys.readouterr().err
    assert not (tmp_path / "both").exists()


def test_train_levels_sets_the_qcfs_levels(tmp_path):
    out = tmp_path / "qcfs"
    assert main(["train", "--model", "digits_cnn", "--data", "digits", "--levels", "4", "--epochs", "1",
                 "--no-compile", "--out", str(out)]) == 0
    net, meta = load_model(out / "checkpoint.pt")
    assert meta["levels"] == 4 and {m.levels for m in net.modules() if isinstance(m, QCFS)} == {4}
