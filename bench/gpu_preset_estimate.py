"""What ``taxoclip study scaling --preset gpu`` would cost on one H100, estimated from
measurements on this CPU and the assumptions printed with the result (no GPU here).

    python bench/gpu_preset_estimate.py [--workdir DIR] [--skip-measure]

Measured here, one after another:

1. the training step of the preset's model on this CPU (fp32, forward and backward of a
   batch of 224-px images and 77-token captions through open_clip's CLIP loss), and its
   FLOPs per sample (``torch.utils.flop_counter``), which give this CPU's FLOP rate;
2. ``taxoclip synth`` at the preset's image side and web corpus, per image (a world of
   ``--synth-species`` species, scaled to the preset's);
3. ``taxoclip analyze`` as the study's ``measure`` runs it, of one model on a world with
   the preset's species and images per species, at 32 px with the tiny CPU model: its
   statistics run on the CPU whatever the device, and cost the same whatever the pixels
   (the tiny model's 128-dimensional embeddings against ViT-S's 384: an underestimate).

The estimate: training FLOPs of the whole design (stage 1 per world, every stage-2 run)
at an assumed H100 bf16 rate; the encoding of every measured model (eval's zero-shot:
80 templates x every species' text, twice, and the images) at an assumed fp32 rate; and
the CPU parts (synth, every model's analysis) at the CPU time they took here (process
time, not wall time, so that other jobs on the machine do not inflate it; assumed no
faster on the GPU host: each runs in one process, mostly on one thread).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe  # noqa: E402

#: Assumed effective bf16 rate of one H100 on a ViT-S CLIP step at batch 256: about 15 %
#: of its 989 dense TFLOP/s (small widths keep the tensor cores far from full).
H100_TFLOPS = 150.0
#: Assumed effective fp32 rate for measuring (analyze and eval encode in fp32): most of
#: the H100's 67 TFLOP/s without tensor cores at these widths would be generous.
H100_FP32_TFLOPS = 30.0
TEMPLATES = 80  # eval's zero-shot templates (ZERO_SHOT_PROTOCOL)


def step_flops_and_seconds(model_name: str, batch: int, repeats: int) -> dict[str, float]:
    """FLOPs of ``model_name`` per training sample, per image and per caption encoded, and
    this CPU's seconds per training sample (fp32)."""
    import open_clip
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from taxoclip.train.loss import clip_loss

    model, _, _ = open_clip.create_model_and_transforms(model_name)
    tokenizer = open_clip.get_tokenizer(model_name)
    size = model.visual.image_size
    size = size[0] if isinstance(size, tuple | list) else size
    tokens = tokenizer(["a photo of Aus bus, a bird with a white crest."] * batch)
    images = torch.randn(batch, 3, size, size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        image, text, scale = model(images, tokens)[:3]  # normalised features, exp'd scale
        loss = clip_loss(image, text, scale)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    counted = {}
    for name, work in (
        ("train", step),
        ("image", lambda: model.encode_image(images)),
        ("text", lambda: model.encode_text(tokens)),
    ):
        with FlopCounterMode(display=False) as counter:
            work()
        counted[name] = counter.get_total_flops() / batch
    counted["cpu_seconds"] = math.nan
    if repeats:
        step()  # warm
        tick = time.perf_counter()
        for _ in range(repeats):
            step()
        counted["cpu_seconds"] = (time.perf_counter() - tick) / (repeats * batch)
    return counted


def synth_seconds_per_image(workdir: Path, species: int, ips: int, size: int, web: int) -> float:
    from taxoclip.synth import SynthConfig, generate

    out = workdir / "synth64"
    shutil.rmtree(out, ignore_errors=True)
    tick, cpu = time.perf_counter(), time.process_time()
    config = SynthConfig(species=species, images_per_species=ips, image_size=size, web=web)
    generate(out, config, progress=False)
    seconds, cpu = time.perf_counter() - tick, time.process_time() - cpu
    shutil.rmtree(out, ignore_errors=True)
    print(f"synth: {seconds:.1f} s wall, {cpu:.1f} s CPU for {species * ips + web} images")
    return cpu / (species * ips + web)


def analysis_seconds(workdir: Path, species: int, ips: int) -> float:
    """``taxoclip analyze`` as the study's ``measure`` runs it (no baseline, no plots), of an
    untrained tiny model on a world of the preset's species and images per species."""
    from taxoclip.analyze import AnalyzeConfig
    from taxoclip.analyze import run as analyze
    from taxoclip.models import load_model, save_model, untrained_twin
    from taxoclip.synth import SynthConfig, generate

    world = workdir / "world"
    shutil.rmtree(world, ignore_errors=True)
    config = SynthConfig(species=species, images_per_species=ips, image_size=32)
    synth = generate(world / "synth", config, progress=False).out
    twin = untrained_twin(load_model("taxoclip-vit-t32"), seed=0)
    model = save_model(twin.model, world / "model", twin.model_cfg, twin.preprocess_cfg)
    tick, cpu = time.perf_counter(), time.process_time()
    analyze(
        AnalyzeConfig(
            model=str(model),
            data=synth,
            out=world / "analysis",
            baseline="none",
            plots=False,
            progress=False,
        )
    )
    seconds, cpu = time.perf_counter() - tick, time.process_time() - cpu
    print(f"analyze: {seconds:.1f} s wall, {cpu:.1f} s CPU")
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / "out" / "gpu")
    parser.add_argument("--batch", type=int, default=16, help="CPU step batch")
    parser.add_argument(
        "--repeats", type=int, default=2, help="timed CPU steps (0: count FLOPs only)"
    )
    parser.add_argument("--synth-species", type=int, default=100)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from taxoclip.study.config import PRESETS, ScalingConfig, apply_preset
    from taxoclip.synth import SynthConfig
    from taxoclip.synth.web import MAX_TEST

    config = apply_preset(ScalingConfig(out="x", preset="gpu"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {describe()}; load average {Path('/proc/loadavg').read_text().strip()}")
    print(f"preset gpu: {PRESETS['gpu']}")

    counted = step_flops_and_seconds(config.model, args.batch, args.repeats)
    flops = counted["train"]
    print(
        f"{config.model}: {flops / 1e9:.1f} GFLOP per training sample, "
        f"{counted['image'] / 1e9:.2f} per image and {counted['text'] / 1e9:.2f} per caption "
        f"encoded; this CPU {counted['cpu_seconds'] * 1e3:.0f} ms per training sample = "
        f"{flops / counted['cpu_seconds'] / 1e9:.0f} GFLOP/s"
    )
    synth = synth_seconds_per_image(
        args.workdir,
        args.synth_species,
        config.images_per_species,
        config.image_size,
        args.synth_species * config.web // config.species,
    )
    print(f"synth at {config.image_size} px: {synth * 1e3:.2f} ms CPU per image")
    per_model = analysis_seconds(args.workdir, config.species, config.images_per_species)
    print(f"analyze of one model at {config.species} species: {per_model:.0f} s CPU")

    # The design's sizes: SynthToL's split (synth/config.py) and the study's budget.
    synth_config = SynthConfig(species=config.species, images_per_species=config.images_per_species)
    seen = config.species - round(synth_config.unseen_fraction * config.species)
    n_train = seen * (config.images_per_species - synth_config.n_test())
    steps = config.epochs * (n_train // config.batch_size)
    replay = round(config.batch_size * config.replay_ratio / (1 - config.replay_ratio))
    worlds, seeds, sizes = len(config.world_seeds), config.seeds, len(config.sizes)
    stage2_runs = worlds * seeds * (sizes + 2)
    models = worlds * (1 + seeds * (sizes + 3))  # + general, untrained per seed
    stage1 = (config.web - min(MAX_TEST, max(1, config.web // 10))) * config.stage1_epochs
    samples = worlds * stage1 + stage2_runs * steps * (config.batch_size + replay)
    gpu_train = samples * flops / (H100_TFLOPS * 1e12)
    # Per model: zero-shot's class texts (templates x species, for seen and for unseen),
    # every image twice (analysis, then zero-shot), the held-out web pairs once each.
    web_test = min(MAX_TEST, max(1, config.web // 10))  # synth/web.py's held-out pairs
    encode = (
        2 * TEMPLATES * config.species * counted["text"]
        + 2 * config.species * config.images_per_species * counted["image"]
        + web_test * (counted["text"] + counted["image"])
    )
    gpu_encode = models * encode / (H100_FP32_TFLOPS * 1e12)
    cpu_synth = worlds * synth * (config.species * config.images_per_species + config.web)
    cpu_measure = models * per_model
    total = gpu_train + gpu_encode + cpu_synth + cpu_measure
    print(
        f"design: {worlds} world(s) x {seeds} seed(s) x {sizes} sizes: {stage2_runs} stage-2 "
        f"runs of {steps} steps ({n_train} training images, batch {config.batch_size} + "
        f"{replay} replay), {models} models measured, {samples / 1e6:.2f} M training samples"
    )
    print(
        f"estimate (assumed H100 {H100_TFLOPS:.0f} TFLOP/s bf16, {H100_FP32_TFLOPS:.0f} fp32): "
        f"training {gpu_train:.0f} s, encoding for measuring {gpu_encode:.0f} s; at this "
        f"CPU's speed synth {cpu_synth:.0f} s and analysis {cpu_measure:.0f} s; total "
        f"{total:.0f} s ({total / 60:.1f} min)"
    )


if __name__ == "__main__":
    main()
