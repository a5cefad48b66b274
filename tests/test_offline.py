"""Offline: a model whose weights are neither cached nor downloadable fails at once, in one
line, before torch or open_clip is imported; weights in the Hugging Face cache still load.

HF_HUB_OFFLINE=1 stands for having no network (the hub probe answers "unreachable" at once),
and HF_HUB_CACHE points at a folder of the test, so weights a developer has cached never
change the outcome.
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
from PIL import Image

from clipsearch.model import Model, hub, pretrained_table
from clipsearch.model.checkpoint import CONFIG_NAME, WEIGHTS_NAME, sha256_file
from clipsearch.model.spec import parse_spec

from .conftest import TINY, TORCH_MODULES, run_cli, run_cli_watching_imports

DEFAULT_MODEL = "ViT-B-32:laion2b_s34b_b79k"
VIT_B_32_REPO = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K/"  # how open_clip's table names it
HUB_MODEL = "hf-hub:clipsearch-tests/tiny"


@pytest.fixture
def offline(tmp_path) -> dict[str, str]:
    """The environment of a machine without network whose Hugging Face cache is empty."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    return {
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(cache),
        "HF_ENDPOINT": "",  # the hub at its usual address: huggingface.co
        "CLIPSEARCH_MODEL": "",  # the built-in default model
        "CLIPSEARCH_INDEX": "",
    }


def _one_error_line(result, spec: str, tried: str) -> str:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("IMPORTED ")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: --model: cannot load model '{spec}': tried {tried} ")
    assert "cannot be reached (offline). Fix: name a local checkpoint directory" in lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("args", "spec", "tried"),
    [
        (["info", "--model", DEFAULT_MODEL], DEFAULT_MODEL, VIT_B_32_REPO),
        (["info", "--model", "RN50:openai"], "RN50:openai", "timm/resnet50_clip.openai/"),
        (
            ["info", "--model", "ViT-B-32-quickgelu:openai"],
            "ViT-B-32-quickgelu:openai",
            "timm/vit_base_patch32_clip_224.openai/",
        ),
        (["info", "--model", HUB_MODEL], HUB_MODEL, "hf-hub clipsearch-tests/tiny"),
        (["export", HUB_MODEL, "onnx-out"], HUB_MODEL, "hf-hub clipsearch-tests/tiny"),
    ],
    ids=["pretrained", "tag-also-at-a-url", "quickgelu-arch", "hf-hub", "export-hf-hub"],
)
def test_offline_model_fails_before_torch_is_imported(args, spec, tried, offline, tmp_path):
    result, heavy = run_cli_watching_imports(*args, cwd=tmp_path, env=offline)
    line = _one_error_line(result, spec, tried)
    assert "in the Hugging Face cache, not there, and huggingface.co" in line
    assert not heavy & TORCH_MODULES, heavy
    assert not (tmp_path / "onnx-out").exists()


def test_readme_quotes_the_real_offline_error(offline, tmp_path):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    command = f"$ clipsearch info --model {DEFAULT_MODEL}"
    quoted = readme.split(command + "\n", 1)[1].splitlines()[0]
    result = run_cli(*command.split()[2:], cwd=tmp_path, env=offline)
    assert result.returncode == 2
    assert result.stderr == quoted + "\n"


def test_offline_index_and_query_with_the_default_model(offline, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(photos / "red.png")
    (tmp_path / "labels.txt").write_text("a red photo\na blue photo\n")
    steps = [
        ["index", str(photos)],
        ["query", "--image", str(photos / "red.png"), "--texts", str(tmp_path / "labels.txt")],
    ]
    for step in steps:
        result, heavy = run_cli_watching_imports(*step, cwd=tmp_path, env=offline)
        _one_error_line(result, DEFAULT_MODEL, VIT_B_32_REPO)
        assert not heavy & TORCH_MODULES, f"clipsearch {' '.join(step)} imported {heavy}"


def test_the_cache_decides_missing_fails_fast_present_loads(offline, tmp_path):
    """The same hub model: not in the cache, one line and no torch; put in the cache the
    way huggingface_hub lays it out, it loads offline through the real loader, weights and
    all."""
    cache = Path(offline["HF_HUB_CACHE"])
    args = ["info", "--model", HUB_MODEL, "--engine", "torch", "--json"]
    missing, heavy = run_cli_watching_imports(*args, cwd=tmp_path, env=offline)
    _one_error_line(missing, HUB_MODEL, "hf-hub clipsearch-tests/tiny")
    assert not heavy & TORCH_MODULES, heavy

    saved = Model.load(TINY, engine="torch").save(tmp_path / "tiny")
    snapshot = cache / "models--clipsearch-tests--tiny" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for name in (CONFIG_NAME, WEIGHTS_NAME):  # open_clip's names on the hub
        (snapshot / name).write_bytes((saved / name).read_bytes())
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)

    present = run_cli(*args, cwd=tmp_path, env=offline)
    assert present.returncode == 0, present.stderr
    identity = json.loads(present.stdout)["model_identity"]
    assert identity["spec"] == HUB_MODEL and identity["dim"] == 128
    assert identity["weights"] == "sha256:" + sha256_file(saved / WEIGHTS_NAME)


def test_pretrained_table_read_from_source_matches_open_clip():
    """Every ARCH:TAG open_clip knows, read without importing it, names the same hub
    location as open_clip's own table (quick_gelu copies and tag spellings included)."""
    pairs = open_clip.list_pretrained()
    assert len(pairs) > 100
    for arch, tag in pairs:
        expected = open_clip.get_pretrained_cfg(arch, tag).get("hf_hub") or None
        assert pretrained_table.hub_location(arch, tag) == expected, (arch, tag)
    assert pretrained_table.hub_location("ViT-B-32", "LAION2B-S34B-B79K") == VIT_B_32_REPO
    for arch, tag in [("ViT-B-32", "no_such_tag"), ("no-such-arch", "openai")]:
        assert pretrained_table.hub_location(arch, tag) is None


def test_needed_files_follow_open_clip_download_names():
    files = hub.needed_files(parse_spec(DEFAULT_MODEL))
    assert files is not None and files.repo == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    assert files.needed == (("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),)
    hub_files = hub.needed_files(parse_spec("hf-hub:org/repo"))
    assert hub_files is not None and hub_files.needed[0] == ("open_clip_config.json",)
    for spec in (TINY, "bundled:cifar10-small", "ViT-B-32:no_such_tag"):
        assert hub.needed_files(parse_spec(spec)) is None
