"""Model registry: ``create(name, num_classes=..., pretrained=None, **kw)``, ``list_models()``."""
from . import mobile, resnet, small, vgg, vit  # noqa: F401  (each module registers the models it defines)
from ._registry import (check_input_shape, create, factory_parameters, list_models, list_pretrained, register_model,
                        register_pretrained)

__all__ = ["check_input_shape", "create", "factory_parameters", "list_models", "list_pretrained", "register_model",
           "register_pretrained"]
