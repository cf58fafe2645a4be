"""Learning-rate schedules (`optimizer.schedule`), as PyTorch's schedulers and Caffe's `lr_policy`
define them. Each counts in epochs or in steps (`per`), PyTorch's default for it unless given; a
`warmup` multiplies any of them by a factor rising linearly to 1 (PyTorch's LinearLR chained with
the schedule). The values are computed by netc.runtime.schedule."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, Strict

from netc.spec.base import Model, NonNegFloat, NonNegInt, PosFloat, PosInt

_Fraction = Annotated[float, Strict(), Field(gt=0.0, le=1.0)]
_Per = Literal["epoch", "step"]


class Warmup(Model):
    """lr × (start + (1 − start) · min(t, length) / length): a linear warmup (PyTorch's LinearLR)."""

    length: PosInt = Field(description="Epochs or steps (as the schedule's `per`) until the full rate.")
    start: _Fraction = Field(0.1, description="The factor at t = 0 (PyTorch's start_factor).")


class _Schedule(Model):
    warmup: Warmup | None = Field(None, description="A linear warmup multiplied into the schedule.")


class StepSchedule(_Schedule):
    """lr × gamma^⌊t / step_size⌋ (PyTorch's StepLR, Caffe's `step`)."""

    type: Literal["step"]
    step_size: PosInt = Field(description="Epochs (or steps) between decays.")
    gamma: PosFloat = Field(0.1, description="Factor of each decay.")
    per: _Per = Field("epoch", description="Whether t counts epochs or optimizer steps.")


class MultiStepSchedule(_Schedule):
    """lr × gamma^(milestones passed) (PyTorch's MultiStepLR, Caffe's `multistep`)."""

    type: Literal["multistep"]
    milestones: Annotated[list[PosInt], Field(min_length=1)] = Field(description="t at which the rate decays.")
    gamma: PosFloat = Field(0.1, description="Factor of each decay.")
    per: _Per = Field("epoch", description="Whether t counts epochs or optimizer steps.")


class ExponentialSchedule(_Schedule):
    """lr × gamma^t (PyTorch's ExponentialLR, Caffe's `exp`)."""

    type: Literal["exponential"]
    gamma: PosFloat = Field(description="Factor per epoch (or step).")
    per: _Per = Field("epoch", description="Whether t counts epochs or optimizer steps.")


class CosineSchedule(_Schedule):
    """eta_min + (lr − eta_min)(1 + cos(π t_cur / T)) / 2 (PyTorch's CosineAnnealingLR: after T the rate
    rises again); with `restarts`, t_cur starts again at 0 after each period, each `t_mult` times
    longer (CosineAnnealingWarmRestarts)."""

    type: Literal["cosine"]
    period: PosInt = Field(description="T: epochs (or steps) from the full rate to eta_min (T_max, or T_0 with restarts).")
    eta_min: NonNegFloat = Field(0.0, description="The lowest rate.")
    restarts: bool = Field(False, description="Start again at the full rate after each period.")
    t_mult: PosInt = Field(1, description="With restarts: each period is this many times the previous one.")
    per: _Per = Field("epoch", description="Whether t counts epochs or optimizer steps.")


class InvSchedule(_Schedule):
    """lr × (1 + gamma · t)^(−power) (Caffe's `inv`, t in steps)."""

    type: Literal["inv"]
    gamma: PosFloat = Field(description="Caffe's gamma.")
    power: PosFloat = Field(description="Caffe's power.")
    per: _Per = Field("step", description="Whether t counts epochs or optimizer steps.")


class PolySchedule(_Schedule):
    """lr × (1 − min(t, total) / total)^power (PyTorch's PolynomialLR, Caffe's `poly` with max_iter = total)."""

    type: Literal["poly"]
    total: PosInt = Field(description="t at which the rate reaches 0 (PyTorch's total_iters).")
    power: PosFloat = Field(1.0, description="The polynomial's power.")
    per: _Per = Field("step", description="Whether t counts epochs or optimizer steps.")


class PlateauSchedule(_Schedule):
    """lr × factor whenever `monitor` has not improved (relatively, by more than `threshold`) for more
    than `patience` epochs, then `cooldown` epochs of rest (PyTorch's ReduceLROnPlateau, threshold_mode
    rel; losses improve downwards, accuracies upwards). Decided from the run's metrics, once per epoch."""

    type: Literal["plateau"]
    monitor: Literal["train_loss", "train_accuracy", "eval_loss", "eval_accuracy"] = Field(
        "eval_loss", description="The epoch metric to watch (a metrics.jsonl key).")
    factor: Annotated[float, Strict(), Field(gt=0.0, lt=1.0)] = Field(0.1, description="Factor of each reduction.")
    patience: NonNegInt = Field(10, description="Epochs without improvement tolerated before a reduction.")
    threshold: NonNegFloat = Field(1e-4, description="Relative change that counts as an improvement.")
    cooldown: NonNegInt = Field(0, description="Epochs after a reduction before counting again.")
    min_lr: NonNegFloat = Field(0.0, description="The rate never goes below this.")
    per: Literal["epoch"] = Field("epoch", description="Always per epoch: it reads each epoch's metric.")


ScheduleSpec = Annotated[
    Union[StepSchedule, MultiStepSchedule, ExponentialSchedule, CosineSchedule, InvSchedule, PolySchedule,
          PlateauSchedule],
    Field(discriminator="type"),
]
