import dataclasses
import shutil
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import groupsnn as gs
import groupsnn.train as train_module
from groupsnn.checkpoint import load_checkpoint, load_model, make_meta, save_checkpoint
from groupsnn.train import RunConfig, Trainer, TrainConfig, train


def digits_run(epochs=3):
    return RunConfig(model="digits_cnn", data="digits", batch_size=64, optim=TrainConfig(epochs=epochs, seed=3))


def test_resume_after_an_interruption_gives_the_uninterrupted_weights(tmp_path, monkeypatch):
    full = load_checkpoint(train(digits_run(), tmp_path / "full", progress=False))

    real_save, saves = train_module.save_checkpoint, []

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        saves.append(1)
        raise KeyboardInterrupt  # killed right after epoch 1 was saved

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(digits_run(), tmp_path / "cut", progress=False)
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["epoch"] == 1
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    resumed = load_checkpoint(train(digits_run(), tmp_path / "cut", resume=True, progress=False))

    assert resumed["epoch"] == full["epoch"] == 3
    assert resumed["model"].keys() == full["model"].keys()
    for key, value in full["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    assert resumed["history"] == full["history"]
    assert (tmp_path / "cut" / "metrics.csv").read_text() == (tmp_path / "full" / "metrics.csv").read_text()


@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")), reason="torch.compile needs a C++ compiler")
def test_resume_on_the_compiled_bf16_path_gives_the_uninterrupted_weights(tmp_path, monkeypatch):
    # 479 images a batch: 3 equal batches of the 1437 digits, so one compiled graph serves every step
    run = RunConfig(model="digits_cnn", data="digits", batch_size=479, amp=True, compile=True,
                    optim=TrainConfig(epochs=2, seed=3))
    full = load_checkpoint(train(run, tmp_path / "full", progress=False))
    real_save = train_module.save_checkpoint

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(run, tmp_path / "cut", progress=False)
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    resumed = load_checkpoint(train(run, tmp_path / "cut", resume=True, progress=False))
    assert resumed["history"] == full["history"]
    assert all(torch.equal(resumed["model"][k], v) for k, v in full["model"].items())


def test_the_fast_path_runs_bf16_autocast_and_channels_last_where_the_cpu_has_bf16_units():
    net = gs.prepare(gs.models.create("resnet20"), levels=8)
    loader = DataLoader(TensorDataset(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])), batch_size=4)
    seen = []
    net.layer1[0].conv1.register_forward_hook(lambda m, i, o: seen.append(o))
    trainer = Trainer(net, loader, TrainConfig(epochs=1), torch.device("cpu"), amp=True)
    trainer.fit(progress=False)
    if train_module.autocast_dtype(torch.device("cpu")) is None:
        assert trainer.describe() == "fp32 on cpu" and seen[0].dtype == torch.float32
        return
    assert trainer.describe() == "bf16 autocast, channels-last on cpu"
    assert seen[0].dtype == torch.bfloat16 and seen[0].is_contiguous(memory_format=torch.channels_last)
    assert all(p.dtype == torch.float32 for p in net.parameters())  # the weights stay float32


def test_checkpoint_rebuilds_the_model_from_its_metadata(tmp_path):
    path = train(digits_run(epochs=1), tmp_path, progress=False)
    model, meta = load_model(path)
    assert meta["model"] == "digits_cnn" and meta["levels"] == 8 and meta["version"] == gs.__version__
    assert sum(isinstance(m, gs.QCFS) for m in model.modules()) == 7
    payload = load_checkpoint(path)
    assert {"optimizer", "scheduler", "scaler", "rng", "epoch", "meta", "model"} <= payload.keys()


def test_resume_with_other_settings_is_refused(tmp_path):
    train(digits_run(epochs=1), tmp_path, progress=False)
    with pytest.raises(ValueError, match="different settings.*optim"):
        train(digits_run(epochs=2), tmp_path, resume=True, progress=False)


def test_resume_accepts_a_checkpoint_from_before_a_setting_existed(tmp_path):
    path = train(digits_run(epochs=1), tmp_path, progress=False)
    payload = load_checkpoint(path)
    del payload["meta"]["run"]["augment"]  # as written before --augment existed
    train_module._check_resumable(payload, digits_run(epochs=1), path)  # the default stands in for it
    with pytest.raises(ValueError, match=r"different settings \(augment\)"):
        train_module._check_resumable(payload, dataclasses.replace(digits_run(epochs=1), augment="crop-flip"), path)


def test_mixed_precision_is_the_default_only_where_it_pays():
    cpu = torch.device("cpu")
    has_bf16 = train_module.autocast_dtype(cpu) is not None
    assert train_module.amp_pays(gs.models.create("resnet20"), (3, 32, 32), cpu) == has_bf16
    assert not train_module.amp_pays(gs.models.create("digits_cnn", num_classes=10), (1, 8, 8), cpu)
    assert not train_module.amp_pays(gs.models.create("mnist1d_cnn", num_classes=10), (1, 40), cpu)
    # a transformer has a convolution (its patch embedding) but its weights are mostly linear layers
    assert not train_module.amp_pays(gs.models.create("vit_cifar", depth=1, width=32), (3, 32, 32), cpu)


def test_adamw_trains_with_decay_on_weights_only_and_resumes_from_sgd_checkpoints(tmp_path):
    net = gs.models.create("digits_cnn", num_classes=10)
    loader = DataLoader(TensorDataset(torch.randn(8, 1, 8, 8), torch.arange(8)), batch_size=4)
    trainer = Trainer(net, loader, TrainConfig(epochs=1, lr=1e-3, optimizer="adamw", weight_decay=0.05),
                      torch.device("cpu"))
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    assert [g["weight_decay"] for g in trainer.optimizer.param_groups] == [0.05, 0.0]
    before = [p.detach().clone() for p in net.parameters()]
    trainer.fit(progress=False)
    assert all(not torch.equal(b, p) for b, p in zip(before, net.parameters()))
    with pytest.raises(ValueError, match="optimizer 'adam' is not one of sgd, adamw"):
        Trainer(net, loader, TrainConfig(optimizer="adam"), torch.device("cpu"))

    path = train(digits_run(epochs=1), tmp_path, progress=False)
    payload = load_checkpoint(path)
    del payload["meta"]["run"]["optim"]["optimizer"]  # as written before --optimizer existed
    train_module._check_resumable(payload, digits_run(epochs=1), path)
    adamw = dataclasses.replace(digits_run(epochs=1), optim=TrainConfig(epochs=1, seed=3, optimizer="adamw"))
    with pytest.raises(ValueError, match=r"different settings \(optim\)"):
        train_module._check_resumable(payload, adamw, path)


def test_compiling_pays_only_for_long_runs():
    cpu = torch.device("cpu")
    assert not train_module.compile_pays(train_module.COMPILE_MIN_STEPS - 1, cpu)
    assert train_module.compile_pays(train_module.COMPILE_MIN_STEPS, cpu) == train_module.can_compile(cpu)


def test_foreign_and_truncated_files_are_refused(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(ValueError, match="not a groupsnn checkpoint"):
        load_checkpoint(foreign)
    good = save_checkpoint(tmp_path / "good.pt", torch.nn.Linear(2, 2), {"model": "digits_cnn"})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="not a readable groupsnn checkpoint"):
        load_checkpoint(truncated)


def test_init_from_loads_relu_weights_and_skips_a_new_classifier(tmp_path):
    relu_net = gs.models.create("resnet20", num_classes=100)
    torch.save({"state_dict": {f"module.{k}": v for k, v in relu_net.state_dict().items()}}, tmp_path / "r.pt")
    net = gs.models.create("resnet20", num_classes=10)
    skipped = train_module.load_relu_weights(net, tmp_path / "r.pt")
    assert skipped == ["fc.weight", "fc.bias"]
    assert torch.equal(net.conv1.weight, relu_net.conv1.weight)


@pytest.mark.parametrize("name", ["vgg16", "resnet18", "resnet34", "resnet20", "digits_cnn", "mnist1d_cnn"])
def test_every_model_trains_one_step_and_converts(name):
    shape = {"digits_cnn": (1, 8, 8), "mnist1d_cnn": (1, 40)}.get(name, (3, 32, 32))
    ann = gs.prepare(gs.models.create(name, num_classes=10, in_channels=shape[0]), levels=4)
    x, y = torch.randn(2, *shape), torch.tensor([1, 2])
    before = [p.detach().clone() for p in ann.parameters()]
    Trainer(ann, DataLoader(TensorDataset(x, y), batch_size=2), TrainConfig(epochs=1), torch.device("cpu")).fit(progress=False)
    assert all(torch.isfinite(p).all() for p in ann.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, ann.parameters()))
    snn = gs.convert(ann.eval(), neuron="gn", tau=4)
    assert gs.simulate(snn, x, 2).shape == (2, 2, 10)


def test_ddp_with_two_gloo_processes_writes_one_checkpoint(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
         "-m", "groupsnn.cli", "train", "--model", "digits_cnn", "--data", "digits", "--epochs", "1",
         "--batch-size", "64", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "metrics.csv"]
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 2  # header + one epoch, rank 0 only
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1


def test_resnets_get_the_cifar_stem_on_small_images():
    assert train_module.default_model_kwargs("resnet18", (3, 32, 32)) == {"in_channels": 3, "stem": "cifar"}
    assert train_module.default_model_kwargs("resnet34", (3, 224, 224)) == {"in_channels": 3}
    assert train_module.default_model_kwargs("resnet20", (3, 32, 32)) == {"in_channels": 3}
    assert train_module.default_model_kwargs("mnist1d_cnn", (1, 40)) == {"in_channels": 1}


def test_fit_hands_the_model_back_in_its_own_layout_so_it_computes_as_its_checkpoint(tmp_path, monkeypatch):
    # the fast path trains 2-D convolutions channels-last; a model left that way computes, in the last
    # bits, unlike the same weights reloaded (contiguous). bf16 autocast is forced so that every CPU
    # takes that path (it runs, slowly, on CPUs without bf16 units too)
    monkeypatch.setattr(train_module, "autocast_dtype", lambda device: torch.bfloat16)
    model = gs.models.create("digits_cnn", num_classes=10, in_channels=3)  # ReLU: no level hides a last bit
    params = list(model.parameters())
    layouts = []
    model[0].register_forward_hook(
        lambda m, i, o: layouts.append(m.weight.is_contiguous(memory_format=torch.channels_last)))
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8)
    trained = train_module.fit(model, DataLoader(TensorDataset(x, y), batch_size=4), TrainConfig(epochs=1),
                               torch.device("cpu"), progress=False, amp=True)
    assert layouts == [True, True]  # it did train channels-last
    assert trained is model and all(a is b for a, b in zip(model.parameters(), params, strict=True))
    assert all(t.is_contiguous() for t in [*model.parameters(), *model.buffers()])
    assert all(p.grad is None or p.grad.is_contiguous() for p in model.parameters())
    meta = make_meta("digits_cnn", 10, None, "random", model_kwargs={"in_channels": 3})
    reloaded, _ = load_model(save_checkpoint(tmp_path / "c.pt", model, meta))
    with torch.no_grad():  # like with like: the same weights, layout and float path
        assert torch.equal(model.eval()(x), reloaded.eval()(x))
