"""Progress: tqdm bars on a terminal, plain lines in a log, never escape codes or carriage returns there."""
import sys

import torch
from tqdm import tqdm

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
