"""Throughput and memory of FSSAM on random weights (no checkpoints, no data): JSON output.

  python benchmarks/run.py --profile toy   --out benchmarks/results/toy_cpu.json
  python benchmarks/run.py --profile paper --out benchmarks/results/paper_cpu.json [--device cuda]
  python benchmarks/run.py --profile paper --device cuda --batch 32 --compile --out ...
  python benchmarks/run.py --profile paper --device cuda --fused-attention --out ...

toy: the toy profile's 64-wide tiny-toy SAM 2 (`TOY_SAM2`) + tiny DINOv2 at 128 px; paper: SAM 2.0 Hiera-S + DINOv2 ViT-B/14 at 512.
Measures eval episodes/s (1-shot, full forward incl. priors), the same with the frozen-feature
cache serving every image (`engine.cache.FeatureCache`: hashing + lookup + the post-encoder
forward, the steady state of an evaluation whose images recur; the images are hashed on the CPU,
as `FeatureCache.step` does in evaluation), the same with the encoders' outputs handed over
directly (no hashing: the bound of any cache), train images/s (forward + Dice + backward + AdamW
step; train mode, so dropout is on), peak memory (CUDA: max allocated; CPU: the process's max
RSS) and the parameter counts (trainable / frozen). --compile adds the cached and handed-over
numbers with `model.compile_post_encoder()`, measured last so that training stays eager.
--fused-attention builds the model with `FSSAM(fused_attention=True)` (SCMA through
`F.scaled_dot_product_attention` with the calibration bias as an additive mask; equal up to
rounding); the JSON records `fused_attention` either way.
The JSON file is rewritten after each phase: a run cut short by a timeout keeps what it measured.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import torch

import fss_sam2
from fss_sam2.engine.cache import FeatureCache, image_key
from fss_sam2.loading import SWITCHES
from fss_sam2.model import FSSAM
from fss_sam2.toy.sam2_standin import TOY_SAM2

PROFILES = {
    "toy": dict(sam2=TOY_SAM2, dino="tiny-toy", image_size=128, eval_batch=8, train_batch=8),
    "paper": dict(sam2="small", dino="vitb14", image_size=512, eval_batch=8, train_batch=8),
}
# --dtype spellings: the trainer's (auto/bf16/fp16/fp32) and torch's (kept for older commands)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32,
          "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """auto: bf16 on CUDA if supported, else fp16 on CUDA; fp32 on CPU (the trainer's policy)."""
    cuda = torch.device(device).type == "cuda"
    if name == "auto":
        if not cuda:
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if DTYPES[name] == torch.float16 and not cuda:
        raise SystemExit("--dtype fp16 needs a CUDA device (CPU autocast: use bf16 or fp32)")
    return DTYPES[name]


def episode_batch(b: int, k: int, size: int, device) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    query = torch.rand(b, 3, size, size, generator=g) * 255
    supports = torch.rand(b, k, 3, size, size, generator=g) * 255
    masks = torch.zeros(b, k, size, size, dtype=torch.long)
    masks[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    label = masks[:, 0].clone()
    return tuple(t.to(device) for t in (query, supports, masks, label))


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats: int, warmup: int) -> float:
    """Median seconds per call after warm-up."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def first_call_s(fn, device) -> float:
    """Seconds of one call (for torch.compile: the compilation, which happens on the first call)."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def autocast(device, dtype):
    kind = torch.device(device).type
    if dtype == torch.float32:
        return torch.autocast(kind, enabled=False)
    return torch.autocast(kind, dtype=dtype)


def peak_memory_gib(device) -> float:
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def run(profile: str, device: str, dtype: torch.dtype, repeats: int, warmup: int, eval_batch=None,
        train_batch=None, compile: bool = False, emit=lambda result: None, fused_attention: bool = False) -> dict:
    """The measurements as a dict; `emit(result)` is called after each phase (partial results)."""
    p = PROFILES[profile]
    cuda = torch.device(device).type == "cuda"
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = fss_sam2.load_model(sam2=p["sam2"], dino=p["dino"], image_size=p["image_size"], device=device)
    if fused_attention:  # a constructor option, not a config switch: the same modules and switches
        switches = {name: getattr(model, name) for name in SWITCHES}
        model = FSSAM(model.sam2, model.prompt_generator.dino, **switches, fused_attention=True).to(device).eval()
    build_s = time.perf_counter() - t0
    trainable = sum(x.numel() for x in model.parameters() if x.requires_grad)
    total = sum(x.numel() for x in model.parameters())
    size, eb, tb = p["image_size"], eval_batch or p["eval_batch"], train_batch or p["train_batch"]
    result = {
        "profile": profile,
        "weights": "random",
        "device": torch.cuda.get_device_name(torch.device(device)) if cuda else platform.processor() or "cpu",
        "device_type": torch.device(device).type,
        "threads": torch.get_num_threads(),
        "dtype": str(dtype).removeprefix("torch."),
        "compile": compile,
        "fused_attention": fused_attention,
        "image_size": size,
        "params_trainable_M": round(trainable / 1e6, 3),
        "params_frozen_M": round((total - trainable) / 1e6, 3),
        "params_total_M": round(total / 1e6, 3),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "build_s": round(build_s, 2),
        "repeats": repeats,
        "warmup": warmup,
    }
    emit(result)

    q, s, m, _ = episode_batch(1, 1, size, device)
    with torch.inference_mode(), autocast(device, dtype):
        result["forward_1shot_batch1_s"] = round(timed(lambda: model(q, s, m), device, repeats, warmup), 5)
    emit(result)

    q_cpu, s_cpu, m_cpu, _ = episode_batch(eb, 1, size, "cpu")  # hashed by the cache on the CPU
    q, s, m = (t.to(device) for t in (q_cpu, s_cpu, m_cpu))
    with torch.inference_mode(), autocast(device, dtype):
        sec = timed(lambda: model(q, s, m), device, repeats, warmup)
    result.update(eval_batch=eb, eval_episodes_per_s=round(eb / sec, 2))
    emit(result)

    cache = FeatureCache()
    images = torch.cat([q_cpu, s_cpu.flatten(0, 1)])  # the B + B*K images the cache hashes
    with torch.inference_mode(), autocast(device, dtype):
        given = cache.features(model, q_cpu, s_cpu, device)  # fill: every later call is served by the cache
        misses = cache.misses

        def cached():
            return model(q, s, m, features=cache.features(model, q_cpu, s_cpu, device))

        def handed_over():
            return model(q, s, m, features=given)

        sec = timed(cached, device, repeats, warmup)
        result["eval_cached_episodes_per_s"] = round(eb / sec, 2)
        # should be 0: a miss means the cache's memory budget evicted entries and the encoders ran
        result["eval_cached_misses"] = cache.misses - misses
        # the cache's own cost: SHA-256 of the batch's B + B*K images on the CPU
        result["cache_hash_s"] = round(timed(lambda: [image_key(x) for x in images], "cpu", repeats, 0), 5)
        sec = timed(handed_over, device, repeats, warmup)
        result["eval_features_given_episodes_per_s"] = round(eb / sec, 2)
    emit(result)

    model.train()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3, weight_decay=0.0)
    # fp16 needs loss scaling (as the trainer does); bf16 and fp32 do not
    scaler = torch.amp.GradScaler(torch.device(device).type, enabled=dtype == torch.float16)
    q, s, m, label = episode_batch(tb, 1, size, device)

    def step():
        with autocast(device, dtype):
            loss = model.loss(model(q, s, m), label)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    sec = timed(step, device, repeats, warmup)
    result.update(train_batch=tb, train_images_per_s=round(tb / sec, 2), train_step_s=round(sec, 4))
    result["peak_memory_gib"] = round(peak_memory_gib(device), 3)  # eval + train, before any compile
    result["peak_memory_kind"] = "cuda max_allocated" if cuda else "process max RSS"
    emit(result)

    if compile:
        model.eval()
        opt.zero_grad(set_to_none=True)
        model.compile_post_encoder()
        q, s, m = (t.to(device) for t in (q_cpu, s_cpu, m_cpu))
        with torch.inference_mode(), autocast(device, dtype):
            result["compile_s"] = round(first_call_s(cached, device), 2)  # the first call compiles
            sec = timed(cached, device, repeats, warmup)
            result["eval_cached_compiled_episodes_per_s"] = round(eb / sec, 2)
            sec = timed(handed_over, device, repeats, warmup)
            result["eval_features_given_compiled_episodes_per_s"] = round(eb / sec, 2)
        emit(result)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="toy")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["auto", *DTYPES], default="auto",
                    help="autocast dtype; auto: bf16 on CUDA if supported, else fp16 on CUDA; fp32 on CPU")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", "--eval-batch", dest="batch", type=int,
                    help="eval batch (episodes); default: the profile's (8)")
    ap.add_argument("--train-batch", type=int, help="train batch (images); default: the profile's (8)")
    ap.add_argument("--compile", action="store_true",
                    help="also measure with model.compile_post_encoder() (torch.compile)")
    ap.add_argument("--fused-attention", action="store_true",
                    help="build the model with FSSAM(fused_attention=True): SCMA through SDPA with the bias as a mask")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    dtype = resolve_dtype(a.dtype, a.device)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def emit(result: dict) -> None:
        out.write_text(json.dumps(result, indent=1) + "\n")

    result = run(a.profile, a.device, dtype, a.repeats, a.warmup, a.batch, a.train_batch, a.compile, emit,
                 fused_attention=a.fused_attention)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
