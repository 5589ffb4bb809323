"""Building a text index: the full-context recipe, whole captions and the prefix cache.

On an open_clip ViT-B-16 (random weights: speed and agreement do not depend on them) and
the taxa of a SynthToL species list, each taxon through the 80 OpenAI templates, in one
run (same load):

- ``reference``: the plain recipe (one forward pass per 32 taxa × 80 captions at the full
  77-token context, ``encode_text``) — the "before" of issue #20 (its 4.1 s/taxon was
  torch on the full context) and the index every other path must equal;
- ``<runtime> whole captions``: the text path before the prefix cache (identical captions
  encoded once, sorted by length, passes trimmed to their longest caption), for ``torch``
  and ``onnx`` (the exported fp32 text tower);
- ``<runtime> prefix cache``: what ``taxoclip index`` does now
  (:func:`~taxoclip.runtime.text.class_text_matrix` on an encoder with a key/value
  cache: each shared caption prefix encoded once, :mod:`taxoclip.runtime.prefix`);
  with ``--int8`` also ``onnx-int8`` (whole captions: int8 has no step graph);

each with its s/taxon, its speed-up against ``reference`` and against the issue's 4.1 s,
its index columns' agreement with ``reference`` (min cosine over taxa), and the caption
positions it ran. With ``--cli``, also the whole ``taxoclip index`` command (start-up
included, as the issue measured it) on the torch and the ONNX runtime. The exported model
folder is kept under ``bench/out/text_index/`` and reused (re-exported when it lacks
``text_step.onnx``).

    python bench/text_index.py [--taxa 24] [--model ViT-B-16] [--cli] [--int8]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "text_index"


def taxa_file(n: int) -> Path:
    """A CSV of the first ``n`` taxa of a SynthToL species list."""
    from taxoclip.synth import SynthConfig, run

    data = OUT / "synth"
    if not (data / "species.csv").is_file():
        run(SynthConfig(out=str(data), species=max(n, 30), images_per_species=2, image_size=32))
    lines = (data / "species.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    path = OUT / f"taxa-{n}.csv"
    path.write_text("".join(lines[: n + 1]), encoding="utf-8")
    return path


def exported_folder(model: str, int8: bool) -> Path:
    """The exported model folder (random weights), made once and kept."""
    from taxoclip.runtime.config import ExportOnnxConfig
    from taxoclip.runtime.export import export_onnx

    folder = OUT / f"{model}-export"
    done = (folder / "export.json").is_file() and (folder / "text_step.onnx").is_file()
    if not done or (int8 and not (folder / "text_encoder.int8.onnx").is_file()):
        export_onnx(ExportOnnxConfig(model=model, out=str(folder), int8=int8))
    return folder


def reference(model, tokenizer, labels, batch_size=32):
    """The plain recipe: full context, one pass per 32 taxa."""
    import torch
    import torch.nn.functional as F

    from taxoclip.runtime.templates import OPENAI_IMAGENET_TEMPLATES as T

    columns = []
    with torch.inference_mode():
        for start in range(0, len(labels), batch_size):
            chunk = labels[start : start + batch_size]
            texts = [t.format(label) for label in chunk for t in T]
            features = F.normalize(model.encode_text(tokenizer(texts)).float(), dim=-1)
            mean = features.view(len(chunk), len(T), -1).mean(dim=1)
            columns.append(F.normalize(mean, dim=-1))
    return torch.cat(columns).T.numpy()


#: The issue's torch index build on ViT-B-16, s/taxon (124 s for 30 taxa, a quiet machine).
ISSUE_SECONDS = 4.1


class WholeCaptions:
    """An encoder seen without its key/value cache: ``class_text_matrix`` then runs whole
    captions (the path before the prefix cache, and the one for towers without it)."""

    kv_shape = None

    def __init__(self, inner) -> None:
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)


class Positions:
    """Counts the caption positions (block ids or trimmed caption ids) an encoder runs."""

    def __init__(self, inner) -> None:
        self.inner, self.count = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_tokens(self, tokens, normalize=True):
        self.count += int((tokens != 0).sum())
        return self.inner.encode_tokens(tokens, normalize)

    def encode_block(self, tokens, positions, past, mask, pool):
        self.count += int((tokens != 0).sum())
        return self.inner.encode_block(tokens, positions, past, mask, pool)


def cli_seconds(folder: Path, taxa: Path, runtime: str) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, all threads) of one ``taxoclip index`` run."""
    out = OUT / f"cli-index-{runtime}"
    command = [
        sys.executable,
        "-m",
        "taxoclip",
        "index",
        "--model",
        str(folder),
        "--taxa",
        str(taxa),
        "--out",
        str(out),
        "--runtime",
        runtime,
        "-q",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        command, check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def load_average() -> str:
    return Path("/proc/loadavg").read_text().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taxa", type=int, default=24)
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--cli", action="store_true", help="also time the whole command")
    parser.add_argument("--int8", action="store_true", help="also the int8 text tower")
    parser.add_argument(
        "--no-reference",
        action="store_true",
        help="skip the slow full-context recipe (agreement vs torch whole captions)",
    )
    parser.add_argument("--no-torch", action="store_true", help="skip torch's fast paths")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from machine import cpu_name
    from taxoclip.models import load_model
    from taxoclip.predict import read_taxa
    from taxoclip.predict.index import taxon_text
    from taxoclip.runtime.onnx import ExportedModel, OnnxTextEncoder
    from taxoclip.runtime.text import class_text_matrix
    from taxoclip.runtime.text_torch import TorchTextEncoder

    OUT.mkdir(parents=True, exist_ok=True)
    taxa = taxa_file(args.taxa)
    labels = [taxon_text(lineage.to_list(), common) for lineage, common in read_taxa(taxa)]
    folder = exported_folder(args.model, args.int8)
    exported = ExportedModel.open(folder)
    loaded = load_model(folder)  # the same (random) weights as the export
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    encoders = {}
    if not args.no_torch:
        torch_text = TorchTextEncoder(model, tokenizer)
        encoders |= {"torch whole captions": WholeCaptions(torch_text)}
        encoders |= {"torch prefix cache": torch_text}
    onnx_text = OnnxTextEncoder(exported)
    encoders |= {"onnx whole captions": WholeCaptions(onnx_text), "onnx prefix cache": onnx_text}
    if args.int8:
        encoders["onnx-int8 whole captions"] = OnnxTextEncoder(exported, int8=True)
    for encoder in encoders.values():  # warm-up (allocations, tokenizer cache)
        class_text_matrix(encoder, labels[:2])
    counted = {name: Positions(encoder) for name, encoder in encoders.items()}
    runs = {} if args.no_reference else {"reference": lambda: reference(model, tokenizer, labels)}
    runs |= {name: (lambda e=e: class_text_matrix(e, labels)) for name, e in counted.items()}
    results, matrices = {}, {}
    load_before = load_average()
    for name, run in runs.items():
        start, cpu = time.perf_counter(), time.process_time()
        matrices[name] = run()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        results[name] = {"s_per_taxon": seconds / len(labels), "cpu_s_per_taxon": cpu / len(labels)}
        if name in counted:
            results[name]["positions"] = counted[name].count
        print(f"{name}: {seconds / len(labels):.3f} s/taxon ({load_average()})", flush=True)
    first = "reference" if "reference" in matrices else next(iter(matrices))
    for name, matrix in matrices.items():
        results[name]["min_cosine"] = float((matrices[first] * matrix).sum(axis=0).min())
    if args.cli:
        for runtime in ("torch", "onnx"):
            wall, cpu = cli_seconds(folder, taxa, runtime)
            results[f"taxoclip index --runtime {runtime}"] = {
                "s_per_taxon": wall / len(labels),
                "cpu_s_per_taxon": cpu / len(labels),
            }
    load_after = load_average()
    base = results[first]["s_per_taxon"]
    print(
        f"text index, {args.model}, {len(labels)} taxa x 80 templates, {cpu_name()}, "
        f"{os.cpu_count()} cores; /proc/loadavg {load_before} before, {load_after} after"
    )
    print(
        f"{'path':<32} {'s/taxon':>8} {'vs ' + first:>14} {'vs 4.1 s':>9} {'CPU s/taxon':>12} "
        f"{'positions':>10} {'min cos vs ' + first:>24}"
    )
    for name, r in results.items():
        cosine = f"{r['min_cosine']:.7f}" if "min_cosine" in r else "-"
        print(
            f"{name:<32} {r['s_per_taxon']:>8.3f} {base / r['s_per_taxon']:>13.2f}x "
            f"{ISSUE_SECONDS / r['s_per_taxon']:>8.2f}x {r['cpu_s_per_taxon']:>12.3f} "
            f"{r.get('positions', '-'):>10} {cosine:>24}"
        )
    record = {
        "model": args.model,
        "taxa": len(labels),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "issue_s_per_taxon": ISSUE_SECONDS,
        "results": results,
    }
    (OUT / "results.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
