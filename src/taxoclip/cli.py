"""Command line: built from the stage configs registered in ``taxoclip.config``.

Each stage's ``config`` module declares its command (``@command``) and fields
(``option``); this module only imports those light modules, builds argparse from them,
constructs the config, runs the stage and prints its result. Heavy libraries (torch,
open_clip, ray) are imported by the stage's runner, so ``taxoclip --help`` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from taxoclip import __version__
from taxoclip.config import (
    COMMANDS,
    Command,
    CommandConfig,
    add_arguments,
    apply_environment,
    config_values,
)
from taxoclip.errors import EXIT_USAGE, TaxoclipError

log = logging.getLogger("taxoclip")

#: Modules whose import registers commands, in the order ``taxoclip --help`` lists them.
STAGE_CONFIGS = (
    "taxoclip.synth.config",
    "taxoclip.curate.config",
    "taxoclip.train.config",
    "taxoclip.predict.config",  # index, predict, embed
    "taxoclip.runtime.config",  # export onnx
    "taxoclip.evaluate.config",
    "taxoclip.analyze.config",
    "taxoclip.study.config",
    "taxoclip.report.config",
    "taxoclip.serve.config",
    "taxoclip.demo.config",
)

#: Help of command groups that only hold sub-commands.
GROUPS = {
    "study": "studies across runs: scaling (metrics against training data size), sweep "
    "(stage 2's recipe chosen by a criterion fixed in advance)",
    "export": "export a model for other runtimes: onnx (ONNX Runtime, fp32 and int8)",
}


class _Parser(argparse.ArgumentParser):
    """argparse that exits with the contract's usage status (2) and one clear line."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    for module in STAGE_CONFIGS:
        importlib.import_module(module)
    parser = _Parser(
        prog="taxoclip",
        description=(
            "BioCLIP 2 end to end: build a tree-of-life image-text dataset, train "
            "hierarchical contrastive models, predict, evaluate and analyse them."
        ),
        epilog="Exit status: 0 ok, 3 partial (some inputs failed), 1 failed, 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"taxoclip {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    top = parser.add_subparsers(dest="_name", metavar="COMMAND", parser_class=_Parser)
    groups: dict[str, argparse._SubParsersAction] = {}
    for cmd in COMMANDS.values():
        subparsers, name = top, cmd.name
        if " " in cmd.name:
            group, name = cmd.name.split(" ", 1)
            if group not in groups:
                holder = top.add_parser(
                    group, help=GROUPS.get(group), description=GROUPS.get(group)
                )
                holder.set_defaults(_help=holder)
                groups[group] = holder.add_subparsers(
                    dest="_sub", metavar="COMMAND", parser_class=_Parser
                )
            subparsers = groups[group]
        sub = subparsers.add_parser(name, help=cmd.help, description=cmd.description)
        add_arguments(sub, cmd.config)
        sub.set_defaults(_command=cmd)
    return parser


def parse(argv: Sequence[str] | None = None) -> tuple[Command | None, argparse.Namespace]:
    """The command ``argv`` names and its parsed flags; argparse exits 2 on bad flags."""
    args = build_parser().parse_args(argv)
    return getattr(args, "_command", None), args


def make_config(cmd: Command, args: argparse.Namespace) -> CommandConfig:
    """The command's config from parsed flags (``UsageError`` when its checks refuse them)."""
    return cmd.config(**config_values(args))


def main(argv: Sequence[str] | None = None) -> int:
    cmd, args = parse(argv)
    if cmd is None:
        (getattr(args, "_help", None) or build_parser()).print_help()
        return EXIT_USAGE
    # Our own messages at INFO; libraries (open_clip logs to the root logger) at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("taxoclip").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        config = make_config(cmd, args)
        apply_environment(config)
        result = cmd.runner()(config)
    except TaxoclipError as exc:
        print(f"taxoclip {cmd.name}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("taxoclip: interrupted", file=sys.stderr)
        return 130
    try:
        for line in result.lines():
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:
        # `taxoclip list-tol-taxa | head`: the reader left; that is not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    for line in result.warnings():
        print(line, file=sys.stderr)
    return result.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
