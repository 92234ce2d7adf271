"""`make demo` pins PyTorch's CPU code path and thread count (Makefile, PINNED): the settings are
honoured and a pinned forward repeats bit for bit. (Why the pin: on this project's machines an
AVX512 and an AVX2 kernel path, or 1 and 2 threads, give other logits in the last bits, and a
training run amplifies such bits into other toy numbers; docs/toy_world.md, "Reproducible toy numbers".)"""
from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import hashlib, torch
from fss_sam2.loading import load_model
torch.manual_seed(0)
model = load_model(None, image_size=64, sam2="tiny-toy", dino="tiny-toy").eval()
g = torch.Generator().manual_seed(1)
q, s = torch.rand(1, 3, 64, 64, generator=g) * 255, torch.rand(1, 1, 3, 64, 64, generator=g) * 255
m = (torch.rand(1, 1, 64, 64, generator=g) > 0.5).long()
with torch.no_grad():
    out = model(q, s, m)
print(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads(), hashlib.sha256(out.numpy().tobytes()).hexdigest())
"""


def pinned_env() -> dict[str, str]:
    line = next(ln for ln in (ROOT / "Makefile").read_text().splitlines() if ln.startswith("PINNED :="))
    return dict(re.findall(r"(\w+)=(\S+)", line.split(":=", 1)[1]))


def probe(env: dict[str, str]) -> list[str]:
    base = {k: v for k, v in os.environ.items() if k not in pinned_env()}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, cwd=ROOT, capture_output=True, text=True,
                         check=True)
    return out.stdout.split()


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the pin names x86-64 instruction sets")
def test_the_pinned_code_path_and_threads_are_honoured_and_repeatable():
    env = pinned_env()
    assert set(env) >= {"ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS"}
    first, second = probe(env), probe(env)
    assert first[:2] == ["AVX2", env["OMP_NUM_THREADS"]]
    assert first == second
