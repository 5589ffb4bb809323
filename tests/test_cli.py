"""The command line as a user meets it: a real process, real exit statuses."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from taxoclip.cli import main


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "taxoclip", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def test_help_does_not_import_heavy_libraries():
    # --help must answer at once: the CLI module may not pull torch or open_clip in.
    code = (
        "import sys, taxoclip.cli as c\n"
        "c.build_parser().format_help()\n"
        "heavy = [m for m in ('torch', 'open_clip', 'webdataset', 'numpy') if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_lists_commands_and_exit_statuses():
    result = run_cli("--help")
    assert result.returncode == 0
    for word in ("synth", "curate", "demo", "Exit status"):
        assert word in result.stdout
    synth_help = run_cli("synth", "--help").stdout
    for flag in (
        "--species",
        "--images-per-species",
        "--image-size",
        "--seed",
        "--shards",
        "--preview",
    ):
        assert flag in synth_help


def test_synth_writes_a_dataset(tmp_path):
    out = tmp_path / "toy"
    result = run_cli(
        "synth", str(out), "--species", "12", "--images-per-species", "3", "--shards", "2", "-q"
    )
    assert result.returncode == 0, result.stderr
    assert "12 species" in result.stdout and "shard-{000000..000001}.tar" in result.stdout
    assert (out / "species.csv").read_text().count("\n") == 13


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--species", "0"], "--species must be at least 1"),
        (["--image-size", "4000"], "--image-size must be between"),
        (
            ["--species", "2", "--images-per-species", "2", "--shards", "9"],
            "more than the 2 training images",
        ),
        (["--species", "many"], "invalid int value"),
    ],
)
def test_synth_bad_parameters_exit_2_and_write_nothing(tmp_path, args, message):
    out = tmp_path / "never"
    result = run_cli("synth", str(out), *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_synth_refuses_non_empty_and_unwritable_outputs(tmp_path, capsys):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "data.csv").write_text("precious")
    assert main(["synth", str(busy), "--species", "2", "--images-per-species", "2", "-q"]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert (busy / "data.csv").read_text() == "precious"
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert (
        main(["synth", str(blocker / "out"), "--species", "2", "--images-per-species", "2", "-q"])
        == 2
    )
    assert "cannot write output directory" in capsys.readouterr().err


def test_no_command_is_a_usage_error():
    result = run_cli()
    assert result.returncode == 2 and "usage: taxoclip" in result.stdout


def test_curate_input_errors_exit_1_naming_the_input(tmp_path, capsys):
    backbone = tmp_path / "backbone"
    backbone.mkdir()
    assert (
        main(["curate", str(tmp_path), "--backbone", str(backbone), "--out", str(tmp_path / "o")])
        == 1
    )
    assert f"--backbone {backbone}: no Taxon.tsv" in capsys.readouterr().err
    (backbone / "Taxon.tsv").write_text(
        "taxonID\tcanonicalName\ttaxonRank\ttaxonomicStatus\tgenus\n"
    )
    missing = tmp_path / "nope"
    assert (
        main(["curate", str(missing), "--backbone", str(backbone), "--out", str(tmp_path / "o")])
        == 1
    )
    assert f"source {missing}: no such file or folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing written for a run that could not start
    assert (
        main(["curate", str(tmp_path), "--backbone", str(backbone), "--out", "o", "--radius", "99"])
        == 2
    )
