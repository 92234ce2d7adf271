"""Toy stand-ins: SAM 2 clip pretraining, DINOv2 pretraining on rendered scenes, the cache."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fss_sam2.backbones.dinov2 import build_dinov2
from fss_sam2.backbones.sam2_model import build_sam2_model, encode_image
from fss_sam2.model import FSSAM, split_features
from fss_sam2.toy import dino_standin, sam2_standin, standins
from fss_sam2.toy.dino_standin import (
    DinoPretrainConfig,
    RenderedScenes,
    pretrain_toy_dino,
)
from fss_sam2.toy.sam2_standin import (
    TOY_SAM2,
    Sam2PretrainConfig,
    evaluate_tracking,
    pretrain_toy_sam2,
)
from fss_sam2.toy.standins import ensure_toy_standins
from fss_sam2.toy.world import NUM_TOY_CLASSES, generate_toy_world, make_image

SIZE = 64  # model side in these tests (the toy profile uses 128)
SAM_CFG = Sam2PretrainConfig(image_size=SIZE, batch=2, clips=3, lr=1e-3, warmup=3, prompt_weight=1.0)
DINO_CFG = DinoPretrainConfig(image_size=SIZE, images=60, batch=8, lr=3e-3, warmup=3)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    generate_toy_world(root, seed=0, size=64, images=80, clips=2, clip_frames=3, progress=False)
    return root


def _changed(before: dict, after: dict, prefix: str) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))


def test_sam2_pretraining_learns_and_saves_a_loadable_release_file(world, tmp_path):
    out = tmp_path / "sam2.pt"
    metrics = pretrain_toy_sam2(world, out, steps=30, seed=0, progress=False, config=SAM_CFG)
    assert len(metrics["losses"]) == 30
    assert metrics["loss_last"] < 0.7 * metrics["loss_first"], metrics
    assert metrics["train_iou_last"] > metrics["train_iou_first"] + 0.1, metrics  # tracks better
    saved = torch.load(out, weights_only=True)
    assert set(saved) == {"model"}  # SAM 2.0 release layout
    assert {v.dtype for v in saved["model"].values() if v.is_floating_point()} == {torch.float16}  # shipped size
    trained = build_sam2_model(TOY_SAM2, SIZE, checkpoint=out).state_dict()
    torch.manual_seed(0)  # the initialisation the pretraining started from, rounded as the file is
    init = {k: v.half().float() for k, v in build_sam2_model(TOY_SAM2, SIZE).state_dict().items()}
    for part in ("image_encoder.", "memory_encoder.", "memory_attention.", "sam_mask_decoder."):
        assert _changed(init, trained, part), f"{part} did not train"


def test_tracking_path_is_fssam_support_as_memory(world):
    """The path pretraining and evaluate_tracking use is FSSAM(query_memory=False), 1 shot."""
    torch.manual_seed(1)
    sam = build_sam2_model(TOY_SAM2, SIZE)
    query, support = torch.rand(2, 3, SIZE, SIZE) * 255, torch.rand(2, 3, SIZE, SIZE) * 255
    mask = (torch.rand(2, SIZE, SIZE) > 0.6).long()
    with torch.no_grad():
        fs, fq = split_features(encode_image(sam, torch.cat([support, query])), 2)
        out, _ = sam2_standin._track(sam2_standin.tracker(sam), fs, mask.float()[:, None], fq)
        ours = out.all_logits[torch.arange(2), out.all_iou.argmax(1)]
        naive = FSSAM(sam, build_dinov2("tiny-toy"), query_memory=False).eval()(query, support[:, None], mask[:, None])
    torch.testing.assert_close(ours, naive)


def test_evaluate_tracking_scores_every_frame_of_the_clips_on_disk(world):
    torch.manual_seed(0)
    result = evaluate_tracking(build_sam2_model(TOY_SAM2, SIZE), world)
    assert result["frames"] == 2 * (3 - 1)
    assert len(result["iou_by_gap"]) == 2
    assert 0 <= result["miou"] <= 1 and 0 <= result["iou"] <= 1


def test_dino_pretraining_renders_its_own_scenes_and_reads_no_dataset_file(world, tmp_path):
    """The DINOv2 stand-in sees scenes rendered apart from the dataset (never a train or val
    image): it trains from a copy of the world that holds nothing but its clip settings."""
    bare = tmp_path / "bare"
    (bare / "clips").mkdir(parents=True)
    shutil.copy(world / "clips" / "clips.json", bare / "clips" / "clips.json")
    out = tmp_path / "dino.pt"
    metrics = pretrain_toy_dino(bare, out, steps=40, progress=False, config=DINO_CFG)
    assert metrics["loss_last"] < 0.7 * metrics["loss_first"], metrics
    assert metrics["images"] == DINO_CFG.images

    trained = build_dinov2("tiny-toy", checkpoint=out).state_dict()  # hub keys, backbone only
    torch.manual_seed(0)
    init = build_dinov2("tiny-toy").state_dict()
    assert _changed(init, trained, "blocks.") and _changed(init, trained, "patch_embed.")


def test_dino_pretraining_scenes_are_not_the_worlds_images(world, monkeypatch):
    """The rendered scenes are world images at indices far from those on disk, of every class."""
    drawn = []

    def recording(seed, index, size, min_pixels=None):
        drawn.append(index)
        return make_image(seed, index, size, min_pixels)

    monkeypatch.setattr(dino_standin, "make_image", recording)
    meta = sam2_standin.read_clips_meta(world)
    scenes = RenderedScenes(meta["seed"], meta["size"], 60, SIZE, seed=0, progress=False)
    on_disk = len(list((world / "JPEGImages").glob("*.jpg")))
    assert len(drawn) == 60 and min(drawn) >= dino_standin.PRETRAIN_IMAGE_OFFSET > on_disk
    assert scenes.images.shape == (60, 3, SIZE, SIZE) and scenes.labels.shape == (60, SIZE, SIZE)
    assert len(scenes.classes) == NUM_TOY_CLASSES  # 60 scenes show every shape twice or more


def test_ensure_toy_standins_trains_once_then_reads_the_cache(world, tmp_path, monkeypatch):
    kw = dict(progress=False, sam2_steps=2, dino_steps=2, sam2_config=SAM_CFG, dino_config=DINO_CFG)
    first = ensure_toy_standins(world, tmp_path, **kw)
    assert first["trained"] == ["sam2", "dino"]
    build_sam2_model(TOY_SAM2, SIZE, checkpoint=first["sam2"])
    build_dinov2("tiny-toy", checkpoint=first["dino"])

    def no_training(*args, **kwargs):
        raise AssertionError("trained although the cache holds the stand-in")

    monkeypatch.setattr(standins, "pretrain_toy_sam2", no_training)
    monkeypatch.setattr(standins, "pretrain_toy_dino", no_training)
    again = ensure_toy_standins(world, tmp_path, **kw)
    assert again["trained"] == [] and again["sam2"] == first["sam2"] and again["dino"] == first["dino"]
    assert again["sam2_metrics"]["losses"] == first["sam2_metrics"]["losses"]
    monkeypatch.chdir(world.parent)  # the same world written relatively, and a copy elsewhere
    assert ensure_toy_standins(Path(world.name), tmp_path, **kw)["trained"] == []
    copy = shutil.copytree(world, tmp_path.parent / "moved_world")
    assert ensure_toy_standins(copy, tmp_path, **kw)["trained"] == []

    with pytest.raises(AssertionError, match="trained although"):  # other settings: a new key
        ensure_toy_standins(world, tmp_path, **{**kw, "sam2_steps": 3})
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".json", ".pt", ".pt"]  # no temp files


def test_attention_loss_rewards_looking_at_the_object():
    side = 2  # 2x2 grid, 4 memory cells + 4 pointer tokens
    mask_a = torch.tensor([[[1, 0], [0, 0]]])  # the object sits in memory cell 0
    mask_b = torch.tensor([[[1, 0], [0, 255]]])  # query cell 0 is object, cell 3 ignored
    on_target = torch.zeros(1, 1, 4, 8)
    on_target[..., 0, 0] = 1  # the object cell looks at the object
    on_target[..., 1:, 5] = 1  # the others at a pointer
    wrong = torch.zeros(1, 1, 4, 8)
    wrong[..., 0, 5] = 1
    wrong[..., 1:, 0] = 1
    uniform = torch.full((1, 1, 4, 8), 1 / 8)
    losses = [sam2_standin._attention_loss([w], mask_a, mask_b).item() for w in (on_target, wrong, uniform)]
    assert losses[0] == pytest.approx(0, abs=1e-5)
    assert losses[1] > losses[2] > losses[0]
    # by hand for the uniform weights: object cell -log(1/8), the 2 valid background cells -log(7/8)
    assert losses[2] == pytest.approx((-np.log(1 / 8) - 2 * np.log(7 / 8)) / 3, rel=1e-5)
    # a frame a without the object on the grid teaches nothing
    assert sam2_standin._attention_loss([uniform], torch.zeros(1, side, side, dtype=torch.long), mask_b).item() == 0


class _ColourCodedDino(torch.nn.Module):
    """A DINOv2 stand-in for the probe test: each token is the one-hot class that the red channel
    of its patch encodes (red = 12 x class, see `_colour_coded_world`), or a constant when `blind`."""

    def __init__(self, blind: bool = False):
        super().__init__()
        self.blind = blind

    def patch_features(self, x):
        from fss_sam2.modules.prompt_generator import DINO_MEAN, DINO_PATCH, DINO_STD
        red = torch.nn.functional.avg_pool2d(x[:, :1] * DINO_STD[0] + DINO_MEAN[0], DINO_PATCH)  # (N,1,t,t)
        cls = (red / 12).round().long().clamp(0, NUM_TOY_CLASSES)[:, 0]
        if self.blind:
            cls = torch.zeros_like(cls)
        return torch.nn.functional.one_hot(cls, NUM_TOY_CLASSES + 1).permute(0, 3, 1, 2).float()


def _colour_coded_world(root: Path, images: int = 80) -> Path:
    """toy_XXXXX images whose left half shows class (i % 20) + 1 with red = 12 x class, the right
    half background (red 0); labels to match. Images 60-79 are the held-out block (VAL_EVERY)."""
    from PIL import Image
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClassAug").mkdir()
    for i in range(images):
        cls = i % NUM_TOY_CLASSES + 1
        label = np.zeros((64, 64), np.uint8)
        label[:, :32] = cls
        image = np.full((64, 64, 3), 90, np.uint8)
        image[..., 0] = label * 12
        Image.fromarray(image).save(root / "JPEGImages" / f"toy_{i:05d}.jpg", quality=95)
        Image.fromarray(label).save(root / "SegmentationClassAug" / f"toy_{i:05d}.png")
    return root


def test_token_probe_tells_informative_tokens_from_blind_ones(tmp_path):
    root = _colour_coded_world(tmp_path / "world")
    seeing = dino_standin.evaluate_token_probe(_ColourCodedDino(), root, image_size=64)
    blind = dino_standin.evaluate_token_probe(_ColourCodedDino(blind=True), root, image_size=64)
    assert seeing["chance"] == 1 / NUM_TOY_CLASSES
    assert seeing["object tokens"] > 0 and seeing["tokens"] > seeing["object tokens"]  # held-out block only
    assert seeing["object-token accuracy"] > 0.9, seeing
    # the token astride the class / background edge mixes both reds, so not every background token is right
    assert seeing["object vs background accuracy"] > 0.75, seeing
    assert blind["object-token accuracy"] <= 0.1, blind  # one feature for every token: one class at most
    again = dino_standin.evaluate_token_probe(_ColourCodedDino(), root, image_size=64)
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in seeing.items() if k != "seconds"}
    with pytest.raises(FileNotFoundError, match="no toy_"):
        dino_standin.evaluate_token_probe(_ColourCodedDino(), tmp_path / "empty", image_size=64)
