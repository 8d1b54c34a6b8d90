"""groupsnn: ANN-to-SNN conversion with Group Neurons (Lv et al., ICASSP 2024) on top of QCFS."""
from . import data, models, neurons
from .calibrate import calibrate
from .convert import convert, prepare
from .correct import correct
from .models import pretrained as _pretrained  # noqa: F401  (registers the shipped weights with models.create)
from .neurons import GroupNeuron, IFNeuron
from .qcfs import QCFS
from .simulate import evaluate, reset, simulate

__version__ = "0.1.0"
__all__ = ["prepare", "calibrate", "convert", "correct", "simulate", "evaluate", "reset", "models", "neurons", "data",
           "QCFS", "GroupNeuron", "IFNeuron", "__version__"]
