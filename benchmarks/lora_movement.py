"""How far MoECLIP's trainable weights move per optimiser step, in units of the lr.

    python benchmarks/lora_movement.py [--norm-match-gradient bounded|paper] [--epochs 3]
        [--steps 30] [--image-size 64] [--lr 1e-3] [--out /tmp/zsad-lora-movement]

Trains MoECLIP (`zsad-tiny`, RANDOM weights) with the real training loop (`fit`, Adam
betas 0.5/0.999, batch 4) on generated MVTec-layout data, records every trainable tensor
after each optimiser step, and prints for the last epoch the mean per-step movement
mean|W_t+1 - W_t| / lr of each MoE layer's router and LoRA B. A stalled B shows values
near 0; a learning one values of order 0.1-1. A numerics check, not a result.
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from zsad.api import build_detector
from zsad.data.synth import TRAIN_CATEGORIES, generate_mvtec_like
from zsad.engine.train_config import TrainingConfig
from zsad.engine.training import fit
from zsad.text import ClassNames


def watched_tensors(model) -> dict[str, torch.Tensor]:
    """Router and LoRA B weights per MoE layer, by parameter name."""
    return {name: p for name, p in model.named_parameters() if ".router." in name or name.endswith("lora_b")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--norm-match-gradient", choices=("bounded", "paper"), default="bounded")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30, help="optimiser steps per epoch")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/zsad-lora-movement"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="RANDOM WEIGHTS")
    batch_size = 4
    per_category = -(-args.steps * batch_size // len(TRAIN_CATEGORIES))  # images per category
    n_defect = max(1, -(-(per_category - 4) // 4))  # 4 good images + 4 defect kinds
    data = args.out / "data"
    generate_mvtec_like(data, categories=list(TRAIN_CATEGORIES), size=args.image_size, n_good=4, n_defect_per_kind=n_defect)
    torch.manual_seed(0)
    model = build_detector(
        "moeclip", backbone="zsad-tiny", weights="random", image_size=args.image_size,
        method_config={"norm_match_gradient": args.norm_match_gradient}, for_training=True,
    )
    watched = watched_tensors(model)
    movement: dict[str, list[float]] = {name: [] for name in watched}
    previous = {name: p.detach().clone() for name, p in watched.items()}

    def record(optimizer, *_):
        for name, parameter in watched.items():
            movement[name].append(float((parameter.detach() - previous[name]).abs().mean()) / args.lr)
            previous[name] = parameter.detach().clone()

    config = TrainingConfig(epochs=args.epochs, batch_size=batch_size, lr=args.lr, max_steps_per_epoch=args.steps)
    handle = register_optimizer_step_post_hook(record)
    try:
        fit(model, [f"mvtec:{data}"], args.out / "run", config, ClassNames.load(), torch.device("cpu"),
            overwrite=True, show_progress=False)
    finally:
        handle.remove()
    steps = len(next(iter(movement.values())))
    last = slice(steps - args.steps, steps)
    print(f"norm_match_gradient={args.norm_match_gradient}: {steps} steps, lr {args.lr}; "
          f"mean per-step |dW| / lr over the last epoch (steps {last.start + 1}-{steps}) and steps 1, 2:")
    print(f"{'parameter':<46}{'last epoch':>12}{'step 1':>10}{'step 2':>10}")
    for name, values in movement.items():
        window = values[last]
        print(f"{name:<46}{sum(window) / len(window):>12.4f}{values[0]:>10.4f}{values[1]:>10.4f}")


if __name__ == "__main__":
    main()
