"""What every part that runs a network needs: the device it lives on and checked time steps."""
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
