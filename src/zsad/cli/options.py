"""Options shared by several commands, defined once."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..methods import available_methods, method_class


def _methods_help() -> str:
    """The registered methods, the training-free ones marked."""
    return ", ".join(name if method_class(name).trainable else f"{name} (training-free)" for name in available_methods())


Method = Annotated[
    Optional[str],
    typer.Option("--method", "-m", help=f"Method: {_methods_help()}. Taken from the checkpoint when one is given."),
]
Checkpoint = Annotated[
    Optional[Path],
    typer.Option(help="A trained model: a `zsad train` output folder (its final checkpoint) or one .safetensors checkpoint file."),
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
    typer.Option(help="Input side in pixels; the patch grid is side // patch and positional embeddings are interpolated to it (default: 518 for ViT-L-14-336, else the model's own, or the checkpoint's)."),
]
CacheDir = Annotated[Optional[Path], typer.Option(help="Folder for OpenCLIP's weight downloads (default: OpenCLIP's cache).")]
Device = Annotated[str, typer.Option(help="`auto` (GPU when available), `cpu`, `cuda`, `cuda:1`, ...")]
Precision = Annotated[str, typer.Option(help="fp32, or bf16 autocast (on GPUs, or on CPUs with fast bf16: faster, maps within ~1%).")]
BatchSize = Annotated[int, typer.Option(min=1, help="Images per forward pass.")]
NumWorkers = Annotated[int, typer.Option(min=0, help="Data-loading worker processes (0 = in the main process).")]
ClassName = Annotated[
    Optional[str],
    typer.Option(help="Words for the object in the text prompts, for every image (e.g. 'metal nut', 'brain MRI scan'). Default: from the class-name table, or 'object'."),
]
ClassNamesFile = Annotated[
    Optional[Path],
    typer.Option("--class-names", help="JSON or YAML file mapping category keys to prompt words; extends the bundled table."),
]
Out = Annotated[Path, typer.Option("--out", "-o", help="Output folder (created if missing).")]
Overwrite = Annotated[bool, typer.Option(help="Replace files that already exist in --out (otherwise the command refuses).")]
ConfigFile = Annotated[
    Optional[Path],
    typer.Option("--config", help="YAML/JSON recipe (see configs/): `method`, `method_config`, and for training `training`."),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
DataSpec = Annotated[
    str,
    typer.Option(
        "--data",
        help="KIND:PATH. Kinds: mvtec, visa, btad, mpdd, dtd, rsdd, ksdd2, kvasir, clinicdb, headct, brainmri, br35h, "
        "folder (PATH/normal, PATH/abnormal, optional PATH/masks), manifest (a JSON-lines file).",
    ),
]
Classes = Annotated[Optional[str], typer.Option(help="Comma-separated categories to use (default: all).")]
