"""The one training loop: SGD + momentum, cosine schedule with optional warm-up, label smoothing."""
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .simulate import evaluate


@dataclass
class TrainConfig:
    epochs: int = 30
    lr: float = 0.1
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


def cosine_with_warmup(optimizer, total_steps: int, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_optimizer(model: nn.Module, cfg: TrainConfig, steps_per_epoch: int):
    optimizer = torch.optim.SGD(parameter_groups(model, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum)
    scheduler = cosine_with_warmup(optimizer, cfg.epochs * steps_per_epoch,
                                   round(cfg.warmup_epochs * steps_per_epoch))
    return optimizer, scheduler


def train_epoch(model: nn.Module, loader: DataLoader, optimizer, scheduler, device: torch.device,
                label_smoothing: float = 0.0, progress: bool = True, desc: str = "train") -> dict:
    """One pass over ``loader``; returns mean loss and accuracy (percent) on the training data."""
    model.train()
    loss_sum = correct = seen = 0
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress)
    for x, y in bar:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
    return {"train_loss": loss_sum / seen, "train_accuracy": 100.0 * correct / seen}


def fit(model: nn.Module, train_loader: DataLoader, cfg: TrainConfig, device: torch.device,
        test_loader: Optional[DataLoader] = None, progress: bool = True,
        on_epoch_end: Optional[Callable[[int, dict], None]] = None) -> nn.Module:
    """Train ``model`` for ``cfg.epochs`` epochs; ``on_epoch_end(epoch, metrics)`` after each."""
    model.to(device)
    optimizer, scheduler = make_optimizer(model, cfg, len(train_loader))
    for epoch in tqdm(range(cfg.epochs), desc="epochs", disable=not progress):
        metrics = train_epoch(model, train_loader, optimizer, scheduler, device, cfg.label_smoothing,
                              progress, desc=f"epoch {epoch + 1}/{cfg.epochs}")
        if test_loader is not None:
            metrics["test_accuracy"] = evaluate(model, test_loader, timesteps=[1])[1]
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics)
    return model
