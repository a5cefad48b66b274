"""Recipes: TOML onto one typed config, --set overrides, clear errors, the shipped recipes."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipsearch.errors import ClipsearchError
from clipsearch.train.config import TrainConfig, from_dict, load_config, to_dict
from clipsearch.zeroshot.templates import classifier_weights, get_templates

from .conftest import REPO

RECIPES = sorted((REPO / "train").glob("*.toml"))


def test_recipe_maps_onto_the_typed_config(tmp_path):
    recipe = tmp_path / "recipes" / "mine.toml"
    recipe.parent.mkdir()
    recipe.write_text(
        '[data]\npath = "../data/train.parquet"\ncrop_scale = [0.4, 1]\n'
        "[optim]\nlr = 3e-4\nbatch_size = 64\nepochs = 2\n"
        '[eval]\ndata.path = "/abs/test.parquet"\ntemplates = ["itap of a {}."]\n'
    )
    cfg = load_config(recipe)
    assert isinstance(cfg, TrainConfig) and cfg.name == "mine"
    # recipe paths are relative to the recipe file; absolute ones stay
    assert cfg.data.path == str(tmp_path / "data" / "train.parquet")
    assert cfg.eval.data.path == "/abs/test.parquet"
    assert cfg.data.crop_scale == [0.4, 1.0] and isinstance(cfg.data.crop_scale[1], float)
    assert cfg.optim.epochs == 2.0 and isinstance(cfg.optim.epochs, float)
    assert cfg.eval.templates == ["itap of a {}."]
    assert cfg.output.dir == str(Path.cwd() / "runs" / "mine")
    assert from_dict(to_dict(cfg)) == cfg


def test_set_overrides_coerce_to_the_field_types(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        None,
        [
            "optim.lr=1e-2",
            "optim.batch_size=32",
            "optim.epochs=3",
            "model.lock_text=true",
            "data.crop_scale=[0.8, 1.0]",
            "data.path=cifar/train.parquet",
            "name=1e3",
            "eval.templates=simple",
            "data.templates=['a {}.', 'the {}.']",
        ],
        out="runs/x",
    )
    assert cfg.optim.lr == 0.01 and cfg.optim.batch_size == 32 and cfg.optim.epochs == 3.0
    assert cfg.model.lock_text is True and cfg.data.crop_scale == [0.8, 1.0]
    assert cfg.data.path == str(tmp_path / "cifar" / "train.parquet")  # --set: from the cwd
    assert cfg.name == "1e3"  # a string field keeps the text as written
    assert cfg.eval.templates == "simple" and cfg.data.templates == ["a {}.", "the {}."]
    assert cfg.output.dir == str(tmp_path / "runs" / "x")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=1", r"unknown recipe key 'optim\.lrr'; did you mean optim\.lr\?"),
        ("optim.learning_rate=1", r"'optim\.learning_rate'; known: epochs, steps"),
        ("optim.batch_size=big", r"optim\.batch_size: expected an integer, got 'big'"),
        ("optim.batch_size=1.5", "expected an integer"),
        ("model.lock_text=1", "expected true/false"),
        ("optim.lr.x=1", r"optim\.lr is a value, not a table"),
        ("eval.data=3", r"eval\.data must be a table"),
        ("nonsense", "expected key.sub=value"),
        # values checked where they are read, not when training starts
        (
            "loss.kind=sigilp",
            r"loss\.kind: 'sigilp' is not one of clip, siglip; did you mean siglip",
        ),
        ("loss.multi_positive=maybe", r"loss\.multi_positive: 'maybe' is not one of auto, true"),
        ("optim.optimizer=adam", r"'adam' is not one of adamw, sgd; did you mean adamw"),
        ("optim.precision=fp8", r"optim\.precision: 'fp8' is not one of auto, fp32"),
        ("data.format=parket", r"did you mean parquet"),
        ("optim.lr=0", r"optim\.lr: 0\.0 must be > 0"),
        ("optim.betas=[0.9, 1.5]", r"optim\.betas: 1\.5 must be >= 0 and < 1"),
        ("optim.batch_size=1", r"optim\.batch_size: 1 must be >= 2"),
        ("loss.label_smoothing=1", r"loss\.label_smoothing: 1\.0 must be >= 0 and < 1"),
        ("data.crop_scale=[0.5]", r"data\.crop_scale: expected two numbers"),
        ("data.crop_scale=[0.9, 0.5]", r"low <= high <= 1"),
        ("optim.accum=3", r"optim\.batch_size 256 does not split into optim\.accum = 3"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ClipsearchError, match=message):
        load_config(None, [override])


def test_settings_valid_alone_but_not_together_are_refused():
    with pytest.raises(ClipsearchError, match=r"label_smoothing applies to loss\.kind = clip only"):
        load_config(None, ["loss.kind=siglip", "loss.label_smoothing=0.1"])
    with pytest.raises(ClipsearchError, match=r"optim\.epochs must be above 0"):
        load_config(None, ["optim.epochs=0"])
    assert load_config(None, ["optim.epochs=0", "optim.steps=10"]).optim.steps == 10


def test_unknown_recipe_key_and_bad_toml(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text("[data]\npaht = 'x'\n")
    with pytest.raises(
        ClipsearchError, match=r"unknown recipe key 'data\.paht'; did you mean data\.path"
    ):
        load_config(recipe)
    recipe.write_text("[data\n")
    with pytest.raises(ClipsearchError, match="not valid TOML"):
        load_config(recipe)
    with pytest.raises(ClipsearchError, match="no recipe at"):
        load_config(tmp_path / "missing.toml")


def test_shipped_recipes_parse():
    names = {r.stem for r in RECIPES}
    shipped = {"cifar10-tiny", "cifar10", "cifar10-10min", "cifar10-lit", "cifar10-seed"}
    assert shipped | {"captions"} <= names
    for recipe in RECIPES:
        cfg = load_config(recipe)
        assert cfg.data.path and cfg.eval.data.path, recipe
        get_templates(cfg.data.templates)
        get_templates(cfg.eval.templates)


def test_shipped_recipes_point_at_the_shared_data(shared_data):
    for recipe in RECIPES:
        cfg = load_config(recipe)
        for path in (cfg.data.path, cfg.eval.data.path):
            folder = Path(path).parent.resolve()
            assert folder.is_relative_to(shared_data.resolve()) and folder.is_dir(), (recipe, path)


def test_templates_and_classifier_weights():
    assert len(get_templates("default")) == 80 and len(get_templates("simple")) == 7
    assert get_templates("photo")[0] == "a photo of a {}."
    assert get_templates(["a {label} here"]) == ["a {} here"]
    with pytest.raises(ClipsearchError, match="unknown template set"):
        get_templates("fancy")
    with pytest.raises(ClipsearchError, match="one"):
        get_templates(["no placeholder"])

    import numpy as np

    # a fake embedder with known vectors: "cat" prompts point along x (one off-axis), "dog" along y
    table = {
        "a cat.": [2.0, 0.0],
        "the cat.": [1.0, 1.0],
        "a dog.": [0.0, 3.0],
        "the dog.": [0.0, 1.0],
    }
    weights = classifier_weights(
        lambda texts: np.array([table[t] for t in texts]), ["cat", "dog"], ["a {}.", "the {}."]
    )
    cat = np.array([1.0, 0.0]) + np.array([1.0, 1.0]) / np.sqrt(2)
    np.testing.assert_allclose(weights[0], cat / np.linalg.norm(cat), atol=1e-6)
    np.testing.assert_allclose(weights[1], [0.0, 1.0], atol=1e-6)


def test_switch_settings_read_as_bools():
    from clipsearch.train.config import SWITCH, switch_on

    on = {value for value in SWITCH if switch_on(value, auto=False)}
    assert on == {"true", "on", "yes"}
    assert switch_on("auto", auto=True) and not switch_on("auto", auto=False)
    assert not switch_on("off", auto=True)
