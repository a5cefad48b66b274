"""The root command: registers subcommands and turns ClipsearchError into one line."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from clipsearch import __version__
from clipsearch.cli import (
    classify,
    datasets,
    demo,
    duplicates,
    export,
    index,
    info,
    query,
    rebuild,
    repair,
    serve,
    texts,
    train,
)
from clipsearch.errors import ClipsearchError
from clipsearch.store.storage import write_failure

try:  # typer 0.2x carries its own copy of click, whose exceptions it raises
    from typer._click import exceptions as click_errors
except ImportError:  # older typer raises click's
    from click import exceptions as click_errors

app = typer.Typer(
    name="clipsearch",
    help="Semantic search over images and text with CLIP-style joint embeddings.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("demo")(demo.demo)
app.command("index")(index.index)
app.command("query")(query.query)
app.command("classify")(classify.classify)
app.command("duplicates")(duplicates.duplicates)
app.command("serve")(serve.serve)
app.command("train")(train.train)
app.command("eval")(train.evaluate)
app.command("export")(export.export)
app.command("repair")(repair.repair)
app.command("rebuild")(rebuild.rebuild)
app.add_typer(texts.texts_app, name="texts")
app.add_typer(datasets.datasets_app, name="datasets")
app.command("info")(info.info)
app.command("models")(info.models)


def _print_version(value: bool) -> None:
    if value:
        print(f"clipsearch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print version."),
    ] = False,
) -> None:
    """Semantic search over images and text with CLIP-style joint embeddings."""


def main() -> None:
    """Console entry point: user errors become ``error: ...`` and a non-zero exit, no traceback."""
    run(app)


def run(typer_app: typer.Typer) -> None:
    """Run a typer app with clipsearch's error handling."""
    try:
        # Not standalone: click's own usage errors come here instead of a boxed panel.
        code = typer_app(standalone_mode=False)
    except click_errors.NoArgsIsHelpError as exc:
        if exc.format_message().strip():  # with rich, typer printed the help already
            exc.show()
        sys.exit(exc.exit_code)
    except click_errors.ClickException as exc:
        print(f"error: {_usage_message(exc)}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except ClipsearchError as exc:
        flag = FLAGS.get(exc.parameter or "")
        message = " ".join(str(exc).split())
        print(f"error: {flag}: {message}" if flag else f"error: {message}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):  # typer turns an EOF at a prompt into Abort
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # `clipsearch query ... | head -1`: the reader has had enough
        sys.exit(1)
    except OSError as exc:  # the machine's refusal (a full disk, no permission): not a bug
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {write_failure(exc)}{where}", file=sys.stderr)
        sys.exit(1)
    except ModuleNotFoundError as exc:
        extra = _EXTRAS.get((exc.name or "").partition(".")[0])
        if extra is None:
            raise
        print(
            f"error: this needs {exc.name}, which is not installed: "
            f"pip install 'clipsearch[{extra}]'",
            file=sys.stderr,
        )
        sys.exit(2)
    if isinstance(code, int) and code:
        sys.exit(code)  # a typer.Exit(code) raised by a command


def _usage_message(exc: click_errors.ClickException) -> str:
    """One line for a usage error: the flag first, as ClipsearchError's are, then where to look."""
    flag = _flag_of(exc)
    message = f"{flag}: {exc.message}" if flag else exc.format_message()
    message = " ".join(message.split())
    context = getattr(exc, "ctx", None)
    return f"{message} (see {context.command_path} --help)" if context else message


def _flag_of(exc: click_errors.ClickException) -> str | None:
    """The option or argument a usage error is about, when click knows it."""
    if not isinstance(exc, click_errors.BadParameter):
        return None
    if isinstance(exc, click_errors.MissingParameter):  # an empty message: click words it whole
        return None
    if exc.param is None:
        return exc.param_hint if isinstance(exc.param_hint, str) else None
    if exc.param.param_type_name == "option":
        return "/".join(exc.param.opts)
    return exc.param.human_readable_name


# The flag each library parameter named in a ClipsearchError comes from.
FLAGS = {
    "where": "--where",
    "model": "--model",
    "index_dir": "--index",
    "engine": "--engine",
    "labels": "--labels",
    "templates": "--templates",
    "texts": "--texts",
    "name": "--name",
    "out": "--out",
    "overrides": "--set",
    "eval_dir": "--eval",
    "k": "-k",
    "like": "--like",
    "threshold": "--threshold",
    "token": "--token",
}

# What a lean install (no extras) lacks, and the extra that brings it.
_EXTRAS = {
    "torch": "torch",
    "torchvision": "torch",
    "open_clip": "torch",
    "safetensors": "torch",
    "onnx": "torch",
    "fastapi": "serve",
    "uvicorn": "serve",
    "transformers": "lit",
}
