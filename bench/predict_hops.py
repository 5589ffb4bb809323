"""How far one ``taxoclip predict DIR --index I --output o.csv`` call travels through taxoclip.

Runs the command in-process under ``sys.setprofile`` and records every call of a taxoclip
function (src/taxoclip, imports and the argument parser's set-up excluded: only what runs
after ``cli.main`` hands the parsed config to the stage), then reports:

- **hops**: the distinct taxoclip functions and methods that ran (comprehensions, lambdas
  and generator expressions are part of their function, not hops of their own);
- **modules**: the distinct taxoclip modules those live in;
- **crossings**: the distinct calls from a function in one module to one in another (the
  jumps a reader makes between files to follow the call);
- **depth**: the longest chain of nested taxoclip calls, and that chain.

These are the numbers docs/architecture.md quotes for the predict path (issue #20). A
tiny random model and a 20-species SynthToL index are built in a temporary folder first;
the numbers do not depend on them. The command runs once with ``--runtime torch`` and once
with ``--runtime onnx`` on the same exported folder; their union is what a reader of the
predict path has to read.

    python bench/predict_hops.py [--list]
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import tempfile
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src" / "taxoclip")
SKIP = {"<genexpr>", "<listcomp>", "<dictcomp>", "<setcomp>", "<lambda>", "<module>"}


def build(folder: Path) -> tuple[Path, Path, Path]:
    """A tiny model folder exported to ONNX (torch reads its weights, ONNX its towers), an
    index and test images."""
    from taxoclip.cli import main
    from taxoclip.models import create_model, save_model
    from taxoclip.runtime.config import ExportOnnxConfig
    from taxoclip.runtime.export import export_onnx
    from taxoclip.synth import SynthConfig, generate

    data = folder / "synth"
    generate(
        data, SynthConfig(species=20, images_per_species=2, image_size=48, seed=2), progress=False
    )
    loaded = create_model("taxoclip-vit-t32", seed=0)
    source = save_model(loaded.model, folder / "model", loaded.model_cfg, loaded.preprocess_cfg)
    model = folder / "exported"
    export_onnx(ExportOnnxConfig(model=str(source), out=str(model)))
    assert (
        main(
            [
                "index",
                "--model",
                str(model),
                "--taxa",
                str(data / "species.csv"),
                "--out",
                str(folder / "index"),
                "--runtime",
                "torch",
                "-q",
            ]
        )
        == 0
    )
    return model, folder / "index", data / "test" / "images"


class Tracer:
    """Taxoclip calls made while ``armed``: distinct functions, and the deepest chain."""

    def __init__(self) -> None:
        self.armed = False
        self.functions: dict[tuple[str, str], None] = {}
        self.stack: list[tuple[str, str]] = []
        self.deepest: list[tuple[str, str]] = []
        self.crossings: dict[tuple[tuple[str, str], tuple[str, str]], None] = {}

    def __call__(self, frame, event, arg) -> None:
        if not self.armed or event not in ("call", "return"):
            return
        code = frame.f_code
        if not code.co_filename.startswith(SRC) or code.co_name in SKIP:
            return
        if not code.co_flags & inspect.CO_NEWLOCALS:
            return  # a module or class body, run by an import inside the call
        if event == "call":
            module = os.path.relpath(code.co_filename, os.path.dirname(SRC))
            name = (module.removesuffix(".py").replace(os.sep, "."), code.co_qualname)
            self.functions.setdefault(name)
            if self.stack and self.stack[-1][0] != name[0]:
                self.crossings.setdefault((self.stack[-1], name))
            self.stack.append(name)
            if len(self.stack) > len(self.deepest):
                self.deepest = list(self.stack)
        elif self.stack and self.stack[-1][1] == code.co_qualname:
            self.stack.pop()


def trace(model: Path, index: Path, images: Path, out: Path, runtime: str) -> Tracer:
    from taxoclip import config as config_module
    from taxoclip.cli import main

    tracer = Tracer()
    original = config_module.Command.runner

    def armed_runner(self):  # what the stage does, not the argument parsing
        function = original(self)

        def run(config):
            tracer.armed = True
            try:
                return function(config)
            finally:
                tracer.armed = False

        return run

    config_module.Command.runner = armed_runner
    sys.setprofile(tracer)
    try:
        code = main(
            [
                "predict",
                str(images),
                "--model",
                str(model),
                "--index",
                str(index),
                "--output",
                str(out),
                "--runtime",
                runtime,
                "-q",
            ]
        )
    finally:
        sys.setprofile(None)
        config_module.Command.runner = original
    assert code == 0, code
    return tracer


def report(name: str, functions: dict, crossings: int | None = None, deepest=None) -> None:
    modules = sorted({module for module, _ in functions})
    print(f"{name}:")
    print(f"  hops (distinct taxoclip functions): {len(functions)}")
    print(f"  modules: {len(modules)}: {', '.join(m.removeprefix('taxoclip.') for m in modules)}")
    if crossings is not None:
        print(f"  cross-module calls: {crossings}")
    if deepest is not None:
        print(
            f"  deepest chain: {len(deepest)}: "
            + " → ".join(f"{m.removeprefix('taxoclip.')}:{f}" for m, f in deepest)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print every function")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tracers = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["XDG_CACHE_HOME"] = str(folder / "cache")
        model, index, images = build(folder)
        for runtime in ("torch", "onnx"):
            tracers[runtime] = trace(model, index, images, folder / "o.csv", runtime)
    for runtime, tracer in tracers.items():
        report(
            f"taxoclip predict DIR --index I --output o.csv --runtime {runtime}",
            tracer.functions,
            len(tracer.crossings),
            tracer.deepest,
        )
    both = {**tracers["torch"].functions, **tracers["onnx"].functions}
    report("both runtimes together (what a reader of the predict path reads)", both)
    one = set(tracers["torch"].functions) ^ set(tracers["onnx"].functions)
    print(f"  run by one runtime only: {len(one)} functions in {len({m for m, _ in one})} modules")
    if args.list:
        for module, function in sorted(both):
            which = [r for r, t in tracers.items() if (module, function) in t.functions]
            print(f"    {module}:{function}  ({', '.join(which)})")


if __name__ == "__main__":
    main()
