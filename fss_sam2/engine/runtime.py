"""Where and how a run computes: device, torchrun process group, autocast, compile, atomic writes.

Precision policy (docs/deviations.md, "Mixed precision"): bf16 autocast on GPUs that support
it, fp16 on other GPUs, fp32 on the CPU; an autocast is a context around one step or one
evaluation, never global.
"""
from __future__ import annotations

import atexit
import contextlib
import errno
import json
import os
import random
import shutil
import socket
import time
import uuid
import warnings
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


# errno values of a write that ran out of room: disk full, file-size limit, quota
NO_SPACE = frozenset(e for e in (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", None)) if e is not None)


class NoSpaceLeft(OSError):
    """A file could not be written for lack of space (ENOSPC, EFBIG, EDQUOT). An OSError with
    `errno` and `filename` set; str() is one line naming the file."""

    def __init__(self, path: str | Path, cause: OSError, kept: str):
        super().__init__(cause.errno, f"no space left to write it ({cause.strerror or cause}); {kept}", str(path))

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def no_space_cause(e: BaseException) -> OSError | None:
    """The OSError of `e` or of the exceptions it was raised from or during (torch.save turns a
    failed write into a RuntimeError raised while handling the OSError) whose errno says the
    disk (or the file-size limit, or the quota) is full; None if there is none."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in NO_SPACE:
            return e
        e = e.__cause__ or e.__context__
    return None


def atomic_write(path: str | Path, write: Callable, *, shared: bool = False, durable: bool = False) -> None:
    """Write `path` through a temporary file in the same folder, then rename it over `path`:
    a reader sees the old file or the new one, never a partial one, and a failed write leaves
    the old file as it was. `write(f)` fills the binary file object f.

    shared: several processes may write `path` at once (e.g. DDP ranks filling one cache);
    each then writes its own uniquely named temporary file. Otherwise the temporary name is
    fixed, so the next write replaces what a killed writer left. durable: fsync the file and
    its folder before returning (checkpoints).

    A write that runs out of space (disk full, file-size limit, quota) raises `NoSpaceLeft`
    naming `path`, with `path` as it was."""
    with atomic_path(path, shared=shared) as tmp:
        with open(tmp, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
    if durable:
        folder = os.open(Path(path).parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


@contextlib.contextmanager
def atomic_path(path: str | Path, shared: bool = False):
    """`atomic_write` for writers that take a file name: yields a temporary path next to `path`,
    renamed over `path` when the block ends without an error (else removed, `path` as it was;
    `NoSpaceLeft` naming `path` when the disk is full). `shared` as in `atomic_write`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = f".{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp" if shared else ".tmp"
    tmp = path.with_name(f".{path.name}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        cause = no_space_cause(e)
        if cause is not None:
            kept = "the previous file is unchanged" if path.exists() else "nothing was written"
            raise NoSpaceLeft(path, cause, kept) from None
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """`atomic_write` of a UTF-8 text file (results, records)."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


# -- one writer per run folder ----------------------------------------------------------------

LOCK_FILE = ".lock"


class FolderBusy(FileExistsError):
    """Another live process holds the lock of a run folder."""


def _process_start(pid: int) -> str | None:
    """When process `pid` started (Linux: /proc/PID/stat field 22, in clock ticks since boot), to
    tell a live process from a later one that reuses its pid; None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # fields after the command name; 22 is the 20th


def _alive(pid: int, start: str | None) -> bool:
    """Whether process `pid` of this host runs (and is the one that started at `start`)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    now = _process_start(pid)
    return start is None or now is None or now == start


class FolderLock:
    """`folder/.lock`, created atomically (O_CREAT | O_EXCL) and holding the pid, host name and
    start time of its owner: one writer per run folder. `acquire()` refuses a folder whose lock
    belongs to a live process (FolderBusy, naming the folder and the pid) and takes over, with
    a warning, a stale one (its process no longer runs on this host). `release()` (also run at
    exit) removes the lock if it is still ours, and the folder if the lock made it and it is
    empty. A lock of another host cannot be checked: it is refused, and the message says
    which file to delete if that process is gone."""

    def __init__(self, folder: str | Path, what: str = "fss-sam2 train"):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.what = what
        self.token: str | None = None
        self.made_folder = False

    def _record(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid()),
                "time": time.strftime("%Y-%m-%d %H:%M:%S"), "what": self.what, "token": uuid.uuid4().hex}

    def _read(self) -> dict | None:
        try:
            record = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def acquire(self) -> FolderLock:
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"{self.folder}: is a file, expected a run folder")
        self.made_folder = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            record = self._record()
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_stale()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(record) + "\n")
            self.token = record["token"]
            atexit.register(self.release)
            return self
        raise FolderBusy(f"{self.folder}: could not take {self.path} (other processes keep taking it)")

    def _take_over_stale(self) -> None:
        """Remove the existing lock if its owner is gone; raise FolderBusy if it is alive."""
        record = self._read()
        if record is None:  # being written by its owner right now, or damaged
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return  # released meanwhile: try again
            if age < 10:
                raise FolderBusy(f"{self.folder}: another process is taking {self.path}; "
                                 f"wait for it to end or choose another --out")
            warnings.warn(f"{self.path}: unreadable lock file of {age:.0f} s ago; taking the folder over")
        else:
            pid, host = int(record.get("pid", -1)), record.get("host")
            owner = f"pid {pid} on {host}, since {record.get('time', '?')}"
            if host != socket.gethostname():
                raise FolderBusy(f"{self.folder}: {record.get('what', 'another process')} ({owner}) writes into this "
                                 f"folder; wait for it to end or choose another --out (if that process is gone, "
                                 f"delete {self.path})")
            if _alive(pid, record.get("start")):
                raise FolderBusy(f"{self.folder}: {record.get('what', 'another process')} ({owner}) is writing into "
                                 f"this folder; wait for it to end or choose another --out")
            warnings.warn(f"{self.path}: stale lock of {owner}, which no longer runs; taking the folder over")
        if self._read() == record:  # still the lock judged stale, not a new owner's
            self.path.unlink(missing_ok=True)

    def release(self) -> None:
        if self.token is None:
            return
        record = self._read()
        if record is not None and record.get("token") == self.token:
            self.path.unlink(missing_ok=True)
        self.token = None
        atexit.unregister(self.release)
        if self.made_folder:
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # only if empty: a run that failed before writing anything

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
