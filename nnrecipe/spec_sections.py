"""The sections of the experiment spec: data sources, models, loss, optimizer, training.

Every default of the product lives here, in the schema, and nowhere else. Each data
source and each model architecture has its own `args` model, so a typo in
`data.args` is an error with its dotted path, not a silently ignored key.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Section(BaseModel):
    """Base of every spec section: unknown keys are errors, defaults are validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


FACTORY_PATTERN = r"^[^:\s]+:[A-Za-z_][A-Za-z0-9_]*$"  # "file.py:function" or "pkg.mod:function"
Factory = Annotated[str, Field(pattern=FACTORY_PATTERN, description="file.py:function or package.module:function")]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
PositiveInt = Annotated[int, Field(ge=1)]


# ----------------------------------------------------------------------------- data sources


class DigitsArgs(Section):
    # scikit-learn's 8x8 digits have integer pixels in [0, 16]; "unit" divides by 16.
    scale: Literal["unit", "raw", "standardize"] = "unit"


class Mnist1dArgs(Section):
    # Passed to mnist1d's make_dataset; its defaults are the published benchmark's.
    num_samples: PositiveInt = 5000
    train_split: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.8
    seed: int = 42
    shuffle_seq: bool = False
    iid_noise_scale: Annotated[float, Field(ge=0.0)] = 0.02
    corr_noise_scale: Annotated[float, Field(ge=0.0)] = 0.25


class SyntheticArgs(Section):
    num_train: PositiveInt = 2000
    num_val: PositiveInt = 500
    num_test: Annotated[int, Field(ge=0)] = 0
    num_features: PositiveInt = 16
    num_classes: Annotated[int, Field(ge=2)] = 4  # classification only
    class_sep: Annotated[float, Field(ge=0.0)] = 2.0  # distance between class centres, in noise std units
    label_noise: Fraction = 0.0  # fraction of train labels replaced by a random class
    imbalance: Annotated[float, Field(ge=1.0)] = 1.0  # ratio of the largest to the smallest class
    noise_std: Annotated[float, Field(ge=0.0)] = 0.1  # regression: std of the additive target noise
    seed: int = 0


class CsvArgs(Section):
    path: str
    target: str
    features: Optional[list[str]] = None  # None: every column but the target
    # Columns read as categories (codes 1..K per column from the training file, 0 for a value it
    # lacks); None: every column whose values are mostly not numbers. The inputs are then the
    # tuple (codes int64 (N, k_cat), numbers float32 (N, k_num)), or the codes alone.
    categorical: Optional[list[str]] = None
    val_path: Optional[str] = None  # else val is carved from `path` with data.val_fraction
    test_path: Optional[str] = None
    delimiter: str = ","
    standardize: bool = False  # fit mean/std on train, apply to every split
    standardize_targets: bool = False  # regression: the same for the target columns


class NpzArgs(Section):
    path: str
    x_key: str = "x"
    y_key: str = "y"
    # Optional arrays in the same file; when absent, val is carved from train.
    x_val_key: str = "x_val"
    y_val_key: str = "y_val"
    x_test_key: str = "x_test"
    y_test_key: str = "y_test"
    standardize: bool = False
    standardize_targets: bool = False


class ImageFolderArgs(Section):
    root: str  # one sub-folder per class
    val_root: Optional[str] = None
    test_root: Optional[str] = None
    image_size: Optional[tuple[PositiveInt, PositiveInt]] = None  # (H, W); None: images must agree
    grayscale: bool = False
    mean: Optional[list[float]] = None  # per-channel normalization after scaling to [0, 1]
    std: Optional[list[float]] = None


class TorchvisionArgs(Section):
    name: str  # a class of torchvision.datasets: MNIST, FashionMNIST, CIFAR10, FakeData, ...
    root: str = "~/.cache/torchvision"
    download: bool = False  # nnrecipe never downloads unless asked
    kwargs: dict[str, Any] = {}  # extra constructor arguments
    mean: Optional[list[float]] = None
    std: Optional[list[float]] = None


class TextArgs(Section):
    # A UTF-8 text file, or a folder read recursively (files in sorted order, joined by a blank
    # line); None: the Python documentation that ships with CPython (pydoc_data.topics, ~465k
    # characters), so a language model trains with nothing downloaded.
    path: Optional[str] = None
    glob: str = "*.txt"  # which files of a folder
    level: Literal["char", "byte"] = "char"  # vocabulary: the characters seen, or all 256 byte values
    context: Annotated[int, Field(ge=2)] = 64  # tokens per example: the model sees x[0..L-1], predicts x[1..L]
    # Tokens between the starts of two training windows; None: `context` (no overlap). Val and
    # test windows never overlap, and no window crosses a split boundary (splits are by position).
    stride: Optional[PositiveInt] = None
    max_chars: Optional[PositiveInt] = None  # read only the first N characters (quick experiments)
    prompt: str = "The "  # the fixed prompt generated from at every evaluation (prediction dynamics)


AugmentName = Literal["hflip", "vflip", "crop", "shift", "rotate", "translate", "noise", "scale", "cutout"]
AUGMENT_NAMES: tuple[str, ...] = get_args(AugmentName)


class AugmentSpec(Section):
    # A built-in (nnrecipe/augment.py: its arguments are the make_<name> keyword arguments)
    # or your factory: function(**args) -> callable(x, y) -> (x, y) on a training batch.
    name: Optional[AugmentName] = None
    factory: Optional[Factory] = None
    args: dict[str, Any] = {}

    @model_validator(mode="after")
    def _one_of(self):
        if (self.name is None) == (self.factory is None):
            raise ValueError("give exactly one of `name` (built-in) or `factory` (your code)")
        return self


class DataBase(Section):
    source: str  # the tag: each subclass narrows it to one literal
    factory: Optional[Factory] = None
    val_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2  # when the source has no val split
    test_fraction: Fraction = 0.0  # when the source has no test split
    split_seed: int = 0  # the split does not move when `seed` changes, so seeds compare on one val set
    batch_size: PositiveInt = 64
    num_classes: Optional[Annotated[int, Field(ge=2)]] = None  # declare C; else the source's or max label + 1
    in_memory: Literal["auto", "always", "never"] = "auto"  # auto: built-in lazy sources under 2 GiB
    num_workers: Annotated[int, Field(ge=0)] = 2  # DataLoader workers for lazy data
    # Applied to training batches from the regularize stage on (an experiment there, then
    # in tune/squeeze when it helped); baseline and overfit never augment.
    augment: list[AugmentSpec] = []
    # Smaller input: average-pool images (H and W) and signals (L) by this factor; 1 = as is.
    downsample: PositiveInt = 1
    # The input leaf that is a padding mask (1 real, 0 padding; a row of positions per example)
    # when its name does not say so (attention_mask, padding_mask, mask, *_mask are found alone):
    # its path as inspect-data names leaves, e.g. "src_valid" or "[1]".
    mask: Optional[str] = None

    @model_validator(mode="after")
    def _factory_only_for_python(self):
        if self.factory is not None and self.source != "python":
            raise ValueError("data.factory is only used with source: python")
        return self


class DigitsData(DataBase):
    source: Literal["digits"] = "digits"
    args: DigitsArgs = DigitsArgs()


class Mnist1dData(DataBase):
    source: Literal["mnist1d"]
    args: Mnist1dArgs = Mnist1dArgs()


class SyntheticData(DataBase):
    source: Literal["synthetic"]
    args: SyntheticArgs = SyntheticArgs()


class CsvData(DataBase):
    source: Literal["csv"]
    args: CsvArgs


class NpzData(DataBase):
    source: Literal["npz"]
    args: NpzArgs


class ImageFolderData(DataBase):
    source: Literal["image-folder"]
    args: ImageFolderArgs


class TorchvisionData(DataBase):
    source: Literal["torchvision"]
    args: TorchvisionArgs


class TextData(DataBase):
    source: Literal["text"]
    args: TextArgs = TextArgs()
    val_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1  # the last 10% of the text


class PythonData(DataBase):
    source: Literal["python"]
    factory: Factory  # required here
    args: dict[str, Any] = {}  # passed to your function as keyword arguments


DataSpec = Annotated[
    Union[
        DigitsData, Mnist1dData, SyntheticData, CsvData, NpzData, ImageFolderData, TorchvisionData, TextData, PythonData
    ],
    Field(discriminator="source"),
]
DATA_SOURCES = ("digits", "mnist1d", "synthetic", "csv", "npz", "image-folder", "torchvision", "text", "python")


# ----------------------------------------------------------------------------- models

Dropout = Annotated[float, Field(ge=0.0, lt=1.0)]


class LinearArgs(Section):
    bias: bool = True


class MlpArgs(Section):
    hidden: list[PositiveInt] = [128, 128]
    activation: Literal["relu", "gelu", "tanh"] = "relu"
    dropout: Dropout = 0.0


class Cnn1dArgs(Section):
    channels: list[PositiveInt] = [32, 64, 64]
    kernel_size: PositiveInt = 5
    stride: PositiveInt = 2  # each conv halves the length, as in the MNIST-1D reference CNN
    dropout: Dropout = 0.0


class Cnn2dArgs(Section):
    channels: list[PositiveInt] = [32, 64]
    kernel_size: PositiveInt = 3
    batch_norm: bool = False
    dropout: Dropout = 0.0


class ResnetArgs(Section):
    weights_path: Optional[str] = None  # a local state dict; nnrecipe never downloads weights
    small_input: Optional[bool] = None  # 3x3 stem without max-pool; None: when H and W <= 64
    dropout: Dropout = 0.0


class GptArgs(Section):
    # nanoGPT-like: token + learned position embeddings, pre-LayerNorm causal self-attention
    # blocks, a tied-free linear head. The context (position table) is data.args.context.
    n_layer: PositiveInt = 2
    n_head: PositiveInt = 4
    n_embd: PositiveInt = 64  # must divide by n_head
    dropout: Dropout = 0.0

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not a multiple of n_head {self.n_head}")
        return self


class GruArgs(Section):
    n_embd: PositiveInt = 64  # token embedding width
    hidden: PositiveInt = 128
    layers: PositiveInt = 1
    dropout: Dropout = 0.0


class ModelBase(Section):
    arch: str  # the tag: each subclass narrows it to one literal
    factory: Optional[Factory] = None
    # "Init well": built-in models start with the final bias at the class log-priors (or the
    # target mean), so the first steps do not spend themselves learning the bias (the hockey
    # stick). User models are measured and advised, never modified.
    init_final_bias: bool = True
    # A local state dict (torch.save of model.state_dict()) loaded into the layers whose names
    # and shapes match, before training; nnrecipe never downloads weights.
    pretrained: Optional[str] = None

    @model_validator(mode="after")
    def _factory_only_for_python(self):
        if self.factory is not None and self.arch != "python":
            raise ValueError("model.factory is only used with arch: python")
        return self


class LinearModel(ModelBase):
    arch: Literal["linear"]
    args: LinearArgs = LinearArgs()


class MlpModel(ModelBase):
    arch: Literal["mlp"] = "mlp"
    args: MlpArgs = MlpArgs()


class Cnn1dModel(ModelBase):
    arch: Literal["cnn1d"]
    args: Cnn1dArgs = Cnn1dArgs()


class Cnn2dModel(ModelBase):
    arch: Literal["cnn2d"]
    args: Cnn2dArgs = Cnn2dArgs()


class Resnet18Model(ModelBase):
    arch: Literal["resnet18"]
    args: ResnetArgs = ResnetArgs()


class Resnet50Model(ModelBase):
    arch: Literal["resnet50"]
    args: ResnetArgs = ResnetArgs()


class GptModel(ModelBase):
    arch: Literal["gpt"]
    args: GptArgs = GptArgs()


class GruModel(ModelBase):
    arch: Literal["gru"]
    args: GruArgs = GruArgs()


class PythonModel(ModelBase):
    arch: Literal["python"]
    factory: Factory
    args: dict[str, Any] = {}
    # Where the prediction is in a structured output: a key, attribute or index. Default: a
    # tensor as it is, a tuple's first element, else `logits`, else `out` (nnrecipe/outputs.py).
    output: Optional[Union[Annotated[int, Field(ge=0)], Annotated[str, Field(min_length=1)]]] = None
    # How structured inputs reach forward: `single` model(x), `positional` model(*x), `keywords`
    # model(**x). Default: by the structure (a tuple positional, a dict keywords; nnrecipe/inputs.py).
    call: Optional[Literal["single", "positional", "keywords"]] = None


ModelSpec = Annotated[
    Union[LinearModel, MlpModel, Cnn1dModel, Cnn2dModel, Resnet18Model, Resnet50Model, GptModel, GruModel, PythonModel],
    Field(discriminator="arch"),
]
MODEL_ARCHS = ("linear", "mlp", "cnn1d", "cnn2d", "resnet18", "resnet50", "gpt", "gru", "python")
SEQUENCE_ARCHS = ("gpt", "gru")  # next-token models: (N, L) token ids -> (N, L, V) logits


# ----------------------------------------------------------------------------- loss, optimizer, training


class NameOrFactory(Section):
    """A built-in chosen by `name`, or the user's own `factory`; a bare string is the name."""

    name: str  # each section narrows it to its built-ins, with its default
    factory: Optional[Factory] = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _not_both(self):
        # A dumped spec (best.yaml, tune's trials) carries the default name beside the factory.
        default = type(self).model_fields["name"].default
        if self.factory is not None and "name" in self.model_fields_set and self.name != default:
            raise ValueError("give either `name` or `factory`, not both")
        return self


class LossSpec(NameOrFactory):
    name: Literal["auto", "cross_entropy", "nll", "bce", "mse", "huber"] = "auto"
    factory: Optional[Factory] = None  # your own: function(**args) -> callable(outputs, targets)
    args: dict[str, Any] = {}


class ScheduleSpec(NameOrFactory):
    name: Literal["constant", "step", "cosine", "warmup_cosine"] = "constant"
    factory: Optional[Factory] = None  # function(optimizer, total_steps, **args) -> LRScheduler
    args: dict[str, Any] = {}
    step_size: Optional[PositiveInt] = None  # "step": optimizer steps between decays (default: steps // 3)
    gamma: Annotated[float, Field(gt=0.0, le=1.0)] = 0.1
    warmup_steps: Annotated[int, Field(ge=0)] = 0


class OptimSpec(Section):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: Annotated[float, Field(gt=0.0)] = 3.0e-4  # the recipe's "3e-4 is the best learning rate for Adam"
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9  # sgd only
    betas: tuple[Annotated[float, Field(ge=0.0, lt=1.0)], Annotated[float, Field(ge=0.0, lt=1.0)]] = (0.9, 0.999)
    grad_clip: Optional[Annotated[float, Field(gt=0.0)]] = None  # max global grad norm
    schedule: ScheduleSpec = ScheduleSpec()


class TrainSpec(Section):
    steps: PositiveInt = 2000  # optimizer steps
    eval_every: PositiveInt = 200  # steps between evaluations on the entire val split
    log_every: PositiveInt = 50  # steps between host syncs for the train loss (TensorBoard, progress)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    # torch.compile the training forward: pays off on CUDA for conv nets (the first steps pay
    # ~1 min of compilation); on a CPU rarely. Evaluation runs the model uncompiled.
    compile: bool = False
    channels_last: bool = False  # NHWC layout for 4-D inputs and conv weights (faster with bf16 on GPUs)
    deterministic: bool = False  # torch.use_deterministic_algorithms on CUDA too (slower)
    log_histograms: bool = True  # parameter and gradient histograms at each evaluation
    # Language models: tokens sampled after data.args.prompt at each evaluation (TensorBoard's
    # text tab and samples.txt: the prediction dynamics of text).
    sample_tokens: Annotated[int, Field(ge=0)] = 120
    # Stop after this many evaluations without a lower val loss and keep the best checkpoint;
    # None trains the full budget. Honoured by regularize, tune and squeeze (overfit and
    # baseline train their full budget: fitting the training set is their point).
    early_stopping: Optional[PositiveInt] = None
