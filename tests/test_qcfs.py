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


class _SavedOutputQCFS(torch.autograd.Function):
    """The previous implementation (it kept x, θ and y for backward): the reference the fused
    QCFSFunction must reproduce."""

    @staticmethod
    def forward(ctx, x, threshold, levels):
        threshold = threshold.to(x.dtype)
        y = (x * (levels / threshold)).add_(0.5).floor_().clamp_(0, levels).div_(levels).mul_(threshold)
        ctx.save_for_backward(x, threshold, y)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, threshold, y = ctx.saved_tensors
        inside = (x >= 0) & (x <= threshold)
        dy_dth = torch.where(inside, (y - x) / threshold, (x > threshold).to(x.dtype))
        grad = grad_y * dy_dth
        return grad_y * inside, grad.to(torch.promote_types(grad.dtype, torch.float32)).sum_to_size(threshold.shape), None


@pytest.mark.parametrize("levels", [2, 8, 16])
@pytest.mark.parametrize("threshold_shape", [(), (6, 1, 1)])
def test_fused_function_equals_the_previous_one(levels, threshold_shape):
    x = (torch.randn(4, 6, 7, 7, dtype=torch.float64) * 3).requires_grad_()
    x.data[0, 0, 0, :3] = torch.tensor([0.0, -0.0, 2.0])  # on the edges of [0, θ] below
    th = (torch.rand(threshold_shape, dtype=torch.float64) + 1.5).requires_grad_()
    th.data.fill_(2.0) if th.ndim == 0 else th.data[0].fill_(2.0)
    grad_out = torch.randn(4, 6, 7, 7, dtype=torch.float64)
    y, y_ref = qcfs(x, th, levels), _SavedOutputQCFS.apply(x, th, levels)
    assert torch.equal(y, y_ref)  # bit for bit
    gx, gth = torch.autograd.grad(y, (x, th), grad_out)
    rx, rth = torch.autograd.grad(y_ref, (x, th), grad_out)
    assert torch.equal(gx, rx)
    torch.testing.assert_close(gth, rth, rtol=1e-12, atol=1e-12)  # the same sum in another order


def test_only_the_input_and_threshold_are_saved_for_backward():
    saved = []
    x, th = torch.randn(8, 3, 5, 5, requires_grad=True), torch.tensor(1.0, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        qcfs(x, th, 8)
    assert sum(t.numel() for t in saved) == x.numel() + 1


def test_bfloat16_autocast_keeps_the_forward_and_sums_the_threshold_gradient_in_float32():
    x = torch.randn(16, 4, 8, 8).bfloat16().requires_grad_()
    th = torch.tensor(1.7, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = qcfs(x, th, 8)
    assert y.dtype == torch.bfloat16 and torch.equal(y, _SavedOutputQCFS.apply(x, th, 8))
    y.float().sum().backward()
    assert th.grad.dtype == torch.float32 and torch.isfinite(th.grad)
