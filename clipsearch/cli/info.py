"""``clipsearch info`` and ``clipsearch models``: what is installed, and which models exist."""

from __future__ import annotations

import json
import os
import platform
from typing import Annotated, Any

import typer

from clipsearch import __version__
from clipsearch.cli.options import CacheDirOpt, DeviceOpt, EngineOpt, JsonOpt, ModelOpt
from clipsearch.settings import MODEL_ENV, default_model_spec, resolve_index_dir
from clipsearch.store.layout import MANIFEST_NAME


def _version(distribution: str, module: str) -> str | None:
    """The installed version of ``distribution``; None when its ``module`` cannot be
    imported (a package whose files are gone is not installed either)."""
    from importlib import metadata  # ~10 ms: only `info` pays it

    from clipsearch.model.engines import installed

    if not installed(module):
        return None
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _faiss_facts() -> dict[str, Any]:
    try:
        import faiss
    except ImportError:
        return {"version": None, "gpus": 0}
    return {"version": faiss.__version__, "gpus": int(faiss.get_num_gpus())}


def _device_facts() -> dict[str, Any]:
    from clipsearch.model.engines import gpu_available

    if gpu_available():
        import torch

        return {"device": "cuda", "name": torch.cuda.get_device_name(0)}
    return {"device": "cpu", "name": platform.processor() or platform.machine()}


def gather_info(engine: str = "auto", device: str = "auto") -> dict[str, Any]:
    from clipsearch.model.engines import default_choice
    from clipsearch.settings import cache_root

    index_dir = resolve_index_dir()
    faiss_facts = _faiss_facts()
    choice = default_choice(engine, device)
    return {
        "clipsearch": __version__,
        "python": platform.python_version(),
        "torch": _version("torch", "torch"),
        "open_clip": _version("open_clip_torch", "open_clip"),
        "onnxruntime": _version("onnxruntime", "onnxruntime"),
        "faiss": faiss_facts["version"],
        "faiss_gpus": faiss_facts["gpus"],
        "duckdb": _version("duckdb", "duckdb"),
        **_device_facts(),
        "engine": choice.engine,
        "engine_why": choice.reason,
        "export_cache": str(cache_root() / "onnx"),
        "model": default_model_spec(),
        "model_from": "env " + MODEL_ENV if os.environ.get(MODEL_ENV) else "built-in default",
        "index": str(index_dir),
        "index_exists": (index_dir / MANIFEST_NAME).is_file(),
    }


def info(
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    engine: EngineOpt = "auto",
    cache_dir: CacheDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show versions, the compute device, the default model and index location.

    With --model, also load that model and show its identity (dim, image size, weights).
    """
    loaded = None
    if model is not None:  # first: a model that cannot load is the answer, and said at once
        from clipsearch.model import Model

        loaded = Model.load(model, device=device, cache_dir=cache_dir, engine=engine)
    facts = gather_info(engine, device)
    if loaded is not None:
        facts["model_engine"] = loaded.engine
        facts["model_precision"] = loaded.precision
        facts["model_identity"] = loaded.identity.as_dict()
        facts["model_logit_scale"] = round(loaded.logit_scale, 4)
    if as_json:
        print(json.dumps(facts, indent=2))
        return
    faiss_kind = f"{facts['faiss_gpus']} GPU(s)" if facts["faiss_gpus"] else "CPU"
    faiss = f"{facts['faiss']} ({faiss_kind})" if facts["faiss"] else _shown(None)
    lines = [
        f"clipsearch  {facts['clipsearch']}",
        f"python      {facts['python']}",
        f"torch       {_shown(facts['torch'])}",
        f"open_clip   {_shown(facts['open_clip'])}",
        f"onnxruntime {_shown(facts['onnxruntime'])}",
        f"faiss       {faiss}",
        f"duckdb      {_shown(facts['duckdb'])}",
        f"device      {facts['device']} ({facts['name']})",
        f"engine      {facts['engine']} ({facts['engine_why']})",
        f"exports     {facts['export_cache']}",
        f"model       {facts['model']} ({facts['model_from']})",
        f"index       {facts['index']}" + ("" if facts["index_exists"] else " (not created yet)"),
    ]
    if "model_engine" in facts:
        lines.append(f"  {'engine':<12}{facts['model_engine']} ({facts['model_precision']})")
    for key, value in facts.get("model_identity", {}).items():
        lines.append(f"  {key:<12}{value}")
    print("\n".join(lines))


def _shown(version: str | None) -> str:
    """A version for people: a package that is absent (None in --json) is "not installed"."""
    return version or "not installed"


def models(
    pretrained: Annotated[
        bool, typer.Option("--pretrained", help="Also list each architecture's pretrained tags.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """List the architectures a model spec can name (open_clip's and clipsearch's own)."""
    import open_clip

    from clipsearch.model import architectures

    architectures.register()
    rows = {
        arch: open_clip.list_pretrained_tags_by_model(arch) if pretrained else []
        for arch in open_clip.list_models()
    }
    if as_json:
        print(json.dumps(rows if pretrained else list(rows), indent=2))
        return
    for arch, tags in rows.items():
        print(f"{arch}  {' '.join(tags)}".rstrip())
