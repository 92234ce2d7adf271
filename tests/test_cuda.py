"""CUDA against CPU: forward (fp32, bf16 autocast), one train step, the paper architecture on CUDA.

Skipped without a CUDA device (no marker to register: a plain skipif). On a lent GPU they run via
`bash benchmarks/gpu_check.sh`. The last test runs everywhere: the script's --dry-run.

The reference is the same tiny-toy model on the CPU in fp32: built once with torch.manual_seed(0),
deep-copied to CUDA, so both sides hold bit-identical weights and see identical inputs.
Random weights give small logits (toy: std ~0.07, |max| ~0.35, about half of them > 0), so the
tolerances below are absolute and the mask IoU is over thresholded logits (> 0).
"""
from __future__ import annotations

import contextlib
import copy
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fss_sam2

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
needs_bf16 = pytest.mark.skipif(not (CUDA and torch.cuda.is_bf16_supported()), reason="needs CUDA with bf16")
DEVICE = "cuda"  # the device compared with the CPU
ROOT = Path(__file__).resolve().parents[1]
SIZE = 128  # tiny-toy image size


@functools.lru_cache(maxsize=1)
def toy_cpu():
    """The CPU fp32 reference (eval mode); copy it before changing it."""
    torch.manual_seed(0)
    return fss_sam2.load_model(sam2="tiny-toy", dino="tiny-toy", image_size=SIZE, device="cpu")


def episode(b: int, k: int, size: int = SIZE):
    """Random images in 0..255, a square support mask with a band of 255 (ignore) around it."""
    g = torch.Generator().manual_seed(1)
    query = torch.rand(b, 3, size, size, generator=g) * 255
    supports = torch.rand(b, k, 3, size, size, generator=g) * 255
    masks = torch.zeros(b, k, size, size, dtype=torch.long)
    q1, q3 = size // 4, 3 * size // 4
    masks[..., q1 - 4 : q3 + 4, q1 - 4 : q3 + 4] = 255
    masks[..., q1:q3, q1:q3] = 1
    label = masks[:, 0].clone()
    return query, supports, masks, label


def to(device, *tensors):
    return tuple(t.to(device) for t in tensors)


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a > 0, b > 0
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


@contextlib.contextmanager
def exact_fp32():
    """No TF32 in matmuls and convolutions (cuDNN convolutions allow it by default): TF32 keeps
    10 mantissa bits (~1e-3 relative), which is not the fp32 this comparison is about."""
    matmul, cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cudnn.allow_tf32 = cudnn


@needs_cuda
@pytest.mark.parametrize("shots", [1, 5])
def test_cuda_fp32_forward_matches_cpu(shots):
    cpu = toy_cpu()
    dev = copy.deepcopy(cpu).to(DEVICE)
    q, s, m, _ = episode(2, shots)
    with torch.inference_mode(), exact_fp32():
        ref = cpu(q, s, m)
        out = dev(*to(DEVICE, q, s, m)).float().cpu()
    assert out.shape == ref.shape == (2, SIZE, SIZE)
    assert torch.isfinite(out).all()
    # atol 1e-3: fp32 on both sides, only the order of reductions differs (cuBLAS / cuDNN / SDPA
    # kernels vs CPU ones), which moves logits by ~1e-6..1e-5 (CPU logits move by 1.5e-6 under a
    # 1e-6 relative weight noise); 1e-3 is ~1.5% of the logit std, so a wrong kernel, a dtype slip
    # or TF32 left on would still fail it.
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-3)
    # IoU >= 0.99: ~12% of the toy's logits lie within 1e-2 of the threshold, so a 1e-5 shift flips
    # ~1e-4 of the pixels; 1% leaves two orders of magnitude of margin.
    assert mask_iou(out, ref) >= 0.99


@needs_bf16
@pytest.mark.parametrize("shots", [1, 5])
def test_cuda_bf16_autocast_close_to_cpu_fp32(shots):
    cpu = toy_cpu()
    dev = copy.deepcopy(cpu).to(DEVICE)
    q, s, m, _ = episode(2, shots)
    with torch.inference_mode():
        ref = cpu(q, s, m)
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            out = dev(*to(DEVICE, q, s, m)).float().cpu()
    assert out.shape == ref.shape == (2, SIZE, SIZE)
    assert torch.isfinite(out).all()
    # atol 0.05: bf16 keeps 8 mantissa bits (relative step 2^-8 ~ 4e-3) and the error accumulates
    # through the encoders, memory attention and decoder; CPU bf16 autocast differs from CPU fp32 by
    # 4.4e-3 at most on these inputs; 0.05 is a ~10x margin for the other kernels, and still ~15%
    # of the logit range, so fp16 overflow or an fp32 path silently dropped to garbage fails it.
    torch.testing.assert_close(out, ref, rtol=0, atol=0.05)
    # IoU >= 0.95: CPU bf16 autocast gives 0.992 against CPU fp32 here; the flipped pixels are the
    # near-threshold ones (random weights put many there), so allow 5%.
    assert mask_iou(out, ref) >= 0.95


def train_step(model, q, s, m, label):
    """One step as in training, dropout off (model in eval mode): the dropout masks come from
    different generators on CPU and CUDA and could never agree. -> loss, grads, updates."""
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4, weight_decay=0.01)  # the toy recipe's lr
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in params.items()}
    loss = model.loss(model(q, s, m), label)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grads = {n: None if p.grad is None else p.grad.detach().cpu() for n, p in params.items()}
    opt.step()
    updates = {n: (p.detach() - before[n]).cpu() for n, p in params.items()}
    return loss.item(), grads, updates


@needs_cuda
def test_cuda_train_step_matches_cpu():
    cpu = copy.deepcopy(toy_cpu())
    dev = copy.deepcopy(cpu).to(DEVICE)
    q, s, m, label = episode(2, 1)
    with exact_fp32():
        loss_cpu, grads_cpu, upd_cpu = train_step(cpu, q, s, m, label)
        loss_dev, grads_dev, upd_dev = train_step(dev, *to(DEVICE, q, s, m, label))
    # the loss is one fp32 number through the whole net: reduction order only, rtol 1e-4
    assert loss_dev == pytest.approx(loss_cpu, rel=1e-4)
    # the same parameters get a gradient (some of SAM 2's heads are unused by FSSAM)
    assert {n for n, g in grads_cpu.items() if g is None} == {n for n, g in grads_dev.items() if g is None}
    names = [n for n, g in grads_cpu.items() if g is not None]
    flat = lambda d, keys: torch.cat([d[n].flatten() for n in keys])  # noqa: E731
    g_cpu, g_dev = flat(grads_cpu, names), flat(grads_dev, names)
    # gradients, relative in the global norm: rounding gives ~1e-6 (1.6e-6 under a 1e-7 relative
    # weight noise on CPU); per element is meaningless here, most of the toy's gradients are ~1e-7
    # and many are rounding noise around 0. 1e-4 still catches any wrong gradient kernel.
    rel = ((g_dev - g_cpu).norm() / g_cpu.norm()).item()
    assert rel <= 1e-4, f"gradients differ by {rel:.2e} (relative, global norm)"
    u_cpu, u_dev = flat(upd_cpu, upd_cpu), flat(upd_dev, upd_cpu)
    # AdamW's first step is lr * g / (|g| + eps) (+ decay): about ±lr wherever |g| >> eps = 1e-8,
    # whatever the rounding, but rounding noise decides it where |g| ~ eps. Hence per element
    # rtol 1e-4 / atol 1e-5 (10% of lr), and at most 1e-5 of the elements (~70 of the toy's 6.7M)
    # outside it, those with a gradient within rounding of 0; the CPU under 1e-7 weight noise had 0.
    outside = (~torch.isclose(u_dev, u_cpu, rtol=1e-4, atol=1e-5)).sum().item()
    assert outside <= 1e-5 * u_cpu.numel(), f"{outside} of {u_cpu.numel()} updates differ"
    rel = ((u_dev - u_cpu).norm() / u_cpu.norm()).item()
    assert rel <= 1e-3, f"updates differ by {rel:.2e} (relative, global norm)"


@needs_cuda
def test_cuda_paper_architecture_forward():
    """SAM 2.0 Hiera-S + DINOv2 ViT-B/14 at 512, random weights: runs, finite, right shape."""
    torch.manual_seed(0)
    model = fss_sam2.load_model(sam2="small", dino="vitb14", image_size=512, device=DEVICE)
    q, s, m, _ = episode(2, 1, size=512)
    with torch.inference_mode():
        out = model(*to(DEVICE, q, s, m))
    assert out.shape == (2, 512, 512)
    assert out.device.type == torch.device(DEVICE).type
    assert torch.isfinite(out).all()


def test_gpu_check_dry_run():
    """Runs everywhere: `gpu_check.sh --dry-run` lists its steps, runs none of them, exits 0."""
    env = dict(os.environ, PYTHON=sys.executable)  # the interpreter running these tests
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for step in ("tests", "toy", "paper_b1", "paper_b8", "paper_b32", "paper_b128"):
        assert f"would run {step}:" in out, out
    if not CUDA:
        assert "CUDA not available: skipping the CUDA steps" in out, out
