"""The spec language, format version 1: one pydantic model per op, loss,
optimizer, initializer and data source, each union discriminated by its tag.

This module is the single source of truth: the JSON Schema (`netc schema`) and
the op registry's names are checked against it.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Discriminator, Field, Strict, Tag, model_validator

FORMAT_VERSION = 1

from netc.spec.base import (  # noqa: E402, F401  (re-exported: the language's building blocks)
    Bool, Float, Initializer, InitializerName, Layer, Model, Name, NonNegFloat, NonNegInt, Pair, ParamLayer, PosFloat,
    PosInt, Text, XavierUniform,
)
from netc.ops import REGISTRY  # noqa: E402  (each op module defines its layer class)
from netc.spec.schedules import ScheduleSpec  # noqa: E402

# every layer class, in registry order, discriminated by `op`
LayerSpec = Annotated[Union[tuple(op.spec for op in REGISTRY.values())], Field(discriminator="op")]


# --------------------------------------------------------------------------- blocks

BLOCK_OP = "block"  # the `op` of a block instance: a spec-level layer, unrolled before ops are looked up
SCAN_OP = "scan"  # the `op` of a scan: a block applied at every step of a sequence, compiled as a loop


class BlockLayer(Layer):
    """An instance of a block (`blocks:`). Its layers are named `<name>.<layer>` (with `repeat`:
    `<name>.<k>.<layer>`, k from 0), their parameters `<name>.<layer>.weight`, as in a PyTorch
    module tree; its output tensor is `<name>`. `in:` lists a tensor for each of the block's inputs."""

    op: Literal["block"]
    block: Name = Field(description="The block to instantiate (a key of `blocks:`).")
    repeat: PosInt = Field(1, description="Stack this many copies, each reading the previous one's output "
                           "(the block needs one input and an output of the same shape).")
    share: Bool = Field(False, description="With `repeat`: every copy uses the parameters of the first "
                        "(an unrolled recurrent network) instead of its own.")


class ScanLayer(Layer):
    """A block applied at every step of sequences `[T, ...]`, carrying its `state:` from one step to
    the next (a recurrent network with a cell of your own), compiled as one loop over the steps
    with backpropagation through time. `in:` lists a sequence for each of the block's inputs; the
    block's layers are named `<name>.<layer>`, their parameters `<name>.<layer>.weight`."""

    op: Literal["scan"]
    block: Name = Field(description="The block applied at every step (a key of `blocks:`, with `state:`).")
    sequences: Bool = Field(False, description="true: the block's output at every step [T, ...]; false: at the "
                            "last step only (classify a sequence).")
    bptt: PosInt | None = Field(None, description="Truncated backpropagation through time: gradients flow back "
                                "through at most this many steps, in windows of that many steps from the start.")


# a layer of the spec or of a block: an op, a block instance or a scan
SpecLayer = Annotated[Union[tuple(op.spec for op in REGISTRY.values()) + (BlockLayer, ScanLayer)],
                      Field(discriminator="op")]


class StateSpec(Model):
    """A tensor a block carries from one step of a scan to the next (an RNN's hidden state)."""

    shape: Annotated[list[PosInt], Field(min_length=1)] = Field(description="Its shape, without the batch.")
    next: Name = Field(description="The block's layer whose output is its value at the next step; zeros before "
                       "the first step.")


class BlockSpec(Model):
    """A named sub-graph: its inputs and its layers, which read the inputs and each other (like a
    PyTorch nn.Module's forward). Layers `{op: block, block: <name>}` instantiate it."""

    description: Text = Field("", description="Free text.")
    inputs: Annotated[list[Name], Field(min_length=1)] = Field(
        description="Names of the block's inputs, in the order an instance's `in:` lists its tensors.")
    layers: Annotated[list[SpecLayer], Field(min_length=1)] = Field(
        description="Layers in order; the first one reads the first input unless it says otherwise.")
    output: Name | None = Field(None, description="The layer whose output is the block's output (default: the last).")
    state: dict[Name, StateSpec] = Field(default_factory=dict, description="Tensors carried from one step to the "
                                         "next when the block runs under `op: scan`; its layers read them by name.")


# --------------------------------------------------------------------------- losses


class _Loss(Model):
    input: Name = Field(description="The tensor the loss reads (a layer name).")
    target: Name = Field(description="The input that holds the targets.")
    weight: NonNegFloat = Field(1.0, description="Factor of this loss in the total that training minimises "
                                "(several losses: the total is the weighted sum).")


class MseLoss(_Loss):
    """½‖y − ŷ‖² per sample (the lecture's), averaged over the batch. Integer targets are one-hot encoded."""

    op: Literal["mse"]


class CrossEntropyLoss(_Loss):
    """Softmax + negative log-likelihood on logits, averaged over the batch (PyTorch's CrossEntropyLoss)."""

    op: Literal["cross_entropy"]


class NllLoss(_Loss):
    """Negative log-likelihood on log-probabilities (after log_softmax), averaged over the batch."""

    op: Literal["nll"]


LossSpec = Annotated[Union[MseLoss, CrossEntropyLoss, NllLoss], Field(discriminator="op")]


def _one_or_several(value) -> str:
    return "several" if isinstance(value, list) else "one"


# `loss:` one loss, or a list of weighted losses (e.g. a classifier head and an auxiliary head)
Losses = Annotated[
    Union[Annotated[LossSpec, Tag("one")], Annotated[Annotated[list[LossSpec], Field(min_length=1)], Tag("several")]],
    Discriminator(_one_or_several),
]


# --------------------------------------------------------------------------- optimizers


class Clip(Model):
    """Gradient clipping before each update, over every parameter gradient (a shared tensor once):
    by global L2 norm (PyTorch's clip_grad_norm_) or by value (clip_grad_value_). Give one of them."""

    norm: PosFloat | None = Field(None, description="Largest global L2 norm of the gradients.")
    value: PosFloat | None = Field(None, description="Largest absolute value of each gradient entry.")

    @model_validator(mode="after")
    def _one(self):
        if (self.norm is None) == (self.value is None):
            raise ValueError("give `norm` or `value`, one of them")
        return self


class Sgd(Model):
    """Stochastic gradient descent with optional momentum (PyTorch semantics)."""

    type: Literal["sgd"]
    lr: PosFloat = Field(0.01, description="Learning rate.")
    momentum: Annotated[float, Strict(), Field(ge=0.0, lt=1.0)] = Field(0.0, description="Momentum factor.")
    nesterov: Bool = Field(False, description="Nesterov momentum.")
    weight_decay: NonNegFloat = Field(0.0, description="L2 penalty added to the gradient.")
    schedule: ScheduleSpec | None = Field(None, description="How the learning rate changes (none: constant).")
    clip: Clip | None = Field(None, description="Gradient clipping before each update.")


class RmsProp(Model):
    """RMSprop (PyTorch semantics)."""

    type: Literal["rmsprop"]
    lr: PosFloat = Field(0.01, description="Learning rate.")
    alpha: Annotated[float, Strict(), Field(gt=0.0, lt=1.0)] = Field(0.99, description="Smoothing constant.")
    eps: PosFloat = Field(1e-8, description="Added to the denominator.")
    momentum: Annotated[float, Strict(), Field(ge=0.0, lt=1.0)] = Field(0.0, description="Momentum factor.")
    weight_decay: NonNegFloat = Field(0.0, description="L2 penalty added to the gradient.")
    schedule: ScheduleSpec | None = Field(None, description="How the learning rate changes (none: constant).")
    clip: Clip | None = Field(None, description="Gradient clipping before each update.")


class Adam(Model):
    """Adam (PyTorch semantics, L2 weight decay added to the gradient)."""

    type: Literal["adam"]
    lr: PosFloat = Field(0.001, description="Learning rate.")
    betas: Annotated[list[Annotated[float, Strict(), Field(ge=0.0, lt=1.0)]], Field(min_length=2, max_length=2)] = (
        Field([0.9, 0.999], description="Decay rates of the first and second moment estimates.")
    )
    eps: PosFloat = Field(1e-8, description="Added to the denominator.")
    weight_decay: NonNegFloat = Field(0.0, description="L2 penalty added to the gradient.")
    schedule: ScheduleSpec | None = Field(None, description="How the learning rate changes (none: constant).")
    clip: Clip | None = Field(None, description="Gradient clipping before each update.")


OptimizerSpec = Annotated[Union[Sgd, RmsProp, Adam], Field(discriminator="type")]


# --------------------------------------------------------------------------- data


Normalize = Literal["none", "standard", "minmax", "max"]


class _Source(Model):
    normalize: Normalize = Field(
        "none",
        description="none; standard (zero mean, unit variance per feature, statistics from the train split); "
        "minmax (to [0, 1] per feature); max (divide by the largest absolute value of the train split).",
    )
    limit: PosInt | None = Field(None, description="Use only the first `limit` samples.")


class XorSource(_Source):
    """The XOR problem: the four corners of the unit square (n=4), or n noisy samples around them."""

    source: Literal["xor"]
    n: PosInt = Field(4, description="Number of samples; 4 gives exactly the four corners.")
    noise: NonNegFloat = Field(0.0, description="Standard deviation of Gaussian noise added to the points.")
    seed: NonNegInt = Field(0, description="Seed of the generator.")


class SpiralsSource(_Source):
    """Interleaved 2-D spirals, one arm per class."""

    source: Literal["spirals"]
    n: PosInt = Field(300, description="Number of samples.")
    classes: Annotated[int, Strict(), Field(ge=2)] = Field(3, description="Number of arms.")
    noise: NonNegFloat = Field(0.2, description="Noise on the angle.")
    seed: NonNegInt = Field(0, description="Seed of the generator.")


class BlobsSource(_Source):
    """Gaussian blobs, one per class."""

    source: Literal["blobs"]
    n: PosInt = Field(300, description="Number of samples.")
    classes: Annotated[int, Strict(), Field(ge=2)] = Field(3, description="Number of blobs.")
    features: PosInt = Field(2, description="Dimensions of each sample.")
    std: PosFloat = Field(1.0, description="Standard deviation of each blob.")
    seed: NonNegInt = Field(0, description="Seed of the generator.")


class DigitsSource(_Source):
    """scikit-learn's 8×8 handwritten digits (1,797 images, 10 classes; shipped with scikit-learn)."""

    source: Literal["digits"]
    split: Literal["train", "test", "all"] = Field("all", description="Which part of a seeded split to use.")
    test_fraction: Annotated[float, Strict(), Field(gt=0.0, lt=1.0)] = Field(
        0.2, description="Fraction held out as the test split."
    )
    split_seed: NonNegInt = Field(0, description="Seed of the train/test split.")


class NpzSource(_Source):
    """A NumPy .npz file; arrays are matched to the spec's inputs by name (or by `keys`)."""

    source: Literal["npz"]
    path: Text = Field(description="Path to the .npz file (relative to the spec file).")
    keys: dict[Name, Text] | None = Field(None, description="Input name -> array name in the file.")


class NpySource(_Source):
    """One .npy file per input."""

    source: Literal["npy"]
    arrays: dict[Name, Text] = Field(description="Input name -> path of its .npy file (relative to the spec file).")


class CsvSource(_Source):
    """A CSV file with one sample per row: the label column goes to the integer input, the rest to the other."""

    source: Literal["csv"]
    path: Text = Field(description="Path to the CSV file (relative to the spec file).")
    label: Text | NonNegInt | Literal[-1] = Field(-1, description="Label column: a header name or an index (-1: last).")
    header: Bool = Field(True, description="Whether the first row holds column names.")
    delimiter: Annotated[str, Strict(), Field(min_length=1, max_length=1)] = Field(",", description="Field separator.")


class IdxSource(_Source):
    """MNIST-style idx files (optionally gzipped): `<split>-images-idx3-ubyte` and `<split>-labels-idx1-ubyte`."""

    source: Literal["mnist-idx"]
    path: Text = Field(description="Folder holding the idx files (relative to the spec file).")
    split: Literal["train", "test"] = Field("train", description="train (train-*) or test (t10k-*).")


class ImagesSource(_Source):
    """A folder of images with one subfolder per class (PNG, JPEG, BMP, GIF through Pillow), each image
    converted to the float input's channels (1: grayscale, 3: RGB) and resized to its height and width;
    pixel values 0..255. The class list is saved in the run folder (classes.json)."""

    source: Literal["images"]
    path: Text = Field(description="The folder holding one subfolder per class (relative to the spec file).")
    classes: Annotated[list[Text], Field(min_length=2)] | None = Field(
        None, description="The class subfolders in label order (default: every subfolder, sorted by name).")


class TextSource(_Source):
    """Next-character prediction over a text: each sample a window of characters (the index input [T])
    and the character after it (the label input). The vocabulary, every distinct character in code-point
    order, is saved in the run folder (classes.json)."""

    source: Literal["text"]
    path: Text | None = Field(None, description="A UTF-8 text file (relative to the spec file).")
    module: Annotated[str, Strict(), Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")] | None = \
        Field(None, description="Instead of `path`: a module of Python's standard library whose source file is "
                                "the text (e.g. argparse): a text every Python ships.")
    split: Literal["train", "eval", "all"] = Field(
        "all", description="train: all but the last eval_fraction of the text; eval: that last part.")
    eval_fraction: Annotated[float, Strict(), Field(gt=0.0, lt=1.0)] = Field(
        0.1, description="The share of the text, at its end, that split: eval reads.")
    stride: PosInt = Field(1, description="Characters between the starts of successive windows.")

    @model_validator(mode="after")
    def _one_text(self):
        if (self.path is None) == (self.module is None):
            raise ValueError("give exactly one of path and module")
        return self


DataSource = Annotated[
    Union[XorSource, SpiralsSource, BlobsSource, DigitsSource, NpzSource, NpySource, CsvSource, IdxSource,
          ImagesSource, TextSource],
    Field(discriminator="source"),
]


class FromTrain(Model):
    """Evaluation samples held out from data.train (after its `limit`), split seeded and stratified by class:
    they are not trained on, and they are normalized with the statistics of the samples that are."""

    from_train: Annotated[float, Strict(), Field(gt=0.0, lt=1.0)] = Field(
        description="Fraction of the training samples held out for evaluation.")
    seed: NonNegInt = Field(0, description="Seed of the split.")
    stratify: Bool = Field(True, description="Keep each class's share in both parts (needs a label input).")


def _held_out_or_source(value) -> str:  # a dict when validating, a model when serializing
    held_out = isinstance(value, FromTrain) or (isinstance(value, dict) and "from_train" in value)
    return "held_out" if held_out else "named_source"


EvalData = Annotated[
    Union[Annotated[DataSource, Tag("named_source")], Annotated[FromTrain, Tag("held_out")]],
    Discriminator(_held_out_or_source),
]


class Augment(Model):
    """Random changes to each training sample, drawn anew every epoch (seeded by train.seed, epoch and
    chunk, so a resumed run sees the same samples); evaluation samples are never changed. crop, flip and
    shift act on image inputs ([C, H, W]); noise on every float input it names."""

    crop: NonNegInt = Field(0, description="Pad each side with this many zero pixels and cut the input's size "
                            "at a random place (torchvision's RandomCrop(size, padding)).")
    flip: Bool = Field(False, description="Mirror left-right with probability 1/2.")
    shift: NonNegInt = Field(0, description="Move by up to this many pixels each way, filling with the edge "
                             "pixels.")
    noise: NonNegFloat = Field(0.0, description="Standard deviation of Gaussian noise added (after normalizing).")
    inputs: Annotated[list[Name], Field(min_length=1)] | None = Field(
        None, description="The float inputs to change (default: every float input).")

    @model_validator(mode="after")
    def _something(self):
        if not (self.crop or self.flip or self.shift or self.noise):
            raise ValueError("give at least one of crop, flip, shift, noise")
        return self


class DataSpec(Model):
    """Where training and evaluation samples come from."""

    train: DataSource = Field(description="Training data.")
    eval: EvalData | None = Field(
        None, description="Evaluation data, measured after each epoch: a source, or `{from_train: fraction}`.")
    augment: Augment | None = Field(None, description="Random changes to the training samples.")


# --------------------------------------------------------------------------- the rest


class InputSpec(Model):
    """A graph input (one per tensor the data provides)."""

    shape: Annotated[list[PosInt], Field(max_length=8)] = Field(
        description="Shape without the batch dimension; [] for a scalar (e.g. a class label), [T] for a "
        "label at every step of a sequence."
    )
    dtype: Literal["float32", "int64"] = Field(
        "float32", description="int64 for class labels (with `classes`) and indices (with `indices`).")
    classes: Annotated[int, Strict(), Field(ge=2)] | None = Field(
        None, description="Number of classes of an integer label input."
    )
    indices: Annotated[int, Strict(), Field(ge=1)] | None = Field(
        None, description="An integer index input (what an embedding reads): its values lie in [0, indices)."
    )

    @model_validator(mode="after")
    def _labels(self):
        if self.dtype == "int64" and self.classes is None and self.indices is None:
            raise ValueError("an int64 input needs `classes` (a label: the number of classes) or `indices` "
                             "(an index input: values lie in [0, indices))")
        if self.dtype == "float32" and self.classes is not None:
            raise ValueError("`classes` is only for int64 label inputs")
        if self.dtype == "float32" and self.indices is not None:
            raise ValueError("`indices` is only for int64 index inputs")
        if self.classes is not None and self.indices is not None:
            raise ValueError("an int64 input is a label (`classes`) or an index input (`indices`), not both")
        if self.classes is not None and len(self.shape) > 1:
            raise ValueError("an int64 label input has shape [] (one class index per sample) or [T] (one per "
                             "step of a sequence)")
        return self


Metric = Literal["train_loss", "train_accuracy", "eval_loss", "eval_accuracy"]


class EarlyStop(Model):
    """Stop when `monitor` has not improved by more than `min_delta` for `patience` epochs (Keras's
    EarlyStopping; losses improve downwards, accuracies upwards)."""

    monitor: Metric = Field("eval_loss", description="The epoch metric to watch (a metrics.jsonl key).")
    patience: PosInt = Field(5, description="Epochs without improvement before stopping.")
    min_delta: NonNegFloat = Field(0.0, description="A change smaller than this is no improvement.")


class Checkpoints(Model):
    """Checkpoints besides last.safetensors (the weights, named as PyTorch names them)."""

    best: Metric | None = Field(None, description="Keep best.safetensors: the weights of the epoch best by this metric.")
    every: PosInt | None = Field(None, description="Write epoch-N.safetensors every this many epochs.")
    keep: PosInt = Field(3, description="How many epoch-N.safetensors to keep (the newest).")


class TrainSpec(Model):
    """How training runs."""

    batch: PosInt = Field(32, description="Mini-batch size (the last batch of an epoch may be smaller).")
    epochs: PosInt = Field(10, description="Passes over the training data.")
    seed: NonNegInt = Field(0, description="Seed of initialization, shuffling and dropout.")
    shuffle: Bool = Field(True, description="Shuffle the training data each epoch.")
    dtype: Literal["float32", "float64"] = Field("float32", description="Floating-point type of the plan.")
    denormals: Literal["flush", "keep"] = Field(
        "flush", description="Subnormal numbers (below 1.2e-38 in float32) met in training and evaluation: flush "
        "them to zero (as TensorFlow's CPU kernels do; x86 takes ~100 cycles over each one it meets), or keep them "
        "(IEEE gradual underflow, PyTorch's default).")
    early_stop: EarlyStop | None = Field(None, description="Stop when a metric stops improving.")
    checkpoints: Checkpoints | None = Field(None, description="best.safetensors and epoch-N.safetensors.")
    top_k: Annotated[int, Strict(), Field(ge=2)] | None = Field(
        None, description="Also record the eval top-k accuracy each epoch (eval_top_k_accuracy): the class among "
        "the k highest scores.")


class InitSpec(Model):
    """Weights loaded before training (transfer learning)."""

    checkpoint: Text = Field(description="A safetensors checkpoint (relative to the spec file).")
    layers: list[Name] | None = Field(None, description="Only these layers; default every layer that matches.")


class Spec(Model):
    """A netc network spec, format version 1."""

    netc: Literal[1] = Field(description="Format version of the spec language.")
    name: Name = Field(description="Name of the network.")
    description: Text = Field("", description="Free text.")
    inputs: Annotated[dict[Name, InputSpec], Field(min_length=1)] = Field(description="Graph inputs by name.")
    blocks: dict[Name, BlockSpec] = Field(
        default_factory=dict, description="Named sub-graphs, instantiated by layers `{op: block, block: <name>}`.")
    layers: Annotated[list[SpecLayer], Field(min_length=1)] = Field(description="Layers in order.")
    loss: Losses = Field(description="The training loss, or a list of weighted losses.")
    optimizer: OptimizerSpec = Field(default_factory=lambda: Sgd(type="sgd"), description="The optimizer.")
    train: TrainSpec = Field(default_factory=TrainSpec, description="Training settings.")
    data: DataSpec | None = Field(None, description="Data sources; a spec validates without them.")
    init: InitSpec | None = Field(None, description="Weights to load before training.")

    @property
    def losses(self) -> list:
        """Every loss, the first one (which predictions and accuracy come from) first."""
        return list(self.loss) if isinstance(self.loss, list) else [self.loss]


def layer_name(layer, index: int) -> str:
    """A layer's given name, or `<op><index>` (e.g. relu3)."""
    return layer.name if layer.name is not None else f"{layer.op}{index}"
