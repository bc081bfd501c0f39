"""`zsad benchmark`: the papers' protocol in one command.

Train once on the auxiliary set (once per seed with ``seeds``), test every listed set, and
write our numbers beside the published ones: the row the recipe reproduces (an ablation
overlay's own row), else the method's Tab. 1 (``resources/paper_results.json``), with
per-category tables where the paper prints them (``resources/paper_categories.json``).
With ``swap`` a second model is trained on the first test set and evaluated on the
auxiliary set (the papers' MVTec-AD -> VisA direction). benchmark.json records the
reproducibility manifest (``manifest``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from ..clip_weights import canonical_weights, is_random_weights
from ..data import build_dataset, parse_data_spec
from ..errors import InvalidInputError
from ..fileio import atomic_write_json, atomic_write_text, check_can_write
from ..methods import method_class
from ..methods.build import build_detector
from ..reports import comparison_markdown
from ..text import ClassNames
from .benchmark_tables import category_means, category_table, seed_statistics, seed_table
from .manifest import dataset_entry, reproducibility_manifest
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


def paper_categories(method: str) -> dict[str, dict[str, dict[str, float]]]:
    """Published per-category numbers of ``method``: {data kind: {category: {metric: fraction}}}."""
    table = json.loads((resources.files("zsad") / "resources" / "paper_categories.json").read_text(encoding="utf-8"))
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
    # The published row compared with: {"table": where, "results": {kind: {metric: fraction}}};
    # None = the method's Tab. 1. seeds: train once per seed (None = training.seed only).
    paper: dict[str, Any] | None = None
    seeds: list[int] | None = None
    recipe: str | None = None
    activation: str | None = None

    def paper_row(self) -> dict[str, Any]:
        return self.paper if self.paper is not None else {"table": "Tab. 1", "results": paper_results(self.method)}

    def compares_with_table_1(self) -> bool:
        return self.paper is None or self.paper.get("table", "").endswith("Tab. 1")


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


def _test_entry(spec: str) -> dict[str, Any]:
    """The manifest entry of a test set (its labelled test split)."""
    dataset = build_dataset(spec, split="test")
    return dataset_entry(spec, dataset.samples, dataset.root, "test")


def _train_and_test(
    plan: BenchmarkPlan, training: TrainingConfig, train_spec: str, tests: dict[str, str], run_dir: Path,
    class_names: ClassNames, device: str, overwrite: bool, show_progress: bool, say: Callable[[str], None],
    manifest: list[dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    model = build_detector(plan.method, None, plan.backbone, plan.weights, plan.image_size, plan.method_config,
                           plan.cache_dir, for_training=True, seed=training.seed, activation=plan.activation)
    torch_device = resolve_device(device)
    if train_spec is not None and method_class(plan.method).trainable:
        say(f"training {plan.method} on {train_spec} (seed {training.seed})")
        fit(model, [train_spec], run_dir / "train", training, class_names, torch_device,
            overwrite=overwrite, show_progress=show_progress, sources={"recipe": plan.recipe or plan.method})
        manifest.append(_test_entry(train_spec) | {"split": training.split(), "role": "train"})
    predictor = Predictor(model, torch_device, class_names, training.precision, training.compile)
    meta = {**model.provenance(), **({"trained_on": train_spec} if train_spec else {})}
    results = {}
    for key, spec in tests.items():
        say(f"testing on {spec}")
        run = run_test(predictor, spec, run_dir / "test" / key, batch_size=training.batch_size,
                       overwrite=overwrite, show_progress=show_progress, meta=meta)
        results[key] = {**run.report["mean"], "n_errors": run.report["n_errors"], "per_class": run.report["per_class"]}
        manifest.append(_test_entry(spec) | {"role": "test"})
    return results


def _seed_runs(
    plan: BenchmarkPlan, out_dir: Path, class_names: ClassNames, device: str, overwrite: bool,
    show_progress: bool, say: Callable[[str], None], manifest: list[dict[str, Any]],
) -> dict[int, dict[str, dict[str, Any]]]:
    """{seed: {data key: metrics}}: the plan trained and tested once per seed (one seed:
    the run folders OUT/main and OUT/swap; several: OUT/seed-N/main, OUT/seed-N/swap)."""
    if plan.train is None:
        train_key, test_keys = None, _dataset_keys(plan.tests)
    else:
        train_key, *test_keys = _dataset_keys([plan.train, *plan.tests])
    seeds = plan.seeds or [plan.training.seed]
    runs = {}
    for seed in seeds:
        training = replace(plan.training, seed=seed)
        base = out_dir if len(seeds) == 1 else out_dir / f"seed-{seed}"
        entries: list[dict[str, Any]] = []
        results = _train_and_test(plan, training, plan.train, dict(zip(test_keys, plan.tests)), base / "main",
                                  class_names, device, overwrite, show_progress, say, entries)
        if plan.swap:
            results.update(_train_and_test(plan, training, plan.tests[0], {train_key: plan.train}, base / "swap",
                                           class_names, device, overwrite, show_progress, say, entries))
        if not manifest:
            manifest.extend(entries)  # the same data for every seed
        runs[seed] = results
    return runs


def run_benchmark(
    plan: BenchmarkPlan,
    out_dir: Path,
    class_names: ClassNames,
    device: str = "auto",
    overwrite: bool = False,
    show_progress: bool = True,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the plan; write benchmark.json and benchmark.md into out_dir; return the json.
    With several seeds the results are the means over seeds, ``results_std`` their
    standard deviations (n - 1) and ``results_per_seed`` every run's numbers."""
    check_can_write([out_dir / "benchmark.json", out_dir / "benchmark.md"], overwrite)
    cls = method_class(plan.method)
    if plan.train is None and (cls.trainable or plan.swap):
        raise InvalidInputError(
            f"--method {plan.method} " + ("is trained: give --train KIND:PATH" if cls.trainable else "needs no training: drop --swap")
        )
    if plan.train is None and plan.seeds and len(plan.seeds) > 1:
        raise InvalidInputError(f"--method {plan.method} trains nothing: every seed gives the same run; drop --seeds")
    train_key = _dataset_keys([plan.train, *plan.tests])[0] if plan.train is not None else None
    manifest_entries: list[dict[str, Any]] = []
    runs = _seed_runs(plan, out_dir, class_names, device, overwrite, show_progress, say, manifest_entries)
    per_class = {seed: {key: row.pop("per_class") for key, row in results.items()} for seed, results in runs.items()}
    mean, std = seed_statistics(list(runs.values()))
    row = plan.paper_row()
    paper = row["results"]
    random_weights = is_random_weights(plan.weights or "openai")
    seeds = list(runs)
    summary = {
        "method": plan.method,
        "recipe": plan.recipe or plan.method,
        "method_config": plan.method_config,
        "backbone": plan.backbone,
        "weights": canonical_weights(plan.weights or "openai"),
        "pipeline_check": random_weights,
        "train": plan.train,
        "swap_train": plan.tests[0] if plan.swap else None,
        "training": plan.training.to_dict(),
        "seeds": seeds,
        "results": mean,
        "results_std": std if len(seeds) > 1 else None,
        "results_per_seed": {str(seed): results for seed, results in runs.items()} if len(seeds) > 1 else None,
        "paper_table": row["table"],
        "paper": {key: paper[key] for key in mean if key in paper},
        "reproducibility": reproducibility_manifest(seeds if len(seeds) > 1 else seeds[0], resolve_device(device), manifest_entries),
    }
    if plan.train is None:
        direction = "training-free"
    else:
        direction = f"trained on {plan.train}" + (f"; {train_key} row trained on {plan.tests[0]}" if plan.swap else "")
    title = f"{plan.recipe or plan.method}: ours vs {row['table']} ({direction})"
    markdown = comparison_markdown(mean, summary["paper"], COMPARED_METRICS, title, pipeline_check=random_weights)
    if not paper:
        markdown += "\nThe paper prints no row for this configuration: there is nothing to compare with.\n"
    if len(seeds) > 1:
        markdown += "\n" + seed_table(mean, std, summary["paper"], COMPARED_METRICS, seeds)
    if plan.compares_with_table_1():
        published = paper_categories(plan.method)
        specs = [spec for spec in (plan.train, *plan.tests) if spec is not None]
        spec_of = dict(zip(_dataset_keys(specs), specs))
        for key in mean:
            kind = parse_data_spec(spec_of[key])[0]
            if kind in published:
                ours = category_means([per_class[seed][key] for seed in seeds])
                markdown += "\n" + category_table(key, ours, published[kind], pipeline_check=random_weights)
    if cls.scores_sets:
        summary["note"] = TRANSDUCTIVE_NOTE
        markdown += f"\n{TRANSDUCTIVE_NOTE}\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "benchmark.json", summary)
    atomic_write_text(out_dir / "benchmark.md", markdown)
    return summary
