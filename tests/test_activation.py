"""Expert activation counting (PromptMoE Fig. 6) and auxiliary-loss curves (Fig. 7)."""
from __future__ import annotations

import csv

import pytest
import torch

from zsad.analysis.activation import ActivationCounter
from zsad.analysis.training_curves import training_curves
from zsad.engine.train_log import TrainLog
from zsad.methods.promptmoe.vgmop import sparse_routing


def test_counts_and_frequencies_per_layer_and_over_layers():
    counter = ActivationCounter()
    logits = torch.tensor([[5.0, 4.0, 0.0, -1.0], [0.0, 4.0, 5.0, -1.0], [0.0, 1.0, 2.0, 3.0]])
    def routed(rows):
        return sparse_routing(rows, 2).as_routing()

    counter.add("a", {"6/normal": routed(logits[:2]), "12/normal": routed(logits[1:])})
    counter.add("a", {"6/normal": routed(logits[2:]), "12/normal": routed(logits[:1])})
    rows = {(r["layer"], r["expert"]): r for r in counter.rows() if r["dataset"] == "a"}
    # Layer 6 saw images with top-2 {0,1}, {1,2}, {2,3}; layer 12: {1,2}, {2,3}, {0,1}.
    assert [rows[("6", e)]["activations"] for e in (1, 2, 3, 4)] == [1, 2, 2, 1]
    assert rows[("6", 2)]["frequency"] == pytest.approx(2 / 3)
    assert [rows[("all", e)]["activations"] for e in (1, 2, 3, 4)] == [2, 4, 4, 2]
    assert rows[("all", 2)]["frequency"] == pytest.approx(4 / 6)
    assert sum(rows[("all", e)]["frequency"] for e in (1, 2, 3, 4)) == pytest.approx(2.0)  # = k
    assert all(r["images"] == 3 for r in rows.values())


def test_a_method_without_routing_or_with_token_routing_is_a_clear_error():
    with pytest.raises(ValueError, match="no routing decisions"):
        ActivationCounter().add("a", {})
    tokens = sparse_routing(torch.randn(3, 4), 2).as_routing()
    tokens.topk_index = tokens.topk_index.expand(-1, 5, -1)  # five tokens per image
    with pytest.raises(ValueError, match="routes 5 tokens per image"):
        ActivationCounter().add("a", {"6/normal": tokens})


def test_auxiliary_loss_curves_of_two_runs(tmp_path):
    for name, decouple in (("with", [0.5, 0.2]), ("without", [0.5, 0.9])):
        (tmp_path / name).mkdir()
        log = TrainLog(tmp_path / name / "train_log.csv")
        for step, value in enumerate(decouple, start=1):
            log.write(1, step, 1e-3, 1.0, {"bce": 0.7, "balance_unweighted": 1.5, "decouple_unweighted": value})
        log.close()
    written = {path.name: path for path in training_curves([tmp_path / "with", tmp_path / "without"], tmp_path / "out").written}
    with open(written["auxiliary_losses.csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    without = [float(r["value"]) for r in rows if r["run"] == "without" and r["loss"] == "decouple_unweighted"]
    assert without == [0.5, 0.9] and len(rows) == 8
    assert written["auxiliary_losses.png"].is_file()
    (tmp_path / "plain").mkdir()
    log = TrainLog(tmp_path / "plain" / "train_log.csv")
    log.write(1, 1, 1e-3, 1.0, {"seg": 0.3})
    log.close()
    plain = training_curves([tmp_path / "plain"], tmp_path / "out2")  # no auxiliary losses: the training loss only
    assert [path.name for path in plain.written] == ["training_loss.csv", "training_loss.png", "convergence.md"]
    assert plain.without_auxiliary == ["plain"]
