"""Throughput and memory of FSSAM on random weights (no checkpoints, no data): JSON output.

  python benchmarks/run.py --profile toy   --out benchmarks/results/toy_cpu.json
  python benchmarks/run.py --profile paper --out benchmarks/results/paper_cpu.json [--device cuda]

toy: tiny-toy SAM 2 + tiny DINOv2 at 128 px; paper: SAM 2.0 Hiera-S + DINOv2 ViT-B/14 at 512.
Measures eval episodes/s (1-shot, full forward incl. priors), the same with the frozen-feature
cache serving every image (`engine.cache.FeatureCache`: hashing + lookup + the post-encoder
forward, the steady state of an evaluation whose images recur), train images/s (forward + Dice +
backward + AdamW step), peak memory (CUDA: max allocated; CPU: the process's max RSS), and the
parameter counts (trainable / frozen).
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
from fss_sam2.engine.cache import FeatureCache

PROFILES = {
    "toy": dict(sam2="tiny-toy", dino="tiny-toy", image_size=128, eval_batch=8, train_batch=8),
    "paper": dict(sam2="small", dino="vitb14", image_size=512, eval_batch=8, train_batch=8),
}


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


def autocast(device, dtype):
    kind = torch.device(device).type
    if dtype == torch.float32:
        return torch.autocast(kind, enabled=False)
    return torch.autocast(kind, dtype=dtype)


def peak_memory_gib(device) -> float:
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def run(profile: str, device: str, dtype: torch.dtype, repeats: int, warmup: int, eval_batch=None, train_batch=None) -> dict:
    p = PROFILES[profile]
    torch.manual_seed(0)
    model = fss_sam2.load_model(sam2=p["sam2"], dino=p["dino"], image_size=p["image_size"], device=device)
    trainable = sum(x.numel() for x in model.parameters() if x.requires_grad)
    total = sum(x.numel() for x in model.parameters())
    size, eb, tb = p["image_size"], eval_batch or p["eval_batch"], train_batch or p["train_batch"]
    result = {
        "profile": profile,
        "weights": "random",
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu",
        "device_type": torch.device(device).type,
        "threads": torch.get_num_threads(),
        "dtype": str(dtype).removeprefix("torch."),
        "compile": False,
        "image_size": size,
        "params_trainable_M": round(trainable / 1e6, 3),
        "params_frozen_M": round((total - trainable) / 1e6, 3),
        "params_total_M": round(total / 1e6, 3),
        "torch": torch.__version__,
    }

    q, s, m, _ = episode_batch(1, 1, size, device)
    with torch.inference_mode(), autocast(device, dtype):
        result["forward_1shot_batch1_s"] = timed(lambda: model(q, s, m), device, repeats, warmup)
    q, s, m, _ = episode_batch(eb, 1, size, device)
    with torch.inference_mode(), autocast(device, dtype):
        sec = timed(lambda: model(q, s, m), device, repeats, warmup)
    result.update(eval_batch=eb, eval_episodes_per_s=round(eb / sec, 2))
    cache = FeatureCache()
    with torch.inference_mode(), autocast(device, dtype):
        cache.features(model, q, s)  # fill: every later call is served by the cache
        sec = timed(lambda: model(q, s, m, features=cache.features(model, q, s)), device, repeats, warmup)
    result["eval_cached_episodes_per_s"] = round(eb / sec, 2)

    model.train()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3, weight_decay=0.0)
    q, s, m, label = episode_batch(tb, 1, size, device)

    def step():
        with autocast(device, dtype):
            loss = model.loss(model(q, s, m), label)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    sec = timed(step, device, repeats, warmup)
    result.update(train_batch=tb, train_images_per_s=round(tb / sec, 2), train_step_s=round(sec, 4))
    result["peak_memory_gib"] = round(peak_memory_gib(device), 3)
    result["peak_memory_kind"] = "cuda max_allocated" if device.startswith("cuda") else "process max RSS"
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="toy")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                    help="default: bfloat16 on CUDA with bf16 support, else float32")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--eval-batch", type=int)
    ap.add_argument("--train-batch", type=int)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if a.dtype:
        dtype = getattr(torch, a.dtype)
    elif a.device.startswith("cuda") and torch.cuda.is_bf16_supported():
        dtype = torch.bfloat16
    else:
        dtype = torch.float32
    result = run(a.profile, a.device, dtype, a.repeats, a.warmup, a.eval_batch, a.train_batch)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
