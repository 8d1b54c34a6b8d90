"""Damaged files, seeded: every reader of checkpoints and weights either loads the file or raises one
ValueError naming it, and the CLI answers 0 or 2, never a traceback."""
import collections
import hashlib
import random
import re

import pytest
import torch

import groupsnn as gs
from groupsnn import cli
from groupsnn.checkpoint import load_checkpoint, load_model, make_meta, save_checkpoint
from groupsnn.models import pretrained
from groupsnn.train import load_relu_weights


def damaged_copies(original: bytes, count: int, seed: int):
    """``count`` damaged versions of ``original``: random bytes of many sizes, truncations, and one or
    many flipped bytes, half of them in the first and last 4 KiB, where zip headers and pickles live."""
    rng = random.Random(seed)
    sizes = [0, 1, 2, 7, 64, 512, 4096, 65536]
    for i in range(count):
        kind = i % 4
        if kind == 0:
            yield f"random{i}", rng.randbytes(rng.choice(sizes) + rng.randrange(8))
            continue
        if kind == 1:
            yield f"truncated{i}", original[:rng.randrange(len(original))]
            continue
        data = bytearray(original)
        for _ in range(1 if kind == 2 else rng.randint(2, 64)):
            edges = list(range(4096)) + list(range(len(data) - 4096, len(data)))
            position = rng.choice(edges) if rng.random() < 0.5 else rng.randrange(len(data))
            data[position] ^= rng.randrange(1, 256)
        yield f"flipped{i}", bytes(data)


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    net = gs.prepare(gs.models.create("mnist1d_cnn"), levels=8)
    path = tmp_path_factory.mktemp("fuzz") / "small.pt"
    return save_checkpoint(path, net, make_meta("mnist1d_cnn", 10, 8, "mnist1d", input_shape=[1, 40]))


def expect_loaded_or_named(read, path):
    """``read(path)``'s outcome: "loaded", or "refused" for a ValueError naming the file."""
    try:
        read(path)
    except ValueError as err:
        assert str(path) in str(err), err
        assert "\n" not in str(err), err
        return "refused"
    return "loaded"


def test_damaged_checkpoints_load_or_raise_one_valueerror(small_checkpoint, tmp_path):
    outcomes = []
    for name, data in damaged_copies(small_checkpoint.read_bytes(), 240, seed=0):
        path = tmp_path / f"{name}.pt"
        path.write_bytes(data)
        outcomes.append(expect_loaded_or_named(load_model, path))
    assert outcomes.count("refused") >= 120  # the damage was real, not only in ignored bytes


def test_damaged_state_dicts_load_or_raise_one_valueerror(tmp_path):
    net = gs.models.create("mnist1d_cnn")
    torch.save(net.state_dict(), tmp_path / "relu.pt")
    outcomes = []
    for name, data in damaged_copies((tmp_path / "relu.pt").read_bytes(), 60, seed=1):
        path = tmp_path / f"{name}.pt"
        path.write_bytes(data)
        outcomes.append(expect_loaded_or_named(lambda p: load_relu_weights(net, p), path))
    assert outcomes.count("refused") >= 30


BAD_STRUCTURES = {
    "meta not a dict": ({"meta": [1, 2]}, "its metadata is not a dict"),
    "no model name": ({"meta": {"num_classes": 10, "levels": 8}}, "its model None is not one of"),
    "unknown model": ({"meta": {"model": "resnet99", "num_classes": 10}}, "its model 'resnet99' is not one of"),
    "foreign model argument": ({"meta": {"model": "mnist1d_cnn", "num_classes": 10, "model_kwargs": {"rm": 1}}},
                               "its model arguments {'rm': 1} do not fit model 'mnist1d_cnn'"),
    "classes a string": ({"meta": {"model": "mnist1d_cnn", "num_classes": "10"}}, "its num_classes is '10'"),
    "levels negative": ({"meta": {"model": "mnist1d_cnn", "num_classes": 10, "levels": -8}}, "its levels is -8"),
    "recipe a list": ({"meta": {"model": "mnist1d_cnn", "num_classes": 10, "network": []}},
                      "its network recipe is not a dict"),
    "weights a list": ({"model": [torch.zeros(1)]}, "its weights are not a state_dict"),
    "weights not tensors": ({"model": {"fc.weight": [0.0]}}, "its weights are not a state_dict"),
}


@pytest.mark.parametrize("case", BAD_STRUCTURES)
def test_a_checkpoint_of_the_wrong_structure_is_one_clear_error(small_checkpoint, tmp_path, case):
    change, message = BAD_STRUCTURES[case]
    payload = load_checkpoint(small_checkpoint)
    if "meta" in change and isinstance(change["meta"], dict):
        change = {"meta": {"levels": None, **change["meta"]}}
    torch.save({**payload, **change}, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match="^" + re.escape(f"{tmp_path / 'odd.pt'} is a damaged groupsnn checkpoint: {message}")):
        load_model(tmp_path / "odd.pt")


def test_tampered_shipped_weights_are_one_clear_error(monkeypatch, tmp_path):
    key = ("resnet20", "cifar10")
    weights = pretrained.PRETRAINED[key]
    data = bytearray((pretrained.WEIGHTS / weights.file).read_bytes())
    data[100:120] = bytes(20)
    (tmp_path / weights.file).write_bytes(bytes(data))
    monkeypatch.setattr(pretrained, "WEIGHTS", tmp_path)
    with pytest.raises(ValueError, match="corrupt or was changed"):  # the checksum catches it ...
        gs.models.create("resnet20", pretrained="cifar10")
    # ... and with the checksum changed to match, the reader refuses the damaged file itself
    digest = hashlib.sha256(bytes(data)).hexdigest()
    monkeypatch.setitem(pretrained.PRETRAINED, key, pretrained.PretrainedWeights(weights.file, digest, weights.command))
    with pytest.raises(ValueError, match="^" + re.escape(f"{tmp_path / weights.file} is not a readable groupsnn checkpoint")):
        gs.models.create("resnet20", pretrained="cifar10")


def test_the_cli_answers_damaged_checkpoints_with_0_or_2(digits_checkpoint, tmp_path, capsys):
    codes = []
    for name, data in damaged_copies(digits_checkpoint.read_bytes(), 8, seed=2):
        path = tmp_path / f"{name}.pt"
        path.write_bytes(data)
        codes.append(cli.main(["evaluate", str(path), "--timesteps", "1", "--out", str(tmp_path / name)]))
        err = capsys.readouterr().err
        assert "Traceback" not in err
        if codes[-1] == 2:
            assert err.startswith(f"error: {path}") and err.count("\n") == 1, err
    assert set(codes) <= {0, 2} and 2 in codes


def test_a_text_file_or_a_foreign_pickle_is_named_for_what_it_is(tmp_path):
    (tmp_path / "notes.pt").write_text("epoch 3\n")
    with pytest.raises(ValueError, match=r"notes.pt is not a readable groupsnn checkpoint: it is not a file "
                                         r"torch.save writes \(it starts with b'epoch 3\\n'\)") as err:
        load_checkpoint(tmp_path / "notes.pt")
    assert "PyTorch" not in str(err.value) and "unpickl" not in str(err.value).lower()
    torch.save({"model": collections.OrderedDict(w=slice(1, 2))}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="holds Python objects other than tensors and plain containers") as err:
        load_checkpoint(tmp_path / "foreign.pt")
    assert "PyTorch" not in str(err.value)
