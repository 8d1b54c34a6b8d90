"""The one training loop: SGD + momentum (or AdamW, for transformers), cosine schedule with optional
warm-up, label smoothing, AMP on CUDA, DDP under ``torchrun``, atomic per-epoch checkpoints and exact
``--resume``.

``Trainer`` owns everything that changes while training (model, optimiser, schedule, scaler, epoch,
metrics, RNG streams), so its ``state_dict`` is all a resumed run needs to continue as if it had
never stopped. ``fit`` is the in-memory shortcut; ``train`` is the ``groupsnn train`` command.
"""
import contextlib
import math
import os
import shutil
import signal
import sys
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from . import data, models
from ._io import PathLike, check_out_dir, remove_stale_temporaries
from .checkpoint import load_checkpoint, make_meta, read_torch_file, save_checkpoint
from .convert import prepare
from .progress import progress_bar
from .qcfs import QCFS
from .report import write_csv
from .simulate import evaluate


MIN_THRESHOLD = 1e-3


OPTIMIZERS = ("sgd", "adamw")


@dataclass
class TrainConfig:
    epochs: int = 30
    lr: float = 0.1
    optimizer: str = "sgd"  # "sgd" (with momentum) or "adamw" (betas 0.9, 0.999; momentum unused)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    seed: int = 0


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv/linear weights only: not on QCFS thresholds, BatchNorm or biases."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.endswith("threshold") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise ValueError(f"optimizer {cfg.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")


def cosine_with_warmup(optimizer, total_steps: int, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def autocast_dtype(device: torch.device) -> Optional[torch.dtype]:
    """Mixed precision on ``device``: float16 on CUDA (with a gradient scaler), bfloat16 on CPUs with
    bf16 units (AVX512-BF16 or AMX), None (full precision) on other CPUs."""
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
        return torch.bfloat16
    return None


def use_channels_last(model: nn.Module) -> None:
    """Put the 2-D convolutions of ``model`` in the channels-last layout, which the bf16 and fp16
    convolution kernels of oneDNN and cuDNN are fastest in."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.to(memory_format=torch.channels_last)


def _has_default_strides(t: torch.Tensor) -> bool:
    """Whether ``t`` is laid out as ``torch.empty(t.shape)`` is (``is_contiguous`` also holds for
    other strides of dimensions of size 1, e.g. a channels-last 1×1 convolution's weight)."""
    return t.stride() == torch.empty(t.shape, device="meta").stride()


def amp_pays(model: nn.Module, input_shape: tuple, device: torch.device) -> bool:
    """Whether mixed precision speeds up training ``model`` on inputs of ``input_shape`` (one
    sample): on CUDA, yes; on a CPU with bf16 units, for networks whose weights are mostly 2-D
    convolutions, on images of at least 32×32. Measured here (2 threads, AVX512-BF16, no AMX):
    ResNet-20 on 32×32 images trains 1.5× (QCFS) to 2× (ReLU) faster in bf16, the digits CNN on 8×8
    images 2.9× slower (its casts outweigh its arithmetic), and the CIFAR ViT (``vit_cifar``, linear
    layers and matrix products on 3-D tensors) 19× slower."""
    if autocast_dtype(device) is None:
        return False
    if device.type == "cuda":
        return True
    conv = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    return len(input_shape) == 3 and min(input_shape[1:]) >= 32 and conv > linear


def can_compile(device: torch.device) -> bool:
    """``torch.compile`` needs a C++ compiler for CPU code (Triton comes with CUDA builds of torch)."""
    return device.type == "cuda" or any(shutil.which(c) for c in ("g++", "c++", "clang++"))


# `groupsnn train` compiles runs of at least this many steps: compiling ResNet-20 took up to ~60 s on
# 2 CPU threads and saved ~0.1 s per step of 128 images (benchmarks/train_speed.py), so it pays after
# about 600 steps; the margin covers smaller networks, which save less per step
COMPILE_MIN_STEPS = 2000


def compile_pays(steps: int, device: torch.device) -> bool:
    """Whether to compile a run of ``steps`` training steps: long enough (``COMPILE_MIN_STEPS``) and
    a compiler is there."""
    return steps >= COMPILE_MIN_STEPS and can_compile(device)


class Trainer:
    """Trains ``model`` (optionally DDP-wrapped) on ``loader`` for ``cfg.epochs`` epochs.

    The fast path: ``amp=True`` runs forward and loss under autocast (``autocast_dtype``: bf16 on
    CPUs with bf16 units, fp16 with a gradient scaler on CUDA) with 2-D convolutions channels-last
    (for a DDP-wrapped model, put them channels-last before wrapping: ``use_channels_last``);
    ``compile=True`` runs the model under ``torch.compile`` (the first steps compile it: about a
    minute for ResNet-20 on 2 CPU cores). Weights, optimiser and checkpoints stay float32.

    ``fit`` hands the model back in the layout it came in: the tensors this trainer put channels-last
    are contiguous again (the same Parameter objects), so the trained model computes bit for bit as
    the same weights reloaded from a checkpoint. A DDP-wrapped model's layout is its caller's (DDP
    lays out its gradient buckets by it), so it is left as it is.
    """

    def __init__(self, model: nn.Module, loader: DataLoader, cfg: TrainConfig, device: torch.device,
                 amp: bool = False, compile: bool = False):
        self.model, self.loader, self.cfg, self.device = model, loader, cfg, device
        steps = len(loader)
        self.optimizer = make_optimizer(model, cfg)
        self.scheduler = cosine_with_warmup(self.optimizer, cfg.epochs * steps, round(cfg.warmup_epochs * steps))
        self.amp_dtype = autocast_dtype(device) if amp else None
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.channels_last = self.amp_dtype is not None and any(
            isinstance(m, nn.Conv2d) for m in model.modules())
        # a DDP-wrapped model's layout is its caller's; else this trainer lays the 2-D convolutions out
        # channels-last for training and, after, lays the tensors that came contiguous back out so
        self._owns_layout = self.channels_last and not isinstance(model, DistributedDataParallel)
        self._contiguous_before: list[torch.Tensor] = []
        if self._owns_layout:
            self._contiguous_before = [t for m in model.modules() if isinstance(m, nn.Conv2d)
                                       for t in (*m.parameters(recurse=False), *m.buffers(recurse=False))
                                       if t.dim() == 4 and _has_default_strides(t)]
            use_channels_last(model)
        if compile and not can_compile(device):
            raise RuntimeError("compile=True: torch.compile needs a C++ compiler (g++ or clang++) on PATH "
                               "for CPU code; install one or train without compiling (--no-compile)")
        self.compiled = compile
        self.forward = torch.compile(model) if compile else model
        self.epoch = 0  # epochs completed
        self.history: list[dict] = []
        self.thresholds = [m.threshold for m in model.modules() if isinstance(m, QCFS)]
        self.stop_requested = False  # set (by `train`'s Ctrl-C handler) to stop after the current step

    def _restore_layout(self) -> None:
        """Lay the tensors that came contiguous (and their gradients) out contiguous again, in place:
        each stays the same tensor object, so the optimiser and any other holder still refer to it."""
        with torch.no_grad():
            for t in self._contiguous_before:
                if not _has_default_strides(t):
                    t.data = t.data.clone(memory_format=torch.contiguous_format)
                if t.grad is not None and not _has_default_strides(t.grad):
                    t.grad = t.grad.clone(memory_format=torch.contiguous_format)

    def _stop_if_requested(self) -> None:
        if self.stop_requested:
            raise KeyboardInterrupt

    def train_epoch(self, progress: bool = True) -> dict:
        """One pass over the data; returns mean loss and accuracy (percent) on the training data."""
        self.model.train()
        if hasattr(self.loader.sampler, "set_epoch"):
            self.loader.sampler.set_epoch(self.epoch)
        loss_sum = torch.zeros((), device=self.device)
        correct = seen = 0
        bar = progress_bar(self.loader, desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}", leave=False,
                           disable=not progress)
        for step, (x, y) in enumerate(bar):
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                logits = self.forward(x)
                loss = F.cross_entropy(logits, y, label_smoothing=self.cfg.label_smoothing)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training diverged: loss is {loss.item()} at epoch {self.epoch + 1}, "
                                         f"step {step + 1}; the last checkpoint is kept; lower --lr")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            with torch.no_grad():  # a QCFS threshold must stay positive to define a neuron
                for threshold in self.thresholds:
                    threshold.clamp_(min=MIN_THRESHOLD)
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            if progress and step % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
            self._stop_if_requested()
        return {"train_loss": loss_sum.item() / seen, "train_accuracy": 100.0 * int(correct) / seen}

    def fit(self, test_loader: Optional[DataLoader] = None, progress: bool = True,
            on_epoch_end: Optional[Callable[["Trainer"], None]] = None) -> nn.Module:
        """Train the remaining epochs; ``on_epoch_end(trainer)`` after each (e.g. to checkpoint).
        Returns the (unwrapped) model, in the layout it came in (see the class docstring), also
        when training stops with an exception."""
        bar = progress_bar(range(self.epoch, self.cfg.epochs), desc="epochs", disable=not progress,
                           initial=self.epoch, total=self.cfg.epochs)
        if self._owns_layout:  # again, if an earlier fit laid the model back out
            use_channels_last(self.model)
        try:
            for _ in bar:
                self._stop_if_requested()
                metrics = {"epoch": self.epoch + 1, **self.train_epoch(progress),
                           "lr": self.optimizer.param_groups[0]["lr"]}
                if test_loader is not None:
                    accuracy = evaluate(_unwrap(self.model), test_loader, timesteps=[1], progress=False)
                    metrics["test_accuracy"] = accuracy[1]
                self.epoch += 1
                self.history.append(metrics)
                bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items() if k != "epoch"})
                if on_epoch_end is not None:
                    on_epoch_end(self)
        finally:
            self._restore_layout()
        return _unwrap(self.model)

    def describe(self) -> str:
        """The path this trainer runs, e.g. ``bf16 autocast, channels-last, torch.compile on cpu``."""
        parts = [f"{ {torch.bfloat16: 'bf16', torch.float16: 'fp16'}[self.amp_dtype]} autocast" if self.amp_dtype else "fp32"]
        parts += ["channels-last"] * self.channels_last + ["torch.compile"] * self.compiled
        return f"{', '.join(parts)} on {self.device.type}"

    def state_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if self.loader.generator is not None:
            rng["loader"] = self.loader.generator.get_state()
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "epoch": self.epoch, "history": self.history, "rng": rng}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.history = state["epoch"], list(state["history"])
        torch.set_rng_state(state["rng"]["torch"])
        if "loader" in state["rng"]:
            self.loader.generator.set_state(state["rng"]["loader"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])


def fit(model: nn.Module, loader: DataLoader, cfg: TrainConfig, device: "torch.device | str",
        test_loader: Optional[DataLoader] = None, progress: bool = True, amp: bool = False,
        compile: Optional[bool] = False) -> nn.Module:
    """Train ``model`` in memory for ``cfg.epochs`` epochs (no checkpoints) on ``device`` (a
    ``torch.device`` or its name: "cpu", "cuda", "cuda:1"); returns it. ``amp`` and ``compile`` as
    ``Trainer``'s; ``compile=None`` compiles where it pays (``compile_pays``)."""
    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    if compile is None:
        compile = compile_pays(cfg.epochs * len(loader), device)
    return Trainer(model.to(device), loader, cfg, device, amp=amp, compile=compile).fit(test_loader, progress)


# ---------------------------------------------------------------- the `groupsnn train` command

@dataclass
class RunConfig:
    """Everything ``groupsnn train`` needs, stored in the checkpoint so ``--resume`` can check it."""
    model: str
    data: str
    data_dir: Optional[str] = None
    levels: Optional[int] = 8
    threshold: float = 8.0
    batch_size: int = 128
    workers: Optional[int] = None
    augment: str = "autoaugment"  # training augmentation (groupsnn.data.Augment); True's meaning for CIFAR
    amp: Optional[bool] = None  # None: where it pays (amp_pays)
    compile: Optional[bool] = None  # None: where it pays (compile_pays)
    sync_bn: bool = False
    model_kwargs: dict = field(default_factory=dict)
    optim: TrainConfig = field(default_factory=TrainConfig)
    world_size: int = 1  # processes (set from torchrun): the batches of an epoch depend on it


CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.csv"
# settings that may differ between a run and its resumption (where the data is, how it is loaded)
_FREE_ON_RESUME = {"data_dir", "workers"}


def _setup_distributed(device: Optional[str] = None) -> tuple[int, int, torch.device]:
    """(rank, world size, device); starts the process group when launched by torchrun. ``device``:
    "cpu", "cuda" (under torchrun: each process its local rank's GPU) or "cuda:N"; None: CUDA if any."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if device is not None and ":" in device and world == 1:
        device = torch.device(device)
    else:
        device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if world > 1:
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if cuda else "gloo")
    return int(os.environ.get("RANK", 0)), world, device


def load_relu_weights(model: nn.Module, path: PathLike) -> list[str]:
    """Load a pretrained ReLU network's state_dict (plain, DDP ``module.``-prefixed, or under
    "state_dict"/"model"); tensors whose shape differs (a new classifier) are skipped and returned."""
    state = read_torch_file(path, "state_dict")
    if isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        state = state.get("state_dict", state.get("model", state))
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ValueError(f"{path} holds no state_dict (names to tensors); save model.state_dict()")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    if missing or unexpected:
        raise ValueError(f"{path} does not match the model: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}; give a state_dict of the same architecture")
    skipped = [k for k, v in state.items() if v.shape != own[k].shape]
    model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    return skipped


def default_model_kwargs(model: str, input_shape: tuple) -> dict:
    """The data's input channels, and for ResNet-18/34 on small images (CIFAR) the CIFAR stem."""
    kwargs = {"in_channels": input_shape[0]}
    if "stem" in models.factory_parameters(model) and len(input_shape) == 3 and max(input_shape[1:]) <= 64:
        kwargs["stem"] = "cifar"  # 3x3 stride-1 first conv, no max-pool: the usual CIFAR ResNet
    return kwargs


@contextlib.contextmanager
def _stop_on_ctrl_c(trainer: Trainer):
    """Ctrl-C asks ``trainer`` to stop after its current step. A KeyboardInterrupt raised wherever the
    signal lands can be lost (one raised inside a ``__del__`` is printed and dropped), and the loop
    knows where it is safe to stop. A second Ctrl-C raises at once. A process that ignores SIGINT
    (started with ``nohup`` or ``&``) keeps ignoring it."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield
        return

    def request_stop(signum, frame):
        if trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.stop_requested = True

    previous = signal.signal(signal.SIGINT, request_stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)


def _check_resumable(saved: dict, run: RunConfig, path: Path) -> None:
    missing = [k for k in ("optimizer", "scheduler", "scaler", "epoch", "history", "rng") if k not in saved]
    if missing or not isinstance(saved["meta"].get("run"), dict):
        raise ValueError(f"--resume: {path} holds no training state ({', '.join(missing) or 'run'} missing: "
                         "an exported network?); resume from the checkpoint.pt that groupsnn train wrote")
    recorded, now = saved["meta"]["run"], asdict(run)
    defaults = asdict(RunConfig(model=run.model, data=run.data))  # for fields older checkpoints lack
    def before(key):  # what the run recorded, with today's defaults for what it did not know of
        value = recorded.get(key, defaults[key])
        return {**defaults[key], **value} if isinstance(value, dict) and key == "optim" else value
    changed = [k for k in now if k not in _FREE_ON_RESUME and before(k) != now[k]]
    if changed:
        raise ValueError(f"--resume: {path} was made with different settings ({', '.join(changed)}); "
                         "use the same arguments, or another --out for a new run")


def train(run: RunConfig, out_dir: PathLike, resume: bool = False, init_from: Optional[PathLike] = None,
          overwrite: bool = False, progress: bool = True, device: Optional[str] = None) -> Path:
    """Train per ``run`` on ``device`` (see ``_setup_distributed``), writing ``out_dir/checkpoint.pt``
    and ``metrics.csv`` after every epoch."""
    rank, world, device = _setup_distributed(device)
    run = replace(run, world_size=world)
    try:
        out = Path(out_dir)
        if rank == 0 and not resume:
            check_out_dir(out, [CHECKPOINT, METRICS], overwrite)
        if init_from is not None and not Path(init_from).is_file():
            raise FileNotFoundError(f"--init-from {init_from} not found; give a saved state_dict file")
        if rank == 0:
            for name in (CHECKPOINT, METRICS):
                remove_stale_temporaries(out, name)
        if resume and not (out / CHECKPOINT).exists():
            raise FileNotFoundError(f"--resume: {out / CHECKPOINT} not found; run without --resume to start")
        saved = load_checkpoint(out / CHECKPOINT) if resume else None
        if saved is not None:
            _check_resumable(saved, run, out / CHECKPOINT)

        torch.manual_seed(run.optim.seed)
        splits = data.load(run.data, run.data_dir, augment=run.augment)
        kwargs = {**default_model_kwargs(run.model, splits.input_shape), **run.model_kwargs}
        model = models.create(run.model, num_classes=splits.num_classes, **kwargs)
        models.check_input_shape(model, splits.input_shape, f"model {run.model!r} on data set {run.data!r}")
        if init_from is not None and saved is None:
            for key in load_relu_weights(model, init_from):
                if rank == 0:
                    print(f"--init-from: {key} has another shape here; it stays newly initialised")
        if run.levels:
            model = prepare(model, levels=run.levels, threshold=run.threshold, inplace=True)
        if run.sync_bn and world > 1:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.to(device)
        if saved is not None:
            model.load_state_dict(saved["model"])
        amp = run.amp if run.amp is not None else amp_pays(model, splits.input_shape, device)
        if amp and autocast_dtype(device) is not None:
            use_channels_last(model)  # before DDP, which lays out its gradient buckets by the weights' strides
        wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
            if world > 1 else model

        loader = data.make_loader(splits.train, run.batch_size, train=True, workers=run.workers,
                                  distributed=world > 1, seed=run.optim.seed)
        test_loader = data.make_loader(splits.test, run.batch_size, train=False, workers=run.workers) \
            if rank == 0 else None
        compile_model = run.compile if run.compile is not None else \
            compile_pays(run.optim.epochs * len(loader), device)
        trainer = Trainer(wrapped, loader, run.optim, device, amp=amp, compile=compile_model)
        if rank == 0 and progress:
            print(f"training path: {trainer.describe()}", file=sys.stderr)
        if saved is not None:  # under DDP the RNG states are per rank (see `checkpoint` below)
            trainer.load_state_dict({**saved, "rng": saved["rng"][rank] if world > 1 else saved["rng"]})
        meta = make_meta(run.model, splits.num_classes, run.levels, run.data, run.optim.seed,
                         model_kwargs=kwargs, input_shape=list(splits.input_shape), run=asdict(run))

        def checkpoint(t: Trainer) -> None:
            state = t.state_dict()
            if world > 1:  # every rank's RNG streams, so that each rank resumes exactly
                rngs = [None] * world
                dist.all_gather_object(rngs, state["rng"])
                state["rng"] = rngs
            if rank == 0:
                write_csv(out / METRICS, t.history, fields=list(t.history[0]))
                save_checkpoint(out / CHECKPOINT, model, meta, **state)

        # under torchrun all ranks would have to stop at the same step, which a flag per rank cannot
        # promise: there Ctrl-C keeps its default behaviour (torchrun ends every rank)
        stop_on_ctrl_c = _stop_on_ctrl_c(trainer) if world == 1 else contextlib.nullcontext()
        try:
            with stop_on_ctrl_c:
                trainer.fit(test_loader, progress=progress and rank == 0, on_epoch_end=checkpoint)
        except KeyboardInterrupt:
            if rank == 0:
                saved_note = (f"{out / CHECKPOINT} holds epoch {trainer.epoch}; --resume starts epoch "
                              f"{trainer.epoch + 1} again from its beginning") if trainer.epoch else \
                    "no epoch was completed, so there is no checkpoint; the run starts again without --resume"
                print(f"\ninterrupted during epoch {trainer.epoch + 1}, whose progress is lost: {saved_note}",
                      file=sys.stderr)
            raise
        return out / CHECKPOINT
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
