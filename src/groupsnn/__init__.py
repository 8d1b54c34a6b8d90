"""groupsnn: ANN-to-SNN conversion with Group Neurons (Lv et al., ICASSP 2024) on top of QCFS.

The public names are imported when first used (PEP 562), not with the package: importing torch
takes seconds, and ``groupsnn --help`` needs none of it.
"""
import importlib
import sys
import types

__version__ = "0.1.0"
__all__ = ["prepare", "calibrate", "convert", "correct", "simulate", "evaluate", "reset", "models", "neurons", "data",
           "QCFS", "GroupNeuron", "IFNeuron", "__version__"]

# public name -> (submodule, its attribute; None: the submodule itself)
_LAZY = {"prepare": ("convert", "prepare"), "convert": ("convert", "convert"), "calibrate": ("calibrate", "calibrate"),
         "correct": ("correct", "correct"), "simulate": ("simulate", "simulate"), "evaluate": ("simulate", "evaluate"),
         "reset": ("simulate", "reset"), "QCFS": ("qcfs", "QCFS"), "GroupNeuron": ("neurons", "GroupNeuron"),
         "IFNeuron": ("neurons", "IFNeuron"), "models": ("models", None), "neurons": ("neurons", None),
         "data": ("data", None)}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = importlib.import_module(f"{__name__}.{module}")
    value = value if attr is None else getattr(value, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _register_shipped_weights() -> None:
    """Make ``models.create(..., pretrained="cifar10")`` find the shipped weights once the model
    registry is loaded. ``models.pretrained`` reads them with the checkpoint reader, which imports the
    registry, so neither can import it; it is imported here as soon as both are whole."""
    models, checkpoint = sys.modules.get(f"{__name__}.models"), sys.modules.get(f"{__name__}.checkpoint")
    if (f"{__name__}.models.pretrained" not in sys.modules and hasattr(models, "create")
            and (checkpoint is None or hasattr(checkpoint, "load_model"))):  # checkpoint: not half-imported
        from .models import pretrained  # noqa: F401


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        # the import system names each loaded submodule on its package: keep gs.convert, gs.simulate, ...
        # the functions (as `from .convert import convert` did) when groupsnn.convert etc. load
        if isinstance(value, types.ModuleType) and _LAZY.get(name, (None, None))[1] is not None:
            return
        super().__setattr__(name, value)
        if name in ("models", "checkpoint"):
            _register_shipped_weights()


sys.modules[__name__].__class__ = _Package
