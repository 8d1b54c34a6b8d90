"""What every part that runs a network needs: its device, checked time steps, eval mode, reset."""
import contextlib

import torch
import torch.nn as nn


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (CPU for a model without parameters)."""
    tensor = next(iter(model.parameters()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def check_timesteps(timesteps) -> list[int]:
    """``timesteps`` (one int or several) as a sorted list without repeats; ValueError if any is not
    a positive integer."""
    steps = [timesteps] if isinstance(timesteps, int) else list(timesteps)
    if not steps or any(not isinstance(t, int) or isinstance(t, bool) or t < 1 for t in steps):
        raise ValueError(f"timesteps must be positive integers, got {timesteps!r}")
    return sorted(set(steps))


@contextlib.contextmanager
def eval_mode(*models: nn.Module):
    """The models in eval mode inside the block, back in their own modes after it."""
    modes = [m.training for m in models]
    try:
        yield [m.eval() for m in models]
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)


def is_stateful(module: nn.Module) -> bool:
    """Whether ``module`` keeps state across calls (has a ``reset()``, as in SpikingJelly)."""
    return callable(getattr(module, "reset", None))


def reset(model: nn.Module) -> None:
    """Reset every stateful module of ``model`` (its submodules with a ``reset()``)."""
    for m in model.modules():
        if m is not model and is_stateful(m):
            m.reset()


@contextlib.contextmanager
def trial_run(model: nn.Module, *inputs: torch.Tensor):
    """A run of ``model`` that leaves no trace: eval mode, no gradients, stateful modules reset
    before and after, and the random generators of the inputs' devices restored (a network that
    draws random numbers draws the same ones afterwards as if this run had not happened)."""
    devices = sorted({t.device for t in inputs if t.device.type != "cpu"}, key=str)
    device_type = devices[0].type if devices else "cuda"
    with torch.no_grad(), eval_mode(model), torch.random.fork_rng(devices, device_type=device_type):
        reset(model)
        try:
            yield
        finally:
            reset(model)
