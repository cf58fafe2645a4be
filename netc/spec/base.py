"""The building blocks of the spec language: strict field types, the `Model` base that refuses
unknown keys, initializers, and the fields every layer (and every layer with parameters) has.

Op modules (netc/ops/) define their layer classes on these; netc.spec.models assembles the
whole language from them and the op registry.
"""

from __future__ import annotations

import typing
from typing import Annotated, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, model_validator

Name = Annotated[str, Strict(), Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)]
PosInt = Annotated[int, Strict(), Field(gt=0)]
NonNegInt = Annotated[int, Strict(), Field(ge=0)]
Float = Annotated[float, Strict(), Field(allow_inf_nan=False)]  # .inf/.nan are YAML floats, never a setting
PosFloat = Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)]
Bool = Annotated[bool, Strict()]
Text = Annotated[str, Strict()]
Pair = Annotated[list[PosInt], Field(min_length=2, max_length=2)]


class Model(BaseModel):
    """Every spec model refuses unknown keys."""

    model_config = ConfigDict(extra="forbid", populate_by_name=False, frozen=True)


# --------------------------------------------------------------------------- initializers


class XavierUniform(Model):
    """Glorot/Xavier uniform: U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out))."""

    type: Literal["xavier_uniform", "glorot_uniform", "xavier", "glorot"]
    gain: PosFloat = Field(1.0, description="Scale factor (PyTorch's `gain`).")


class XavierNormal(Model):
    """Glorot/Xavier normal: N(0, gain^2 * 2 / (fan_in + fan_out))."""

    type: Literal["xavier_normal", "glorot_normal"]
    gain: PosFloat = Field(1.0, description="Scale factor (PyTorch's `gain`).")


class HeUniform(Model):
    """He/Kaiming uniform for ReLU networks: U(-a, a), a = sqrt(6 / fan_in)."""

    type: Literal["he_uniform", "kaiming_uniform", "he", "kaiming"]


class HeNormal(Model):
    """He/Kaiming normal for ReLU networks: N(0, 2 / fan_in)."""

    type: Literal["he_normal", "kaiming_normal"]


class UniformInit(Model):
    """U(low, high)."""

    type: Literal["uniform"]
    low: Float = Field(-0.05, description="Lower bound.")
    high: Float = Field(0.05, description="Upper bound.")

    @model_validator(mode="after")
    def _ordered(self):
        if self.high <= self.low:
            raise ValueError("high must be greater than low")
        return self


class NormalInit(Model):
    """N(mean, std^2)."""

    type: Literal["normal"]
    mean: Float = Field(0.0, description="Mean.")
    std: PosFloat = Field(0.01, description="Standard deviation.")


class ZerosInit(Model):
    """All zeros."""

    type: Literal["zeros"]


class ConstantInit(Model):
    """Every element set to `value`."""

    type: Literal["constant"]
    value: Float = Field(description="The value.")


def _init_shorthand(value):
    # `weight_init: he` is short for `weight_init: {type: he}`
    return {"type": value} if isinstance(value, str) else value


_INIT_MODELS = (XavierUniform, XavierNormal, HeUniform, HeNormal, UniformInit, NormalInit, ZerosInit, ConstantInit)
InitializerName = Literal[tuple(name for model in _INIT_MODELS for name in typing.get_args(model.model_fields["type"].annotation))]
_InitializerUnion = Annotated[Union[_INIT_MODELS], Field(discriminator="type")]
Initializer = Annotated[
    _InitializerUnion,
    # the JSON Schema shows the shorthand too, so editors accept `weight_init: he`
    BeforeValidator(_init_shorthand, json_schema_input_type=Union[InitializerName, _InitializerUnion]),
]


# --------------------------------------------------------------------------- layers


class Layer(Model):
    """Fields every layer has."""

    name: Name | None = Field(
        None, description="Unique layer name; also the name of its output tensor. Defaults to `<op><index>`."
    )
    inputs: Name | Annotated[list[Name], Field(min_length=1)] | None = Field(
        None, alias="in", description="Input tensor(s): a layer or input name. Defaults to the previous layer's output."
    )


class ParamLayer(Layer):
    """Fields of layers that own parameters."""

    share: Name | None = Field(
        None, description="Use the parameters of this earlier layer (same op and shapes) instead of new ones."
    )
    trainable: Bool = Field(True, description="False freezes the parameters (transfer learning).")
    lr_mult: NonNegFloat = Field(1.0, description="Multiplier on the optimizer's learning rate for this layer.")
    bias: Bool = Field(True, description="Whether the layer has a bias.")
    weight_init: Initializer | None = Field(
        None, description="Weight initializer; default xavier_uniform (Keras' default)."
    )
    bias_init: Initializer | None = Field(None, description="Bias initializer; default zeros.")
