"""The root command: registers subcommands and turns ClipsearchError into one line."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from clipsearch import __version__
from clipsearch.base.durable import write_failure
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

if TYPE_CHECKING:  # checked against the typer this project pins
    from typer._click import exceptions as click_errors
    from typer.core import TyperOption
else:
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
# Each command with the one sentence `clipsearch --help` shows for it: short enough for one
# line at 80 columns (a docstring's first paragraph would wrap there, even mid-sentence).
COMMANDS: list[tuple[str, Callable[..., Any], str]] = [
    ("demo", demo.demo, "Index, search and score 300 bundled photos, offline."),
    ("index", index.index, "Index the images under PATHs; re-runs embed only changes."),
    ("query", query.query, "Search an index by text or image; rank texts for an image."),
    ("classify", classify.classify, "Label images zero-shot; --eval scores a labelled folder."),
    ("duplicates", duplicates.duplicates, "Find groups of images that are the same photo."),
    ("serve", serve.serve, "Serve an index over HTTP: a search page and a JSON API."),
    ("train", train.train, "Train a CLIP-style model into a checkpoint directory."),
    ("eval", train.evaluate, "Score a model: zero-shot accuracy, retrieval recall."),
    ("export", export.export, "Export a model to ONNX, to run it without torch."),
    ("repair", repair.repair, "Check every file of an index and repair what is damaged."),
    ("rebuild", rebuild.rebuild, "Build an index's vector index again from its embeddings."),
    ("info", info.info, "Show versions, the device, the default model and index."),
    ("models", info.models, "List the architectures a model spec can name."),
]
GROUPS = [
    ("texts", texts.texts_app, "Store captions or labels, embedded once, to rank against images."),
    ("datasets", datasets.datasets_app, "Work with image datasets in Parquet."),
]
for name, function, summary in COMMANDS:
    app.command(name, short_help=summary)(function)
for name, group, summary in GROUPS:
    app.add_typer(group, name=name, short_help=summary)


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
        print(f"error: {_usage_message(exc, sys.argv[1:])}", file=sys.stderr)
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


def _usage_message(exc: click_errors.ClickException, argv: Sequence[str]) -> str:
    """One line for a usage error: the flag first, as ClipsearchError's are, then where to look."""
    flag = _flag_of(exc)
    hint = _negative_term_hint(exc, argv) if isinstance(exc, click_errors.NoSuchOption) else None
    if hint:  # in place of click's option suggestions: the user meant a term, not an option
        message = f"{exc.message} ({hint})"
    else:
        message = f"{flag}: {exc.message}" if flag else exc.format_message()
    message = " ".join(message.split())
    context = getattr(exc, "ctx", None)
    return f"{message} (see {context.command_path} --help)" if context else message


def _negative_term_hint(exc: click_errors.NoSuchOption, argv: Sequence[str]) -> str | None:
    """How to write negative terms, when the unknown option of a command that takes them
    (one with --not: `query`) is one: click reads `query cat -dog` as options -d -o -g.

    A long option (`--nto`) is taken for a typo of an option: click's suggestions fit it.
    """
    context = exc.ctx
    if context is None or exc.option_name.startswith("--"):
        return None
    # typer builds every option as a TyperOption (is_flag, count)
    options = [p for p in context.command.params if p.param_type_name == "option"]
    takes_value = {
        name: not (option.is_flag or option.count)
        for option in cast("list[TyperOption]", options)
        for name in (*option.opts, *option.secondary_opts)
    }
    if "--not" not in takes_value:
        return None
    words = list(argv)
    if context.info_name in words:  # what follows the command's own name
        words = words[words.index(context.info_name) + 1 :]
    terms, others = _split_negative_terms(words, takes_value)
    if not any(term.startswith(exc.option_name) for term in terms):
        return None
    rewritten = " ".join(f"--not {shlex.quote(term[1:])}" for term in terms)
    after = others.index("--") + 1 if "--" in others else len(others)
    separated = [*others[:after], *([] if "--" in others else ["--"]), *terms, *others[after:]]
    which = "a negative term? write" if len(terms) == 1 else "negative terms? write"
    return (
        f"{which} {rewritten}, or put terms after --, where everything is a term, options "
        f"too: {context.command_path} {shlex.join(separated)}"
    )


def _split_negative_terms(
    words: Sequence[str], takes_value: dict[str, bool]
) -> tuple[list[str], list[str]]:
    """The words before `--` that are a dash and a word but no option (`-dog`), and the rest.

    An option's value stays with it, whatever it looks like (`--where -x`), and a known short
    option with its value attached (`-k5`) is no term.
    """
    terms: list[str] = []
    others: list[str] = []
    value_next = False
    for position, word in enumerate(words):
        if word == "--":
            others.extend(words[position:])
            break
        if value_next:
            value_next = False
        elif word.startswith("--"):
            value_next = takes_value.get(word, False)
        elif word.startswith("-") and len(word) > 1:
            if word[:2] in takes_value:
                value_next = len(word) == 2 and takes_value[word]
            elif word[1].isalnum():
                terms.append(word)
                continue
        others.append(word)
    return terms, others


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
    "words_only": "--words",
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
    "rapidocr": "ocr",
}
