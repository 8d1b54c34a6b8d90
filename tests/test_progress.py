"""Progress: tqdm bars on a terminal, plain lines in a log, never escape codes or carriage returns there."""
import inspect
import sys
import types

import pytest
import torch
import torch.nn as nn
from tqdm import tqdm

import groupsnn as gs
from groupsnn import data, models
from groupsnn.convert import prepare
from groupsnn.progress import LogProgress, progress_bar
from groupsnn.train import TrainConfig, fit


def test_a_log_gets_one_plain_line_per_item_of_a_lasting_bar(capsys):
    bar = progress_bar(range(2, 5), desc="epochs", initial=2, total=5)
    assert isinstance(bar, LogProgress)
    for i in bar:
        bar.set_postfix(loss=f"{i / 10:.1f}")
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["epochs 3/5", "epochs 4/5", "epochs 5/5"]
    assert lines[-1].endswith("s): loss=0.4")


def test_a_log_gets_nothing_from_a_passing_bar(capsys):
    assert list(progress_bar(range(3), desc="steps", leave=False)) == [0, 1, 2]
    assert list(progress_bar(range(3), desc="epochs", disable=True)) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_a_terminal_gets_tqdm_bars(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    bar = progress_bar(range(3), desc="epochs", leave=False)
    assert isinstance(bar, tqdm) and not bar.disable
    bar.close()


def test_training_logs_plain_lines(capsys):
    net = prepare(models.create("digits_cnn"), levels=8)
    loader = data.make_loader(data.load("digits").train, 128, train=True)
    fit(net, loader, TrainConfig(epochs=1), torch.device("cpu"), progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    assert [line.split(" (")[0] for line in err.splitlines()] == ["epochs 1/1"]
    assert "train_accuracy=" in err.splitlines()[-1]


def test_a_notebook_gets_tqdm_bars(monkeypatch):
    class ZMQInteractiveShell:  # what IPython's get_ipython() returns in a Jupyter kernel
        pass

    fake_ipython = types.ModuleType("IPython")
    fake_ipython.get_ipython = ZMQInteractiveShell
    monkeypatch.setitem(sys.modules, "IPython", fake_ipython)
    bar = progress_bar(range(3), desc="evaluate", leave=False)
    assert isinstance(bar, tqdm) and not bar.disable
    bar.close()
    fake_ipython.get_ipython = lambda: None  # plain python with IPython imported: a log
    assert isinstance(progress_bar(range(3), desc="epochs"), LogProgress)


def _small_relu_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10), nn.ReLU(),
                         nn.Linear(10, 10))


LONG_CALLS = {
    "calibrate": lambda batches, progress: gs.calibrate(_small_relu_net(), batches, levels=4, progress=progress),
    "correct": lambda batches, progress: gs.correct(
        gs.convert(ann := gs.calibrate(_small_relu_net(), batches, levels=4, progress=False), "gn", tau=2), ann,
        batches, timesteps=2, progress=progress),
    "evaluate": lambda batches, progress: gs.evaluate(_small_relu_net(), batches, [1], progress=progress),
}


@pytest.mark.parametrize("call", sorted(LONG_CALLS))
def test_long_calls_show_a_bar_by_default_and_none_when_told_not_to(call, capsys, monkeypatch):
    """calibrate (batches), correct (layers) and evaluate (batches) on a terminal; the bar's name is its call."""
    batches = [(torch.rand(8, 1, 8, 8), torch.zeros(8, dtype=torch.long)) for _ in range(3)]
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    LONG_CALLS[call](batches, True)
    err = capsys.readouterr().err
    assert f"{call}: " in err and ("/3 [" if call != "correct" else "2/2 [") in err  # batches, or layers
    signature = inspect.signature({"calibrate": gs.calibrate, "correct": gs.correct, "evaluate": gs.evaluate}[call])
    assert signature.parameters["progress"].default is True
    LONG_CALLS[call](batches, False)
    assert capsys.readouterr().err == ""


def test_correct_logs_one_line_per_layer(capsys):
    """correct can take minutes: in a log it says which layer it is at (calibrate and evaluate,
    quick per batch, show nothing there)."""
    batches = [(torch.rand(8, 1, 8, 8), torch.zeros(8, dtype=torch.long)) for _ in range(3)]
    for call in ("calibrate", "evaluate"):
        LONG_CALLS[call](batches, True)
        assert capsys.readouterr().err == ""
    LONG_CALLS["correct"](batches, True)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["correct 1/2", "correct 2/2"]
