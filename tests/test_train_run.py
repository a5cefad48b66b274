"""Whole runs on small real data: resume is exact, 2-process DDP matches 1 process, the CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from clipsearch.errors import ClipsearchError
from clipsearch.model import Model
from clipsearch.train import load_config, train
from clipsearch.train.report import read_metrics

from .conftest import REPO
from .training_data import ddp_step_grads, losses, weights, write_recipe


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path):
    recipe = write_recipe(tmp_path, steps=4, eval_every=2)
    whole = train(load_config(recipe, out=tmp_path / "whole"))
    assert whole.step == 4 and "zeroshot_top1" in whole.metrics

    part = load_config(recipe, out=tmp_path / "part")
    assert train(part, stop_after=2).step == 2
    assert len(losses(tmp_path / "part")) == 2
    with pytest.raises(ClipsearchError, match="already holds a run"):
        train(part)
    changed = load_config(recipe, ["optim.lr=0.1"], out=tmp_path / "part")
    with pytest.raises(ClipsearchError, match=r"optim\.lr"):
        train(changed, resume=True)
    resumed = train(part, resume=True)
    assert resumed.step == 4

    assert losses(tmp_path / "part") == pytest.approx(losses(tmp_path / "whole"), abs=1e-6)
    assert len(set(losses(tmp_path / "whole"))) == 4  # it does train
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "part")
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=0, msg=name)
    assert resumed.metrics == pytest.approx(whole.metrics)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DDP_WORKER = """
import sys
sys.path.insert(0, sys.argv[1])
import torch
from clipsearch.base.process_group import join
from clipsearch.train import load_config, train
from tests.training_data import ddp_step_grads

group = join()
grads = ddp_step_grads(group.rank, group.world)
if group.is_main:
    torch.save(grads, sys.argv[4])
train(load_config(sys.argv[2], out=sys.argv[3]))
"""


def test_two_process_ddp_matches_one_process(tmp_path):
    recipe = write_recipe(tmp_path, steps=3, accum=2)
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "OMP_NUM_THREADS": "1",
        }
        args = [str(REPO), str(recipe), str(tmp_path / "ddp"), str(tmp_path / "grads.pt")]
        command = [sys.executable, "-c", DDP_WORKER, *args]
        procs.append(
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
    single_grads = ddp_step_grads(0, 1)
    single = train(load_config(recipe, out=tmp_path / "single"))
    outputs = [p.communicate(timeout=180)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "on 2 process(es)" in outputs[0]

    # the gradient itself (not only Adam's scale-free update): features gathered with grad
    ddp_grads = torch.load(tmp_path / "grads.pt")
    for name, grad in single_grads.items():
        torch.testing.assert_close(ddp_grads[name], grad, atol=1e-6, rtol=1e-4, msg=name)
    # whole runs: the same losses and weights
    assert single.step == 3
    assert losses(tmp_path / "ddp") == pytest.approx(losses(tmp_path / "single"), abs=1e-5)
    a, b = weights(tmp_path / "single"), weights(tmp_path / "ddp")
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=1e-4, msg=name)


def test_cli_train_then_eval_end_to_end(tmp_path):
    recipe = write_recipe(tmp_path, steps=4, workers=1, plots="true")
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "clipsearch",
        "train",
        str(recipe),
        "--out",
        str(out),
        "--json",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    facts = json.loads(result.stdout)
    assert facts["step"] == 4 and 0 <= facts["metrics"]["zeroshot_top1"] <= 100
    assert "step 4/4" in result.stderr and "samples/s" in result.stderr

    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]
    assert any(r["kind"] == "eval" and "zeroshot_top5" in r for r in records)
    for png in ("curves.png", "predictions.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = Model.load(str(out))
    emb = model.embed_texts(["a photo of a red."])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)

    bad = subprocess.run([*command, "--set", "optim.lrr=1"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: unknown recipe key 'optim.lrr'; did you mean optim.lr?"

    import typer
    from typer.testing import CliRunner

    from clipsearch.cli.train import evaluate

    app = typer.Typer()
    app.command("eval")(evaluate)
    app.command("unused")(lambda: None)
    args = [
        "eval",
        "--model",
        str(out),
        "--data",
        str(tmp_path / "test.parquet"),
        "--workers",
        "0",
        "--json",
    ]
    ran = CliRunner().invoke(app, args)
    assert ran.exit_code == 0, ran.output
    metrics = json.loads(ran.stdout)
    assert metrics["eval_images"] == 9 and 0 <= metrics["zeroshot_top1"] <= 100
    flipped = CliRunner().invoke(app, [*args, "--flip"])
    assert flipped.exit_code == 0, flipped.output
    assert json.loads(flipped.stdout)["eval_images"] == 9
    views = CliRunner().invoke(app, [*args, "--flip", "--shift", "1"])
    assert views.exit_code == 0, views.output
    assert json.loads(views.stdout)["eval_images"] == 9
    negative = CliRunner().invoke(app, [*args, "--shift", "-1"])
    assert negative.exit_code == 2 and "--shift" in negative.output

    queries = tmp_path / "queries.csv"
    queries.write_text("query,label\na crimson square,red\na leafy square,green\n")
    ran = CliRunner().invoke(app, [*args, "--queries", str(queries), "--k", "3"])
    assert ran.exit_code == 0, ran.output
    metrics = json.loads(ran.stdout)
    assert [(q["query"], q["label"]) for q in metrics["queries"]] == [
        ("a crimson square", "red"),
        ("a leafy square", "green"),
    ]
    # 9 images, 3 per class: precision@3 is a multiple of 1/3
    precisions = [q["precision_at_3"] for q in metrics["queries"]]
    assert all(round(p * 3 / 100, 6) in (0, 1, 2, 3) for p in precisions)
    assert metrics["query_precision_at_3"] == pytest.approx(sum(precisions) / 2)
    queries.write_text("query,label\na violet square,purple\n")
    ran = CliRunner().invoke(app, [*args, "--queries", str(queries)])
    # (the CLI's runner turns a ClipsearchError into this one line and exit code 2)
    assert isinstance(ran.exception, ClipsearchError)
    assert str(ran.exception).endswith("labels not among the classes: ['purple']")


def test_whitened_convnet_run_fits_its_stem_and_scales_batchnorm_bias_lr(tmp_path):
    from clipsearch.train.state import load_state

    recipe = write_recipe(tmp_path, steps=2)
    overrides = [
        "model.arch=clipsearch-convnet-whitened",
        "model.image_size=0",  # the architecture's 32 px
        "optim.optimizer=sgd",
        "optim.lr=0.1",
        "optim.bn_bias_lr_scale=8",
    ]
    out = tmp_path / "run"
    assert train(load_config(recipe, overrides, out=out)).step == 2

    stem = weights(out)["visual.trunk.features.0.weight"].flatten(1)  # (24, 12)
    torch.testing.assert_close(stem[12:], -stem[:12])  # each whitening filter and its negative
    gram = stem[:12] @ stem[:12].T  # eigenvectors / sqrt(eigenvalue): orthogonal rows
    off_diagonal = gram - torch.diag(gram.diag())
    assert off_diagonal.abs().max() < 1e-3 * gram.diag().max()
    groups = load_state(out)["optimizer"]["param_groups"]
    assert [g["lr_scale"] for g in groups] == [1.0, 1.0, 8.0]
    assert groups[2]["lr"] == pytest.approx(8 * groups[0]["lr"]) and groups[0]["lr"] > 0


def test_whitening_reads_an_undecodable_training_image_as_gray(tmp_path, caplog):
    recipe = write_recipe(tmp_path, steps=1)
    table = pq.read_table(tmp_path / "train.parquet").to_pydict()
    table["image"][1] = b"not a png"  # among the images the stem is fitted to
    pq.write_table(pa.table(table), tmp_path / "train.parquet")
    overrides = ["model.arch=clipsearch-convnet-whitened", "model.image_size=0"]
    with caplog.at_level("WARNING"):
        result = train(load_config(recipe, overrides, out=tmp_path / "run"))
    assert result.step == 1
    assert any("#1" in r.getMessage() and "as gray" in r.getMessage() for r in caplog.records)
    stem = weights(tmp_path / "run")["visual.trunk.features.0.weight"]
    assert torch.isfinite(stem).all() and stem.abs().sum() > 0
