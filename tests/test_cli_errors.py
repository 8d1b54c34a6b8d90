"""Every user error of the CLI: exit code 2, one line `error: ...` naming problem and fix, no
traceback, and no file changed."""
import os
import resource
import subprocess
import sys

import pytest
import torch
from PIL import Image

from groupsnn.checkpoint import export_checkpoint
from groupsnn.train import RunConfig, TrainConfig, train


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    train(RunConfig(model="digits_cnn", data="digits", batch_size=64, optim=TrainConfig(epochs=1)),
          root / "run", progress=False)
    train(RunConfig(model="digits_cnn", data="digits", batch_size=64, levels=None, optim=TrainConfig(epochs=1)),
          root / "relu_run", progress=False)
    torch.save({"weights": torch.zeros(3)}, root / "foreign.pt")
    (root / "garbage.pt").write_bytes(b"\x00not a checkpoint")
    (root / "keyerror.pt").write_bytes(b"h\x17.")  # torch's unpickler: KeyError: 23
    (root / "indexerror.pt").write_bytes(b"\x85.")  # torch's unpickler: IndexError
    (root / "broken_run").mkdir()
    (root / "broken_run" / "checkpoint.pt").write_bytes(b"h\x17.")
    (root / "exported_run").mkdir()
    export_checkpoint(root / "run" / "checkpoint.pt", root / "exported_run" / "checkpoint.pt")
    payload = torch.load(root / "run" / "checkpoint.pt", weights_only=True)
    torch.save({**payload, "meta": ["not", "a", "dict"]}, root / "odd_meta.pt")
    (root / "a_file").write_text("I am a file")
    (root / "runs").mkdir()
    (root / "runs" / "evaluate-run").write_text("I am a file where evaluate's default --out would be")
    (root / "empty").mkdir()
    (root / "relu.pt").write_bytes(b"")
    torch.save(torch.zeros(3), root / "tensor.pt")
    (root / "cifar" / "cifar-10-batches-py").mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (root / "cifar" / "cifar-10-batches-py" / name).write_bytes(b"\x80\x04truncated")
    for split, name in [("train", "n01"), ("train", "n02"), ("val", "n01"), ("val", "n02")]:
        (root / "imagenet" / split / name).mkdir(parents=True)
        Image.new("RGB", (40, 30)).save(root / "imagenet" / split / name / "a.JPEG")
    (root / "imagenet" / "train" / "n02" / "a.JPEG").write_bytes(b"\xff\xd8 damaged")
    (root / "tars").mkdir()
    for split in ("train", "test"):
        (root / "tars" / f"{split}.tar.gz").write_bytes(b"\x1f\x8b broken gzip")
    return root


def snapshot(root):
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


CKPT = "{w}/run/checkpoint.pt"
TRAIN = ["train", "--model", "digits_cnn", "--data", "digits", "--epochs", "1"]
CASES = {
    # missing or unreadable files
    "missing checkpoint": (["evaluate", "{w}/missing.pt"], "checkpoint {w}/missing.pt not found"),
    "checkpoint is a folder": (["evaluate", "{w}/empty"], "is not a file"),
    "garbage checkpoint": (["evaluate", "{w}/garbage.pt"], "not a readable groupsnn checkpoint"),
    "foreign checkpoint": (["evaluate", "{w}/foreign.pt"], "not a groupsnn checkpoint"),
    "missing relu weights": (["convert", "--from-relu", "{w}/missing.pt", "--model", "digits_cnn",
                              "--data", "digits", "--out", "{w}/conv"], "not found"),
    "missing init-from": (TRAIN + ["--init-from", "{w}/missing.pt", "--out", "{w}/new"], "missing.pt"),
    # unknown names
    "unknown model": (["train", "--model", "resnet99", "--data", "digits", "--out", "{w}/new"],
                      "unknown model 'resnet99'; known models: digits_cnn"),
    "unknown data set": (["train", "--model", "digits_cnn", "--data", "svhn", "--out", "{w}/new"],
                         "unknown data set 'svhn'; known data sets:"),
    "unknown data set at evaluate": (["evaluate", CKPT, "--data", "svhn"], "unknown data set 'svhn'"),
    "unknown neuron": (["evaluate", CKPT, "--neuron", "lif"], "invalid choice: 'lif'"),
    "unknown demo data": (["demo", "--data", "cifar10"], "invalid choice: 'cifar10'"),
    # bad numbers
    "tau zero": (["evaluate", CKPT, "--tau", "0"], "expected a positive integer, got '0'"),
    "tau negative": (["evaluate", CKPT, "--tau", "-2"], "expected a positive integer, got '-2'"),
    "tau not a number": (["evaluate", CKPT, "--tau", "four"], "expected a positive integer, got 'four'"),
    "demo taus zero": (["demo", "--taus", "2,0"], "positive integers"),
    "empty timesteps": (["evaluate", CKPT, "--timesteps", ""], "positive integers like 1,2,4, got ''"),
    "malformed timesteps": (["evaluate", CKPT, "--timesteps", "1,two"], "comma-separated integers"),
    "zero timesteps": (["evaluate", CKPT, "--timesteps", "0,1"], "positive integers"),
    "zero epochs": (["train", "--model", "digits_cnn", "--data", "digits", "--epochs", "0", "--out", "{w}/new"],
                    "expected a positive integer"),
    "zero batch size": (TRAIN + ["--batch-size", "0", "--out", "{w}/new"], "expected a positive integer"),
    # model and data do not fit
    "1-D model on images": (["train", "--model", "mnist1d_cnn", "--data", "digits", "--out", "{w}/new"],
                            "cannot take inputs of shape [1, 8, 8]"),
    "checkpoint on other inputs": (["evaluate", CKPT, "--data", "mnist1d"], "takes inputs of shape [1, 8, 8]"),
    # data folders with the wrong layout
    "cifar10 layout": (["train", "--model", "resnet20", "--data", "cifar10", "--data-dir", "{w}/empty",
                        "--out", "{w}/new"], "cifar-10-batches-py"),
    "cifar100 layout": (["train", "--model", "resnet20", "--data", "cifar100", "--data-dir", "{w}/empty",
                         "--out", "{w}/new"], "cifar-100-python"),
    "image folder layout": (["train", "--model", "resnet20", "--data", "cifar10-folder", "--data-dir",
                             "{w}/empty", "--out", "{w}/new"], "train.tar.gz"),
    "imagenet layout": (["train", "--model", "resnet18", "--data", "imagenet", "--data-dir", "{w}/empty",
                         "--out", "{w}/new"], "train/"),
    # outputs
    "demo out is a file": (["demo", "--out", "{w}/a_file"], "output folder {w}/a_file is a file"),
    "train out is a file": (TRAIN + ["--out", "{w}/a_file"], "is a file"),
    "evaluate out is a file": (["evaluate", CKPT, "--out", "{w}/a_file"], "is a file"),
    "train over an earlier run": (TRAIN + ["--out", "{w}/run"], "exists; pass --overwrite"),
    "garbage init-from": (TRAIN + ["--init-from", "{w}/garbage.pt", "--out", "{w}/new"],
                          "not a readable groupsnn state_dict"),
    "init-from holds a tensor": (TRAIN + ["--init-from", "{w}/tensor.pt", "--out", "{w}/new"], "holds no state_dict"),
    "truncated cifar batch": (["train", "--model", "resnet20", "--data", "cifar10", "--data-dir", "{w}/cifar",
                               "--out", "{w}/new"], "not a readable CIFAR batch"),
    "corrupt tar archive": (["train", "--model", "resnet20", "--data", "cifar10-folder", "--data-dir", "{w}/tars",
                             "--out", "{w}/new"], "tars/train.tar.gz"),
    "convert 1-D model on images": (["convert", "--from-relu", "{w}/relu_run/checkpoint.pt", "--model",
                                     "mnist1d_cnn", "--data", "digits", "--out", "{w}/conv"],
                                    "cannot take inputs of shape [1, 8, 8]"),
    "resume without a run": (TRAIN + ["--out", "{w}/empty", "--resume"], "--resume: {w}/empty/checkpoint.pt not found"),
    "resume with other settings": (TRAIN[:-1] + ["2", "--out", "{w}/run", "--resume"], "different settings"),
    "relu checkpoint is not a groupsnn one": (["evaluate", "{w}/relu.pt"], "not a readable groupsnn checkpoint"),
    # bytes that make torch's unpickler itself fail (KeyError, IndexError), and odd structures
    "evaluate unpickler error": (["evaluate", "{w}/keyerror.pt"], "{w}/keyerror.pt is not a readable groupsnn"),
    "sweep unpickler error": (["sweep", "{w}/indexerror.pt"], "{w}/indexerror.pt is not a readable groupsnn"),
    "stats unpickler error": (["stats", "{w}/keyerror.pt"], "{w}/keyerror.pt is not a readable groupsnn"),
    "export unpickler error": (["export", "{w}/indexerror.pt", "--out", "{w}/w.pt"], "{w}/indexerror.pt is not a"),
    "convert unpickler error": (["convert", "--from-relu", "{w}/keyerror.pt", "--model", "digits_cnn", "--data",
                                 "digits", "--out", "{w}/conv"], "{w}/keyerror.pt is not a readable groupsnn state_dict"),
    "init-from unpickler error": (TRAIN + ["--init-from", "{w}/indexerror.pt", "--out", "{w}/new"],
                                  "{w}/indexerror.pt is not a readable groupsnn state_dict"),
    "resume unpickler error": (TRAIN + ["--out", "{w}/broken_run", "--resume"],
                               "{w}/broken_run/checkpoint.pt is not a readable groupsnn checkpoint"),
    "resume from an exported network": (TRAIN + ["--out", "{w}/exported_run", "--resume"], "holds no training state"),
    "checkpoint meta not a dict": (["evaluate", "{w}/odd_meta.pt"], "damaged groupsnn checkpoint: its metadata"),
    # analysis commands
    "sweep missing checkpoint": (["sweep", "{w}/missing.pt"], "not found"),
    "sweep tau zero": (["sweep", CKPT, "--taus", "1,0"], "positive integers"),
    "sweep empty timesteps": (["sweep", CKPT, "--timesteps", ","], "positive integers"),
    "sweep out is a file": (["sweep", CKPT, "--out", "{w}/a_file"], "is a file"),
    "sweep of a plain ReLU network": (["sweep", "{w}/relu_run/checkpoint.pt"], "holds a plain ReLU network"),
    "stats of a plain ReLU network": (["stats", "{w}/relu_run/checkpoint.pt"], "holds a plain ReLU network"),
    "stats unknown neuron": (["stats", CKPT, "--neuron", "lif"], "invalid choice: 'lif'"),
    "stats tau zero": (["stats", CKPT, "--tau", "0"], "expected a positive integer"),
    "stats negative energy": (["stats", CKPT, "--ac-pj", "-1"], "expected a positive number"),
    "stats foreign checkpoint": (["stats", "{w}/foreign.pt"], "not a groupsnn checkpoint"),
    "per-class beyond the smallest class": (["evaluate", CKPT, "--per-class", "1000"], "per_class <= 35"),
    "per-class zero": (["sweep", CKPT, "--per-class", "0"], "expected a positive integer"),
    "export over a file": (["export", CKPT, "--out", "{w}/a_file"], "{w}/a_file exists; pass --overwrite"),
    "export into a folder": (["export", CKPT, "--out", "{w}/empty", "--overwrite"], "{w}/empty is a folder"),
    "export onto the checkpoint": (["export", CKPT, "--out", CKPT, "--overwrite"], "is the checkpoint itself"),
    "export of a missing checkpoint": (["export", "{w}/missing.pt", "--out", "{w}/w.pt"], "not found"),
    "export of a foreign file": (["export", "{w}/foreign.pt", "--out", "{w}/w.pt"], "not a groupsnn checkpoint"),
    "convert unknown model": (["convert", "--from-relu", "{w}/relu_run/checkpoint.pt", "--model", "nope",
                               "--data", "digits", "--out", "{w}/conv"], "unknown model 'nope'"),
    "convert tau zero": (["convert", "--from-relu", "{w}/relu_run/checkpoint.pt", "--model", "digits_cnn",
                          "--data", "digits", "--tau", "0", "--out", "{w}/conv"], "positive integers"),
    "convert per-class zero": (["convert", "--from-relu", "{w}/relu_run/checkpoint.pt", "--model", "digits_cnn",
                                "--data", "digits", "--per-class", "0", "--out", "{w}/conv"], "expected a positive integer"),
    # conventions: the subcommand's own help hint, one meaning per name, devices, outputs in ./runs
    "unknown option of a subcommand": (["stats", CKPT, "--bogus"],
                                       "unrecognized arguments: --bogus (see 'groupsnn stats --help')"),
    "IF neurons with a tau": (["evaluate", CKPT, "--neuron", "if", "--tau", "4"],
                              "--tau is for Group Neurons; an IF neuron has one member"),
    "unknown device": (["evaluate", CKPT, "--device", "gpu"],
                       "expected cpu, cuda or cuda:N, got 'gpu' (see 'groupsnn evaluate --help')"),
    "absent device": (["sweep", CKPT, "--device", "cuda:99"], "--device cuda:99: this machine has"),
    "default out is a file": (["evaluate", CKPT], "output folder runs/evaluate-run is a file"),
    "convert bad percentile": (["convert", "--from-relu", "{w}/relu_run/checkpoint.pt", "--model", "digits_cnn",
                                "--data", "digits", "--calibrate", "120", "--out", "{w}/conv"], "percentile"),
}


def run_cli(args, **kwargs):
    return subprocess.run([sys.executable, "-m", "groupsnn.cli", *args], capture_output=True, text=True,
                          timeout=300, **kwargs)


@pytest.mark.parametrize("case", CASES)
def test_user_error_is_one_line_exit_2_and_changes_nothing(workspace, case):
    args, message = CASES[case]
    fill = lambda text: text.replace("{w}", str(workspace))  # noqa: E731
    before = snapshot(workspace)
    proc = run_cli([fill(a) for a in args], cwd=workspace)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert fill(message) in lines[0]
    assert snapshot(workspace) == before


def test_a_damaged_image_found_while_training_ends_the_log_with_one_error_line(workspace):
    # found by a DataLoader worker once training has started (and logged how it trains)
    proc = run_cli(["train", "--model", "resnet18", "--data", "imagenet", "--data-dir", str(workspace / "imagenet"),
                    "--batch-size", "2", "--workers", "1", "--epochs", "1", "--out", str(workspace / "new")])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [proc.stderr.strip().splitlines()[-1]], proc.stderr
    assert f"{workspace}/imagenet/train/n02/a.JPEG is not a readable image" in errors[0]


def test_debug_shows_the_traceback(workspace):
    proc = run_cli(["--debug", "evaluate", str(workspace / "foreign.pt")])
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_disk_full_on_save_is_a_clear_error_and_leaves_no_partial_file(tmp_path):
    limit = 64 * 1024  # the digits checkpoint is ~4 MB: its write fails like on a full disk

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "groupsnn.cli", *TRAIN, "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, preexec_fn=small_disk, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: could not write") and "checkpoint.pt" in line and "disk space" in line
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    assert not list((tmp_path / "run").glob(".*.tmp"))
