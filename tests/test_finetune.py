"""Fine-tuning a calibrated ReLU network: groupsnn convert --from-relu ... --finetune-epochs N."""
import json

import torch

import groupsnn as gs
from groupsnn.checkpoint import load_model, make_meta, save_checkpoint
from groupsnn.cli import main
from groupsnn.qcfs import QCFS


def test_finetuned_checkpoint_is_read_by_evaluate_sweep_and_stats(digits_relu, tmp_path, capsys):
    relu, calibration, _ = digits_relu
    torch.save(relu.state_dict(), tmp_path / "relu.pt")
    out = tmp_path / "tuned"
    assert main(["convert", "--from-relu", str(tmp_path / "relu.pt"), "--model", "digits_cnn", "--data", "digits",
                 "--levels", "8", "--finetune-epochs", "1", "--taus", "8", "--timesteps", "1,2",
                 "--out", str(out)]) == 0
    ann, meta = load_model(out / "checkpoint.pt")
    assert meta["levels"] == 8 and meta["finetune"]["epochs"] == 1 and meta["network"]["maxpool"] == "keep"
    assert {m.levels for m in ann.modules() if isinstance(m, QCFS)} == {8}
    calibrated = gs.calibrate(relu, calibration, levels=8)
    weights = [n for n, _ in ann.named_parameters() if n.endswith("weight")]
    assert any(not torch.equal(ann.get_parameter(n), calibrated.get_parameter(n)) for n in weights)  # trained
    results = json.loads((out / "results.json").read_text())
    assert results["finetune_epochs"] == 1
    x = next(iter(calibration))[0][:16]
    assert torch.equal(gs.simulate(gs.convert(ann, "gn", tau=8), x, 1)[0], gs.simulate(ann, x, 1)[0])
    for command in (["evaluate", "--tau", "8", "--timesteps", "1"],
                    ["sweep", "--taus", "8", "--timesteps", "1", "--energy-batches", "1"],
                    ["stats", "--tau", "8", "--timesteps", "1", "--batches", "1"]):
        where = out / command[0]  # convert's own plot is in out
        assert main([command[0], str(out / "checkpoint.pt"), *command[1:], "--out", str(where)]) == 0, \
            capsys.readouterr().err
        assert (where / f"{'evaluate_gn_tau8_T1' if command[0] == 'evaluate' else command[0]}.json").is_file()


def test_a_clip_only_calibrated_checkpoint_converts(digits_relu, tmp_path, capsys):
    relu, calibration, _ = digits_relu
    ann = gs.calibrate(relu, calibration)  # levels=None: clip only
    save_checkpoint(tmp_path / "clip.pt", ann, make_meta("digits_cnn", 10, None, "digits", input_shape=[1, 8, 8]))
    assert main(["evaluate", str(tmp_path / "clip.pt"), "--tau", "8", "--timesteps", "1,2",
                 "--out", str(tmp_path / "evaluate")]) == 0, \
        capsys.readouterr().err
    assert "GN τ=8" in capsys.readouterr().out
    save_checkpoint(tmp_path / "relu.pt", relu, make_meta("digits_cnn", 10, None, "digits", input_shape=[1, 8, 8]))
    assert main(["evaluate", str(tmp_path / "relu.pt"), "--out", str(tmp_path / "evaluate_relu")]) == 2
    assert "holds a plain ReLU network" in capsys.readouterr().err
