"""Checkpoints: written atomically, read with ``weights_only=True``, self-describing.

A checkpoint is a dict ``{"format": "groupsnn", "format_version", "meta", "model", ...}`` where
``meta`` says how to rebuild the network (model name and keyword arguments, num_classes, QCFS
levels, data set, seed, package version), so ``load_model(path)`` needs nothing else. The model is
a registry name, or, for a network of the user's own class, that class's import path
(``"package.module:ClassName"``, built with ``model_kwargs``): ``save_checkpoint`` fills it in and
refuses a network it could not rebuild that way, saying what to do. Training
checkpoints add the optimiser, scheduler, AMP scaler and RNG states, and the epoch.

``meta["network"]`` (added by ``save_checkpoint`` for a model that ``prepare``, ``calibrate``,
``fuse_batchnorm`` or ``convert`` made) is that model's recipe: QCFS levels, max-pooling kept or
averaged, which BatchNorms were folded, the calibration settings, the neurons (``snn``: kind, τ,
signed), the shape of every QCFS or neuron threshold (one per layer, or per channel) and of every
initial membrane that ``correct`` set. ``build_model`` replays it, so an SNN reloads as the SNN.
Checkpoints without it were made by ``prepare`` with the default max-pooling replacement and one
threshold per layer, and are rebuilt that way.
"""
import importlib
import io
import pickle
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from . import models
from ._io import PathLike, atomic_write, file_sha256
from .convert import convert, prepare
from .fold import fold_pairs, fuse_batchnorm
from .neurons import SpikingNeuron
from .qcfs import QCFS
from .recipe import recipe, record
from .rewrite import class_path

FORMAT = "groupsnn"
FORMAT_VERSION = 1


def make_meta(model: str, num_classes: int, levels: Optional[int], data: str, seed: int = 0,
              model_kwargs: Optional[dict] = None, **extra) -> dict:
    from . import __version__
    return {"model": model, "model_kwargs": dict(model_kwargs or {}), "num_classes": num_classes,
            "levels": levels, "data": data, "seed": seed, "version": __version__, **extra}


def save_checkpoint(path: PathLike, model: nn.Module, meta: dict, **training_state) -> Path:
    """Write ``model``'s weights with ``meta`` (and e.g. optimizer=..., epoch=...) atomically.
    Without a registry name in ``meta["model"]``, the network is saved as an instance of its own
    class (see the module docstring); a ValueError says what to do if it cannot be rebuilt."""
    network = network_record(model)
    if network is not None:
        meta = {**meta, "network": network}
    if meta.get("model") not in models.list_models():
        meta = _own_class_meta(model, meta)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "meta": meta,
               "model": model.state_dict(), **training_state}
    buffer = io.BytesIO()  # serialise first, so a full disk is an OSError of the plain write below
    torch.save(payload, buffer)
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getbuffer()))


def _own_class_meta(model: nn.Module, meta: dict) -> dict:
    """``meta`` for a network of the user's own class, after checking that ``build_model`` rebuilds
    it with the same weights' names and shapes."""
    from . import __version__

    given = meta.get("model")
    if given is not None and ":" not in str(given):
        raise ValueError(f"save_checkpoint(): unknown model {given!r}; known models: "
                         f"{', '.join(models.list_models())}, or leave it out to save the network's own class")
    source = given or (recipe(model) or {}).get("source") or class_path(model)
    meta = {"model_kwargs": {}, "num_classes": None, "levels": None, "version": __version__,
            **meta, "model": source}
    how = ("define the class at the top level of an importable module (not in __main__ or a function) "
           "and pass its constructor arguments as meta={'model_kwargs': {...}}, or register a factory "
           "with groupsnn.models.register_model and save with meta={'model': name}")
    module, _, name = source.partition(":")
    if module == "__main__" or "<locals>" in name or not name:
        raise ValueError(f"save_checkpoint(): cannot save {type(model).__name__}: a checkpoint rebuilds the "
                         f"network from its class, and {source!r} cannot be imported elsewhere; {how}")
    try:
        rebuilt = build_model(meta).state_dict()
    except Exception as err:  # noqa: BLE001  whatever building it raises, the answer is the same
        raise ValueError(f"save_checkpoint(): cannot rebuild {source} with model_kwargs="
                         f"{meta['model_kwargs']!r} ({type(err).__name__}: {_shortened(str(err))}); {how}") from None
    weights = model.state_dict()
    if {k: v.shape for k, v in rebuilt.items()} != {k: v.shape for k, v in weights.items()}:
        raise ValueError(f"save_checkpoint(): {source}(**{meta['model_kwargs']!r}) rebuilds a network "
                         f"whose weights differ in names or shapes from {type(model).__name__}'s; {how}")
    return meta


def import_class(source: str) -> type:
    """The ``nn.Module`` class at ``"package.module:ClassName"``."""
    module, _, name = source.partition(":")
    target = importlib.import_module(module)
    for part in name.split("."):
        target = getattr(target, part)
    if not (isinstance(target, type) and issubclass(target, nn.Module)):
        raise ValueError(f"{source} is not an nn.Module class")
    return target


def read_torch_file(path: PathLike, what: str = "checkpoint"):
    """``torch.load`` with ``weights_only=True`` (no code from the file runs). Whatever the bytes,
    the answer is the file's contents or one ValueError that names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found" if not path.exists() else f"{what} {path} is not a file")
    with open(path, "rb") as f:  # an OSError here (no permission, ...) names the file itself
        start = f.read(16)
        if not start.startswith((b"PK\x03\x04", b"\x80")):  # a torch file is a zip archive or a pickle
            raise ValueError(f"{path} is not a readable groupsnn {what}: it is not a file torch.save writes "
                             f"(it starts with {start!r}); check the path")
        f.seek(0)
        try:
            return torch.load(f, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            if "weights only" not in str(err).lower():
                raise ValueError(f"{path} is not a readable groupsnn {what} (truncated or corrupt: "
                                 f"{_shortened(str(err))})") from None
            raise ValueError(f"{path} is not a readable groupsnn {what}: it holds Python objects other than "
                             "tensors and plain containers, which groupsnn never loads (no code from a file "
                             "runs); save the weights with groupsnn.checkpoint.save_checkpoint") from None
        except Exception as err:  # noqa: BLE001  damaged bytes fail in the unpickler as KeyError, IndexError, ...
            raise ValueError(f"{path} is not a readable groupsnn {what} (truncated or corrupt: "
                             f"{type(err).__name__}: {_shortened(str(err))})") from None


def _shortened(message: str, limit: int = 120) -> str:
    """The first line of ``message``, cut at a word boundary to at most ``limit`` characters."""
    line = next(iter(message.strip().splitlines()), "")
    return line if len(line) <= limit else line[:limit].rsplit(" ", 1)[0] + " ..."


def load_checkpoint(path: PathLike) -> dict:
    """Read a groupsnn checkpoint safely (no code from the file runs) and check its structure;
    one ValueError naming the file for anything else."""
    payload = read_torch_file(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a groupsnn checkpoint (no groupsnn metadata); "
                         "for a plain ReLU state_dict use --init-from or --from-relu")
    version, meta = payload.get("format_version"), payload.get("meta")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{path} has checkpoint format {version!r}, newer than this groupsnn "
                         f"understands ({FORMAT_VERSION}); upgrade groupsnn")
    if version < FORMAT_VERSION:  # no older format exists yet; a migration would go here
        written_by = meta.get("version", "?") if isinstance(meta, dict) else "?"
        raise ValueError(f"{path} has the old checkpoint format {version}, which groupsnn {written_by} "
                         "wrote and this one cannot read; retrain, or convert it with that groupsnn version")
    problem = _structure_problem(meta, payload.get("model"))
    if problem:
        raise ValueError(f"{path} is a damaged groupsnn checkpoint: {problem}; use another copy of it")
    return payload


def _structure_problem(meta, weights) -> Optional[str]:
    """What keeps ``meta`` and ``weights`` from describing a network, or None."""
    if not isinstance(meta, dict):
        return "its metadata is not a dict"
    name = meta.get("model")
    own = isinstance(name, str) and ":" in name  # the user's own class, by its import path
    if not own and name not in models.list_models():
        return f"its model {name!r} is not one of {', '.join(models.list_models())} nor a class path"
    kwargs = meta.get("model_kwargs", {})
    if not isinstance(kwargs, dict) or not (own or set(kwargs) <= models.factory_parameters(name)):
        return f"its model arguments {kwargs!r} do not fit model {name!r}"
    for key, allow_none in (("num_classes", own), ("levels", True)):
        value = meta.get(key)
        if not (value is None and allow_none) and (type(value) is not int or value < 1):
            return f"its {key} is {value!r}, not a positive integer"
    if not isinstance(meta.get("network", {}), dict):
        return "its network recipe is not a dict"
    if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in weights.items()):
        return "its weights are not a state_dict (names to tensors)"
    return None


def network_record(model: nn.Module) -> Optional[dict]:
    """``model``'s recipe with the shape of each QCFS or neuron threshold and of each initial
    membrane set by ``correct``, or None for a model groupsnn did not make (see the module docstring)."""
    made = recipe(model)
    if made is None:
        return None
    modules = list(model.named_modules())
    thresholds = {name: list(m.threshold.shape) for name, m in modules if isinstance(m, (QCFS, SpikingNeuron))}
    v_init = {name: list(m.v_init.shape) for name, m in modules
              if isinstance(m, SpikingNeuron) and m.v_init is not None}
    return {**made, "threshold_shapes": thresholds, **({"v_init_shapes": v_init} if v_init else {})}


def build_model(meta: dict) -> nn.Module:
    """The (untrained) network described by ``meta``: the registry model, made as its recipe says."""
    if ":" in meta["model"]:
        net = import_class(meta["model"])(**meta.get("model_kwargs", {}))
    else:
        net = models.create(meta["model"], num_classes=meta["num_classes"], **meta.get("model_kwargs", {}))
    network = meta.get("network")
    if network is None:  # a checkpoint from before recipes: prepare(levels) made it, if it has levels
        return prepare(net, levels=meta["levels"], inplace=True) if meta.get("levels") else net
    folded = network.get("fuse_bn")
    if folded is True:  # recorded before the folded pairs were: the registry's models fold conv pairs only
        fuse_batchnorm(net.eval(), inplace=True)
    elif folded:
        fold_pairs(net.eval(), folded)
    if "maxpool" in network:
        net = prepare(net, levels=network["levels"], maxpool=network["maxpool"],
                      spike_inputs=network.get("spike_inputs", False))
    modules = dict(net.named_modules())
    for name, shape in network.get("threshold_shapes", {}).items():
        qcfs = modules.get(name)
        if isinstance(qcfs, QCFS):  # a missing one is a wrong architecture: loading the weights says so
            qcfs.threshold = nn.Parameter(qcfs.threshold.detach().expand(shape).clone())
    if "snn" in network:
        net = convert(net, **network["snn"])
        modules = dict(net.named_modules())
        for name, shape in network.get("v_init_shapes", {}).items():
            if isinstance(modules.get(name), SpikingNeuron):
                modules[name].v_init = torch.zeros(shape)
    kept = {k: v for k, v in network.items() if k not in ("threshold_shapes", "v_init_shapes")}
    return record(net, **kept)


def load_model(path: PathLike) -> tuple[nn.Module, dict]:
    """Rebuild the network of checkpoint ``path`` and load its weights; returns ``(model, meta)``."""
    payload = load_checkpoint(path)
    return _restore_model(payload, path), payload["meta"]


def _restore_model(payload: dict, path: PathLike) -> nn.Module:
    try:
        model = build_model(payload["meta"])
    except (ImportError, AttributeError) as err:  # the user's own class, not importable here
        raise ValueError(f"{path} holds a network of class {payload['meta']['model']}, which cannot be imported "
                         f"here ({type(err).__name__}: {err}); put the module that defines it on the Python "
                         "path") from None
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not fit model {payload['meta']['model']!r} "
                         f"({str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else err})") from None
    return model.eval()


def export_checkpoint(source: PathLike, target: PathLike) -> str:
    """Write the network of checkpoint ``source`` alone (metadata and weights; no optimiser, RNG or
    history) to ``target``, atomically; returns the sha256 of the new file."""
    payload = load_checkpoint(source)
    save_checkpoint(target, _restore_model(payload, source), {**payload["meta"], "epoch": payload.get("epoch")})
    return file_sha256(target)
