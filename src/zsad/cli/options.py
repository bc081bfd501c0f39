"""Options shared by several commands, defined once, and the option groups (model,
training) that commands take as one argument."""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, get_type_hints

import typer

from ..settings import ACTIVATION_NAMES, COMPILE_MODES, DOMAINS, PRECISIONS
from . import checks

# Smallest input side: one patch of the largest patch size among the bundled backbones (16).
MIN_IMAGE_SIZE = 16

Method = Annotated[
    Optional[str],
    typer.Option("--method", "-m", help="Method: {methods}. Taken from the checkpoint when one is given."),
]
Checkpoint = Annotated[
    Optional[Path],
    typer.Option(help="A trained model: a `zsad train` output folder (its final checkpoint), one .safetensors checkpoint file, or "
                      "hf-hub:ORG/NAME[@REVISION] "
                      "(a run folder on the Hugging Face Hub)."),
]
Backbone = Annotated[
    Optional[str],
    typer.Option(help="OpenCLIP model name (default: ViT-L-14-336, or the checkpoint's). `zsad-tiny` is a small random test model."),
]
Weights = Annotated[
    Optional[str],
    typer.Option(
        help="CLIP weights: an OpenCLIP tag (`openai`, downloaded once into the cache), a local file (OpenAI JIT "
        "archive such as ViT-L-14-336px.pt, or an OpenCLIP .pt/.bin/.safetensors state dict), or `random[:SEED]` "
        "(pipeline checks only; the same seed gives the same weights everywhere, `random` = seed 0) "
        "(default: openai, or the checkpoint's)."
    ),
]
ImageSize = Annotated[
    Optional[int],
    typer.Option(
        min=MIN_IMAGE_SIZE,
        help="Input side in pixels; the patch grid is side // patch and positional embeddings are interpolated "
        "to it (default: 518 for ViT-L-14-336, else the model's own, or the checkpoint's).",
    ),
]
Activation = Annotated[
    Optional[str],
    typer.Option(
        callback=checks.one_of(*ACTIVATION_NAMES),
        help="MLP activation of the CLIP blocks: `quick_gelu` (how OpenAI's CLIP was trained) or `gelu` (what the "
        "MoECLIP authors' released code ran by mistake; the `moeclip-authors-gelu` recipe). Default: as the weights "
        "were trained, or the checkpoint's.",
    ),
]
Domain = Annotated[
    Optional[str],
    typer.Option(
        callback=checks.one_of(*DOMAINS),
        help="The kind of images: `industrial` or `medical`. MoECLIP smooths its map and scores images per domain, "
        "as its authors' code (medical: the map's maximum alone). Default: the data-set kind's domain (`zsad test`), "
        "else industrial.",
    ),
]
CacheDir = Annotated[Optional[Path], typer.Option(help="Folder for OpenCLIP's weight downloads (default: OpenCLIP's cache).")]
Device = Annotated[str, typer.Option(callback=checks.device_name, help="`auto` (GPU when available), `cpu`, `cuda`, `cuda:1`, `mps`.")]
Precision = Annotated[str, typer.Option(callback=checks.one_of(*PRECISIONS), help="fp32, or bf16 autocast (on GPUs, or on CPUs with "
        "fast bf16: faster, maps within ~1%).")]
_COMPILE_HELP = (
    "Run the model under torch.compile: `off` (eager); `default` (fused kernels); `max-autotune` (also "
    "searches the fastest matrix-multiply kernels: a longer compile; captures CUDA graphs on GPUs); "
    "`reduce-overhead` (CUDA graphs: the whole forward pass replayed with one launch, best for small "
    "batches; CUDA devices only). The first batches are slow while it compiles (tens of seconds to "
    "minutes), and every new batch shape compiles again"
)
Compile = Annotated[
    str,
    typer.Option(
        callback=checks.one_of(*COMPILE_MODES),
        help=_COMPILE_HELP + " (a short batch is padded to the batch size so that it does not).",
    ),
]
TrainCompile = Annotated[
    Optional[str],
    typer.Option(
        "--compile",
        callback=checks.one_of(*COMPILE_MODES),
        help=_COMPILE_HELP + " (a short last batch of an epoch compiles once more). Forward pass and losses only; "
        "checkpoints are the same either way (default: the recipe's or the resumed run's, else {default:compile}).",
    ),
]
BatchSize = Annotated[int, typer.Option(min=1, help="Images per forward pass.")]
SetSize = Annotated[
    Optional[int],
    typer.Option(
        min=2,
        help="Set methods ({set_methods}) only: cut each set of images into label-free subsets of about this many images "
        "(seeded shuffle of the paths), each scored on its own, for memory and time (default: one set).",
    ),
]
NumWorkers = Annotated[int, typer.Option(min=0, help="Data-loading worker processes (0 = in the main process).")]
ClassName = Annotated[
    Optional[str],
    typer.Option(help="Words for the object in the text prompts, for every image (e.g. 'metal nut', 'brain MRI scan'). Default: from "
                      "the class-name table, or 'object'."),
]
ClassNamesFile = Annotated[
    Optional[Path],
    typer.Option("--class-names", help="JSON or YAML file mapping category keys to prompt words; extends the bundled table."),
]
Out = Annotated[Path, typer.Option("--out", "-o", help="Output folder (created if missing).")]
Overwrite = Annotated[bool, typer.Option(help="Replace files that already exist in --out (otherwise the command refuses).")]
ConfigFile = Annotated[
    Optional[str],
    typer.Option(
        "--config",
        help="A bundled recipe by name (`zsad recipes` lists them, e.g. promptmoe-static-prompt) or a YAML/JSON file: "
        "`method`, `method_config`, for training `training`, and the `paper` row it reproduces. Laid over the "
        "method's paper recipe.",
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
DataSpec = Annotated[
    str,
    typer.Option(
        "--data",
        help="KIND:PATH. Kinds: {data_kinds} (folder: PATH/normal, PATH/abnormal, optional PATH/masks; "
        "manifest: a JSON-lines file; `zsad data info KIND:PATH` shows what a spec finds).",
    ),
]
Classes = Annotated[Optional[str], typer.Option(help="Comma-separated categories to use (default: all).")]
AllowUntrained = Annotated[
    bool,
    typer.Option(help="Run a trainable method (e.g. moeclip) without --checkpoint: its adapters are untrained, so the result is a "
                      "pipeline check only."),
]
Epochs = Annotated[Optional[int], typer.Option(min=1, help="Passes over the training data; the last epoch is the final model (default: "
                                                           "the recipe's, else {default:epochs}).")]
TrainBatchSize = Annotated[Optional[int], typer.Option(min=1, help="Images per optimiser step, per GPU under torchrun (default: the "
                                                                   "recipe's, else {default:batch_size}).")]
LearningRate = Annotated[Optional[float], typer.Option(callback=checks.positive_number, help="Base learning rate of the method's "
        "optimiser (default: the recipe's, else {default:lr}).")]
Seed = Annotated[Optional[int], typer.Option(min=0, max=2**32 - 1, help="Seeds initialisation, data order, augmentation and dropout; "
        "a resumed run repeats the straight one (default: {default:seed}).")]
MaxStepsPerEpoch = Annotated[Optional[int], typer.Option(min=1, help="End each epoch after this many steps (quick runs; default: "
                                                                     "no limit).")]
TrainPrecision = Annotated[Optional[str], typer.Option(callback=checks.one_of(*PRECISIONS), help="fp32, or bf16 autocast (GPU only) "
        "(default: {default:precision}).")]
WarmupEpochs = Annotated[Optional[int], typer.Option(min=0, help="Linear learning-rate warm-up over this many epochs (default: the "
                                                                 "recipe's, else {default:warmup_epochs}).")]


@dataclass
class ModelOptions:
    """The options that choose, load and place the model: one set for predict, test and analyze."""

    method: Method = None
    checkpoint: Checkpoint = None
    config: ConfigFile = None
    backbone: Backbone = None
    weights: Weights = None
    image_size: ImageSize = None
    activation: Activation = None
    domain: Domain = None
    cache_dir: CacheDir = None
    device: Device = "auto"
    precision: Precision = "fp32"
    class_name: ClassName = None
    class_names: ClassNamesFile = None
    allow_untrained: AllowUntrained = False


@dataclass
class TrainingOptions:
    """The training settings given on the command line: one set for train and benchmark.
    None = not given (the recipe's, the resumed run's or the default value stays)."""

    epochs: Epochs = None
    batch_size: TrainBatchSize = None
    lr: LearningRate = None
    seed: Seed = None
    max_steps_per_epoch: MaxStepsPerEpoch = None
    precision: TrainPrecision = None
    warmup_epochs: WarmupEpochs = None
    compile: TrainCompile = None

    def given(self) -> dict[str, Any]:
        """The TrainingConfig fields set on the command line."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


# The option groups a command may take as one argument (see registration.add_command).
OPTION_GROUPS = (ModelOptions, TrainingOptions)


def option_group(parameter: str, group: type) -> Callable[[Callable], Callable]:
    """Command decorator: the fields of the dataclass ``group`` become options of the
    command (declared once, there) and reach it as one ``group`` instance in its
    argument ``parameter``."""
    hints = get_type_hints(group, include_extras=True)
    added = [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name])
        for f in fields(group)
    ]

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command, eval_str=True)
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in signature.parameters.values() if p.name != parameter]
        clashes = {p.name for p in own} & {p.name for p in added}
        if clashes:
            raise TypeError(f"{command.__name__} declares {sorted(clashes)} of {group.__name__} again")

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            values = {f.name: kwargs.pop(f.name) for f in fields(group)}
            return command(**kwargs, **{parameter: group(**values)})

        parameters = own + added
        wrapper.__signature__ = signature.replace(parameters=parameters)
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        return wrapper

    return decorate
