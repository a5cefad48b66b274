import os
from pathlib import Path

import pytest

from clipsearch.errors import ClipsearchError
from clipsearch.model.spec import parse_spec
from clipsearch.settings import let_decoders_share_cores, resolve_index_dir


def test_pretrained_tag():
    spec = parse_spec("ViT-B-32:laion2b_s34b_b79k")
    assert (spec.kind, spec.arch, spec.tag) == ("pretrained", "ViT-B-32", "laion2b_s34b_b79k")
    assert str(spec) == "ViT-B-32:laion2b_s34b_b79k"


def test_pretrained_weights_file_keeps_its_path():
    spec = parse_spec("ViT-B-32:/models/w.safetensors")
    assert (spec.kind, spec.arch, spec.tag) == ("pretrained", "ViT-B-32", "/models/w.safetensors")


def test_hf_hub():
    spec = parse_spec("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
    assert spec.kind == "hf-hub"
    assert spec.repo == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    assert str(spec) == "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"


@pytest.mark.parametrize("bad", ["hf-hub:", "hf-hub:noslash", "hf-hub:a/b/c", "random:", ":tag"])
def test_malformed_specs_are_rejected(bad):
    with pytest.raises(ClipsearchError, match="spec"):
        parse_spec(bad)


def test_random():
    spec = parse_spec("random:clipsearch-tiny")
    assert (spec.kind, spec.arch) == ("random", "clipsearch-tiny")


def test_bare_arch_never_means_random():
    with pytest.raises(ClipsearchError) as info:
        parse_spec("ViT-B-32")
    message = str(info.value)
    assert "random:ViT-B-32" in message and "ViT-B-32:TAG" in message


@pytest.mark.parametrize("text", ["./runs/tiny", "runs/tiny", "/abs/ckpt", "local-dir:runs/tiny"])
def test_paths_are_checkpoints(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = parse_spec(text)
    assert spec.kind == "checkpoint"
    assert spec.path is not None and spec.path.is_absolute()
    assert spec.path.name in ("tiny", "ckpt")


def test_existing_directory_without_slash_is_a_checkpoint(tmp_path, monkeypatch):
    (tmp_path / "mymodel").mkdir()
    monkeypatch.chdir(tmp_path)
    spec = parse_spec("mymodel")
    assert spec.kind == "checkpoint" and spec.path == tmp_path / "mymodel"


def test_empty_spec():
    with pytest.raises(ClipsearchError, match="empty"):
        parse_spec("  ")


def test_index_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CLIPSEARCH_INDEX", raising=False)
    assert resolve_index_dir() == tmp_path / "indexes" / "default"
    assert resolve_index_dir("photos") == tmp_path / "indexes" / "photos"
    assert resolve_index_dir("./elsewhere/idx") == tmp_path / "elsewhere" / "idx"
    monkeypatch.setenv("CLIPSEARCH_INDEX", "/data/idx")
    assert resolve_index_dir() == Path("/data/idx")
    assert resolve_index_dir("named") == tmp_path / "indexes" / "named"


def test_index_lets_decoders_share_cores_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    let_decoders_share_cores()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    let_decoders_share_cores()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
