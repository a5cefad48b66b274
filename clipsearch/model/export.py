"""Export a model's towers to an ONNX model directory, and keep one export per model.

``export_model`` runs the torch engine once (torch + open_clip needed) and writes the
directory described in ``onnx_format``. ``ensure_cached_export`` is what the onnx engine
calls for a model spec that is not itself an ONNX directory: it finds the export of exactly
these weights in the cache (``$CLIPSEARCH_CACHE/onnx``), or makes it. Every directory is
written beside its final place and renamed into it, so no reader ever sees half an export.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clipsearch.base.durable import fsync_dir, fsync_file, write_failure, write_json_atomic
from clipsearch.errors import ClipsearchError
from clipsearch.model import Model, checkpoint, onnx_format
from clipsearch.model.identity import ModelIdentity
from clipsearch.model.logs import quiet_root_logger
from clipsearch.model.preprocess import PreprocessConfig
from clipsearch.model.spec import ModelSpec
from clipsearch.model.tokenizer import CLIP_BPE, HF, TokenizerConfig, clip_bpe_json
from clipsearch.settings import cache_root

EXPORT_VERSION = 5  # bump when export_model writes different graphs for the same weights
OPSET = 17
# open_clip's text-cleaning functions, by name, and the TokenizerConfig.clean they match.
_CLEAN_NAMES = {
    "_clean_lower": "lower",
    "_clean_whitespace": "whitespace",
    "_clean_canonicalize": "canonicalize",
}


def export_model(
    spec: ModelSpec, out_dir: Path, cache_dir: str | None = None, note: str | None = None
) -> Path:
    """Write the ONNX model directory of ``spec`` (fp32 graphs) to ``out_dir``, atomically;
    ``note`` is printed to stderr once the model has loaded, before the export starts.

    A spec that names an ONNX model directory already (``bundled:NAME``, an earlier export)
    is copied as it is: no torch needed, and the copy carries the same identity."""
    from clipsearch.model import engines

    if spec.path is not None and onnx_format.is_onnx_dir(spec.path):
        return copy_onnx_dir(spec.path, out_dir)
    if not engines.installed("torch") or not engines.installed("open_clip"):
        raise ClipsearchError(
            f"exporting model '{spec}' to ONNX needs torch and open_clip: {engines.TORCH_EXTRA}"
        )
    model = Model.from_torch(spec, "cpu", "fp32", cache_dir)
    if note:
        print(f"note: {note}", file=sys.stderr)
    preprocess = _preprocess_config(model)
    tokenizer_cfg = _tokenizer_config(model)
    out_dir = out_dir.absolute()
    with _writing_beside(out_dir) as work:
        _write_tokenizer(model, tokenizer_cfg, work)
        _export_graphs(model, work)
        _finish(work, out_dir, model.identity, model.logit_scale, preprocess, tokenizer_cfg)
    return out_dir


def copy_onnx_dir(source: Path, out_dir: Path) -> Path:
    """Copy the ONNX model directory ``source`` to ``out_dir``, atomically: its config, every
    graph it lists and its tokenizer file, each checked against the config first."""
    cfg = onnx_format.read_config(source)
    onnx_format.check_files(source, cfg, "fp32")
    out_dir = out_dir.absolute()
    with _writing_beside(out_dir) as work:
        for name in (onnx_format.CONFIG_NAME, *cfg.graphs, cfg.tokenizer.file):
            shutil.copyfile(source / name, work / name)
            fsync_file(work / name)
        _replace_dir(work, out_dir)
    return out_dir


@contextmanager
def _writing_beside(target: Path) -> Iterator[Path]:
    """A work folder beside ``target`` to fill and move into place; removed afterwards.
    A folder it may not create or a full disk is one line naming ``target``."""
    work: Path | None = None
    try:
        work = _work_dir(target)
        yield work
    except OSError as exc:
        raise ClipsearchError(f"cannot write {target}: {write_failure(exc)}") from None
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


def _work_dir(target: Path) -> Path:
    """An empty folder beside ``target`` (same file system, so it can be renamed there)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    work.chmod(0o777 & ~umask)  # mkdtemp's 0o700 would hide a shared export from others
    return work


def _finish(
    work: Path,
    target: Path,
    identity: ModelIdentity,
    logit_scale: float,
    preprocess: PreprocessConfig,
    tokenizer: TokenizerConfig,
) -> None:
    """Record every graph file with its size, make it all durable, move it into place."""
    graphs = {p.name: p.stat().st_size for p in sorted(work.glob("*.onnx*"))}
    cfg = onnx_format.OnnxModelConfig(identity, logit_scale, preprocess, tokenizer, graphs)
    write_json_atomic(work / onnx_format.CONFIG_NAME, cfg.to_json())
    for path in work.iterdir():
        fsync_file(path)
    _replace_dir(work, target)


def _save_for_onnx_runtime(single: Path, path: Path) -> None:
    """Rewrite a one-file graph as ``path``, optimized for ONNX Runtime, with its weights
    in ``path.data``.

    Two things make a session open fast, which is most of a cold query (measured in
    benchmarks/RESULTS.md): weights in a file beside the graph (ViT-B-32's text tower:
    0.63 → 0.34 s and 408 → 218 MB), and the graph optimized once here (ONNX Runtime's
    hardware-independent "extended" level: fused layer norms, GELUs, attention) instead of
    at every session start, which lets the text tower open with optimizations off (0.15 →
    0.02 s). The saved graph may use ONNX Runtime's own operators.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(path)
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", f"{path.name}.data"
    )
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
    )
    ort.InferenceSession(str(single), options, providers=["CPUExecutionProvider"])
    single.unlink()


def _quantize(source: Path, out: Path, op_types: list[str], what: str) -> None:
    """``quantize_dynamic`` of the ``op_types`` weights of a graph to int8 (onnx needed)."""
    try:
        from onnx import TensorProto
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise ClipsearchError(
            f"{what} needs the onnx package: pip install onnx (or clipsearch[torch])"
        ) from None
    with warnings.catch_warnings(), quiet_root_logger():
        warnings.simplefilter("ignore")
        quantize_dynamic(
            source,
            out,
            op_types_to_quantize=op_types,
            weight_type=QuantType.QInt8,
            # The fp32 graph is already optimized for ONNX Runtime, and shape inference
            # cannot type the outputs of its fused operators.
            extra_options={"DefaultTensorType": TensorProto.FLOAT},
        )


def add_int8(directory: Path) -> None:
    """Add the int8 graphs (weights dynamically quantized; the image tower only, see
    ``onnx_format.graph_name``) beside the fp32 ones: built in a copy of the directory (hard
    links) that then replaces it, as an export does."""
    cfg = onnx_format.read_config(directory)
    work = _work_dir(directory)
    try:
        for tower in onnx_format.TOWERS:
            if onnx_format.graph_name(tower, "int8") == onnx_format.graph_name(tower, "fp32"):
                continue  # this tower runs in fp32 at int8 precision
            single = work / f".{tower}.int8.single.onnx"
            # Matrix products only: int8 convolutions (ConvInteger) ran a ConvNet tower 7x
            # slower than fp32 here (benchmarks/RESULTS.md).
            _quantize(
                directory / onnx_format.graph_name(tower, "fp32"),
                single,
                ["MatMul", "Gemm"],
                "making int8 graphs",
            )
            _save_for_onnx_runtime(single, work / onnx_format.graph_name(tower, "int8"))
        # Linked only now: onnx refuses to read weights files with more than one link.
        for path in directory.iterdir():
            if not (work / path.name).exists():
                os.link(path, work / path.name)
        _finish(work, directory, cfg.identity, cfg.logit_scale, cfg.preprocess, cfg.tokenizer)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def shrink_for_bundling(directory: Path) -> None:
    """Make an export small enough to ship inside the package (``clipsearch.bundled``): the
    text tower's token table (49,408 rows; nine tenths of a small model's bytes) stored in
    int8, dequantized after the lookup, and the tokenizer file gzipped. Zero-shot accuracy
    and rankings are unchanged (benchmarks/RESULTS.md, "The bundled model"); the image
    tower stays as it is, so image embeddings are bit for bit the export's."""
    from dataclasses import replace

    cfg = onnx_format.read_config(directory)
    work = _work_dir(directory)
    try:
        single = work / ".text.single.onnx"
        # The token table, and nothing else.
        _quantize(directory / "text.onnx", single, ["Gather"], "shrinking a model")
        _save_for_onnx_runtime(single, work / "text.onnx")
        tokenizer = replace(cfg.tokenizer, file=f"{cfg.tokenizer.file}.gz")
        with (
            open(work / tokenizer.file, "wb") as raw,
            gzip.GzipFile(
                fileobj=raw,
                mode="wb",
                compresslevel=9,
                mtime=0,  # the same bytes every time
            ) as f,
        ):
            f.write((directory / cfg.tokenizer.file).read_bytes())
        for name in ("image.onnx", "image.onnx.data"):
            if (directory / name).exists():
                shutil.copyfile(directory / name, work / name)
        _finish(work, directory, cfg.identity, cfg.logit_scale, cfg.preprocess, tokenizer)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- the cache -------------------------------------------------------------------------------


def cached_export_dir(spec: ModelSpec) -> Path:
    """Where the export of ``spec``'s current weights lives in the cache.

    The key is computed without loading the model: the spec, plus the weights file's size
    and modification time for local files (a re-trained checkpoint gets a new export).
    Pretrained tags and random:ARCH name fixed weights.
    """
    key = [str(spec), f"export-v{EXPORT_VERSION}"]
    weights = _local_weights(spec)
    if weights is not None:
        stat = weights.stat()
        key += [weights.name, str(stat.st_size), str(stat.st_mtime_ns)]
    digest = hashlib.sha256("\n".join(key).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", str(spec).rstrip("/").split("/")[-1])[:40]
    return cache_root() / "onnx" / f"{slug}-{digest}"


def ensure_cached_export(
    spec: ModelSpec, cache_dir: str | None, precision: str = "fp32", rebuild: bool = False
) -> Path:
    """The cached export of ``spec`` with graphs for ``precision``, made if missing; a
    damaged one is rebuilt with a warning (``rebuild``: the caller found damage itself)."""
    directory = cached_export_dir(spec)
    precision = "int8" if precision == "int8" else "fp32"  # what else is asked runs on fp32
    if not rebuild and _usable(directory, precision, spec, quiet=True):
        return directory  # the common case: no lock, no waiting
    # One process exports, others wait for it here and then find its export.
    with _export_lock(directory):
        if rebuild or not _usable(directory, "fp32", spec, quiet=False):
            # Seconds for a small model, a minute for a large one: say why this run waits.
            note = f"exporting model '{spec}' to ONNX once, into {directory}"
            export_model(spec, directory, cache_dir, note)
        if not onnx_format.read_config(directory).has(precision):
            add_int8(directory)
    return directory


def _usable(directory: Path, precision: str, spec: ModelSpec, quiet: bool) -> bool:
    """An intact export with graphs for ``precision``; damage is reported unless ``quiet``."""
    if not onnx_format.is_onnx_dir(directory):
        return False
    try:
        cfg = onnx_format.read_config(directory)
        onnx_format.check_files(directory, cfg, "fp32")
    except ClipsearchError as exc:
        if not quiet:
            warn(f"rebuilding the ONNX export of '{spec}': {exc}")
        return False
    return cfg.has(precision)


@contextmanager
def _export_lock(directory: Path) -> Iterator[None]:
    import fcntl

    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.with_name(f".{directory.name}.lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # blocking: wait for the exporter
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# -- pieces ----------------------------------------------------------------------------------


def _local_weights(spec: ModelSpec) -> Path | None:
    if spec.kind == "checkpoint" and spec.path is not None:
        checkpoint.read_config(spec.path)  # a clear error for a path that is no checkpoint
        return checkpoint.find_weights(spec.path)
    if spec.kind == "pretrained" and spec.tag and os.path.isfile(spec.tag):
        return Path(spec.tag)
    return None


def _preprocess_config(model: Model) -> PreprocessConfig:
    try:
        return PreprocessConfig.from_open_clip(model.torch_towers.preprocess_cfg)
    except ValueError as exc:
        raise ClipsearchError(
            f"cannot export model '{model.spec}' to ONNX: its preprocessing ({exc}) is not "
            "reproduced without torch; use the torch engine",
            parameter="engine",
        ) from None


def _tokenizer_config(model: Model) -> TokenizerConfig:
    from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

    tokenizer = model.torch_towers.tokenizer
    clean = _CLEAN_NAMES.get(getattr(getattr(tokenizer, "clean_fn", None), "__name__", ""))
    unsupported = f"cannot export model '{model.spec}' to ONNX: its tokenizer"
    if clean is None:
        raise ClipsearchError(f"{unsupported} cleans text in a way not reproduced here")
    if isinstance(tokenizer, SimpleTokenizer):
        if tokenizer.reduction_fn is not None or tokenizer.vocab_size != 49408:
            raise ClipsearchError(f"{unsupported} is not CLIP's standard BPE")
        return TokenizerConfig(CLIP_BPE, "tokenizer.json", tokenizer.context_length, clean)
    if isinstance(tokenizer, HFTokenizer) and getattr(tokenizer.tokenizer, "is_fast", False):
        if tokenizer.tokenizer_mode:
            raise ClipsearchError(
                f"{unsupported} mode {tokenizer.tokenizer_mode!r} is not supported"
            )
        return TokenizerConfig(
            HF, "tokenizer.json", tokenizer.context_length, clean, tokenizer.strip_sep_token
        )
    raise ClipsearchError(f"{unsupported} ({type(tokenizer).__name__}) is not supported")


def _write_tokenizer(model: Model, cfg: TokenizerConfig, directory: Path) -> None:
    if cfg.kind == CLIP_BPE:
        from open_clip.tokenizer import default_bpe

        (directory / cfg.file).write_text(clip_bpe_json(Path(default_bpe())), encoding="utf-8")
    else:
        model.torch_towers.tokenizer.tokenizer.backend_tokenizer.save(str(directory / cfg.file))


def _export_graphs(model: Model, directory: Path) -> None:
    import torch

    class Tower(torch.nn.Module):
        """One of the model's towers as its own module: what torch.onnx traces."""

        def __init__(self, clip: torch.nn.Module, encode: str) -> None:
            super().__init__()
            self.clip, self.encode = clip, encode

        def forward(self, batch: torch.Tensor) -> torch.Tensor:
            return getattr(self.clip, self.encode)(batch)

    size = model.image_size
    examples = {
        "image": ("encode_image", "pixels", torch.randn(2, 3, size, size)),
        "text": (
            "encode_text",
            "tokens",
            torch.as_tensor(model.torch_towers.tokenizer(["a photo of a dog", "x"])),
        ),
    }
    for tower, (encode, input_name, example) in examples.items():
        path = directory / onnx_format.graph_name(tower, "fp32")
        single = path.with_name(f".{path.name}.single")
        module = Tower(model.torch_towers.module, encode).eval()
        _export_one(module, example, input_name, single, f"'{model.spec}' ({tower} tower)")
        _save_for_onnx_runtime(single, path)


def _export_one(tower: Any, example: Any, input_name: str, path: Path, what: str) -> None:
    import torch

    # With gradients off, nn.MultiheadAttention takes a fused fast path that has no ONNX
    # form; traced with them on, it exports as plain operators (and computes the same).
    with warnings.catch_warnings(), torch.inference_mode(False), torch.enable_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                tower,
                (example,),
                str(path),
                input_names=[input_name],
                output_names=["embedding"],
                dynamic_axes={input_name: {0: "n"}, "embedding": {0: "n"}},
                opset_version=OPSET,
                dynamo=False,
            )
        except Exception as exc:
            message = " ".join(str(exc).split())[:300]
            raise ClipsearchError(
                f"cannot export model {what} to ONNX: {message}; use the torch engine",
                parameter="engine",
            ) from None


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an existing ONNX directory there is replaced, anything
    else is refused. A concurrent exporter that got there first wins (same weights)."""
    if target.exists():
        if not onnx_format.is_onnx_dir(target) and any(target.iterdir()):
            raise ClipsearchError(
                f"{target} exists and is not an ONNX model directory: choose another output"
            )
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(new, target)
    except OSError:
        if not onnx_format.is_onnx_dir(target):
            raise
    fsync_dir(target.parent)
