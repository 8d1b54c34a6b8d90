import pytest
import torch

from groupsnn.qcfs import QCFS, qcfs


class _FloorSTE(torch.autograd.Function):
    """The QCFS reference code's floor with a straight-through gradient."""

    @staticmethod
    def forward(ctx, x):
        return x.floor()

    @staticmethod
    def backward(ctx, g):
        return g


def reference_qcfs(x, threshold, levels):
    """Bu et al. (ICLR 2022) reference: θ · floor_ste(clamp(x/θ, 0, 1)·L + 1/2) / L."""
    return threshold * _FloorSTE.apply(torch.clamp(x / threshold, 0, 1) * levels + 0.5) / levels


@pytest.mark.parametrize("levels,threshold", [(4, 2.0), (8, 8.0), (2, 1.0), (16, 4.0)])
def test_values_at_and_around_every_level_boundary(levels, threshold):
    step = threshold / levels
    eps = step * 1e-3
    for k in range(1, levels + 1):
        boundary = (k - 0.5) * step  # x·L/θ + 1/2 == k exactly (binary-exact for these θ, L)
        x = torch.tensor([boundary - eps, boundary, boundary + eps], dtype=torch.float64)
        y = qcfs(x, torch.tensor(threshold, dtype=torch.float64), levels)
        assert y.tolist() == [(k - 1) * step, k * step, k * step]
    x = torch.tensor([-5.0, -1e-6, 0.0, threshold, threshold * 1.5, 1e6], dtype=torch.float64)
    y = qcfs(x, torch.tensor(threshold, dtype=torch.float64), levels)
    assert y.tolist() == [0, 0, 0, threshold, threshold, threshold]


def test_output_equals_formula_on_random_inputs():
    x = torch.randn(10000, dtype=torch.float64) * 5
    th, L = torch.tensor(3.0, dtype=torch.float64), 8
    expected = th / L * torch.clamp(torch.floor(x * L / th + 0.5), 0, L)
    torch.testing.assert_close(qcfs(x, th, L), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("threshold_shape", [(), (3, 1, 1)])
def test_ste_gradients_match_reference_for_x_and_threshold(threshold_shape):
    x = (torch.randn(4, 3, 5, 5, dtype=torch.float64) * 3).requires_grad_()
    th = (torch.rand(threshold_shape, dtype=torch.float64) + 1.5).requires_grad_()
    grad_out = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    gx, gth = torch.autograd.grad(qcfs(x, th, 8), (x, th), grad_out)
    rx, rth = torch.autograd.grad(reference_qcfs(x, th, 8), (x, th), grad_out)
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gth, rth)
    inside = (x >= 0) & (x <= th)
    assert torch.equal(gx, grad_out * inside)  # dy/dx = 1 inside [0, θ], 0 outside


def test_threshold_gradient_has_the_closed_form():
    th = torch.tensor(2.0, requires_grad=True)
    x = torch.tensor([-1.0, 0.3, 1.1, 3.0])
    y = qcfs(x, th, 4)
    grads = [torch.autograd.grad(y[i], th, retain_graph=True)[0].item() for i in range(4)]
    # x<0: 0;  inside: (y - x)/θ;  x>θ: 1
    assert grads == pytest.approx([0.0, (0.5 - 0.3) / 2, (1.0 - 1.1) / 2, 1.0])


def test_module_has_a_learnable_threshold_that_trains():
    act = QCFS(levels=4, threshold=8.0)
    assert isinstance(act.threshold, torch.nn.Parameter) and act.threshold.item() == 8.0
    opt = torch.optim.SGD(act.parameters(), lr=2.0)
    x = torch.rand(1000) * 2  # data in [0, 2]: the loss pulls θ down towards it
    losses = []
    for _ in range(50):
        loss = ((act(x) - x) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert act.threshold.item() < 4.0 and losses[-1] < 0.25 * losses[0]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtype_is_kept(dtype):
    act = QCFS(8, 2.0)
    y = act(torch.randn(100).to(dtype))
    assert y.dtype == dtype and (y >= 0).all() and (y <= 2.0).all()


def test_bad_levels_are_rejected():
    with pytest.raises(ValueError, match="levels"):
        QCFS(levels=0)


def test_threshold_gradient_of_half_precision_inputs_is_summed_in_float32():
    x = torch.full((64, 64, 32), 0.3, dtype=torch.float16, requires_grad=True)  # 131072 values inside
    th = torch.tensor(8.0, requires_grad=True)
    (qcfs(x, th, 8) * 1024).sum().backward()  # like AMP's loss scale: a float16 sum would overflow
    assert torch.isfinite(th.grad) and th.grad.dtype == torch.float32
    assert th.grad.item() == pytest.approx(1024 * 131072 * (0 - 0.3) / 8, rel=1e-3)
