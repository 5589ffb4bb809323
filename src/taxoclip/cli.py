"""Command line: parses arguments and calls the library. Nothing else lives here.

Heavy imports (torch, open_clip, webdataset) happen inside the command functions so
``taxoclip --help`` answers at once.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from taxoclip import __version__
from taxoclip.errors import EXIT_OK, EXIT_USAGE, TaxoclipError

log = logging.getLogger("taxoclip")


class _Parser(argparse.ArgumentParser):
    """argparse that exits with the contract's usage status (2) and one clear line."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _cmd_synth(args: argparse.Namespace) -> int:
    from taxoclip.synth import SynthConfig, generate

    config = SynthConfig(
        species=args.species,
        images_per_species=args.images_per_species,
        image_size=args.image_size,
        seed=args.seed,
        shards=args.shards,
        preview=args.preview,
    )
    result = generate(args.out, config, progress=not args.quiet)
    print(
        f"SynthToL written to {result.out}: {result.n_species} species "
        f"({result.n_unseen_species} unseen in training), "
        f"{result.n_train} train and {result.n_test} test images"
    )
    if result.shard_pattern:
        print(f"training shards: {result.shard_pattern}")
    if result.preview:
        print(f"preview: {result.preview}")
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from taxoclip.demo import run_demo

    return run_demo(args.out, quick=args.quick, progress=not args.quiet)


def build_parser() -> argparse.ArgumentParser:
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
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    synth = commands.add_parser(
        "synth",
        help="generate SynthToL, the embedded synthetic tree of life",
        description=(
            "Generate SynthToL: a procedural tree of life (7 ranks, pseudo-Latin names, "
            "traits evolving down the tree, habitats, sexes and life stages) as JPEG "
            "images, ground-truth CSVs, train/test splits and optional WebDataset shards. "
            "The same seed gives byte-identical output."
        ),
    )
    synth.add_argument("out", metavar="OUT", help="output directory (new or empty)")
    synth.add_argument(
        "--species", type=int, default=300, metavar="N", help="number of species (default 300)"
    )
    synth.add_argument(
        "--images-per-species",
        type=int,
        default=40,
        metavar="M",
        help="images per species (default 40)",
    )
    synth.add_argument(
        "--image-size", type=int, default=32, metavar="S", help="image side in pixels (default 32)"
    )
    synth.add_argument("--seed", type=int, default=0, metavar="K", help="random seed (default 0)")
    synth.add_argument(
        "--shards",
        type=int,
        default=0,
        metavar="N",
        help="also write the training split as N WebDataset shards",
    )
    synth.add_argument(
        "--preview", action="store_true", help="write preview.png, a contact sheet to look at"
    )
    synth.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(func=_cmd_synth)

    demo = commands.add_parser(
        "demo",
        help="run every stage on SynthToL and say where the results are",
        description="Run the whole system on the embedded SynthToL default.",
    )
    demo.add_argument(
        "--out", default="demo_out", metavar="DIR", help="output directory (default demo_out)"
    )
    demo.add_argument("--quick", action="store_true", help="a small, fast run (used by the tests)")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except TaxoclipError as exc:
        print(f"taxoclip {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("taxoclip: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
