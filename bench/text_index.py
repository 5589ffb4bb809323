"""Building a text index: taxoclip's text path before and after, per taxon, same model.

On an open_clip ViT-B-16 (random weights: speed and agreement do not depend on them) and
the taxa of a SynthToL species list, each taxon through the 80 OpenAI templates:

- ``before``: the recipe as it was (one forward pass per 32 taxa × 80 captions at the full
  77-token context);
- ``torch``: what ``taxoclip index`` now does (tokenise once, captions sorted by length,
  passes trimmed to their longest caption, ``inference_mode``);
- ``onnx`` / ``onnx-int8``: the same passes through the exported text tower
  (``taxoclip export onnx``), as ``taxoclip index --runtime onnx[-int8]`` does;

and the index columns' agreement with ``before`` (min cosine over taxa). The same path
serves custom labels (``predict --cls``), whose embeddings are also cached per model.

    python bench/text_index.py [--taxa 24] [--model ViT-B-16]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "text_index"


def taxa_labels(n: int) -> list[str]:
    from taxoclip.predict.index import taxon_text
    from taxoclip.synth import SynthConfig, run

    data = OUT / "synth"
    if not (data / "species.csv").is_file():
        run(SynthConfig(out=str(data), species=max(n, 30), images_per_species=2, image_size=32))
    from taxoclip.predict import read_taxa

    taxa = read_taxa(data / "species.csv")[:n]
    return [taxon_text(lineage.to_list(), common) for lineage, common in taxa]


def before(model, tokenizer, labels, batch_size=32):
    """The recipe at the previous commit, verbatim in effect."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taxa", type=int, default=24)
    parser.add_argument("--model", default="ViT-B-16")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from machine import cpu_name
    from taxoclip.models import load_model
    from taxoclip.runtime.config import ExportOnnxConfig
    from taxoclip.runtime.export import export_onnx
    from taxoclip.runtime.onnx import ExportedModel, OnnxTextEncoder
    from taxoclip.runtime.text import class_text_matrix
    from taxoclip.runtime.text_torch import TorchTextEncoder

    labels = taxa_labels(args.taxa)
    results, reference = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(ExportOnnxConfig(model=args.model, out=str(Path(tmp) / "m"), int8=True))
        exported = ExportedModel.open(Path(tmp) / "m")
        loaded = load_model(Path(tmp) / "m")  # the same (random) weights as the export
        model, tokenizer = loaded.model.eval(), loaded.tokenizer
        torch_text = TorchTextEncoder(model, tokenizer)
        runs = {
            "before": lambda: before(model, tokenizer, labels),
            "torch": lambda: class_text_matrix(torch_text, labels),
            "onnx": lambda: class_text_matrix(OnnxTextEncoder(exported), labels),
            "onnx-int8": lambda: class_text_matrix(OnnxTextEncoder(exported, int8=True), labels),
        }
        class_text_matrix(torch_text, labels[:2])  # warm-up (allocations, tokenizer cache)
        for name, run in runs.items():
            start = time.perf_counter()
            matrix = run()
            seconds = time.perf_counter() - start
            if reference is None:
                reference = matrix
            cosine = float((reference * matrix).sum(axis=0).min())
            results[name] = {"s_per_taxon": seconds / len(labels), "min_cosine": cosine}
    base = results["before"]["s_per_taxon"]
    print(f"text index, {args.model}, {len(labels)} taxa x 80 templates, {cpu_name()}")
    print(f"{'path':<10} {'s/taxon':>8} {'speed-up':>9} {'min cos vs before':>18}")
    for name, r in results.items():
        print(f"{name:<10} {r['s_per_taxon']:>8.3f} {base / r['s_per_taxon']:>8.2f}x "
              f"{r['min_cosine']:>18.6f}")  # fmt: skip
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
