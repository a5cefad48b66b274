"""The real CLI in subprocesses, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clipsearch.bundled import DEMO_MODEL, SAMPLES
from clipsearch.ingest.datasets import export_images

from .conftest import TINY, run_cli

NO_DEFAULTS = {"CLIPSEARCH_INDEX": "", "CLIPSEARCH_MODEL": ""}  # the built-in defaults apply


def test_help_imports_no_heavy_module():
    code = (
        "import sys\n"
        "from clipsearch.cli import main\n"
        "sys.argv = ['clipsearch', '--help']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "heavy = sorted({'torch', 'open_clip', 'faiss', 'duckdb', 'numpy'} & set(sys.modules))\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "info" in result.stdout and "models" in result.stdout
    assert "HEAVY []" in result.stdout


def test_module_entry_point_and_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("clipsearch ")


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["query", "cat", "--min-score", "2"], "error: --min-score: 2.0 is not in the range"),
        (["duplicates", "--threshold", "abc"], "error: --threshold: 'abc' is not a valid float"),
        (["rebuild", "--max-memory", "5Q"], "error: --max-memory: '5Q' is not a size such as"),
        (["serve", "--max-upload", "0"], "error: --max-upload: '0' is not positive"),
        (["index", "x", "--engine", "jax"], "error: --engine: 'jax' is not one of auto, onnx"),
        (["index"], "error: Missing argument 'paths'."),
        (["info", "--index", "x"], "error: No such option: --index"),
        (["qury", "cat"], "error: No such command 'qury'. Did you mean 'query'?"),
    ],
)
def test_usage_errors_are_one_line_naming_the_flag(args, line, tmp_path):
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(line), result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stdout == ""
    assert "--help)" in result.stderr  # where to read more


def test_a_dash_word_in_a_query_is_taken_for_a_negative_term(tmp_path):
    """`query cat -dog` is click's options -d -o -g: the error says how to write the term;
    a long option that does not exist (`--nto`) is a typo, and click's suggestion stays."""
    result = run_cli("query", "cat", "-dog", "-k", "3", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    line = result.stderr
    assert line.startswith("error: No such option: -d (a negative term? write --not dog, ")
    assert "everything is a term" in line and "query cat -k 3 -- -dog)" in line
    assert "query --help)" in line

    typo = run_cli("query", "cat", "--nto", "dog", cwd=tmp_path)
    assert typo.returncode == 2 and len(typo.stderr.splitlines()) == 1, typo.stderr
    assert typo.stderr.startswith("error: No such option: --nto (Possible options: --not")
    assert "negative term" not in typo.stderr


def test_top_level_help_gives_each_command_one_sentence_on_one_line():
    result = run_cli("--help", env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    panel = [line for line in result.stdout.split("Commands")[1].splitlines() if "│" in line]
    rows = [line.strip("│ ").split(None, 1) for line in panel]
    assert len(rows) >= 15 and all(len(line) <= 80 for line in panel)
    assert all(len(row) == 2 for row in rows), panel  # a name and its description on each line
    assert all(description.endswith(".") for _, description in rows), panel


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """A working directory with the 300 bundled CIFAR-10 photos, one folder per class
    (photos/dog/...), indexed with the bundled model into indexes/default."""
    root = tmp_path_factory.mktemp("labelled")
    export_images(SAMPLES, root / "photos", by_label=True)
    result = run_cli("index", "photos", "-m", DEMO_MODEL, "--workers", "0", cwd=root)
    assert result.returncode == 0, result.stderr
    return root


def test_classify_eval_reads_at_80_columns_and_says_what_it_used(labelled):
    result = run_cli(
        "classify",
        "photos",
        "--eval",
        "--templates",
        "simple",
        "--workers",
        "0",
        cwd=labelled,
        env={**NO_DEFAULTS, "COLUMNS": "80"},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in result.stdout, result.stdout
    assert lines[0].startswith("accuracy ") and "on 300 images" in lines[0]
    rows = {line.split()[1]: line.split("│")[2:5] for line in lines if line.startswith("│ ")}
    assert len(rows) == 10 and rows["cat"][0].strip() == "30", result.stdout
    assert rows["cat"][2].strip() != "-"  # the bundled model takes some cats for dogs
    assert lines[-1] == (
        "confusion matrix: confusion_matrix.png (working directory; choose with --plot)"
    )
    assert (labelled / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    # No --model: the model of the index here, named on stderr
    assert "classifying with bundled:cifar10-small (the model of index indexes/default)" in (
        result.stderr
    )


def test_classify_without_an_index_names_the_model_on_stderr_only(labelled, tmp_path):
    env = {**NO_DEFAULTS, "CLIPSEARCH_MODEL": DEMO_MODEL}
    photos = str(labelled / "photos" / "cat")
    labels = ["--labels", "cat,dog", "--templates", "simple", "--workers", "0", "--json"]
    result = run_cli("classify", photos, *labels, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["predictions"]) == 30  # stdout stays JSON
    assert "classifying with bundled:cifar10-small ($CLIPSEARCH_MODEL)" in result.stderr

    shown = run_cli("classify", "--help", env={"COLUMNS": "200"})
    described = " ".join(shown.stdout.replace("│", " ").split())
    assert "Default: with --index, the index's model; with PATHs, the model of the default " in (
        described
    )
    assert "else $CLIPSEARCH_MODEL, else the pretrained ViT-B-32." in described


def test_a_query_without_hits_says_so(labelled):
    nothing = ["--where", "width > 10000", "--local", "--index", "indexes/default"]
    result = run_cli("query", "a photo of a cat", *nothing, cwd=labelled)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == "no results\n"
    as_json = run_cli("query", "a photo of a cat", *nothing, "--json", cwd=labelled)
    assert as_json.returncode == 0 and json.loads(as_json.stdout) == []
    assert "no results" not in as_json.stderr


def test_no_command_shows_the_help():
    result = run_cli()
    assert result.returncode == 2 and "COMMAND [ARGS]" in result.stdout + result.stderr
    assert "error" not in result.stderr


def test_info_json(tmp_path):
    result = run_cli("info", "--json", cwd=tmp_path, env={"CLIPSEARCH_MODEL": TINY})
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["device"] == "cpu" or facts["device"].startswith("cuda")
    assert facts["model"] == TINY and facts["model_from"] == "env CLIPSEARCH_MODEL"
    assert facts["index"] == str(tmp_path / "indexes" / "default")
    assert facts["index_exists"] is False
    for package in ("torch", "open_clip", "faiss", "duckdb"):
        assert facts[package], package


def test_info_text_names_default_model(tmp_path):
    result = run_cli("info", cwd=tmp_path, env={"CLIPSEARCH_MODEL": ""})
    assert result.returncode == 0, result.stderr
    assert "ViT-B-32:laion2b_s34b_b79k (built-in default)" in result.stdout
    assert "not created yet" in result.stdout


def test_info_loads_a_model_and_shows_its_identity(tmp_path):
    result = run_cli("info", "--model", TINY, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    identity = json.loads(result.stdout)["model_identity"]
    assert identity["dim"] == 128 and identity["weights"] == "random:seed=0"


def test_offline_pretrained_model_is_one_clear_line(tmp_path):
    result = run_cli(
        "info",
        "--model",
        "ViT-B-32:laion2b_s34b_b79k",
        "--cache-dir",
        str(tmp_path / "cache"),
        cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: --model: cannot load model 'ViT-B-32:laion2b_s34b_b79k'")
    assert "CLIPSEARCH_MODEL" in lines[0] and "Traceback" not in result.stderr


def test_bare_architecture_is_a_clear_error(tmp_path):
    result = run_cli("info", "--model", "ViT-B-32", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: model spec 'ViT-B-32' names an architecture")


def test_models_lists_builtin_and_shipped_architectures():
    result = run_cli("models", "--json")
    assert result.returncode == 0, result.stderr
    archs = json.loads(result.stdout)
    assert "clipsearch-tiny" in archs and "ViT-B-32" in archs
