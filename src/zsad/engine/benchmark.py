"""`zsad benchmark`: the papers' protocol in one command.

Train once on the auxiliary set, test every listed set, and write our numbers beside the
published ones (``resources/paper_results.json``). With ``swap`` a second model is
trained on the first test set and evaluated on the auxiliary set (the papers' MVTec-AD ->
VisA direction).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from ..clip_weights import canonical_weights, is_random_weights
from ..data import parse_data_spec
from ..errors import InvalidInputError
from ..fileio import atomic_write_json, atomic_write_text, check_can_write
from ..methods import method_class
from ..methods.build import build_detector
from ..reports import comparison_markdown
from ..text import ClassNames
from .predictor import Predictor
from .runtime import resolve_device
from .testing import run_test
from .train_config import TrainingConfig
from .training import fit

TRANSDUCTIVE_NOTE = (
    "Note: a batch (transductive) method. Each category's test split is scored as one set, every image against "
    "the other unlabeled test images; these numbers are not comparable one for one with per-image methods."
)
# Every metric some paper reports; a paper without one shows n/a (PromptMoE gives PRO, not pixel AP;
# only WMoE-CLIP and MuSc give image F1-max).
COMPARED_METRICS = ["image_auroc", "image_ap", "image_f1max", "pixel_auroc", "pixel_ap", "pixel_aupro"]


def paper_results(method: str) -> dict[str, dict[str, float]]:
    """Published per-data-set numbers of ``method`` keyed by zsad data kind ({} if none)."""
    table = json.loads((resources.files("zsad") / "resources" / "paper_results.json").read_text(encoding="utf-8"))
    return table.get(method, {})


@dataclass
class BenchmarkPlan:
    """method, its config and backbone (activation: ``quick_gelu`` / ``gelu``, None = as
    the weights were trained); train: the auxiliary KIND:PATH (None for a training-free
    method); tests: KIND:PATH."""

    method: str
    method_config: dict[str, Any]
    backbone: str | None
    weights: str | None
    image_size: int | None
    cache_dir: str | None
    train: str | None
    tests: list[str]
    training: TrainingConfig
    swap: bool = False
    activation: str | None = None


def _dataset_keys(specs: list[str]) -> list[str]:
    """Result keys: the kind, numbered when a kind repeats (mvtec, mvtec-2)."""
    keys: list[str] = []
    for spec in specs:
        kind, _ = parse_data_spec(spec)
        key, n = kind, 2
        while key in keys:
            key, n = f"{kind}-{n}", n + 1
        keys.append(key)
    return keys


def _train_and_test(
    plan: BenchmarkPlan, train_spec: str, tests: dict[str, str], run_dir: Path, class_names: ClassNames,
    device: str, overwrite: bool, show_progress: bool, say: Callable[[str], None],
) -> dict[str, dict[str, Any]]:
    model = build_detector(plan.method, None, plan.backbone, plan.weights, plan.image_size, plan.method_config,
                           plan.cache_dir, for_training=True, seed=plan.training.seed, activation=plan.activation)
    torch_device = resolve_device(device)
    if train_spec is not None and method_class(plan.method).trainable:
        say(f"training {plan.method} on {train_spec}")
        fit(model, [train_spec], run_dir / "train", plan.training, class_names, torch_device,
            overwrite=overwrite, show_progress=show_progress)
    predictor = Predictor(model, torch_device, class_names, plan.training.precision, plan.training.compile)
    meta = {**model.provenance(), **({"trained_on": train_spec} if train_spec else {})}
    results = {}
    for key, spec in tests.items():
        say(f"testing on {spec}")
        run = run_test(predictor, spec, run_dir / "test" / key, batch_size=plan.training.batch_size,
                       overwrite=overwrite, show_progress=show_progress, meta=meta)
        results[key] = {**run.report["mean"], "n_errors": run.report["n_errors"]}
    return results


def run_benchmark(
    plan: BenchmarkPlan,
    out_dir: Path,
    class_names: ClassNames,
    device: str = "auto",
    overwrite: bool = False,
    show_progress: bool = True,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the plan; write benchmark.json and benchmark.md into out_dir; return the json."""
    check_can_write([out_dir / "benchmark.json", out_dir / "benchmark.md"], overwrite)
    cls = method_class(plan.method)
    if plan.train is None and (cls.trainable or plan.swap):
        raise InvalidInputError(
            f"--method {plan.method} " + ("is trained: give --train KIND:PATH" if cls.trainable else "needs no training: drop --swap")
        )
    if plan.train is None:
        train_key, test_keys = None, _dataset_keys(plan.tests)
    else:
        train_key, *test_keys = _dataset_keys([plan.train, *plan.tests])
    results = _train_and_test(
        plan, plan.train, dict(zip(test_keys, plan.tests)), out_dir / "main", class_names, device, overwrite, show_progress, say
    )
    if plan.swap:
        results.update(
            _train_and_test(
                plan, plan.tests[0], {train_key: plan.train}, out_dir / "swap", class_names, device, overwrite, show_progress, say
            )
        )
    paper = paper_results(plan.method)
    random_weights = is_random_weights(plan.weights or "openai")
    summary = {
        "method": plan.method,
        "method_config": plan.method_config,
        "backbone": plan.backbone,
        "weights": canonical_weights(plan.weights or "openai"),
        "pipeline_check": random_weights,
        "train": plan.train,
        "swap_train": plan.tests[0] if plan.swap else None,
        "training": plan.training.to_dict(),
        "results": results,
        "paper": {key: paper[key] for key in results if key in paper},
    }
    if plan.train is None:
        title = f"{plan.method}: ours vs the paper (training-free)"
    else:
        title = f"{plan.method}: ours vs the paper (trained on {plan.train}" + (
            f"; {train_key} row trained on {plan.tests[0]})" if plan.swap else ")"
        )
    markdown = comparison_markdown(results, summary["paper"], COMPARED_METRICS, title, pipeline_check=random_weights)
    if cls.scores_sets:
        summary["note"] = TRANSDUCTIVE_NOTE
        markdown += f"\n{TRANSDUCTIVE_NOTE}\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "benchmark.json", summary)
    atomic_write_text(out_dir / "benchmark.md", markdown)
    return summary
