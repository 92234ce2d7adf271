"""Training: one process, or one process per GPU under `torchrun` (DDP), resumable bit for bit.

The release's loop: AdamW over the model's trainable groups, poly lr per iteration over
epochs x iterations, Dice loss, validation at epoch ends (and mid-epoch by the configured
rule), early stopping on val mIoU. What differs on purpose (docs/deviations.md): autocast per
step instead of a global one, no GradScaler with bf16 ("Mixed precision"); checkpoints hold
only the trainable state ("Checkpoints"); `torchrun` env variables, the backend by device, one
evaluation on rank 0 ("Distributed training").

Determinism: the data order of an epoch is a function of (seed, epoch), a sample of
(seed, epoch, index) (TrainEpisodeDataset), and each step reseeds torch from (seed, step, rank)
(dropout). A run stopped after any step and resumed from its last.pt therefore ends with the
same weights as an uninterrupted run (on CPU; GPU kernels may add their own nondeterminism;
docs/deviations.md, "Training sampling and resume").

A model (built by `model_factory(cfg.model)`) must provide
  model(query (B,3,S,S) 0..255, supports (B,K,3,S,S), support_masks (B,K,S,S)) -> logits (B,S,S)
  model.loss(logits, query_label (B,S,S) {0,1,255}) -> scalar
  model.trainable_parameters() -> [{"name": str, "params": [...]}, ...]
  model.trainable_state_dict() / model.load_trainable_state_dict(sd)
"""
from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import DictConfig
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..config import to_dict, with_resolved_weights
from ..data import open_source
from ..data.episode_dataset import TrainEpisodeDataset, collate
from ..data.episodes import make_episodes, write_episodes_csv
from ..model import FSSAM
from .cache import FeatureCache
from .checkpoint import (FORMAT, RESUME_FREE, atomic_save, config_diff, load_checkpoint, require_entries, rng_state,
                         set_rng_state)
from .evaluate import call_model, evaluate
from .runtime import (NO_SPACE, FolderBusy, FolderLock, NoSpaceLeft, Processes, atomic_path, atomic_write,
                      atomic_write_text, autocast, autocast_dtype, seed_everything, setup_processes)
from .schedule import RankBatches, epoch_order, mid_epoch_batch, poly_lr, step_seed

LOG_COLUMNS = ("step", "epoch", "loss", "lr", "seconds", "val_miou", "val_fb_iou")
# what a run writes besides last.pt that a fresh run would overwrite (val_episodes.csv is a
# function of the config and is rewritten; a log.csv without rows holds nothing)
RUN_FILES = ("best.pt", "log.csv", "summary.json", "tensorboard")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; nothing was saved after the last good checkpoint."""


@dataclass
class Progress:
    """The position of a run; stored in every checkpoint."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch, 0-based
    batch: int = 0  # next batch of that epoch
    improved: bool = False  # the current epoch has improved the best val mIoU so far
    since_best: int = 0  # finished epochs without improvement (early stopping counter)
    best_miou: float = -1.0
    best_epoch: float = -1.0  # e + 0.5 for a mid-epoch validation, e + 1 at the end of epoch e
    best_step: int = 0
    loss_sum: float = 0.0  # loss of the steps since the last log row
    loss_count: int = 0
    seconds: float = 0.0  # training time of earlier processes of this run


class CsvLog:
    """out/log.csv: a row per `log_every` steps (and at the end), one per validation, flushed.
    On resume the file is appended to; rows after the checkpoint's step (work that was lost)
    are dropped first (the kept rows are rewritten atomically: a crash never loses them)."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        if resume_step is None:  # a fresh run (the trainer refuses a log.csv holding rows)
            self.file = path.open("w", newline="")
            self.writer = csv.DictWriter(self.file, LOG_COLUMNS)
            self._guard(self.writer.writeheader)
            return
        rows, complete = [], False
        if path.is_file():
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                every = list(reader)
                complete = tuple(reader.fieldnames or ()) == LOG_COLUMNS
            fields = tuple(reader.fieldnames or ())
            if "step" not in fields or not set(fields) <= set(LOG_COLUMNS):
                raise ValueError(f"{path}: not a log of this trainer (columns {', '.join(fields) or 'none'}; expected "
                                 f"{', '.join(LOG_COLUMNS)}); move it away to resume the run")
            rows = [r for n, r in enumerate(every, 2) if _log_step(r["step"], path, n) <= resume_step]
            complete = complete and len(rows) == len(every) and path.read_bytes().endswith(b"\n")
        if not complete:
            def write(f):
                text = io.StringIO(newline="")
                writer = csv.DictWriter(text, LOG_COLUMNS)
                writer.writeheader()
                writer.writerows(rows)
                f.write(text.getvalue().encode())
            atomic_write(path, write)
        self.file = path.open("a", newline="")
        self.writer = csv.DictWriter(self.file, LOG_COLUMNS)

    def _guard(self, write: Callable, *args) -> None:
        try:
            write(*args)
            self.file.flush()
        except OSError as e:
            if e.errno in NO_SPACE:
                raise NoSpaceLeft(self.path, e, "the rows written before are kept") from None
            raise

    def write(self, **row) -> None:
        self._guard(self.writer.writerow, row)

    def close(self) -> None:
        self.file.close()


class Trainer:
    """One run: build everything, then `run()` until max steps, the schedule's end or early stop."""

    def __init__(self, cfg: DictConfig, model_factory: Callable, out: Path, resume: bool, progress: bool, procs: Processes):
        self.cfg, self.out, self.procs = cfg, out, procs
        d, t = cfg.data, cfg.train
        self.config = {**to_dict(cfg), "out": str(out)}
        self.dtype = autocast_dtype(procs.device, t.precision)
        ckpt = self._read_resume_checkpoint() if resume else None
        if ckpt is None:
            self._refuse_earlier_run()

        seed_everything(t.seed)  # the frozen parts of a random-weight model must be the same on resume
        self.model = model_factory(cfg.model).to(procs.device)
        self.source = open_source(d.dataset, d.root)
        self.train_set = TrainEpisodeDataset(
            self.source, d.fold, d.shot, size=d.image_size, seed=t.seed, scale=tuple(d.train_scale)
        )
        self.iters = len(self.train_set) // t.batch_size  # iterations per epoch (drop_last)
        if self.iters == 0:
            raise ValueError(
                f"{d.root}: fold {d.fold} has {len(self.train_set)} training images, fewer than train.batch_size={t.batch_size}"
            )
        self.max_it = t.epochs * self.iters
        self.total = self.max_it if t.max_steps is None else min(self.max_it, t.max_steps)
        self.optimizer = torch.optim.AdamW(self.model.trainable_parameters(), lr=t.lr, weight_decay=t.weight_decay)
        self.scaler = torch.amp.GradScaler(procs.device.type, enabled=self.dtype == torch.float16)  # fp16 only
        self.progress = Progress()
        self.lr = t.lr  # of the latest step
        self.metrics: dict = {}
        if ckpt is not None:
            self.model.load_trainable_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            if ckpt["scaler"]:
                self.scaler.load_state_dict(ckpt["scaler"])
            self.progress = Progress(**ckpt["progress"])
            self.metrics = ckpt["metrics"]
            set_rng_state(ckpt["rng"])
        self.saved_step = self.progress.step if ckpt is not None else None
        if t.compile:
            self.model.compile()
        self.net = self.model
        # the frozen encoders see the same validation images every time: cache their outputs
        self.val_cache = FeatureCache() if isinstance(self.model, FSSAM) else None
        if procs.world > 1:
            ids = [procs.device.index] if procs.device.type == "cuda" else None
            # find_unused_parameters: some trainable heads (IoU, object score) get no gradient, as released
            self.net = DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=True, broadcast_buffers=False)

        self.show = progress and procs.main
        self.val_episodes = []
        self.log = self.board = None
        if procs.main:
            self.val_episodes = make_episodes(self.source, d.fold, d.shot, episodes=d.val_episodes, seed=d.val_seed,
                                              split="val", stream=d.stream, stream_workers=d.stream_workers)
            out.mkdir(parents=True, exist_ok=True)
            with atomic_path(out / "val_episodes.csv") as tmp:
                write_episodes_csv(tmp, self.val_episodes)
            self.log = CsvLog(out / "log.csv", self.progress.step if ckpt is not None else None)
            if t.tensorboard:
                self.board = _summary_writer(out / "tensorboard")
        self.start_time = time.perf_counter()

    def _refuse_earlier_run(self) -> None:
        """A fresh run never overwrites another run's files (FileExistsError naming them)."""
        out = self.out
        if (out / "last.pt").exists():
            raise FileExistsError(f"{out}: already holds a run (last.pt); continue it with --resume {out} or choose another --out")
        earlier = [name for name in RUN_FILES if (out / name).exists() and not (name == "log.csv" and _no_rows(out / name))]
        if earlier:
            raise FileExistsError(f"{out}: holds files of an earlier run ({', '.join(earlier)}) but no last.pt to resume "
                                  f"from; choose another --out, or move them away to train afresh in {out}")

    def _read_resume_checkpoint(self) -> dict:
        path = self.out / "last.pt"
        ckpt = require_entries(load_checkpoint(path), path)
        diff = config_diff(ckpt["config"], self.config, RESUME_FREE)
        if diff:
            raise ValueError(
                f"{path}: the run's config differs from the one given in {len(diff)} key(s): {'; '.join(diff)} "
                f"(a resumed run may change only {', '.join(RESUME_FREE)})"
            )
        return ckpt

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> dict:
        p = self.progress
        self.model.train()
        bar = tqdm(total=self.total, initial=p.step, unit="step", desc="train", disable=not self.show, dynamic_ncols=True)
        stopped = "early_stop" if p.since_best >= self.cfg.train.early_stop else None  # a finished run
        try:
            while stopped is None:
                if p.step >= self.total:
                    stopped = "max_steps" if p.step < self.max_it else "epochs"
                    break
                self._run_epoch(bar)
                if p.batch == self.iters:
                    stopped = self._end_epoch()
            flush = p.loss_count > 0  # the last, partial window of steps
            if flush:
                self._log_loss()
            if flush or self.saved_step != p.step:
                self._save_last()  # (again, if needed, so that it holds the emptied window)
        finally:
            bar.close()
            if self.log is not None:
                self.log.close()
            if self.board is not None:
                self.board.close()
        return self._summary(stopped)

    def _run_epoch(self, bar) -> None:
        t, p = self.cfg.train, self.progress
        self.train_set.set_epoch(p.epoch)
        mid = mid_epoch_batch(p.epoch, self.iters, t.mid_epoch_val_from)
        for batch in self._loader(p.epoch, p.batch):
            loss = self._step(batch)
            p.loss_sum += loss
            p.loss_count += 1
            if p.step % t.log_every == 0:
                self._log_loss()
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{self.lr:.2e}", epoch=p.epoch, refresh=False)
            if p.batch - 1 == mid:
                self._validate(p.epoch + 0.5)
            if t.save_every and p.step % t.save_every == 0 and p.batch < self.iters:
                self._save_last()  # epoch ends save after their validation
            if p.step >= self.total:
                return

    def _loader(self, epoch: int, start: int) -> DataLoader:
        t, d, procs = self.cfg.train, self.cfg.data, self.procs
        batches = RankBatches(epoch_order(t.seed, epoch, len(self.train_set)), t.batch_size, start, procs.rank, procs.world)
        return DataLoader(
            self.train_set, batch_sampler=batches, num_workers=d.workers, collate_fn=collate,
            pin_memory=procs.device.type == "cuda",
            generator=torch.Generator().manual_seed(t.seed),  # keeps the global RNG untouched
        )

    def _step(self, batch: dict) -> float:
        """One optimizer step; returns the loss (mean over processes)."""
        t, p, device = self.cfg.train, self.progress, self.procs.device
        it = p.step + 1
        self.lr = poly_lr(t.lr, it, self.max_it, t.power, t.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        torch.manual_seed(step_seed(t.seed, it, self.procs.rank))
        query, supports, masks, label = (
            batch[k].to(device, non_blocking=True) for k in ("query", "supports", "support_masks", "query_label")
        )
        with autocast(device, t.precision):
            logits = self.net(query, supports, masks)  # (B,S,S)
        loss = self.model.loss(logits.float(), label)
        value = self._mean_over_processes(loss.detach())
        if not math.isfinite(value):
            kept = (f"{self.out / 'last.pt'} (step {self.saved_step}) is the last good checkpoint"
                    if self.saved_step is not None else "no checkpoint had been written yet")
            raise TrainingDiverged(
                f"step {it} (epoch {p.epoch}): the loss is {value}; training stopped, {kept}. "
                "Try a lower train.lr or train.precision=fp32."
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        p.step, p.batch = it, p.batch + 1
        return value

    def _mean_over_processes(self, x: torch.Tensor) -> float:
        """Mean of a scalar over the job (one host sync; NaN anywhere gives NaN everywhere)."""
        if self.procs.world > 1:
            x = x.float().clone()
            dist.all_reduce(x)
            x /= self.procs.world
        return float(x)

    def _end_epoch(self) -> str | None:
        t, p = self.cfg.train, self.progress
        if (p.epoch + 1) % t.val_every == 0:
            self._validate(p.epoch + 1.0)
        p.since_best = 0 if p.improved else p.since_best + 1
        p.epoch, p.batch, p.improved = p.epoch + 1, 0, False
        self._save_last()
        if p.since_best >= t.early_stop:
            return "early_stop"
        if p.epoch >= t.epochs:
            return "epochs"
        return None

    # -- validation, checkpoints, logs ------------------------------------------------------

    def _validate(self, epoch: float) -> None:
        d, p, procs = self.cfg.data, self.progress, self.procs
        result, details = torch.zeros(2, dtype=torch.float64), {}
        if procs.main:
            with autocast(procs.device, self.cfg.train.precision):
                r = evaluate(self.model, self.source, self.val_episodes, fold=d.fold, size=d.image_size, split="val",
                             device=procs.device, batch_size=d.val_batch, num_workers=d.workers, progress=False,
                             step=self.val_cache.step if self.val_cache else call_model)
            result = torch.tensor([r["miou"], r["fb_iou"]], dtype=torch.float64)
            details = {"piou": float(r["piou"]), "episodes": int(r["episodes"]),
                       "per_class": {int(c): float(v) for c, v in r["per_class"].items()}}  # plain types
        if procs.world > 1:  # only rank 0 evaluates; everyone takes its numbers
            result = result.to(procs.device)
            dist.broadcast(result, src=0)
        miou, fb_iou = result.tolist()
        self.metrics = {"step": p.step, "epoch": epoch, "miou": miou, "fb_iou": fb_iou, **details}
        if miou > p.best_miou:
            p.best_miou, p.best_epoch, p.best_step, p.improved = miou, epoch, p.step, True
            if procs.main:
                atomic_save(self._checkpoint(full=False), self.out / "best.pt")
        self._log(val_miou=miou, val_fb_iou=fb_iou)
        if self.show:
            tqdm.write(f"epoch {epoch:g} step {p.step}: val mIoU {100 * miou:.2f}  FB-IoU {100 * fb_iou:.2f}  "
                       f"(best {100 * p.best_miou:.2f} at epoch {p.best_epoch:g})")

    def _checkpoint(self, full: bool) -> dict:
        """Everything needed to resume (full) or just to evaluate (best.pt)."""
        progress = asdict(self.progress)
        progress["seconds"] = self._seconds()
        return {
            "format": FORMAT,
            "config": self.config,
            "model": self.model.trainable_state_dict(),
            "optimizer": self.optimizer.state_dict() if full else None,
            "scaler": self.scaler.state_dict() if full and self.scaler.is_enabled() else None,
            "progress": progress,
            "max_it": self.max_it,
            "rng": rng_state() if full else None,
            "metrics": self.metrics,
        }

    def _save_last(self) -> None:
        if self.procs.main:
            atomic_save(self._checkpoint(full=True), self.out / "last.pt")
        self.saved_step = self.progress.step

    def _seconds(self) -> float:
        return self.progress.seconds + time.perf_counter() - self.start_time

    def _log_loss(self) -> None:
        """A row with the mean loss of the steps since the previous row."""
        p = self.progress
        self._log(loss=p.loss_sum / p.loss_count, lr=self.lr)
        p.loss_sum, p.loss_count = 0.0, 0

    def _log(self, loss: float | None = None, lr: float | None = None, val_miou: float | None = None,
             val_fb_iou: float | None = None) -> None:
        if self.log is None:
            return
        step = self.progress.step
        self.log.write(step=step, epoch=f"{step / self.iters:.4f}", loss="" if loss is None else f"{loss:.6f}",
                       lr="" if lr is None else f"{lr:.6e}", seconds=f"{self._seconds():.1f}",
                       val_miou="" if val_miou is None else f"{val_miou:.6f}",
                       val_fb_iou="" if val_fb_iou is None else f"{val_fb_iou:.6f}")
        if self.board is not None:
            for name, value in (("train/loss", loss), ("train/lr", lr), ("val/miou", val_miou), ("val/fb_iou", val_fb_iou)):
                if value is not None:
                    self.board.add_scalar(name, value, step)

    def _summary(self, stopped: str | None) -> dict:
        p = self.progress
        summary = {
            "out": str(self.out), "stopped": stopped, "steps": p.step, "epochs": p.step / self.iters,
            "iterations_per_epoch": self.iters, "max_it": self.max_it,
            "best_miou": p.best_miou if p.best_miou >= 0 else None, "best_epoch": p.best_epoch if p.best_miou >= 0 else None,
            "last_val": self.metrics or None, "seconds": round(self._seconds(), 1),
            "processes": self.procs.world, "device": str(self.procs.device),
            "precision": str(self.dtype).replace("torch.", "") if self.dtype else "fp32",
            "dataset": self.source.dataset, "synthetic": self.source.dataset == "toy",
        }
        if self.procs.main:
            atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=1) + "\n")
        return summary


def _log_step(value, path: Path, line: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{path}:{line}: step {value!r} is not an integer (a damaged log; move it away to "
                         "resume the run)") from None


def _no_rows(log: Path) -> bool:
    """Whether a log.csv holds no row (a header at most)."""
    try:
        with log.open(newline="") as f:
            return sum(1 for _ in f) <= 1
    except OSError:
        return False


def _summary_writer(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ImportError("train.tensorboard=true needs the tensorboard package (pip install tensorboard)") from None
    return SummaryWriter(str(path))


def train(cfg: DictConfig, model_factory: Callable, out_dir: str | Path | None = None, resume: bool = False,
          progress: bool = True) -> dict:
    """Train (or, with resume, continue the run in out_dir from out_dir/last.pt); returns a summary.

    out_dir defaults to cfg.out. Under torchrun every process calls this; only rank 0 writes.
    One writer per folder: rank 0 holds out_dir/.lock while the run lasts (FolderBusy, a
    FileExistsError, when another live process holds it). A fresh run refuses a folder holding
    another run's files (FileExistsError naming them); a resumed one appends to its log.
    """
    cfg = with_resolved_weights(cfg)
    out = Path(out_dir if out_dir is not None else cfg.out)
    if out.exists() and not out.is_dir():
        named = "out_dir" if out_dir is not None else "the config's `out`"
        raise ValueError(f"{out}: is a file, expected the run folder ({named})")
    procs = setup_processes(cfg.train.device)
    lock = None
    try:
        lock = _lock_run_folder(out, procs)
        return Trainer(cfg, model_factory, out, resume, progress, procs).run()
    finally:
        if lock is not None:
            lock.release()
        if procs.owns_group:
            dist.destroy_process_group()


def _lock_run_folder(out: Path, procs: Processes) -> FolderLock | None:
    """Rank 0 takes out/.lock (one writer per run folder: `runtime.FolderLock`); under torchrun
    every rank learns whether it did, so that all stop together when it could not."""
    lock, error = None, None
    if procs.main:
        try:
            lock = FolderLock(out, "fss-sam2 train").acquire()
        except (OSError, ValueError) as e:
            error = e
    if procs.world > 1:
        flag = torch.tensor([0 if error is not None else 1], device=procs.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        if error is None and not flag.item():
            raise FolderBusy(f"{out}: rank 0 could not take the run folder's lock (see its error)")
    if error is not None:
        raise error
    return lock


