"""What a newcomer expects of a command line and of an API: --version, --debug anywhere, a subcommand's
own help hint, defaults in --help, one meaning per option name, --device, a fast --help (nothing heavy
imported for it), and no quiet untruths (a string device, a tau an IF neuron ignores, -0.000)."""
import json
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

import groupsnn as gs
from groupsnn.cli import main
from groupsnn.stats import format_stats
from groupsnn.train import TrainConfig, fit

COMMANDS = ["demo", "train", "evaluate", "sweep", "stats", "export", "convert"]


def help_text(capsys, *args) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"groupsnn {gs.__version__}\n"


def test_debug_is_taken_after_the_subcommand_too(tmp_path):
    with pytest.raises(FileNotFoundError):
        main(["evaluate", str(tmp_path / "missing.pt"), "--debug"])
    with pytest.raises(FileNotFoundError):
        main(["--debug", "evaluate", str(tmp_path / "missing.pt")])
    assert main(["evaluate", str(tmp_path / "missing.pt")]) == 2


REQUIRED = {"train": ["--model", "digits_cnn", "--data", "digits", "--out", "x"], "evaluate": ["x.pt"],
            "sweep": ["x.pt"], "stats": ["x.pt"], "export": ["x.pt", "--out", "y.pt"],
            "convert": ["--from-relu", "x.pt", "--model", "digits_cnn", "--data", "digits"]}


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unknown_option_points_at_the_subcommands_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, *REQUIRED.get(command, []), "--no-such-option"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == \
        f"error: unrecognized arguments: --no-such-option (see 'groupsnn {command} --help')\n"
    with pytest.raises(SystemExit):  # before the subcommand, it is groupsnn's
        main(["--no-such-option", command, *REQUIRED.get(command, [])])
    assert capsys.readouterr().err == "error: unrecognized arguments: --no-such-option (see 'groupsnn --help')\n"


def test_help_shows_the_defaults(capsys):
    assert "(default: 1,2,4,8,16,32)" in help_text(capsys, "evaluate")  # --timesteps
    assert "(default: 128)" in help_text(capsys, "sweep")  # --batch-size
    train = help_text(capsys, "train")
    assert "(default: 300)" in train and "(default: 0.1)" in train  # --epochs, --lr


def test_one_meaning_per_option_name(capsys):
    """--tau: the members of one Group Neuron; --taus: a list of sizes, wherever a list is meant."""
    for command in COMMANDS:
        text = help_text(capsys, command)
        assert ("--tau TAU " in text) == (command in ("evaluate", "stats")), command
        assert ("--taus TAUS" in text) == (command in ("demo", "sweep", "convert")), command


@pytest.mark.parametrize("command", ["train", "evaluate", "sweep", "stats", "convert"])
def test_every_command_that_runs_networks_takes_a_device(command, capsys):
    assert "--device DEVICE" in help_text(capsys, command)


@pytest.mark.skipif(torch.cuda.device_count() > 3, reason="the machine has the GPU this test asks for")
def test_a_device_the_machine_lacks_is_one_clear_error(tmp_path, capsys):
    code = main(["train", "--model", "digits_cnn", "--data", "digits", "--epochs", "1", "--device", "cuda:3",
                 "--out", str(tmp_path / "run")])
    assert code == 2 and "--device cuda:3: this machine has" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_convert_takes_taus_per_class_and_device(tmp_path, capsys):
    torch.save(gs.models.create("digits_cnn", num_classes=10).state_dict(), tmp_path / "relu.pt")
    out = tmp_path / "out"
    assert main(["convert", "--from-relu", str(tmp_path / "relu.pt"), "--model", "digits_cnn", "--data", "digits",
                 "--taus", "2,4", "--per-class", "3", "--timesteps", "1", "--calibration-batches", "1",
                 "--device", "cpu", "--out", str(out)]) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["per_class"] == 3 and {r["tau"] for r in results["snn"]} == {2, 4}
    assert all(round(r["accuracy"] * 30 / 100, 6).is_integer() for r in results["snn"])  # of 30 images


def test_help_imports_nothing_heavy():
    """`groupsnn --help` answers at once: neither the package nor the CLI imports torch; the public
    names still work once used (gs.convert the function, not its module; the shipped weights registered)."""
    code = """if True:
        import sys
        import groupsnn as gs
        from groupsnn.cli import main
        try:
            main(["--help"])
        except SystemExit:
            pass
        assert "torch" not in sys.modules, sorted(m for m in sys.modules if m.startswith("torch"))[:5]
        import groupsnn.checkpoint, groupsnn.simulate  # load the submodules named like gs's functions
        assert callable(gs.convert) and callable(gs.simulate) and callable(gs.calibrate), gs.convert
        from groupsnn import convert, models, prepare
        assert convert is gs.convert and ("resnet20", "cifar10") in models.list_pretrained()
    """
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: groupsnn")


def test_fit_takes_a_device_name():
    data = TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,)))
    model = gs.prepare(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), levels=4)
    trained = fit(model, DataLoader(data, batch_size=4), TrainConfig(epochs=1), "cpu", progress=False)
    assert next(trained.parameters()).device.type == "cpu"


def test_an_if_neuron_refuses_a_tau():
    ann = gs.prepare(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), levels=4)
    with pytest.raises(ValueError, match="tau is for Group Neurons; an IF neuron has one member"):
        gs.convert(ann, neuron="if", tau=4)
    for snn in (gs.convert(ann, neuron="if"), gs.convert(ann, neuron="if", tau=1)):  # one member is what IF is
        assert any(isinstance(m, gs.IFNeuron) for m in snn.modules())
    assert {m.tau for m in gs.convert(ann).modules() if isinstance(m, gs.GroupNeuron)} == {4}  # gn's default


def test_stats_table_prints_no_negative_zero():
    layer = {"layer": "conv", "firing_rate": -0.0, "negative_rate": -0.0, "mean_output": -0.00001, "sops": 1.0,
             "macs": 2.0, "conversion_mse": None}
    totals = {"sops": 1.0, "snn_macs": 0.0, "snn_energy_uj": 1.0, "ann_macs": 2.0, "ann_energy_uj": 2.0}
    table = format_stats({"layers": [layer, {**layer, "negative_rate": 0.25}], "timesteps": 2, "totals": totals})
    assert "-0.0" not in table and "0.250" in table
