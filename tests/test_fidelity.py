"""Issue 16 §1, the fidelity fixes end to end: each method's recipe values (PromptMoE's tau',
augmentation only in MoECLIP's recipe, MoECLIP's text adapter, grid smoothing and two-term
Dice), the domain of every data-set kind and how evaluation uses it, and the backbone
activation from the command line and the `moeclip-authors-gelu` overlay."""
from __future__ import annotations

import warnings

import pytest
import torch
from layout_factories import make_tree
from open_clip.transformer import QuickGELU
from torch import nn

import zsad.methods
from zsad.data import DATASET_KINDS, kind_domain
from zsad.errors import RandomWeightsWarning, UntrainedAdaptersWarning
from zsad.methods.build import build_detector, full_config
from zsad.recipes import bundled_recipes, load_recipe, resolve_settings
from zsad.settings import DOMAINS

MEDICAL_KINDS = {
    "kvasir", "clinicdb", "headct", "brainmri", "br35h", "bmad-brainmri", "bmad-liverct", "bmad-retinaoct",
    "colondb", "cvc300", "endo", "isic",
}  # fmt: skip


def _tiny(method: str, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        warnings.simplefilter("ignore", UntrainedAdaptersWarning)
        torch.manual_seed(0)
        return build_detector(method, backbone="zsad-tiny", weights="random", image_size=64, for_training=True, **kwargs)


# ------------------------------------------------------------------ recipes


@pytest.mark.parametrize("name, augment", [("moeclip", True), ("promptmoe", False), ("wmoeclip", False)])
def test_only_moeclips_recipe_augments(name, augment):
    # Neither PromptMoE nor WMoE-CLIP names any augmentation; MoECLIP's B.3 does.
    assert load_recipe(name).training.get("augment", True) is augment


def test_every_promptmoe_and_wmoeclip_overlay_trains_without_augmentation():
    overlays = [name for name in bundled_recipes() if name.startswith(("promptmoe-", "wmoeclip-"))]
    assert len(overlays) >= 10
    for name in overlays:
        assert resolve_settings(None, load_recipe(name)).training["augment"] is False, name


def test_recipe_values_of_the_fidelity_fixes():
    promptmoe = load_recipe("promptmoe").method_config
    assert (promptmoe["map_temperature"], promptmoe["score_temperature"]) == (0.07, 0.01)
    assert load_recipe("wmoeclip").method_config["per_tap_segmentation_loss"] is False
    moeclip = load_recipe("moeclip").method_config
    assert moeclip["text_adapter"] is True and moeclip["two_term_dice"] is True
    assert (moeclip["map_smoothing"], moeclip["score_mode"], moeclip["medical_score_mode"]) == ("grid", "fused", "map")


# ------------------------------------------------------------------ domains


def test_every_kind_declares_its_domain():
    for kind in DATASET_KINDS:
        domain = kind_domain(kind)
        if kind in ("folder", "manifest", "anomalyclip-meta", "aaclip-jsonl"):
            assert domain is None  # the user's folders and the lineage's metadata files: the user says
        else:
            assert domain == ("medical" if kind in MEDICAL_KINDS else "industrial"), kind
            assert domain in DOMAINS


@pytest.mark.parametrize("kind", ["mvtec", "kvasir"])
def test_evaluation_scores_a_set_in_its_kinds_domain(tmp_path, kind):
    from zsad.data import build_dataset
    from zsad.engine.evaluation import evaluate
    from zsad.text import ClassNames

    make_tree(kind, tmp_path / kind)
    dataset = build_dataset(f"{kind}:{tmp_path / kind}", image_size=64, split="test")
    detector = _tiny("moeclip").eval()
    seen = []
    original = detector.detect
    detector.detect = lambda *args, **kwargs: seen.append(detector.domain) or original(*args, **kwargs)
    report = evaluate(detector, dataset, ClassNames.load(), torch.device("cpu"), show_progress=False).report
    assert report["domain"] == kind_domain(kind) and set(seen) == {kind_domain(kind)}
    assert detector.domain == "industrial"  # restored
    evaluate(detector, dataset, ClassNames.load(), torch.device("cpu"), show_progress=False, domain="medical")
    assert seen[-1] == "medical"


def test_a_predictor_scores_one_domain(tmp_path):
    import zsad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        warnings.simplefilter("ignore", UntrainedAdaptersWarning)
        industrial = zsad.load("moeclip", backbone="zsad-tiny", weights="random", image_size=64)
        medical = zsad.load("moeclip", backbone="zsad-tiny", weights="random", image_size=64, domain="medical")
    assert (industrial.detector.domain, medical.detector.domain) == ("industrial", "medical")
    image = torch.rand(3, 64, 64)
    (scored,) = medical.predict([image])
    assert scored.score == pytest.approx(float(scored.anomaly_map.max()), abs=1e-6)  # the map's maximum alone
    with pytest.raises(ValueError, match="domain"):
        zsad.load("zeroshot", backbone="zsad-tiny", weights="random", image_size=64, domain="satellite")


# ------------------------------------------------------------------ activation


def _activations(detector) -> set[type]:
    return {type(module) for module in detector.backbone.clip.visual.modules() if isinstance(module, (nn.GELU, QuickGELU))}


def test_activation_switches_the_backbones_mlp_and_is_stored():
    quick = _tiny("zeroshot", activation="quick_gelu")
    plain = _tiny("zeroshot", activation="gelu")
    assert _activations(quick) == {QuickGELU} and _activations(plain) == {nn.GELU}
    assert full_config(plain)["backbone"]["quick_gelu"] is False
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(quick.eval()(images, ["object"]).anomaly_map, plain.eval()(images, ["object"]).anomaly_map)
    with pytest.raises(ValueError, match="activation"):
        _tiny("zeroshot", activation="relu")


def test_authors_gelu_overlay_trains_moeclip_with_plain_gelu():
    from zsad.cli.training import resolve_settings as resolve_run_settings

    merged = resolve_settings(None, load_recipe("moeclip-authors-gelu"))
    assert merged.backbone["activation"] == "gelu" and merged.paper.results["mvtec"]  # compared with Tab. 1
    recipe = load_recipe("moeclip-authors-gelu")
    assert recipe.method == "moeclip" and recipe.backbone == {"activation": "gelu"}
    assert "bug" in recipe.description
    settings = resolve_run_settings(recipe, None, None, "mvtec:/data", "zsad-tiny", "random", 64, {})
    assert settings.activation == "gelu"
    overridden = resolve_run_settings(recipe, None, None, "mvtec:/data", "zsad-tiny", "random", 64, {}, "quick_gelu")
    assert overridden.activation == "quick_gelu"
    stored = {"method": "moeclip", "backbone": {"quick_gelu": False}}
    resumed = resolve_run_settings(load_recipe(None), stored, None, "mvtec:/d", None, None, None, {})
    assert resumed.activation == "gelu"


def test_recipe_backbone_section_names_only_the_activation(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("method: moeclip\nbackbone:\n  depth: 3\n")
    with pytest.raises(ValueError, match="backbone keys"):
        load_recipe(path)


# ------------------------------------------------------------------ command line


def test_command_line_activation_and_domain(tmp_path):
    import json

    from typer.testing import CliRunner

    from zsad.cli import app

    make_tree("kvasir", tmp_path / "kvasir")
    tiny = [
        "--method",
        "moeclip",
        "--allow-untrained",
        "--backbone",
        "zsad-tiny",
        "--weights",
        "random",
        "--image-size",
        "64",
        "--device",
        "cpu",
    ]
    runner = CliRunner()
    by_kind = runner.invoke(app, ["test", "--data", f"kvasir:{tmp_path / 'kvasir'}", "--out", str(tmp_path / "a"), *tiny])
    assert by_kind.exit_code == 0, by_kind.output
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["domain"] == "medical"
    chosen = runner.invoke(
        app,
        [
            "test",
            "--data",
            f"kvasir:{tmp_path / 'kvasir'}",
            "--out",
            str(tmp_path / "b"),
            "--domain",
            "industrial",
            "--activation",
            "gelu",
            *tiny,
        ],
    )
    assert chosen.exit_code == 0, chosen.output
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["domain"] == "industrial"
    refused = runner.invoke(
        app, ["test", "--data", f"kvasir:{tmp_path / 'kvasir'}", "--out", str(tmp_path / "c"), "--activation", "relu", *tiny]
    )
    assert refused.exit_code != 0 and "quick_gelu" in refused.output


def test_a_few_shot_wrapper_passes_the_domain_to_its_detector():
    from zsad.methods.fewshot import FewShotDetector

    wrapped = FewShotDetector(_tiny("moeclip"))
    with wrapped.scoring_domain("medical"):
        assert wrapped.detector.domain == wrapped.domain == "medical"
    assert wrapped.domain == "industrial"
