"""Building a text index: taxoclip's text path before and after, per taxon, same model.

On an open_clip ViT-B-16 (random weights: speed and agreement do not depend on them) and
the taxa of a SynthToL species list, each taxon through the 80 OpenAI templates:

- ``reference``: the plain recipe (one forward pass per 32 taxa × 80 captions at the full
  77-token context, ``encode_text``), the index every other path must equal;
- ``<runtime> before``: the text path as it was at issue #20 part 4 (captions sorted by
  length, passes of 1280 trimmed to their longest caption, no de-duplication);
- ``<runtime> now``: what ``taxoclip index`` does now (:func:`~taxoclip.runtime.text.
  class_text_matrix`: identical captions encoded once, passes of
  :data:`~taxoclip.runtime.text.TEXT_PASS` trimmed to their longest caption,
  ``inference_mode``), for ``torch``, ``onnx`` (the exported fp32 text tower) and, with
  ``--int8``, ``onnx-int8``;

each with its index columns' agreement with ``reference`` (min cosine over taxa). With
``--cli``, also the whole ``taxoclip index`` command (start-up included, as the issue
measured it) on the torch and the ONNX runtime. The exported model folder is kept under
``bench/out/text_index/`` and reused.

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
    done = (folder / "export.json").is_file() and (folder / "text_encoder.onnx").is_file()
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


def part4(encoder, labels, per_pass=1280):
    """``class_text_matrix`` as it was at issue #20 part 4 (verbatim in effect)."""
    import numpy as np

    from taxoclip.runtime.templates import OPENAI_IMAGENET_TEMPLATES as T

    texts = [t.format(label) for label in labels for t in T]
    tokens = np.asarray(encoder.tokenize(texts), dtype=np.int64)
    lengths = tokens.argmax(axis=1) + 1
    order = np.argsort(lengths, kind="stable")
    features = None
    for first in range(0, len(texts), per_pass):
        rows = order[first : first + per_pass]
        out = encoder.encode_tokens(tokens[rows, : int(lengths[rows].max())], True)
        if features is None:
            features = np.empty((len(texts), out.shape[1]), dtype=np.float32)
        features[rows] = out
    mean = features.reshape(len(labels), len(T), -1).mean(axis=1)
    return (mean / np.linalg.norm(mean, axis=1, keepdims=True)).T


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
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taxa", type=int, default=24)
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--cli", action="store_true", help="also time the whole command")
    parser.add_argument("--int8", action="store_true", help="also the int8 text tower")
    parser.add_argument(
        "--no-reference",
        action="store_true",
        help="skip the slow full-context recipe (agreement vs torch now)",
    )
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
    torch_text = TorchTextEncoder(model, tokenizer)
    onnx_text = OnnxTextEncoder(exported)
    runs = {} if args.no_reference else {"reference": lambda: reference(model, tokenizer, labels)}
    runs |= {
        "torch before": lambda: part4(torch_text, labels),
        "torch now": lambda: class_text_matrix(torch_text, labels),
        "onnx before": lambda: part4(onnx_text, labels),
        "onnx now": lambda: class_text_matrix(onnx_text, labels),
    }
    if args.int8:
        int8_text = OnnxTextEncoder(exported, int8=True)
        runs["onnx-int8 now"] = lambda: class_text_matrix(int8_text, labels)
    class_text_matrix(torch_text, labels[:2])  # warm-up (allocations, tokenizer cache)
    class_text_matrix(onnx_text, labels[:2])
    results, matrices = {}, {}
    load_before = load_average()
    for name, run in runs.items():
        start, cpu = time.perf_counter(), time.process_time()
        matrices[name] = run()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        results[name] = {"s_per_taxon": seconds / len(labels), "cpu_s_per_taxon": cpu / len(labels)}
    ref = matrices.get("reference", matrices["torch now"])
    for name, matrix in matrices.items():
        results[name]["min_cosine"] = float((ref * matrix).sum(axis=0).min())
    if args.cli:
        for runtime in ("torch", "onnx"):
            wall, cpu = cli_seconds(folder, taxa, runtime)
            results[f"taxoclip index --runtime {runtime}"] = {
                "s_per_taxon": wall / len(labels),
                "cpu_s_per_taxon": cpu / len(labels),
            }
    load_after = load_average()
    first = next(iter(results.values()))["s_per_taxon"]
    print(
        f"text index, {args.model}, {len(labels)} taxa x 80 templates, {cpu_name()}, "
        f"{os.cpu_count()} cores; load average {load_before} before, {load_after} after"
    )
    vs = "reference" if "reference" in results else "torch now"
    print(
        f"{'path':<30} {'s/taxon':>8} {'vs first':>9} {'CPU s/taxon':>12} {'min cos vs ' + vs:>22}"
    )
    for name, r in results.items():
        cosine = f"{r['min_cosine']:.7f}" if "min_cosine" in r else "-"
        print(
            f"{name:<30} {r['s_per_taxon']:>8.3f} {first / r['s_per_taxon']:>8.2f}x "
            f"{r['cpu_s_per_taxon']:>12.3f} {cosine:>22}"
        )
    record = {
        "model": args.model,
        "taxa": len(labels),
        "load_before": load_before,
        "load_after": load_after,
        "results": results,
    }
    (OUT / "results.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
