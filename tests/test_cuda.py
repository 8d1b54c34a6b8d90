"""On a CUDA device: neurons and QCFS against the CPU, mixed-precision training that resumes exactly,
and simulation. Skipped without CUDA; ``scripts/gpu_check.sh`` runs this file and fails instead."""
import os

import pytest
import torch

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS; read at its first use

import groupsnn as gs  # noqa: E402
import groupsnn.train as train_module  # noqa: E402
from groupsnn.checkpoint import load_checkpoint, load_model  # noqa: E402
from groupsnn.neurons import gn_step  # noqa: E402
from groupsnn.qcfs import qcfs  # noqa: E402
from groupsnn.train import RunConfig, TrainConfig, train  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
CUDA = torch.device("cuda")


@pytest.fixture
def exact_cuda():
    """Full-precision float32 (no TF32) and deterministic kernels, as on the CPU."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.are_deterministic_algorithms_enabled())
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True)
    yield
    (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic,
     torch.backends.cudnn.benchmark) = saved[:4]
    torch.use_deterministic_algorithms(saved[4])


def dyadic(*shape, seed=0):
    """Random multiples of 1/64 in [-6, 6): every product, sum and floor below is exact on any device."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(-384, 384, shape, generator=generator).float() / 64


@pytest.mark.parametrize("tau", [1, 2, 4, 8])
def test_neuron_steps_on_cuda_equal_the_cpu(tau):
    threshold = torch.tensor(2.0)
    cpu_state = cuda_state = None
    for t in range(6):
        x = dyadic(4, 16, 8, 8, seed=t)
        cpu_out, cpu_spikes, cpu_state = gn_step(x, cpu_state, threshold, tau)
        cuda_out, cuda_spikes, cuda_state = gn_step(x.to(CUDA), cuda_state, threshold.to(CUDA), tau)
        assert torch.equal(cuda_out.cpu(), cpu_out) and torch.equal(cuda_spikes.cpu(), cpu_spikes)
        assert torch.equal(cuda_state.v.cpu(), cpu_state.v)


@pytest.mark.parametrize("levels", [2, 8, None])
def test_qcfs_on_cuda_equals_the_cpu_forward_and_backward(levels):
    x, grad = dyadic(8, 32, 8, 8), dyadic(8, 32, 8, 8, seed=1)
    results = []
    for device in ("cpu", CUDA):
        xd = x.to(device).requires_grad_()
        threshold = torch.tensor(4.0, device=device, requires_grad=True)
        y = qcfs(xd, threshold, levels)
        y.backward(grad.to(device))
        results.append((y.detach().cpu(), xd.grad.cpu(), threshold.grad.cpu()))
    (y_cpu, gx_cpu, gth_cpu), (y_cuda, gx_cuda, gth_cuda) = results
    assert torch.equal(y_cuda, y_cpu) and torch.equal(gx_cuda, gx_cpu)
    assert torch.allclose(gth_cuda, gth_cpu, rtol=1e-6, atol=0)  # a sum, added up in another order


def test_mixed_precision_training_resumes_exactly_and_the_snn_simulates(tmp_path, monkeypatch, exact_cuda):
    run = RunConfig(model="digits_cnn", data="digits", batch_size=64, amp=True, optim=TrainConfig(epochs=2))
    expected = load_checkpoint(train(run, tmp_path / "full", progress=False))["model"]

    real_loss, steps = train_module.F.cross_entropy, []

    def stop_after_epoch_1(*args, **kwargs):
        steps.append(1)
        if len(steps) == 23:  # digits: 22 batches of 64 per epoch
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_module.F, "cross_entropy", stop_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        train(run, tmp_path / "resumed", progress=False)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["epoch"] == 1
    monkeypatch.undo()
    path = train(run, tmp_path / "resumed", resume=True, progress=False)
    got = load_checkpoint(path)["model"]
    assert all(v.device.type == "cpu" for v in got.values())  # checkpoints load anywhere
    assert all(torch.equal(got[k], v) for k, v in expected.items())

    ann, _ = load_model(path)
    loader = gs.data.make_loader(gs.data.load("digits").test, 128, train=False)
    snn = gs.convert(ann, neuron="gn", tau=4)
    on_cpu = gs.evaluate(snn, loader, timesteps=[1, 2, 4])
    on_cuda = gs.evaluate(snn.to(CUDA), loader, timesteps=[1, 2, 4])
    # cuDNN adds a convolution up in another order than the CPU: a neuron whose input lies on a
    # level boundary can fire one step apart, which moves at most a couple of the 360 test images
    assert all(abs(on_cuda[t] - on_cpu[t]) <= 2 * 100 / 360 for t in on_cpu), (on_cpu, on_cuda)
    outs = gs.simulate(snn, next(iter(loader))[0].to(CUDA), timesteps=4)
    assert outs.shape == (4, 128, 10) and outs.device.type == "cuda" and torch.isfinite(outs).all()
