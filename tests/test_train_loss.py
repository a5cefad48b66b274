"""Losses against hand-computed numbers, and the step: accumulation keeps the full batch."""

from __future__ import annotations

import math
from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F

from clipsearch.train.config import ModelConfig, load_config
from clipsearch.train.loss import clip_loss, positive_targets, siglip_loss
from clipsearch.train.model import build_model
from clipsearch.train.optim import lr_at, make_optimizer, no_decay
from clipsearch.train.step import contrastive_step


def _log_softmax(row: list[float], i: int) -> float:
    return row[i] - math.log(sum(math.exp(v) for v in row))


def test_clip_loss_2x2_by_hand():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    scale = torch.tensor(2.0)
    # logits = 2 * image @ text.T = [[1.2, 0], [1.6, 2]]
    rows = [[1.2, 0.0], [1.6, 2.0]]
    cols = [[1.2, 1.6], [0.0, 2.0]]
    expected = (
        -(
            _log_softmax(rows[0], 0)
            + _log_softmax(rows[1], 1)
            + _log_softmax(cols[0], 0)
            + _log_softmax(cols[1], 1)
        )
        / 4
    )
    assert clip_loss(image, text, scale).item() == pytest.approx(expected, abs=1e-6)


def test_multi_positive_targets_3x3_by_hand():
    keys = torch.tensor([7, 3, 7])
    assert positive_targets(keys).tolist() == [[0.5, 0.0, 0.5], [0.0, 1.0, 0.0], [0.5, 0.0, 0.5]]
    image = F.normalize(torch.tensor([[1.0, 0.2], [0.1, 1.0], [0.9, -0.3]]), dim=1)
    text = F.normalize(torch.tensor([[0.8, 0.1], [0.0, 1.0], [1.0, 0.0]]), dim=1)
    scale = torch.tensor(3.0)
    logits = (scale * image @ text.T).tolist()
    cols = [list(c) for c in zip(*logits, strict=True)]
    targets = {0: [0, 2], 1: [1], 2: [0, 2]}

    def direction(matrix: list[list[float]]) -> float:
        return (
            sum(
                -sum(_log_softmax(matrix[i], j) for j in pos) / len(pos)
                for i, pos in targets.items()
            )
            / 3
        )

    expected = (direction(logits) + direction(cols)) / 2
    got = clip_loss(image, text, scale, keys=torch.tensor([7, 3, 7])).item()
    assert got == pytest.approx(expected, abs=1e-6)
    # with all keys distinct it is the plain CLIP loss
    distinct = clip_loss(image, text, scale, keys=torch.tensor([1, 2, 3]))
    assert distinct.item() == pytest.approx(clip_loss(image, text, scale).item(), abs=1e-6)


def test_label_smoothing_spreads_target_mass_over_the_batch():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    scale = torch.tensor(2.0)
    rows = [[1.2, 0.0], [1.6, 2.0]]
    cols = [[1.2, 1.6], [0.0, 2.0]]
    eps = 0.2  # targets: (1 - eps) on the pair + eps / 2 on each of the 2 columns

    def smoothed(row: list[float], i: int) -> float:
        target = [eps / 2 + (1 - eps) * (j == i) for j in range(2)]
        return -sum(t * _log_softmax(row, j) for j, t in enumerate(target))

    expected = sum(smoothed(m[i], i) for m in (rows, cols) for i in range(2)) / 4
    got = clip_loss(image, text, scale, smoothing=eps).item()
    assert got == pytest.approx(expected, abs=1e-6)
    assert got > clip_loss(image, text, scale).item()  # the pairs are already ranked first


def test_siglip_loss_2x2_by_hand():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    scale, bias = torch.tensor(10.0), torch.tensor(-5.0)
    z = [[10 * 1.0 - 5, 10 * 0.6 - 5], [10 * 0.0 - 5, 10 * 0.8 - 5]]

    def log_sigmoid(x: float) -> float:
        return -math.log1p(math.exp(-x))

    expected = (
        -(
            log_sigmoid(z[0][0])
            + log_sigmoid(-z[0][1])
            + log_sigmoid(-z[1][0])
            + log_sigmoid(z[1][1])
        )
        / 2
    )
    assert siglip_loss(image, text, scale, bias).item() == pytest.approx(expected, abs=1e-6)
    # keys [1, 1]: the off-diagonal pairs become positives too
    both = (
        -(log_sigmoid(z[0][0]) + log_sigmoid(z[0][1]) + log_sigmoid(z[1][0]) + log_sigmoid(z[1][1]))
        / 2
    )
    got = siglip_loss(image, text, scale, bias, keys=torch.tensor([1, 1])).item()
    assert got == pytest.approx(both, abs=1e-6)


def test_weight_decay_groups_and_schedule():
    from clipsearch.train.config import OptimConfig

    module = build_model(ModelConfig(arch="clipsearch-tiny")).module
    names = {n for n, p in module.named_parameters() if no_decay(n, p)}
    assert {"logit_scale", "token_embedding.weight", "positional_embedding"} <= names
    assert "visual.transformer.resblocks.0.attn.in_proj_bias" in names
    assert "visual.transformer.resblocks.0.ln_1.weight" in names
    assert "visual.transformer.resblocks.0.attn.in_proj_weight" not in names
    cfg = OptimConfig(lr=1.0, warmup=4, weight_decay=0.2)
    groups = make_optimizer(module, cfg).param_groups
    assert [g["weight_decay"] for g in groups] == [0.2, 0.0]
    assert [lr_at(s, 12, cfg) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(8, 12, cfg) == pytest.approx(0.5)  # halfway through the cosine
    assert lr_at(12, 12, cfg) == pytest.approx(0.0)


def _batch(n: int, tokenizer) -> dict:
    gen = torch.Generator().manual_seed(0)
    words = ["cat", "dog", "ship", "cat", "frog", "dog", "car", "bird"]
    return {
        "images": torch.randn(n, 3, 32, 32, generator=gen),
        "texts": tokenizer([f"a photo of a {w}." for w in words[:n]]),
        "keys": torch.tensor([hash(w) % 1000 for w in words[:n]]),
    }


@pytest.mark.parametrize("use_keys", [False, True])
def test_accumulation_gives_the_full_batch_loss_and_gradients(use_keys):
    torch.manual_seed(0)
    built = build_model(ModelConfig(arch="clipsearch-tiny"))
    module = built.module
    module.output_dict = True
    batch = _batch(8, built.tokenizer)

    def run(accum: int) -> tuple[float, dict[str, torch.Tensor]]:
        module.zero_grad(set_to_none=True)
        loss = contrastive_step(
            module,
            module,
            batch,
            accum=accum,
            kind="clip",
            use_keys=use_keys,
            world=1,
            autocast=nullcontext,
            backward=lambda loss: loss.backward(),
        )
        return loss.item(), {n: p.grad.clone() for n, p in module.named_parameters()}

    loss_1, grads_1 = run(1)
    loss_2, grads_2 = run(2)
    assert loss_2 == pytest.approx(loss_1, abs=1e-5)
    assert grads_1.keys() == grads_2.keys()
    for name, g in grads_1.items():
        torch.testing.assert_close(grads_2[name], g, atol=1e-5, rtol=1e-4, msg=name)
    assert grads_1["logit_scale"].abs().item() > 0  # taken once, not twice


def test_repeated_captions_are_encoded_once_with_the_same_loss_and_gradients():
    torch.manual_seed(0)
    built = build_model(ModelConfig(arch="clipsearch-tiny"))
    module = built.module
    module.output_dict = True
    captions = ["a photo of a cat.", "a dog.", "a photo of a cat.", "a ship.", "a dog.", "a dog."]
    images = torch.randn(len(captions), 3, 32, 32)
    texts = built.tokenizer(captions)

    module.zero_grad(set_to_none=True)
    out = module(images, texts)  # every caption encoded, as open_clip does
    expected = clip_loss(out["image_features"], out["text_features"], out["logit_scale"])
    expected.backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters()}

    encoded = []
    hook = module.transformer.register_forward_hook(lambda m, i, o: encoded.append(len(i[0])))
    module.zero_grad(set_to_none=True)
    loss = contrastive_step(
        module, module, {"images": images, "texts": texts, "keys": torch.zeros(6)},
        accum=1, kind="clip", use_keys=False, world=1, autocast=nullcontext,
        backward=lambda loss: loss.backward(),
    )  # fmt: skip
    hook.remove()
    assert encoded == [3]  # three distinct captions
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    for name, g in grads.items():
        torch.testing.assert_close(module.get_parameter(name).grad, g, atol=1e-6, rtol=1e-5)


def test_sgd_option_is_nesterov_with_the_same_decay_groups():
    from clipsearch.errors import ClipsearchError
    from clipsearch.train.config import OptimConfig

    module = build_model(ModelConfig(arch="clipsearch-tiny")).module
    cfg = OptimConfig(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4)
    optimizer = make_optimizer(module, cfg)
    assert isinstance(optimizer, torch.optim.SGD)
    assert [(g["weight_decay"], g["nesterov"], g["momentum"]) for g in optimizer.param_groups] == [
        (5e-4, True, 0.9),
        (0.0, True, 0.9),
    ]
    with pytest.raises(ClipsearchError, match=r"optim\.optimizer: 'adam' is not one of adamw"):
        load_config(None, ["optim.optimizer=adam"])  # checked where the recipe is read
    with pytest.raises(ClipsearchError, match=r"\[optim\] settings: Invalid momentum value: -1"):
        make_optimizer(module, OptimConfig(optimizer="sgd", momentum=-1.0))
    with pytest.raises(ClipsearchError, match="Invalid learning rate"):
        make_optimizer(module, OptimConfig(lr=-1.0))
