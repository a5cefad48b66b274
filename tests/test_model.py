"""The model layer on a real tiny open_clip model: no mocks, real weights files."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from clipsearch.errors import ClipsearchError
from clipsearch.model import Model
from clipsearch.model.checkpoint import CONFIG_NAME, WEIGHTS_NAME

from .conftest import TINY


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)) for i in range(n)
    ]


def test_random_spec_loads_tiny_arch(tiny_model):
    assert tiny_model.dim == 128
    assert tiny_model.image_size == 32
    assert tiny_model.identity.weights == "random:seed=0"
    assert tiny_model.identity.spec == TINY
    # open_clip's initial temperature: logit_scale = 1/0.07
    assert tiny_model.logit_scale == pytest.approx(1 / 0.07, rel=1e-5)


def test_image_embeddings_are_unit_norm_float32(tiny_model):
    emb = tiny_model.embed_images(_images(5))
    assert emb.shape == (5, 128) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # different images give different embeddings
    assert np.abs(emb[0] - emb[1]).max() > 1e-3


def test_text_embeddings_are_unit_norm_and_deterministic(tiny_model):
    texts = ["a photo of a dog", "a photo of a cat", "ünïcödé 写真"]
    first = tiny_model.embed_texts(texts)
    again = tiny_model.embed_texts(texts)
    assert first.shape == (3, 128) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first[0] - first[1]).max() > 1e-3


def test_batching_does_not_change_embeddings(tiny_model):
    images = _images(7)
    whole = tiny_model.embed_images(images, batch_size=64)
    batched = tiny_model.embed_images(images, batch_size=3)
    np.testing.assert_allclose(whole, batched, atol=1e-5)


def test_empty_inputs(tiny_model):
    assert tiny_model.embed_images([]).shape == (0, 128)
    assert tiny_model.embed_texts([]).shape == (0, 128)


def test_image_paths_are_decoded(tiny_model, tmp_path):
    image = _images(1)[0]
    path = tmp_path / "фото 1.png"
    image.save(path)
    np.testing.assert_allclose(
        tiny_model.embed_images([path]), tiny_model.embed_images([image]), atol=1e-6
    )
    (tmp_path / "broken.jpg").write_text("not an image")
    with pytest.raises(ClipsearchError, match=r"broken\.jpg"):
        tiny_model.embed_images([tmp_path / "broken.jpg"])


def test_random_weights_are_the_same_in_every_load_and_leave_global_rng_alone(tiny_model):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    other = Model.load(TINY, engine="torch")
    assert torch.rand(1) == expected_next
    images = _images(3)
    np.testing.assert_array_equal(other.embed_images(images), tiny_model.embed_images(images))


def test_checkpoint_round_trip(tiny_model, tmp_path):
    directory = tiny_model.save(tmp_path / "ckpt")
    assert (directory / CONFIG_NAME).is_file() and (directory / WEIGHTS_NAME).is_file()
    loaded = Model.load(str(directory))
    images, texts = _images(4), ["a dog", "a red car"]
    np.testing.assert_allclose(
        loaded.embed_images(images), tiny_model.embed_images(images), atol=1e-6
    )
    np.testing.assert_allclose(loaded.embed_texts(texts), tiny_model.embed_texts(texts), atol=1e-6)
    assert loaded.identity.weights.startswith("sha256:")
    assert loaded.identity.arch == "clipsearch-tiny"
    assert loaded.identity.spec == str(directory)
    assert loaded.logit_scale == pytest.approx(tiny_model.logit_scale)


def test_identity_follows_weights_not_location(tiny_model, tmp_path):
    first = Model.load(str(tiny_model.save(tmp_path / "a")))
    moved = shutil.copytree(tmp_path / "a", tmp_path / "b")
    second = Model.load(str(moved), engine="torch")
    assert first.identity.same_weights(second.identity)
    with torch.no_grad():
        second.module.logit_scale.add_(1.0)
    changed = Model.load(str(second.save(tmp_path / "c")))
    assert not first.identity.same_weights(changed.identity)
    assert not first.identity.same_weights(tiny_model.identity)


def test_identity_round_trips_and_a_damaged_one_is_one_line(tiny_model):
    from dataclasses import replace

    from clipsearch.model.identity import ModelIdentity

    identity = tiny_model.identity
    stored = json.loads(json.dumps(identity.as_dict()))  # as a manifest holds it
    assert ModelIdentity.from_dict(stored, "manifest m.json") == identity
    assert replace(identity, spec="/elsewhere/model").same_weights(identity)
    assert not replace(identity, image_size=identity.image_size + 1).same_weights(identity)
    with pytest.raises(ClipsearchError, match=r"cannot read manifest m\.json: .* lacks 'weights'"):
        without_weights = {k: v for k, v in stored.items() if k != "weights"}
        ModelIdentity.from_dict(without_weights, "manifest m.json")
    with pytest.raises(ClipsearchError, match="identity is invalid"):
        ModelIdentity.from_dict({**stored, "dim": "wide"}, "manifest m.json")


def test_legacy_pickled_tensors_still_load(tiny_model, tmp_path):
    directory = tiny_model.save(tmp_path / "legacy")
    (directory / WEIGHTS_NAME).unlink()
    torch.save(tiny_model.module.state_dict(), directory / "open_clip_pytorch_model.bin")
    loaded = Model.load(str(directory))
    images = _images(2)
    np.testing.assert_allclose(
        loaded.embed_images(images), tiny_model.embed_images(images), atol=1e-6
    )


class _Payload:
    """Unpickling this would run a shell command."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# A plain pickle (protocol 4) makes torch's safe loader warn before it refuses: expected here.
@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused(tiny_model, tmp_path, writer):
    directory = tiny_model.save(tmp_path / "evil")
    (directory / WEIGHTS_NAME).unlink()
    marker = tmp_path / "pwned"
    state = {"logit_scale": torch.ones(1), "payload": _Payload(str(marker))}
    target = directory / "open_clip_pytorch_model.bin"
    if writer == "torch.save":
        torch.save(state, target)
    else:
        with open(target, "wb") as f:
            pickle.dump(state, f)
    with pytest.raises(ClipsearchError, match=r"refusing to load .*pickled code"):
        Model.load(str(directory))
    assert not marker.exists()


def test_weights_that_do_not_fit_the_config(tiny_model, tmp_path):
    directory = tiny_model.save(tmp_path / "mismatch")
    config = json.loads((directory / CONFIG_NAME).read_text())
    config["model_cfg"]["embed_dim"] = 64
    (directory / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ClipsearchError, match=r"do not fit the architecture"):
        Model.load(str(directory))


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(ClipsearchError, match=r"no checkpoint directory"):
        Model.load(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ClipsearchError, match=r"open_clip_config\.json is missing"):
        Model.load(str(tmp_path / "empty"))


def test_unknown_architecture_suggests_close_names():
    with pytest.raises(ClipsearchError, match=r"unknown architecture.*ViT-B-32"):
        Model.load("random:ViT-B-23")


def test_unknown_pretrained_tag_lists_known_tags():
    with pytest.raises(ClipsearchError, match=r"unknown pretrained tag.*laion2b_s34b_b79k"):
        Model.load("ViT-B-32:no_such_tag")


def test_offline_pretrained_spec_fails_fast_with_a_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the same path as having no network
    # How fast it says so is a benchmark's business: benchmarks/offline_failure.py.
    with pytest.raises(ClipsearchError) as info:
        Model.load("ViT-B-32:laion2b_s34b_b79k", cache_dir=tmp_path)
    message = str(info.value)
    assert "'ViT-B-32:laion2b_s34b_b79k'" in message
    assert "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in message  # what was tried
    assert "checkpoint directory" in message  # how to fix it
    assert "\n" not in message


def test_bad_device_and_precision():
    with pytest.raises(ClipsearchError, match=r"device"):
        Model.load(TINY, device="tpu")
    with pytest.raises(ClipsearchError, match=r"precision"):
        Model.load(TINY, precision="fp8")


def test_real_cifar_images_embed(shared_data, tiny_model, tmp_path):
    import pyarrow.parquet as pq

    table = pq.read_table(shared_data / "cifar10" / "test.parquet", columns=["image"]).slice(0, 8)
    paths = []
    for i, png in enumerate(table.column("image").to_pylist()):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(png)
    emb = tiny_model.embed_images(paths)
    assert emb.shape == (8, 128)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert len({row.tobytes() for row in emb}) == 8
