"""Faults: killed or interrupted training, diverging loss, old or foreign checkpoints."""
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

import groupsnn.train as train_module
from groupsnn.checkpoint import FORMAT_VERSION, load_checkpoint, load_model, save_checkpoint
from groupsnn.train import RunConfig, TrainConfig, train

TRAIN = ["-m", "groupsnn.cli", "train", "--model", "digits_cnn", "--data", "digits", "--epochs", "3",
         "--batch-size", "64", "--seed", "3"]


def start_training(out, *extra):
    # SIGINT as in a terminal, even when the tests run in the background (which ignores it)
    return subprocess.Popen([sys.executable, *TRAIN, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def weights(path):
    return load_checkpoint(path)["model"]


@pytest.mark.parametrize("seed", [0, 1])
def test_sigkill_at_a_random_moment_then_resume_gives_the_uninterrupted_weights(tmp_path, seed):
    full = start_training(tmp_path / "full")
    assert full.wait(timeout=300) == 0, full.stderr.read()

    victim, checkpoint = start_training(tmp_path / "killed"), tmp_path / "killed" / "checkpoint.pt"
    while not checkpoint.exists():  # epoch 1 is done; kill somewhere in epochs 2-3 or a save
        assert victim.poll() is None, victim.stderr.read()
        time.sleep(0.01)
    time.sleep(random.Random(seed).uniform(0.0, 1.0))
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    load_checkpoint(checkpoint)  # whatever moment the kill hit, the file on disk is whole
    again = start_training(tmp_path / "killed", "--resume")
    assert again.wait(timeout=300) == 0, again.stderr.read()

    expected, got = weights(tmp_path / "full" / "checkpoint.pt"), weights(checkpoint)
    assert all(torch.equal(got[k], v) for k, v in expected.items())
    assert sorted(p.name for p in (tmp_path / "killed").iterdir()) == ["checkpoint.pt", "metrics.csv"]


def test_sigint_stops_cleanly_and_says_how_to_resume(tmp_path):
    proc = start_training(tmp_path, "--epochs", "1000")  # far too many to finish before the signal
    deadline = time.time() + 300
    while not (tmp_path / "checkpoint.pt").exists():  # epoch 1 is done
        assert time.time() < deadline and proc.poll() is None, "no checkpoint after 300 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert "interrupted during epoch" in err and "--resume" in err
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] >= 1


class InterruptWhenCollected:
    """Ctrl-C landing while Python runs a ``__del__`` (a DataLoader iterator's, a progress bar's):
    the KeyboardInterrupt it raises there is printed as "Exception ignored" and dropped."""

    def __del__(self):
        signal.raise_signal(signal.SIGINT)


def interrupt_at_step(monkeypatch, step):
    """Make training see Ctrl-C inside a finaliser during its ``step``-th step; returns the step count."""
    real_loss, steps = train_module.F.cross_entropy, []

    def loss(*args, **kwargs):
        steps.append(1)
        if len(steps) == step:
            InterruptWhenCollected()  # collected at once: its __del__ runs here
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_module.F, "cross_entropy", loss)
    return steps


@pytest.fixture
def ctrl_c_raises():
    """SIGINT handled as in an interactive Python (a test run in the background ignores it)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_inside_a_finaliser_is_not_lost(tmp_path, monkeypatch, capsys, ctrl_c_raises):
    steps = interrupt_at_step(monkeypatch, 3)
    run = RunConfig(model="digits_cnn", data="digits", batch_size=64, optim=TrainConfig(epochs=3))
    with pytest.raises(KeyboardInterrupt):
        train(run, tmp_path, progress=False)
    assert len(steps) == 3  # it stopped after the step the signal arrived in
    assert "interrupted during epoch 1" in capsys.readouterr().err
    assert not (tmp_path / "checkpoint.pt").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_resume_after_ctrl_c_gives_the_uninterrupted_weights(tmp_path, monkeypatch, capsys, ctrl_c_raises):
    run = RunConfig(model="digits_cnn", data="digits", batch_size=64, optim=TrainConfig(epochs=2, seed=5))
    expected = weights(train(run, tmp_path / "full", progress=False))
    interrupt_at_step(monkeypatch, 22 + 7)  # digits: 22 batches per epoch
    with pytest.raises(KeyboardInterrupt):
        train(run, tmp_path / "stopped", progress=False)
    assert "holds epoch 1; --resume starts epoch 2 again" in capsys.readouterr().err
    monkeypatch.undo()
    got = weights(train(run, tmp_path / "stopped", resume=True, progress=False))
    assert all(torch.equal(got[k], v) for k, v in expected.items())


def test_a_diverging_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real_loss, calls = train_module.F.cross_entropy, []

    def loss_that_explodes_in_epoch_2(*args, **kwargs):
        calls.append(1)
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if len(calls) > 22 else loss  # digits: 22 batches per epoch

    monkeypatch.setattr(train_module.F, "cross_entropy", loss_that_explodes_in_epoch_2)
    run = RunConfig(model="digits_cnn", data="digits", batch_size=64, optim=TrainConfig(epochs=3))
    with pytest.raises(FloatingPointError, match="loss is nan at epoch 2, step 1"):
        train(run, tmp_path, progress=False)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1


def test_old_checkpoint_format_is_refused_clearly(tmp_path):
    path = save_checkpoint(tmp_path / "old.pt", torch.nn.Linear(2, 2), {"model": "digits_cnn", "version": "0.0.1"})
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = FORMAT_VERSION - 1
    torch.save(payload, path)
    with pytest.raises(ValueError, match="old checkpoint format 0, which groupsnn 0.0.1 wrote"):
        load_checkpoint(path)
    payload["format_version"] = FORMAT_VERSION + 1
    torch.save(payload, path)
    with pytest.raises(ValueError, match="newer than this groupsnn understands"):
        load_checkpoint(path)


def test_wrong_architecture_weights_are_refused_clearly(tmp_path):
    run = RunConfig(model="digits_cnn", data="digits", batch_size=64, optim=TrainConfig(epochs=1))
    payload = load_checkpoint(train(run, tmp_path, progress=False))
    payload["meta"]["model"] = "mnist1d_cnn"
    torch.save(payload, tmp_path / "swapped.pt")
    with pytest.raises(ValueError, match="weights do not fit model 'mnist1d_cnn'"):
        load_model(tmp_path / "swapped.pt")


def test_a_checkpoint_cannot_run_code_when_loaded(tmp_path):
    class Evil:
        def __reduce__(self):
            return (exec, ("open(%r, 'w').write('pwned')" % str(tmp_path / "pwned"),))

    torch.save({"format": "groupsnn", "payload": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="not a readable groupsnn checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()
