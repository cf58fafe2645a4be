"""The learning rate of every optimizer step under `optimizer.schedule` (netc/spec/schedules.py).

`rates(optimizer, epoch, first_batch, batches, steps_per_epoch)` gives the rates of `batches` steps
from batch `first_batch` of epoch `epoch`: the compiled loop takes one rate per batch, so a schedule
compiles nothing and a run resumed mid-epoch gets the same rates. Closed forms, in float64, of what
PyTorch's schedulers compute step by step (tests/test_schedule.py checks them against PyTorch).
"""

from __future__ import annotations

import math

import numpy as np


def factor(schedule, t: int) -> float:
    """The multiplier of the base rate at t (epochs or steps, as `per` says) of a schedule that does not
    read metrics, warmup aside (cosine's: of lr - eta_min)."""
    kind = schedule.type
    if kind == "step":
        return schedule.gamma ** (t // schedule.step_size)
    if kind == "multistep":
        return schedule.gamma ** sum(1 for m in schedule.milestones if m <= t)
    if kind == "exponential":
        return schedule.gamma ** t
    if kind == "inv":
        return (1.0 + schedule.gamma * t) ** (-schedule.power)
    if kind == "poly":
        return (1.0 - min(t, schedule.total) / schedule.total) ** schedule.power
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * _cosine_position(schedule, t)))
    raise ValueError(f"{kind} is not a fixed schedule")  # plateau reads metrics: see plateau_rate


def warmup(schedule, t: int) -> float:
    """The linear warmup's factor at t (1 without one), multiplied into every schedule."""
    w = schedule.warmup
    return 1.0 if w is None else w.start + (1.0 - w.start) * min(t, w.length) / w.length


def _cosine_position(schedule, t: int) -> float:
    """t_cur / T: without restarts it runs on past 1 (the rate rises again after T, as PyTorch's)."""
    if not schedule.restarts:
        return t / schedule.period
    period = schedule.period
    while t >= period:
        t -= period
        period *= schedule.t_mult
    return t / period


def plateau_rate(optimizer, history: list[dict]) -> float:
    """The rate after stepping PyTorch's ReduceLROnPlateau through the epochs of `history` (each
    epoch's `monitor` value, in order): the rate of the epoch after them."""
    rule = optimizer.schedule
    lower = rule.monitor.endswith("_loss")
    lr, best, bad, cooldown = optimizer.lr, math.inf if lower else -math.inf, 0, 0
    for record in history:
        value = record.get(rule.monitor)
        if value is None:
            continue
        better = value < best * (1 - rule.threshold) if lower else value > best * (1 + rule.threshold)
        best, bad = (value, 0) if better else (best, bad + 1)
        if cooldown > 0:
            cooldown, bad = cooldown - 1, 0
        if bad > rule.patience:
            new = max(lr * rule.factor, rule.min_lr)
            if lr - new > 1e-8:
                lr = new
            cooldown, bad = rule.cooldown, 0
    return lr


def rate(optimizer, t: int, history: list[dict] | None = None) -> float:
    """The rate at t; `history` (the metrics of the epochs before) is what `plateau` reads."""
    schedule = optimizer.schedule
    if schedule is None:
        return optimizer.lr
    if schedule.type == "plateau":
        value = plateau_rate(optimizer, (history or [])[:t])
    elif schedule.type == "cosine":
        value = schedule.eta_min + (optimizer.lr - schedule.eta_min) * factor(schedule, t)
    else:
        value = optimizer.lr * factor(schedule, t)
    return value * warmup(schedule, t)


def rates(optimizer, epoch: int, first_batch: int, batches: int, steps_per_epoch: int,
          history: list[dict] | None = None) -> np.ndarray:
    """The rates of batches first_batch .. first_batch + batches - 1 of epoch `epoch` (0-based);
    `history`: the metrics of the epochs before (what `plateau` reads)."""
    schedule = optimizer.schedule
    if schedule is None:
        return np.full(batches, float(optimizer.lr))
    if schedule.per == "epoch":
        return np.full(batches, rate(optimizer, epoch, history))
    first = epoch * steps_per_epoch + first_batch
    return np.array([rate(optimizer, first + i) for i in range(batches)])
