"""PromptMoE inference time over the frozen backbone's own forward, and its text-encoder
calls per batch, measured in one run.

    python benchmarks/promptmoe_overhead.py [--backbone ViT-L-14-336] [--image-size 518]
        [--batch-size 1] [--repeats 3] [--device auto] [--threads N]

Random weights (no download). Three passes run interleaved (A B C A B C ...) on the same
input and the medians are printed with the ratios of pairs:
- frozen: the backbone alone (all blocks, taps, CLS embedding), no V-V stream;
- frozen + V-V: the same with the V-V stream PromptMoE reads from block D/2 + 1 on;
- PromptMoE: the whole inference (V-V forward, VGMoP per tap, one text-encoder call for
  all learned prompts, maps, smoothing, score).
The text encoder is counted and timed separately by wrapping the backbone's
``encode_text_embeddings``. With ``--text-batch N`` (default 16, the paper's batch; 0 to
skip) the learned prompts of N images are also encoded alone: in the one call PromptMoE
makes, in one call per state and in one call per (layer, state); ``--text-only`` skips
the image passes. ``--device auto`` picks CUDA when present (timings then
synchronise the device); on the CPU both wall and process-CPU clocks are reported.
"""
from __future__ import annotations

import argparse
import functools
import statistics
import warnings

import torch
from _bench import timed_call

from zsad.backbone import create_backbone
from zsad.engine.runtime import resolve_device
from zsad.methods import build_method
from zsad.text import encode_learned_prompts


def text_pass_seconds(detector, batch: int, repeats: int, timed) -> tuple[int, dict[str, tuple[float, float]]]:
    """Encode the learned prompts of ``batch`` images (VGMoP run on random visual tokens;
    the text work does not depend on them) three ways. Returns (prompts, {strategy: (median
    wall s, median CPU s)}): one call for all (PromptMoE); one call per state (normal and
    abnormal prompts differ in length, so each call stops at its own last EOT); one call
    per (prompt module, state)."""
    device = detector.context.device
    contexts = torch.randn(batch, 16, detector.backbone.embed_dim, device=device)
    states = [module(contexts) for module in detector.prompt_modules]
    prompts = detector.routed_prompts(states, detector.routed_layouts(["object"] * batch, device))
    rows = prompts.embeddings.shape[0]

    def chunked(size: int):
        def run():
            for start in range(0, rows, size):
                part = type(prompts)(prompts.embeddings[start : start + size], prompts.eot_index[start : start + size])
                encode_learned_prompts(detector.backbone, part)

        return run

    strategies = {
        "1 call": chunked(rows),
        "2 calls (per state)": chunked(rows // 2),
        f"{rows // batch} calls (per layer and state)": chunked(batch),
    }
    results = {}
    for name, run in strategies.items():
        run()  # warm-up
        measured = [timed(run) for _ in range(repeats)]
        results[name] = (statistics.median(m[0] for m in measured), statistics.median(m[1] for m in measured))
    return rows, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="ViT-L-14-336")
    parser.add_argument("--image-size", type=int, default=518)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--text-batch", type=int, default=16, help="images whose prompts are timed alone (0: skip)")
    parser.add_argument("--text-only", action="store_true", help="time only the text pass (skip the image passes)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="RANDOM WEIGHTS")
    device = resolve_device(args.device)
    timed = functools.partial(timed_call, device=device)
    torch.manual_seed(0)
    backbone = create_backbone(model_name=args.backbone, weights="random", image_size=args.image_size)
    detector = build_method("promptmoe", backbone, {}).eval().to(device)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    words = ["object"] * args.batch_size

    if args.text_only:
        print(f"backbone {args.backbone} (random weights), device {device}, {torch.get_num_threads()} threads")
        report_text_pass(detector, args.text_batch, args.repeats, timed)
        return
    text_calls: list[tuple[int, float]] = []  # (prompt rows, seconds) per encoder call
    encode = backbone.encode_text_embeddings

    def counted_encode(embeddings, eot_index):
        encoded: dict[str, torch.Tensor] = {}
        seconds, _ = timed(lambda: encoded.setdefault("features", encode(embeddings, eot_index)))
        text_calls.append((embeddings.shape[0], seconds))
        return encoded["features"]

    backbone.encode_text_embeddings = counted_encode

    passes = {
        "frozen backbone forward": lambda: backbone.forward_visual(images, taps=detector.taps),
        "frozen forward + V-V": lambda: backbone.forward_visual(images, taps=detector.taps, vv_start=detector.vv_start),
        "PromptMoE inference": lambda: detector(images, words),
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in passes}
    with torch.inference_mode():
        for run in passes.values():  # warm-up
            run()
        text_calls.clear()
        for _ in range(args.repeats):
            for name, run in passes.items():
                times[name].append(timed(run))
    calls_per_batch = len(text_calls) / args.repeats
    print(f"backbone {args.backbone} (random weights), {args.image_size} px, batch {args.batch_size}, "
          f"device {device}, {torch.get_num_threads()} threads")
    print(f"trainable parameters: {detector.trainable_parameter_count():,}  "
          f"backbone parameters: {sum(p.numel() for p in backbone.parameters()):,}")
    print(f"text-encoder calls per batch: {calls_per_batch:g} ({text_calls[0][0]} prompts in the call = "
          f"{len(detector.prompt_modules)} prompt modules x 2 states x {args.batch_size} images)")
    clocks = (("wall", 0), ("cpu", 1)) if device.type == "cpu" else (("wall", 0),)
    print(f"{'pass':<26}{'clock':<6}{'median s':>10}{'min s':>10}{'max s':>10}")
    for clock, column in clocks:
        for name, values in times.items():
            values = [v[column] for v in values]
            print(f"{name:<26}{clock:<6}{statistics.median(values):>10.3f}{min(values):>10.3f}{max(values):>10.3f}")
    text_seconds = statistics.median(seconds for _, seconds in text_calls)
    print(f"{'text encoder call':<26}{'wall':<6}{text_seconds:>10.3f}  (inside PromptMoE inference)")
    frozen = times["frozen backbone forward"]
    for clock, column in clocks:
        for name in ("frozen forward + V-V", "PromptMoE inference"):
            ratios = [m[column] / f[column] for m, f in zip(times[name], frozen)]
            print(f"ratio {name} / frozen ({clock}): median of pairs {statistics.median(ratios):.3f} "
                  f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
    per_image = statistics.median(v[0] for v in times["PromptMoE inference"]) / args.batch_size
    print(f"PromptMoE inference per image (wall): {per_image:.3f} s")
    if args.text_batch:
        report_text_pass(detector, args.text_batch, args.repeats, timed)


def report_text_pass(detector, batch: int, repeats: int, timed) -> None:
    with torch.inference_mode():
        rows, results = text_pass_seconds(detector, batch, repeats, timed)
    print(f"text pass alone for a batch of {batch} ({rows} prompts):")
    for name, (wall, cpu) in results.items():
        print(f"  {name:<32} wall {wall:8.3f} s   cpu {cpu:8.3f} s")


if __name__ == "__main__":
    main()
