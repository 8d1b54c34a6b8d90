"""Model registry: ``create(name, num_classes=..., **kw)`` and ``list_models()``."""
from . import resnet, small, vgg  # noqa: F401  (each module registers the models it defines)
from ._registry import check_input_shape, create, factory_parameters, list_models, register_model

__all__ = ["check_input_shape", "create", "factory_parameters", "list_models", "register_model"]
