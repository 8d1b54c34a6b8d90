"""A tiny model registry: ``@register_model`` on a factory, ``create(name, ...)`` to build one.

Trained weights are registered apart, by ``register_pretrained``: loading them needs the checkpoint
reader, which builds its networks from this registry, so the registry cannot import it.
"""
import inspect
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn

from ..runtime import eval_mode

_MODELS: Dict[str, Callable[..., nn.Module]] = {}
_PRETRAINED: Dict[Tuple[str, str], Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` under its own name; it must accept ``num_classes`` as a keyword."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def register_pretrained(name: str, tag: str, load: Callable[..., nn.Module]) -> None:
    """Make ``create(name, pretrained=tag, num_classes=..., **kw)`` return ``load(num_classes, **kw)``."""
    if (name, tag) in _PRETRAINED:
        raise ValueError(f"pretrained weights {tag!r} for model {name!r} are registered twice")
    _PRETRAINED[name, tag] = load


def list_models() -> list[str]:
    return sorted(_MODELS)


def list_pretrained() -> list[tuple[str, str]]:
    """``(model, tag)`` pairs that ``create(model, pretrained=tag)`` accepts."""
    return sorted(_PRETRAINED)


def _factory(name: str) -> Callable[..., nn.Module]:
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def factory_parameters(name: str) -> set[str]:
    """The keyword arguments model ``name`` accepts (e.g. to know whether it takes ``stem``)."""
    return set(inspect.signature(_factory(name)).parameters)


def create(name: str, num_classes: Optional[int] = None, pretrained: Optional[str] = None, **kwargs) -> nn.Module:
    """Build the registered model ``name``: a plain ReLU network (10 classes unless ``num_classes``;
    pass it to ``groupsnn.prepare``), or with ``pretrained="cifar10"`` etc. a shipped trained network
    in eval mode: QCFS, ready for ``convert``, or a ReLU twin such as ``"cifar10-relu"`` (see
    ``list_pretrained()``)."""
    if pretrained is not None:
        _factory(name)  # an unknown model is named as such, not as a missing set of weights
        load = _PRETRAINED.get((name, pretrained))
        if load is None:
            known = ", ".join(f"{m}/{t}" for m, t in list_pretrained()) or "none"
            raise ValueError(f"no pretrained weights {pretrained!r} for model {name!r}; shipped: {known}")
        return load(num_classes, **kwargs)
    return _factory(name)(num_classes=10 if num_classes is None else num_classes, **kwargs)


def check_input_shape(model: nn.Module, input_shape: tuple, what: str) -> None:
    """Raise a clear ValueError if ``model`` cannot take one input of ``input_shape`` (no batch)."""
    try:
        with eval_mode(model), torch.no_grad():
            model(torch.zeros(1, *input_shape))
    except RuntimeError as err:
        raise ValueError(f"{what}: the model cannot take inputs of shape {list(input_shape)} "
                         f"({str(err).splitlines()[0][:150]}); pick a model made for this data") from None
