"""Plumbing for the tutorial notebooks, so that they stay narrative: one `setup` call gives the
data, the models and model-ready episodes of a profile; a few helpers score what
`FSSAM.trace` keeps of the forward (attention shares, IoU of soft maps).

Profiles:
  toy    the synthetic world (generated once, reused when the same world is on disk), tiny SAM 2
         / DINOv2 stand-ins pretrained on it (`fss_sam2.toy.standins`, cached), 128 px, CPU.
         Every number and figure carries the label SYNTHETIC.
  paper  a prepared PASCAL-5i / COCO-20i root, SAM 2.0 Hiera-S + DINOv2-B/14 at 512 px (other
         sizes and image sizes on request: `setup(sam2=, dino=, image_size=)`). Numbers carry
         no label unless the weights are random (`Tutorial.tag` is then "  [random weights]").
"""
from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..constants import IGNORE, SYNTHETIC
from ..data.episode_dataset import EpisodeDataset, collate
from ..data.episodes import Episode, draw_supports, make_episodes
from ..data.folds import NUM_FOLDS
from ..data.sources import ListSource
from ..loading import load_model
from ..metrics import binary_iou
from ..toy import standins
from ..toy.sam2_standin import TOY_SAM2
from ..toy.world import SMOKE_WORLD, TOY_WORLD, ensure_toy_world

PROFILES = ("toy", "paper")
IMAGE_SIZE = {"toy": 128, "paper": 512}
EPISODE_SEED = 321  # the official evaluation seed


def in_colab() -> bool:
    """True inside Google Colab."""
    return "google.colab" in sys.modules


# ---- the session object ----


@dataclass
class Tutorial:
    """What a notebook works with: the data source, the image size, models and episodes."""

    profile: str
    device: torch.device
    source: ListSource
    image_size: int
    cache_dir: Path
    fold: int = 0
    seed: int = 0
    pretrained: bool = True
    checkpoint: str | None = None
    sam2: str = "small"
    dino: str = "vitb14"
    sam2_checkpoint: str | None = None
    dino_checkpoint: str | None = None
    weights: str = ""  # what the last model() was built from: "pretrained", "random", "checkpoint"

    @property
    def synthetic(self) -> bool:
        return self.source.dataset == "toy"

    @property
    def label(self) -> str:
        """The tag every number and figure of this session carries."""
        tags = [SYNTHETIC] if self.synthetic else []
        if self.weights == "random":
            tags.append("random weights")
        return ", ".join(tags)

    @property
    def tag(self) -> str:
        """The label as a suffix for printed lines: "  [label]", or "" when there is none (real
        data, pretrained weights), so that `print(f"mIoU 0.41{tut.tag}")` never prints `[]`."""
        return f"  [{self.label}]" if self.label else ""

    def title(self, text: str) -> str:
        return f"{text}\n[{self.label}]" if self.label else text

    def class_name(self, cls: int) -> str:
        return self.source.class_names[int(cls) - 1]

    # -- models --
    def model(self, **switches):
        """FSSAM in eval mode on the session device (switches: see `FSSAM`)."""
        if self.profile == "toy":
            paths = (standins.ensure_toy_standins(self.source.root, self.cache_dir, seed=self.seed,
                                                  device=self.device)
                     if self.pretrained else None)
            if not self.pretrained and self.checkpoint is None:
                print(f"note: pretrained=False (smoke run): random weights [{SYNTHETIC}]")
            sam2_ckpt, dino_ckpt = (paths["sam2"], paths["dino"]) if paths else (None, None)
            sizes = {"sam2": TOY_SAM2, "dino": "tiny-toy"}
        else:
            sam2_ckpt, dino_ckpt = self.sam2_checkpoint, self.dino_checkpoint
            sizes = {"sam2": self.sam2, "dino": self.dino}
            if self.checkpoint is None and not (sam2_ckpt and dino_ckpt):
                print("WARNING: no checkpoint, sam2_checkpoint or dino_checkpoint given: RANDOM WEIGHTS")
        self.weights = ("checkpoint" if self.checkpoint else
                        "pretrained" if sam2_ckpt and dino_ckpt else "random")
        torch.manual_seed(self.seed)  # random parts are reproducible
        return load_model(self.checkpoint, image_size=self.image_size, device=self.device,
                          sam2_checkpoint=sam2_ckpt, dino_checkpoint=dino_ckpt, **sizes, **switches)

    # -- episodes --
    def episodes(self, fold: int, shot: int, n: int = 1000, seed: int = EPISODE_SEED) -> list[Episode]:
        """The official walk over the val list of `fold` (see `make_episodes`)."""
        return make_episodes(self.source, fold, shot, episodes=n, seed=seed)

    def episode(self, fold: int, cls: int, shot: int, seed: int = 0) -> Episode:
        """One episode of class `cls` (a novel class of `fold`): a random query showing it and
        `shot` other images of it, drawn by `seed`."""
        if cls not in self.source.novel(fold):
            raise ValueError(f"class {cls} is not a novel class of fold {fold} ({self.source.novel(fold)})")
        pool = self.source.fold_list("val", fold).by_class.get(cls, [])
        if not pool:
            raise ValueError(f"class {cls} has no images in the val list of fold {fold} under {self.source.root}")
        rng = np.random.default_rng(seed)
        query = pool[int(rng.integers(len(pool)))]
        supports = draw_supports({cls: pool}, cls, query, shot, rng, f"val fold {fold}")
        return Episode(query.id, cls, tuple(s.id for s in supports))

    def dataset(self, episodes: Sequence[Episode], fold: int | None = None) -> EpisodeDataset:
        """Model-ready samples (evaluation transform, this profile's image size)."""
        return EpisodeDataset(self.source, episodes, size=self.image_size, fold=fold)

    def batches(self, episodes: Sequence[Episode], batch_size: int = 8, fold: int | None = None) -> Iterator[dict]:
        """Collated batches on the session device (`raw_label` stays a list on the CPU)."""
        loader = DataLoader(self.dataset(episodes, fold), batch_size=batch_size, collate_fn=collate)
        for batch in loader:
            yield {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}

    def batch(self, episodes: Sequence[Episode], fold: int | None = None) -> dict:
        """All `episodes` as one batch."""
        return next(self.batches(episodes, len(episodes), fold))

    def fold_table(self) -> pd.DataFrame:
        """Per fold: its novel classes, how many base classes, train and val list sizes."""
        rows = []
        for f in range(NUM_FOLDS):
            rows.append({
                "fold": f,
                "novel classes (val)": ", ".join(f"{c} {self.class_name(c)}" for c in self.source.novel(f)),
                "base classes (train)": len(self.source.base(f)),
                "train images": len(self.source.fold_list("train", f).items),
                "val images": len(self.source.fold_list("val", f).items),
            })
        return pd.DataFrame(rows).set_index("fold")


def setup(
    profile: str = "toy",
    device: str = "cpu",
    data_root: str | Path | None = None,
    cache_dir: str | Path | None = None,
    *,
    smoke: bool = False,
    fold: int = 0,
    seed: int = 0,
    checkpoint: str | None = None,
    sam2: str | None = None,
    dino: str | None = None,
    sam2_checkpoint: str | None = None,
    dino_checkpoint: str | None = None,
    image_size: int | None = None,
    progress: bool = True,
) -> Tutorial:
    """Prepare a tutorial session.

    toy: `data_root` (default build/toy) gets the synthetic world unless the same one is already
    there (`smoke`: a 160-image world, and random weights instead of pretraining the stand-ins);
    `checkpoint` may name one of our toy training checkpoints. paper: `data_root` is a prepared
    PASCAL / COCO root; weights come from `checkpoint` (ours or the authors') or the SAM 2.0 /
    DINOv2 files (`sam2` / `dino` name their sizes, None: small / vitb14; explicit files win over
    the ones our checkpoints' configs name). `image_size`: the model's square input (None: the
    profile's, 128 toy / 512 paper; a smaller one makes a CPU run of the paper profile possible).
    `cache_dir` (default next to data_root) holds stand-ins and episode lists.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r}: expected one of {PROFILES}")
    if profile == "toy":
        root = Path(data_root or "build/toy")
        settings = SMOKE_WORLD if smoke else TOY_WORLD
        made = ensure_toy_world(root, settings, progress)
        print(f"{SYNTHETIC}: {settings['images']} images of ~{settings['size']} px in {root} "
              f"({'generated' if made else 'reused'})")
    else:
        if data_root is None:
            raise ValueError("profile='paper' needs data_root= (a root prepared by `fss-sam2 data pascal|coco`)")
        root = Path(data_root)
    source = ListSource(root)
    cache = Path(cache_dir) if cache_dir is not None else root.parent / "cache"
    size = IMAGE_SIZE[profile] if image_size is None else int(image_size)
    if size < 64 or size % 16:
        raise ValueError(f"image_size={image_size}: must be a multiple of 16 and at least 64 (paper: 512)")
    return Tutorial(
        profile=profile, device=torch.device(device), source=source, image_size=size,
        cache_dir=cache, fold=fold, seed=seed, pretrained=not smoke, checkpoint=checkpoint,
        sam2=sam2 or "small", dino=dino or "vitb14", sam2_checkpoint=sam2_checkpoint,
        dino_checkpoint=dino_checkpoint,
    )


# ---- probes into the forward pass (read from `FSSAM.trace`) ----


def trace(model, batch: dict, **options):
    """`model.trace` of a collated batch (see `FSSAM.trace` for the options)."""
    return model.trace(batch["query"], batch["supports"], batch["support_masks"], **options)


def attention_mass(query_attention: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Share of each query pixel's attention that lands on the query-memory locations of
    `region` (B,h,w) bool, averaged over heads and query pixels: (B,H,n,N) -> (B,)."""
    r = region.flatten(1).to(query_attention.dtype)  # (B,N)
    return (query_attention * r[:, None, None]).sum(-1).mean((1, 2))


def label_on_grid(label: torch.Tensor, grid) -> torch.Tensor:
    """A {0,1,255} label (B,S,S) -> (B,h,w) by nearest sampling (the support-mask rule)."""
    return F.interpolate(label[:, None].float(), size=grid, mode="nearest")[:, 0].long()


def binary_scores(prob: torch.Tensor, label: torch.Tensor, threshold: float = 0.5) -> dict[str, torch.Tensor]:
    """Per-episode IoU, precision and recall of `prob` >= threshold against a {0,1,255} label
    (B,H,W), ignore pixels left out. prob (B,h,w) or (B,1,h,w) of any size is resized to the
    label's (bilinear, align_corners=True, as evaluation resizes logits)."""
    p = prob if prob.dim() == 4 else prob[:, None]
    if p.shape[-2:] != label.shape[-2:]:
        p = F.interpolate(p.float(), size=label.shape[-2:], mode="bilinear", align_corners=True)
    pred = p[:, 0] >= threshold  # (B,H,W)
    valid = label != IGNORE
    gt = (label == 1) & valid
    pred = pred & valid
    inter = (pred & gt).flatten(1).sum(1).float()
    eps = 1e-10
    return {
        "iou": binary_iou(pred, gt, empty=0.0),
        "precision": inter / (pred.flatten(1).sum(1) + eps),
        "recall": inter / (gt.flatten(1).sum(1) + eps),
    }


# ---- the episode explorer ----


def episode_grid(tut: Tutorial, fold: int = 0, shot: int = 1, seed: int = 0):
    """A static figure: one episode of every novel class of `fold`."""
    from . import viz

    eps = [tut.episode(fold, c, shot, seed) for c in tut.source.novel(fold)]
    data = tut.dataset(eps, fold)
    return viz.show_episode([data[i] for i in range(len(data))], class_names=tut.source.class_names,
                            title=tut.title(f"fold {fold}: one {shot}-shot episode per novel class (seed {seed})"))


def episode_explorer(tut: Tutorial, fold: int = 0, shot: int = 1, seed: int = 0):
    """ipywidgets controls (fold, class, shot, seed) redrawing one episode."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    from . import viz

    def options(f):
        return [(f"{c} {tut.class_name(c)}", c) for c in tut.source.novel(f)]

    fold_w = w.Dropdown(options=list(range(NUM_FOLDS)), value=fold, description="fold")
    cls_w = w.Dropdown(options=options(fold), description="class")
    shot_w = w.IntSlider(value=shot, min=1, max=5, description="shot")
    seed_w = w.IntText(value=seed, description="seed")
    fold_w.observe(lambda change: setattr(cls_w, "options", options(change["new"])), names="value")

    def draw(fold, cls, shot, seed):
        if cls not in tut.source.novel(fold):  # between the fold change and the class update
            return
        try:
            sample = tut.dataset([tut.episode(fold, cls, shot, seed)], fold)[0]
        except ValueError as err:  # e.g. too few images of the class for this shot
            print(err)
            return
        viz.show_episode(sample, class_names=tut.source.class_names, title=tut.title(f"fold {fold}, seed {seed}"))
        plt.show()

    out = w.interactive_output(draw, {"fold": fold_w, "cls": cls_w, "shot": shot_w, "seed": seed_w})
    return w.VBox([w.HBox([fold_w, cls_w]), w.HBox([shot_w, seed_w]), out])
