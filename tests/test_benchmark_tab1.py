"""`zsad benchmark` fills every row of each paper's Tab. 1 from tiny generated trees (a pipeline check).

One test per method: train on the paper's auxiliary set (VisA; PromptMoE: MVTec-AD), test every
other Tab. 1 set in its own layout, and train the swapped model for the auxiliary set's row.
Every published metric of every row must then have a number of ours beside it.
"""

from __future__ import annotations

import json

import pytest
from layout_factories import make_tree
from typer.testing import CliRunner

from zsad.cli import app
from zsad.engine.benchmark import COMPARED_METRICS, paper_results

runner = CliRunner()
# The set each paper trains on; the row of that set comes from the model trained on the other one.
AUXILIARY = {"moeclip": ("visa", "mvtec"), "promptmoe": ("mvtec", "visa"), "wmoeclip": ("visa", "mvtec")}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(AUXILIARY))
def test_benchmark_fills_every_row_of_tab_1(method, tmp_path):
    rows = paper_results(method)
    train_kind, swap_kind = AUXILIARY[method]
    tests = [swap_kind] + [kind for kind in rows if kind not in (train_kind, swap_kind)]
    specs = {kind: f"{kind}:{tmp_path / kind}" for kind in [train_kind, *tests]}
    for kind in specs:
        make_tree(kind, tmp_path / kind)
    out = tmp_path / "bench"
    result = runner.invoke(app, [
        "benchmark", "--method", method, "--train", specs[train_kind],
        "--test", ",".join(specs[kind] for kind in tests), "--swap", "--out", str(out),
        "--epochs", "1", "--max-steps-per-epoch", "1", "--batch-size", "2",
        "--backbone", "zsad-tiny", "--weights", "random", "--image-size", "32", "--device", "cpu", "--quiet",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "benchmark.json").read_text())
    assert set(summary["results"]) == set(rows) and summary["paper"] == rows
    for kind, published in rows.items():
        assert set(published) <= set(COMPARED_METRICS)
        missing = [metric for metric in published if summary["results"][kind][metric] is None]
        assert not missing, (kind, missing)
    markdown = (out / "benchmark.md").read_text()
    assert all(f"| {kind} " in markdown for kind in rows)
