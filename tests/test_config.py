"""The stage-config framework: fields become flags, defaults live on the field only."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from taxoclip.config import (
    CommandConfig,
    CommandResult,
    add_arguments,
    config_values,
    jsonable,
    option,
    shared,
)
from taxoclip.errors import EXIT_PARTIAL, UsageError


def _comma(text: str) -> list[str]:
    return [item for item in text.split(",") if item]


@dataclass(kw_only=True)
class Toy(CommandConfig):
    inputs: list[str] = option(positional=True, metavar="IN", help="inputs")
    out: str = option(metavar="DIR", help="where")
    size: int = option(300, metavar="N", help="how many")
    weight_decay: float = option(0.2, flag="--wd", aliases=("--weight-decay",), help="decay")
    keep_higher_rank: bool = option(True, flag="--species-only", negate=True, help="species only")
    tags: list[str] | None = option(None, parse=_comma, help="comma list")
    extra: list[str] = option([], append=True, metavar="X", help="repeatable")
    rank: str | None = option(None, choices=("genus", "species"), exclusive="mode", help="rank")
    cls: str | None = option(None, exclusive="mode", help="labels")
    hidden: int = option(7, cli=False, help="library only")
    device: str = shared.device()
    progress: bool = shared.progress()

    def check(self) -> list[str]:
        return [f"--size must be at least 1 (got {self.size})"] if self.size < 1 else []


def parse(*argv: str) -> Toy:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser, Toy)
    return Toy(**config_values(parser.parse_args(list(argv))))


def test_absent_flags_take_the_field_default():
    toy = parse("a.jpg", "--out", "o")
    assert toy == Toy(inputs=["a.jpg"], out="o")
    assert (toy.size, toy.weight_decay, toy.keep_higher_rank, toy.progress) == (
        300,
        0.2,
        True,
        True,
    )
    assert (toy.tags, toy.extra, toy.device, toy.hidden) == (None, [], "auto", 7)


def test_flags_aliases_negations_parsers_and_repeats():
    toy = parse(
        "a",
        "b",
        "--out",
        "o",
        "--size",
        "5",
        "--weight-decay",
        "0.1",
        "--species-only",
        "--tags",
        "x,y",
        "--extra",
        "1",
        "--extra",
        "2",
        "-q",
        "--rank",
        "genus",
    )
    assert toy.inputs == ["a", "b"] and toy.size == 5 and toy.weight_decay == 0.1
    assert toy.keep_higher_rank is False and toy.progress is False
    assert toy.tags == ["x", "y"] and toy.extra == ["1", "2"] and toy.rank == "genus"
    assert parse("a", "--out", "o", "--wd", "0.3").weight_decay == 0.3


def test_required_choices_and_exclusive_groups_are_enforced(capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser, Toy)
    for argv in (
        ["a"],
        ["a", "--out", "o", "--rank", "order"],
        ["a", "--out", "o", "--rank", "genus", "--cls", "x"],
        ["a", "--out", "o", "--hidden", "1"],
    ):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(argv)
        assert exc.value.code == 2
    help_text = parser.format_help()
    assert (
        "(default 300)" in help_text
        and "--weight-decay" in help_text
        and "--hidden" not in help_text
    )


def test_checks_run_on_construction_and_on_replace():
    with pytest.raises(UsageError, match="--size must be at least 1"):
        parse("a", "--out", "o", "--size", "0")
    toy = parse("a", "--out", "o")
    with pytest.raises(UsageError, match="got -3"):
        replace(toy, size=-3)


def test_mutable_defaults_are_not_shared():
    one, two = Toy(inputs=["a"], out="o"), Toy(inputs=["b"], out="o")
    one.extra.append("x")
    assert two.extra == []


@dataclass
class ToyResult(CommandResult):
    where: Path
    failed: list[str]

    def lines(self) -> list[str]:
        return [f"wrote {self.where}"]

    @property
    def exit_code(self) -> int:
        return EXIT_PARTIAL if self.failed else 0


def test_results_print_and_serialise():
    result = ToyResult(Path("/tmp/x"), ["a.jpg"])
    assert result.lines() == ["wrote /tmp/x"] and result.exit_code == EXIT_PARTIAL
    assert json.loads(json.dumps(result.to_json())) == {"where": "/tmp/x", "failed": ["a.jpg"]}
    assert jsonable({"p": (Path("a"), {1})}) == {"p": ["a", [1]]}
    assert Toy(inputs=["a"], out="o").to_json()["inputs"] == ["a"]
