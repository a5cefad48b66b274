"""Lookahead weight averaging: the arithmetic on a small layer, and exact resume in a run."""

from __future__ import annotations

import pytest
import torch

from clipsearch.train import load_config, train
from clipsearch.train.lookahead import DECAY_BASE, DECAY_POWER, Lookahead

from .training_data import losses, weights, write_recipe


def test_average_follows_the_schedule_and_sets_the_weights():
    layer = torch.nn.Linear(2, 1, bias=False)
    lookahead = Lookahead(every=2, start_step=2, total=8, steps_per_epoch=8)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    lookahead.after_step(layer, 1)  # before start: nothing
    assert lookahead.state_dict() == {}
    lookahead.after_step(layer, 2)  # the average starts as the weights
    with torch.no_grad():
        layer.weight.fill_(3.0)  # what an optimizer step might do
    lookahead.after_step(layer, 3)  # not a multiple of every: untouched
    assert layer.weight.tolist() == [[3.0, 3.0]]
    lookahead.after_step(layer, 4)
    decay = DECAY_BASE**2 * (4 / 8) ** DECAY_POWER
    expected = 1.0 + (1 - decay) * (3.0 - 1.0)
    torch.testing.assert_close(layer.weight, torch.full((1, 2), expected))
    torch.testing.assert_close(lookahead.state_dict()["weight"], torch.full((1, 2), expected))


def test_lookahead_run_resumes_exactly_and_changes_the_weights(tmp_path):
    recipe = write_recipe(tmp_path, steps=6)  # 24 images, batch 8: 3 steps an epoch
    averaged = ["optim.lookahead_every=2", "optim.lookahead_start=0.5"]
    whole = train(load_config(recipe, averaged, out=tmp_path / "whole"))
    part = load_config(recipe, averaged, out=tmp_path / "part")
    train(part, stop_after=4)
    train(part, resume=True)
    plain = train(load_config(recipe, out=tmp_path / "plain"))
    assert whole.step == plain.step == 6

    assert losses(tmp_path / "part") == pytest.approx(losses(tmp_path / "whole"), abs=1e-6)
    a, b, c = (weights(tmp_path / d) for d in ("whole", "part", "plain"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=0, msg=name)
    moved = [n for n in a if a[n].is_floating_point() and not torch.allclose(a[n], c[n])]
    assert len(moved) > len(a) // 2
