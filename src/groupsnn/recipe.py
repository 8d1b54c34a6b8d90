"""A model's recipe: how groupsnn made it (``prepare``, ``calibrate``, BatchNorm folding, ``convert``),
kept on the model itself so that a checkpoint can rebuild the same network from its name."""
from typing import Optional

import torch.fx as fx
import torch.nn as nn

RECIPE = "groupsnn_recipe"


def _store(model: nn.Module) -> dict:
    # a GraphModule's deepcopy keeps its ``meta`` dict but not other attributes
    return model.meta if isinstance(model, fx.GraphModule) else model.__dict__


def recipe(model: nn.Module) -> Optional[dict]:
    """How groupsnn made ``model``, or None."""
    return _store(model).get(RECIPE)


def record(model: nn.Module, **fields) -> nn.Module:
    """Add ``fields`` to ``model``'s recipe (checkpoints save it to rebuild the model); returns ``model``."""
    store = _store(model)
    store[RECIPE] = {**store.get(RECIPE, {}), **fields}
    return model
