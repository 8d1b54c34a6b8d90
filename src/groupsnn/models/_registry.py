"""A tiny model registry: ``@register_model`` on a factory, ``create(name, ...)`` to build one."""
import inspect
from typing import Callable, Dict

import torch
import torch.nn as nn

_MODELS: Dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` under its own name; it must accept ``num_classes`` as a keyword."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def _factory(name: str) -> Callable[..., nn.Module]:
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def factory_parameters(name: str) -> set[str]:
    """The keyword arguments model ``name`` accepts (e.g. to know whether it takes ``stem``)."""
    return set(inspect.signature(_factory(name)).parameters)


def create(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """Build the registered model ``name`` (a plain ReLU network; pass it to ``groupsnn.prepare``)."""
    return _factory(name)(num_classes=num_classes, **kwargs)


def check_input_shape(model: nn.Module, input_shape: tuple, what: str) -> None:
    """Raise a clear ValueError if ``model`` cannot take one input of ``input_shape`` (no batch)."""
    from ..simulate import eval_mode

    try:
        with eval_mode(model), torch.no_grad():
            model(torch.zeros(1, *input_shape))
    except RuntimeError as err:
        raise ValueError(f"{what}: the model cannot take inputs of shape {list(input_shape)} "
                         f"({str(err).splitlines()[0][:150]}); pick a model made for this data") from None
