"""The published recipe and its ablations in configs/ load, differ from the recipe in
exactly the switches they name, and build on the tiny backbone."""
from __future__ import annotations

from pathlib import Path

import pytest

from zsad.engine.train_config import TrainingConfig
from zsad.methods import build_method, method_class
from zsad.methods.moeclip.config import MoEClipConfig
from zsad.methods.promptmoe.config import PromptMoEConfig
from zsad.recipes import load_recipe

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
ABLATIONS = {
    "moeclip-no-fofs-no-etf.yaml": {"fofs": False, "etf_loss": False},
    "moeclip-no-fofs.yaml": {"fofs": False},
    "moeclip-no-etf.yaml": {"etf_loss": False},
    "moeclip-no-depthwise-adapter.yaml": {"depthwise_adapter": False},
    "moeclip-no-paa.yaml": {"paa_scales": (1,)},
    "moeclip-single-expert.yaml": {"num_experts": 1, "top_k": 1},
}


def test_the_paper_recipe_is_the_default_config():
    recipe = load_recipe(CONFIGS[0].parent / "moeclip.yaml")
    assert MoEClipConfig.from_dict(recipe.method_config) == MoEClipConfig()
    assert TrainingConfig.from_dict(recipe.training) == TrainingConfig()


@pytest.mark.parametrize("name, changed", sorted(ABLATIONS.items()))
def test_each_ablation_changes_only_its_switches(name, changed):
    recipe = load_recipe(CONFIGS[0].parent / name)
    config = MoEClipConfig.from_dict(recipe.method_config).to_dict()
    default = MoEClipConfig().to_dict()
    differing = {key for key in default if config[key] != default[key]}
    assert differing == set(changed)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_builds(path, tiny_backbone):
    recipe = load_recipe(path)
    assert recipe.description
    model = build_method(recipe.method, tiny_backbone, recipe.method_config)
    assert isinstance(model, method_class(recipe.method))


def test_bad_recipes_are_clear_errors(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("method: moeclip\nmethod_cofig: {}\n")
    with pytest.raises(ValueError, match="unknown keys"):
        load_recipe(typo)
    broken = tmp_path / "broken.yaml"
    broken.write_text("method: [unclosed\n")
    with pytest.raises(ValueError, match="cannot parse"):
        load_recipe(broken)


PROMPTMOE_ABLATIONS = {
    "promptmoe-static-prompt.yaml": {
        "composition": "averaged", "per_layer_prompts": False, "num_experts": 1, "top_k": 1,
        "balance_weight": 0.0, "decouple_weight": 0.0,
    },
    "promptmoe-static-ensemble.yaml": {
        "composition": "averaged", "per_layer_prompts": False, "balance_weight": 0.0, "decouple_weight": 0.0,
    },
    "promptmoe-single-layer.yaml": {"per_layer_prompts": False, "balance_weight": 0.0, "decouple_weight": 0.0},
    "promptmoe-no-aux-losses.yaml": {"balance_weight": 0.0, "decouple_weight": 0.0},
    "promptmoe-alpha-0.yaml": {"balance_weight": 0.0},
    "promptmoe-alpha-0.1.yaml": {"balance_weight": 0.1},
}


def test_the_promptmoe_recipe_is_the_default_config_and_the_paper_schedule():
    directory = CONFIGS[0].parent
    recipe = load_recipe(directory / "promptmoe.yaml")
    assert recipe.method == "promptmoe"
    assert PromptMoEConfig.from_dict(recipe.method_config) == PromptMoEConfig()
    training = TrainingConfig.from_dict(recipe.training)
    assert (training.epochs, training.batch_size, training.lr, training.betas) == (15, 16, 1e-3, (0.6, 0.999))
    assert (training.warmup_epochs, training.milestones) == (3, ())
    for name in PROMPTMOE_ABLATIONS:  # ablations train exactly like the recipe
        assert TrainingConfig.from_dict(load_recipe(directory / name).training) == training


@pytest.mark.parametrize("name, changed", sorted(PROMPTMOE_ABLATIONS.items()))
def test_each_promptmoe_ablation_changes_only_its_switches(name, changed):
    recipe = load_recipe(CONFIGS[0].parent / name)
    config = PromptMoEConfig.from_dict(recipe.method_config).to_dict()
    default = PromptMoEConfig().to_dict()
    assert {key: config[key] for key in default if config[key] != default[key]} == changed
