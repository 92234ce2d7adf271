"""Where and how a run computes: device, torchrun process group, autocast, compile, atomic writes.

Precision policy (DESIGN.md §4): bf16 autocast on GPUs that support it, fp16 on other GPUs,
fp32 on the CPU; an autocast is a context around one step or one evaluation, never global.
"""
from __future__ import annotations

import contextlib
import os
import random
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..config import PRECISIONS


@dataclass
class Processes:
    """This process's place in a (possibly single-process) job."""

    rank: int
    world: int
    device: torch.device
    owns_group: bool  # we initialised the process group and must destroy it

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int, world: int) -> torch.device:
    """`train.device` -> a torch device; under torchrun each process takes cuda:LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"train.device={name!r}: CUDA is not available on this machine (use cpu or auto)")
    if name == "cuda":
        return torch.device("cuda", local_rank)
    if name.startswith("cuda:") and world > 1:
        raise ValueError(f"train.device={name!r}: a torchrun job uses cuda (one GPU per process), not a fixed GPU")
    return torch.device(name)


def setup_processes(device_name: str) -> Processes:
    """Read torchrun's RANK / LOCAL_RANK / WORLD_SIZE; join the group (nccl on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(device_name, int(os.environ.get("LOCAL_RANK", "0")), world)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = world > 1 and not dist.is_initialized()
    if owns:
        # rank 0 evaluates alone while the others wait: allow a long validation
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=2))
    return Processes(rank, world, device, owns)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast_dtype(device: str | torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype of a step: None means plain fp32.

    auto: bf16 on CUDA devices that support it, fp16 on other CUDA devices, fp32 on CPU.
    bf16 / fp16 / fp32 force a choice (fp16 needs CUDA; bf16 on CPU uses CPU autocast).
    """
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {PRECISIONS}")
    cuda = device.type == "cuda"
    if precision == "auto":
        if not cuda:
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp16" and not cuda:
        raise ValueError(f"precision='fp16' needs a CUDA device, got {device} (use bf16 or fp32)")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def autocast(device: str | torch.device, precision: str = "auto"):
    """A context manager for one step or evaluation under the precision policy (never global)."""
    device = torch.device(device)
    dtype = autocast_dtype(device, precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def compile_model(model, device: torch.device) -> None:
    """`torch.compile` FSSAM's post-encoder part, or a clear error where it cannot run."""
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        raise ValueError("--compile: torch.compile does not support this Python / torch build; run without --compile")
    compilers = (os.environ.get("CXX"), "g++", "clang++", "c++")
    if device.type == "cpu" and not any(c and shutil.which(c) for c in compilers):
        raise ValueError("--compile: torch.compile needs a C++ compiler on the CPU (g++ or clang++, or $CXX); "
                         "install one or run without --compile")
    model.compile_post_encoder()


def atomic_write(path: str | Path, write: Callable, *, shared: bool = False, durable: bool = False) -> None:
    """Write `path` through a temporary file in the same folder, then rename it over `path`:
    a reader sees the old file or the new one, never a partial one, and a failed write leaves
    the old file as it was. `write(f)` fills the binary file object f.

    shared: several processes may write `path` at once (e.g. DDP ranks filling one cache);
    each then writes its own uniquely named temporary file. Otherwise the temporary name is
    fixed, so the next write replaces what a killed writer left. durable: fsync the file and
    its folder before returning (checkpoints)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = f".{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp" if shared else ".tmp"
    tmp = path.with_name(f".{path.name}{suffix}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def atomic_write_text(path: str | Path, text: str) -> None:
    """`atomic_write` of a UTF-8 text file (results, records)."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
