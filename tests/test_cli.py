"""The real CLI in subprocesses, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import TINY, run_cli


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
