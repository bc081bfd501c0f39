"""Recipes as package data: every method's paper recipe, its ablation overlays with their
published rows, the one merge of settings (with sources), and the wheel that ships them."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from zsad.cli.training import resolve_settings as train_settings
from zsad.engine.benchmark import paper_results
from zsad.engine.train_config import TrainingConfig
from zsad.errors import InvalidInputError, MissingInputError
from zsad.methods import available_methods, build_method, method_class
from zsad.recipes import (
    COMMAND_LINE,
    DEFAULT,
    RESUMED,
    SECTIONS,
    Recipe,
    bundled_recipes,
    load_recipe,
    method_recipe,
    resolve_settings,
)

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = bundled_recipes()
OVERLAYS = sorted(name for name, recipe in BUNDLED.items() if not recipe.is_method_recipe)
TRAINABLE = [name for name in available_methods() if method_class(name).trainable and name in BUNDLED]
# Overlays that reproduce no published number (the paper prints only a curve, or the
# switch is the spec's, not the paper's).
WITHOUT_ROW = {"promptmoe-no-aux-losses", "promptmoe-no-decouple", "wmoeclip-no-balance"}
# Overlays whose row is the method's Tab. 1 (the authors' released code ran plain GELU).
TABLE_1_OVERLAYS = {"moeclip-authors-gelu"}
VIT_L_TAPS = {6, 12, 18, 24}


def test_every_method_package_ships_its_recipe():
    assert {"moeclip", "promptmoe", "wmoeclip", "zeroshot"} <= set(BUNDLED)
    for method in ("moeclip", "promptmoe", "wmoeclip"):
        assert method_class(method).trainable and method in TRAINABLE


@pytest.mark.parametrize("method", TRAINABLE)
def test_train_with_only_the_method_resolves_to_its_recipe(method, tmp_path):
    recipe = BUNDLED[method]
    settings = train_settings(Recipe(), None, method, f"mvtec:{tmp_path}", None, None, None, {})
    cls = method_class(method)
    assert settings.method == method
    assert settings.method_config == cls.config_class.from_dict(recipe.method_config).to_dict()
    assert settings.training == TrainingConfig.from_dict(recipe.training)
    for key in recipe.named_keys():
        assert settings.sources[key] == f"recipe {method}"
    untouched = set(TrainingConfig().to_dict()) - set(recipe.training)
    assert all(settings.sources[f"training.{key}"] == DEFAULT for key in untouched)


def test_the_recipes_train_differently_from_the_engine_defaults():
    """The engine defaults are nobody's recipe: PromptMoE and WMoE-CLIP name their own schedules."""
    for method, (batch, lr) in {"promptmoe": (16, 1e-3), "wmoeclip": (32, 1e-3)}.items():
        training = resolve_settings(method).training_config()
        assert (training.batch_size, training.lr) == (batch, lr)


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_overlay_changes_exactly_what_it_names(name):
    overlay = BUNDLED[name]
    base = resolve_settings(overlay.method)
    merged = resolve_settings(None, overlay)
    assert merged.method == overlay.method and overlay.named_keys(), "an overlay names its switches"
    changed = {
        f"{section}.{key}"
        for section in SECTIONS
        for key, value in getattr(merged, section).items()
        if getattr(base, section)[key] != value
    }
    assert changed == set(overlay.named_keys())
    assert all(merged.sources[key] == f"overlay {name}" for key in overlay.named_keys())
    assert overlay.training == {}, "overlays train like their method's recipe"


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_overlay_carries_its_published_row(name):
    overlay = BUNDLED[name]
    if name in WITHOUT_ROW:
        assert overlay.paper is None
        return
    assert overlay.paper is not None and overlay.paper.results
    if name in TABLE_1_OVERLAYS:  # the published Tab. 1 was produced this way
        assert overlay.paper.results == paper_results(overlay.method)
        return
    assert "Tab." in overlay.paper.table and re.search(r"Tab\. 1(?!\d)", overlay.paper.table) is None
    assert all(0 < value <= 1 for row in overlay.paper.results.values() for value in row.values())


def test_ablation_rows_hold_the_papers_numbers():
    static = BUNDLED["promptmoe-static-prompt"].paper.results
    assert static["visa"] == {"image_auroc": 0.824, "pixel_aupro": 0.88}  # not Tab. 1's 85.0
    assert BUNDLED["promptmoe-e16-k8"].paper.results["mvtec"] == {"image_auroc": 0.93, "pixel_aupro": 0.84}
    assert BUNDLED["moeclip-no-paa"].paper.results["colondb"] == {"pixel_auroc": 0.819}
    assert BUNDLED["moeclip-single-expert"].paper.results["mvtec"]["pixel_ap"] == 0.454
    assert BUNDLED["wmoeclip-no-wcma"].paper.results["visa"] == {"image_auroc": 0.867, "pixel_auroc": 0.951}
    assert BUNDLED["promptmoe"].paper.table == "PromptMoE Tab. 1" and BUNDLED["promptmoe"].paper.results["visa"]


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_every_recipe_builds_on_the_tiny_backbone(name, tiny_backbone):
    settings = resolve_settings(None, BUNDLED[name])
    assert BUNDLED[name].description
    taps = settings.method_config.get("taps") or []
    if taps:  # layer subsets of ViT-L's 24 blocks (Tab. 4): checked, not built on 4 blocks
        assert set(taps) <= VIT_L_TAPS
        return
    model = build_method(settings.method, tiny_backbone, settings.method_config)
    assert isinstance(model, method_class(settings.method))


def test_merge_order_and_sources():
    overlay = BUNDLED["promptmoe-alpha-0.1"]
    stored = {"method": "promptmoe", "method_config": {"top_k": 2}, "training": {"epochs": 3, "lr": 0.5},
              "backbone": {"model_name": "zsad-tiny", "weights": "random", "image_size": 32}, "data": ["mvtec:/a"]}
    merged = resolve_settings(None, overlay, stored, {"training": {"lr": 0.25, "epochs": None}})
    assert merged.method_config["balance_weight"] == 0.1 and merged.sources["method_config.balance_weight"] == "overlay promptmoe-alpha-0.1"
    assert merged.method_config["top_k"] == 2 and merged.sources["method_config.top_k"] == RESUMED
    assert merged.training["epochs"] == 3 and merged.sources["training.epochs"] == RESUMED
    assert merged.training["lr"] == 0.25 and merged.sources["training.lr"] == COMMAND_LINE
    assert merged.training["weight_decay"] == 0.0 and merged.sources["training.weight_decay"] == DEFAULT
    assert merged.backbone["model_name"] == "zsad-tiny" and merged.data == ["mvtec:/a"]
    assert merged.paper == overlay.paper


def test_config_takes_a_bundled_name_or_a_path(tmp_path):
    assert load_recipe("moeclip-no-fofs") == BUNDLED["moeclip-no-fofs"]
    own = tmp_path / "mine.yaml"
    own.write_text("method: moeclip\nmethod_config: {rank: 4}\n")
    merged = resolve_settings(None, load_recipe(own))
    assert merged.method_config["rank"] == 4 and merged.sources["method_config.rank"] == f"config {own}"
    # the file is laid over the method's recipe, and names no published row
    assert merged.method_config["etf_weight"] == BUNDLED["moeclip"].method_config["etf_weight"]
    assert merged.paper is None
    with pytest.raises(MissingInputError, match="bundled: .*moeclip-no-fofs"):
        load_recipe("moeclip-no-such-thing")
    with pytest.raises(InvalidInputError, match="contradicts"):
        resolve_settings("wmoeclip", BUNDLED["moeclip-no-fofs"])


def test_bad_recipes_are_clear_errors(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("method: moeclip\nmethod_cofig: {}\n")
    with pytest.raises(InvalidInputError, match="unknown keys"):
        load_recipe(typo)
    broken = tmp_path / "broken.yaml"
    broken.write_text("method: [unclosed\n")
    with pytest.raises(InvalidInputError, match="cannot parse"):
        load_recipe(broken)
    with pytest.raises(InvalidInputError, match="name the method"):
        resolve_settings()


def test_configs_folder_is_gone_and_recipes_sit_beside_their_code():
    assert not (ROOT / "configs").exists()
    for name, recipe in BUNDLED.items():
        folder = "methods/recipes" if recipe.method == "zeroshot" else f"methods/{recipe.method}/recipes"
        assert (ROOT / "src" / "zsad" / folder / f"{name}.yaml").is_file()


def test_method_recipe_of_a_method_without_one_is_empty():
    assert method_recipe("no-such-method-recipe") == Recipe(name="no-such-method-recipe", method="no-such-method-recipe")


@pytest.mark.slow
def test_the_wheel_ships_every_recipe_and_they_load_through_importlib_resources(tmp_path):
    # Built from a copy of the tracked layout: setuptools writes build/ and *.egg-info into the tree it builds.
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, tree / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", str(tree), "-w", str(tmp_path)],
                           capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next(tmp_path.glob("zsad-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    shipped = {Path(name).stem for name in names if "/recipes/" in name and name.endswith(".yaml")}
    assert shipped == set(BUNDLED)
    script = (
        "import json, zsad, zsad.recipes as r; "
        "print(json.dumps({'file': zsad.__file__, 'names': sorted(r.bundled_recipes()), "
        "'row': r.load_recipe('promptmoe-static-prompt').paper.results}))"
    )
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path / "site"), "OMP_NUM_THREADS": "1"})
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    answer = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert answer["file"].startswith(str(tmp_path / "site"))
    assert answer["names"] == sorted(BUNDLED)
    shipped = ROOT / "src/zsad/methods/promptmoe/recipes/promptmoe-static-prompt.yaml"
    assert answer["row"] == yaml.safe_load(shipped.read_text())["paper"]["results"]


def test_a_plugin_method_in_a_top_level_module_ships_no_recipes():
    import toy_method  # noqa: F401  (registers "toy", defined in a module outside any package)

    assert "toy" in available_methods()
    recipes = bundled_recipes()
    assert "toy" not in recipes and "moeclip" in recipes
    assert method_recipe("toy").method_config == {}
