"""Typed command configs, and the command line built from them.

Every command (synth, curate, train, index, predict, embed, eval, analyze, study, report,
demo) has one dataclass config. Each field carries its own help text, flag, metavar and
choices (``option``); checks live in the config's ``check`` and run in ``__post_init__``;
the default is written once, on the field. ``command`` registers a config as a CLI
command with the function that runs it; ``taxoclip.cli`` turns the registry into
argparse parsers. Options several commands share (model, device, batch size, workers,
progress, offline, seed) are defined once in ``shared``.

Why our own ~200 lines rather than tyro or jsonargparse: ``--help`` must not import torch
(so the runner is named as ``"module:function"`` and imported only when run), every
existing flag keeps its exact name (``--wd``, ``-q``, positionals, a mutually exclusive
mode group, negated flags such as ``--species-only``), and usage errors must exit with
status 2 and one line — all plain argparse, which a reader already knows.

This module imports only the standard library and ``taxoclip.errors``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any

from taxoclip.errors import EXIT_OK, UsageError

_META = "taxoclip"  # key of our metadata on a dataclass field

#: The model ``predict``, ``index`` and ``embed`` use when none is given (as pybioclip).
BIOCLIP2 = "hf-hub:imageomics/bioclip-2"


def option(
    default: Any = MISSING,
    *,
    help: str,  # noqa: A002 - argparse's name
    flag: str | None = None,
    aliases: tuple[str, ...] = (),
    short: str | None = None,
    metavar: str | None = None,
    choices: tuple[Any, ...] | None = None,
    positional: bool = False,
    nargs: str | None = None,
    append: bool = False,
    exclusive: str | None = None,
    parse: Callable[[str], Any] | None = None,
    negate: bool = False,
    cli: bool = True,
) -> Any:
    """A config field with what the command line needs to offer it.

    No ``default`` makes the field (and its flag) required. ``flag`` defaults to
    ``--field-name``; ``negate`` makes a bool flag store ``False`` (``--quiet`` into
    ``progress``); ``parse`` turns the flag's text into the value (comma lists);
    ``exclusive`` names a mutually exclusive group; ``cli=False`` keeps a field for
    library callers only.
    """
    meta = dict(
        help=help,
        flag=flag,
        aliases=tuple(aliases),
        short=short,
        metavar=metavar,
        choices=choices,
        positional=positional,
        nargs=nargs,
        append=append,
        exclusive=exclusive,
        parse=parse,
        negate=negate,
        cli=cli,
    )
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={_META: meta})
    return dataclasses.field(default=default, metadata={_META: meta})


class shared:  # noqa: N801 - a namespace of option definitions, used as ``shared.device()``
    """Options several commands share: flag, help and type are written here once."""

    @staticmethod
    def model(default: str | None = BIOCLIP2, *, required: bool = False, help: str | None = None):  # noqa: A002
        return option(
            MISSING if required else default,
            metavar="MODEL",
            help=help
            or "run dir, model folder, open_clip name (with --pretrained) or hf-hub: string",
        )

    @staticmethod
    def pretrained():
        return option(None, metavar="TAG|PATH", help="open_clip pretrained tag or weights file")

    @staticmethod
    def device():
        return option(
            "auto", metavar="DEVICE", help="auto (cuda when available, else cpu), cpu, cuda[:N]"
        )

    @staticmethod
    def batch_size(default: int, what: str = "images per forward pass", metavar: str = "B"):
        return option(default, metavar=metavar, help=what)

    @staticmethod
    def workers(default: int | None = None, help: str | None = None):  # noqa: A002
        return option(
            default,
            metavar="N",
            help=help or "image-decoding processes (default: 0 on ≤ 2 cores, else up to 4)",
        )

    @staticmethod
    def seed(default: int = 0, help: str = "random seed"):  # noqa: A002
        return option(default, metavar="K", help=help)

    @staticmethod
    def offline():
        return option(False, help="never touch the network (HF_HUB_OFFLINE=1)")

    @staticmethod
    def progress():
        return option(True, flag="--quiet", short="-q", negate=True, help="no progress bars")


@dataclass(kw_only=True)
class CommandConfig:
    """Base of every command config: ``check`` runs on construction and on ``replace``."""

    def __post_init__(self) -> None:
        problems = self.check()
        if problems:
            raise UsageError("; ".join(problems))

    def check(self) -> list[str]:
        """Problems with these values, each naming the flag; empty when all is well."""
        return []

    def to_json(self) -> dict[str, Any]:
        return jsonable(dataclasses.asdict(self))


@dataclass
class CommandResult:
    """Base of every command result: what the CLI prints, its exit status, and JSON."""

    def lines(self) -> list[str]:
        """The lines ``taxoclip <command>`` prints on standard output when done."""
        return []

    def warnings(self) -> list[str]:
        """Lines for standard error (e.g. how many inputs failed)."""
        return []

    @property
    def exit_code(self) -> int:
        return EXIT_OK

    def to_json(self) -> dict[str, Any]:
        return jsonable(dataclasses.asdict(self))


def jsonable(value: Any) -> Any:
    """``value`` with Paths as strings and tuples/sets as lists, recursively."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    return value


@dataclass(frozen=True)
class Command:
    """A CLI command: its name (``"study scaling"`` for a sub-command), config and runner."""

    name: str
    config: type
    help: str
    description: str
    run: str  # "module:function", imported only when the command runs

    def runner(self) -> Callable[[Any], CommandResult]:
        module, _, function = self.run.partition(":")
        return getattr(importlib.import_module(module), function)


#: Every registered command, in registration order (the order of ``taxoclip --help``).
COMMANDS: dict[str, Command] = {}


def command(name: str, *, help: str, description: str, run: str):  # noqa: A002
    """Register a config class as the command ``name`` (class decorator)."""

    def register(cls: type) -> type:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"@command({name!r}) needs a dataclass (put it above @dataclass)")
        COMMANDS[name] = Command(name, cls, help, description, run)
        return cls

    return register


# ---------------------------------------------------------------------------- argparse


def add_arguments(parser: Any, config: type) -> None:
    """Add one argument per CLI field of ``config`` (a dataclass) to an argparse parser."""
    hints = typing.get_type_hints(config)
    groups: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        meta = f.metadata.get(_META)
        if meta is None or not meta["cli"]:
            continue
        target = parser
        if meta["exclusive"]:
            if meta["exclusive"] not in groups:
                groups[meta["exclusive"]] = parser.add_mutually_exclusive_group()
            target = groups[meta["exclusive"]]
        names, kwargs = _argument(f, meta, hints[f.name])
        target.add_argument(*names, **kwargs)


def _argument(f: dataclasses.Field, meta: dict, hint: Any) -> tuple[list[str], dict]:
    required = f.default is MISSING and f.default_factory is MISSING
    default = None if required else (f.default if f.default is not MISSING else f.default_factory())
    base, is_list = _base_type(hint)
    kwargs: dict[str, Any] = {"help": _help(meta["help"], default, base)}
    if meta["positional"]:
        kwargs.update(metavar=meta["metavar"] or f.name.upper())
        if is_list:
            kwargs["nargs"] = meta["nargs"] or "+"
        if meta["parse"] or base in (int, float):
            kwargs["type"] = meta["parse"] or base
        return [f.name], kwargs
    flag = meta["flag"] or "--" + f.name.replace("_", "-")
    names = ([meta["short"]] if meta["short"] else []) + [flag, *meta["aliases"]]
    kwargs["dest"] = f.name
    # An absent flag leaves no attribute (SUPPRESS), so the field keeps its dataclass
    # default: the default is written once, on the field.
    kwargs["default"] = argparse.SUPPRESS
    if base is bool and not meta["parse"]:
        kwargs["action"] = "store_false" if meta["negate"] else "store_true"
        return names, kwargs
    kwargs["required"] = required
    kwargs["metavar"] = meta["metavar"]
    if meta["choices"] is not None:
        kwargs["choices"] = list(meta["choices"])
    if meta["parse"] or base in (int, float):
        kwargs["type"] = meta["parse"] or base
    if is_list and not meta["parse"]:
        if meta["append"]:
            kwargs["action"] = "append"
        else:
            kwargs["nargs"] = meta["nargs"] or "+"
    elif meta["nargs"]:
        kwargs["nargs"] = meta["nargs"]
    return names, kwargs


def _base_type(hint: Any) -> tuple[Any, bool]:
    """(element type, is_list) of a field annotation such as ``int | None`` or ``list[str]``."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (list, tuple, set) or hint in (list, tuple):
        return (args[0] if args else str), True
    if args and origin is not None and len(args) == 1:  # Optional[X] / X | None
        return _base_type(args[0])
    return hint, False


def _help(text: str, default: Any, base: Any) -> str:
    if default is None or isinstance(default, bool) or default in ("", [], ()):
        return text
    if "default" in text.lower():
        return text
    return f"{text} (default {default})"


def config_values(namespace: Any) -> dict[str, Any]:
    """The config keyword arguments in an argparse namespace (absent flags left out)."""
    return {k: v for k, v in vars(namespace).items() if not k.startswith("_") and k != "verbose"}


def apply_environment(config: CommandConfig) -> None:
    """Process-wide settings a config asks for, before the command imports its libraries."""
    if getattr(config, "offline", False):
        # Must precede the first import of huggingface_hub (it reads this at import).
        os.environ["HF_HUB_OFFLINE"] = "1"
