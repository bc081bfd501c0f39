"""WMoE-CLIP recipes: the paper's recipe is the default config plus its training settings,
and each Tab. 2 ablation changes only its switches."""
from __future__ import annotations

import pytest

from zsad.engine.benchmark import paper_results
from zsad.engine.train_config import TrainingConfig
from zsad.methods.wmoeclip.config import WMoEClipConfig
from zsad.recipes import load_recipe, resolve_settings

ABLATIONS = {
    "wmoeclip-baseline": {"ctds": False, "wcma": False, "samoe": False},
    "wmoeclip-ctds-only": {"wcma": False, "samoe": False},
    "wmoeclip-no-samoe": {"samoe": False},
    "wmoeclip-no-wcma": {"wcma": False},
    "wmoeclip-no-balance": {"balance_loss": False},
}


def test_the_recipe_is_the_default_config_with_the_papers_training():
    recipe = load_recipe("wmoeclip")
    assert recipe.method == "wmoeclip"
    assert WMoEClipConfig.from_dict(recipe.method_config) == WMoEClipConfig()
    training = TrainingConfig.from_dict(recipe.training)
    assert (training.epochs, training.batch_size, training.lr) == (20, 32, 1e-3)
    assert training.milestones == ()


@pytest.mark.parametrize("name, changed", sorted(ABLATIONS.items()))
def test_each_ablation_changes_only_its_switches(name, changed):
    recipe = load_recipe(name)
    assert recipe.method == "wmoeclip"
    config = resolve_settings(None, recipe)
    full = resolve_settings("wmoeclip")
    default = full.method_config
    assert {key for key in default if config.method_config[key] != default[key]} == set(changed)
    assert all(config.method_config[key] == value for key, value in changed.items())
    assert config.training == full.training


def test_paper_table_holds_fractions_of_tab_1():
    paper = paper_results("wmoeclip")
    assert paper["mvtec"] == {"image_auroc": 0.924, "image_f1max": 0.932, "image_ap": 0.969,
                              "pixel_auroc": 0.921, "pixel_aupro": 0.868, "pixel_ap": 0.481}
    assert paper["visa"]["image_auroc"] == 0.873 and paper["kvasir"]["pixel_ap"] == 0.623
    assert set(paper["headct"]) == {"image_auroc", "image_f1max", "image_ap"}  # image-level only
    assert all(0 < value <= 1 for row in paper.values() for value in row.values())
