"""The memory probes of notebook 02 (`fss_sam2.tutorial.memory_study`)."""
from __future__ import annotations


import pytest
import torch

from fss_sam2.tutorial import memory_study as ms
from fss_sam2.toy.world import generate_toy_world
from fss_sam2.loading import load_model
from fss_sam2.toy.sam2_standin import evaluate_tracking

SIZE = 128


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """21 clips of 3 frames: classes 1..20 once, class 1 twice (clips 0 and 20)."""
    root = tmp_path_factory.mktemp("memory_study") / "toy"
    generate_toy_world(root, seed=0, size=64, images=80, clips=21, clip_frames=3, progress=False)
    return root


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    """2 clips of 3 frames."""
    root = tmp_path_factory.mktemp("memory_study_small") / "toy"
    generate_toy_world(root, seed=1, size=64, images=80, clips=2, clip_frames=3, progress=False)
    return root


@pytest.fixture(scope="module")
def naive():
    torch.manual_seed(0)
    return load_model(sam2="tiny-toy", dino="tiny-toy", image_size=SIZE, query_memory=False)


def test_read_memory_is_the_naive_model(naive, world):
    samples = ms.clip_pairs(world, SIZE)[:3]
    query = torch.stack([s["query"] for s in samples])
    supports = torch.stack([s["supports"] for s in samples])
    masks = torch.stack([s["support_masks"] for s in samples])
    read = ms.read_memory(naive, query, supports, masks)
    with torch.no_grad():
        expected = naive(query, supports, masks)
    assert torch.equal(read.logits, expected)
    assert read.grid == (8, 8) and read.shots == 1
    assert len(read.attention) == len(naive.sam2.memory_attention.layers)
    assert read.attention[0].shape[-2:] == (64, 64 + 4)  # query pixels x (support tokens + 4 pointers)
    torch.testing.assert_close(read.attention[0].sum(-1), torch.ones(read.attention[0].shape[:-1]))
    pixel = torch.zeros(8, 8, dtype=torch.bool)
    pixel[2, 5] = True
    maps = read.support_attention(1, pixel)
    assert maps[0].shape == (1, 8, 8)
    torch.testing.assert_close(maps[1].flatten(), read.attention[1][1].mean(0)[2 * 8 + 5, :64])
    assert maps[0].sum() < 1  # the rest goes to the pointers
    both = pixel.clone()
    both[0, 0] = True
    torch.testing.assert_close(read.support_attention(1, both)[0],
                               (maps[0] + read.attention[0][1].mean(0)[0, :64].view(1, 8, 8)) / 2)
    with pytest.raises(ValueError, match="non-empty"):
        read.support_attention(1, torch.zeros(8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="query_memory=False"):
        ms.read_memory(load_model(sam2="tiny-toy", dino="tiny-toy", image_size=SIZE), query, supports, masks)


def test_clip_pairs(world):
    same = ms.clip_pairs(world, SIZE)
    assert len(same) == 21 * 2 and [s["gap"] for s in same[:2]] == [1, 2]
    assert same[0]["query"].shape == (3, SIZE, SIZE) and same[0]["supports"].shape == (1, 3, SIZE, SIZE)
    other = ms.clip_pairs(world, SIZE, other_instance=True)
    assert len(other) == 2 * 2 and {s["cls"] for s in other} == {1}  # clips 0 <-> 20 only
    # the other clip's frame, not the support's own clip
    assert not torch.equal(other[0]["query"], same[0]["query"])
    assert torch.equal(other[0]["supports"], same[0]["supports"])
    assert torch.equal(other[2]["query"], same[0]["query"])  # clip 20 -> frame 1 of clip 0
    empty = ms.with_empty_memory(same)
    assert len(empty) == len(same) and all(not e["support_masks"].any() for e in empty)
    assert same[0]["support_masks"].any() and torch.equal(empty[0]["query"], same[0]["query"])


def test_study_of_clip_pairs_is_the_tracking_check(naive, small_world):
    df = ms.study(naive, ms.clip_pairs(small_world, SIZE), batch_size=8)
    assert ms.clip_pairs(small_world, SIZE, other_instance=True) == []  # two classes, one clip each
    assert len(df) == 4 and set(df.columns) == {"cls", "iou", "object -> object", "background -> object", "on pointers"}
    tracking = evaluate_tracking(naive.sam2, small_world, batch_size=8)
    assert df["iou"].mean() == pytest.approx(tracking["miou"], abs=1e-6)


def test_attention_shares_by_hand():
    attn = torch.zeros(1, 1, 4, 4 + 4)  # (B,heads,n,L): a 2x2 grid, one support, 4 pointer tokens
    attn[0, 0, 0, 1] = 0.6  # query pixel 0 (object): 0.6 on support location 1 (object)
    attn[0, 0, 0, 4:] = 0.1  # ... and 0.4 on pointers
    attn[0, 0, 1:, 2] = 1.0  # the other pixels (background): all on support location 2 (background)
    read = ms.MemoryRead(torch.zeros(1, 32, 32), [attn, attn], shots=1, grid=(2, 2))
    query_label = torch.tensor([[[1, 0], [0, 255]]]).repeat_interleave(16, 1).repeat_interleave(16, 2)
    support_mask = torch.tensor([[[[0, 1], [0, 0]]]]).repeat_interleave(16, 2).repeat_interleave(16, 3)
    shares = ms.attention_shares(read, query_label, support_mask)
    assert shares["object -> object"].tolist() == pytest.approx([0.6])
    assert shares["background -> object"].tolist() == pytest.approx([0.0])
    assert shares["on pointers"].tolist() == pytest.approx([0.1])  # 0.4 of one pixel in 4
    empty = ms.attention_shares(read, torch.zeros_like(query_label), support_mask)
    assert torch.isnan(empty["object -> object"]).all()
