"""Episode lists, transforms and the episode datasets on a tiny PASCAL-layout root."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from fss_sam2.data.episode_dataset import EpisodeDataset, TrainEpisodeDataset, binarise, collate
from fss_sam2.data.episodes import Episode, make_episodes, read_episodes_csv, write_episodes_csv
from fss_sam2.data.sources import ListSource
from fss_sam2.data.transforms import FILL, blur, pad_crop, rotate, train_transform, val_transform
from tests.fixtures_data import write_tiny_root


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return ListSource(write_tiny_root(tmp_path_factory.mktemp("tiny")))


# --- episode lists -----------------------------------------------------------------------------


def test_walk_follows_list_order_and_draws_valid_episodes(source):
    fl = source.fold_list("val", 0)
    episodes = make_episodes(source, fold=0, shot=2, episodes=30, seed=7)
    assert len(episodes) == 30 > len(fl.items)  # the list is walked more than once
    for n, ep in enumerate(episodes):
        query = fl.items[n % len(fl.items)]
        assert ep.query == query.id
        assert ep.cls in source.novel(0)
        assert ep.cls in np.unique(source.load_label(query))
        assert len(set(ep.supports)) == 2 and ep.query not in ep.supports
        assert set(ep.supports) <= {it.id for it in fl.by_class[ep.cls]}


def test_query_with_two_novel_classes_gets_both_over_passes(source):
    hits = [
        (fold, i, set(source.novel(fold)))
        for fold in range(4)
        for i, it in enumerate(source.fold_list("val", fold).items)
        if set(source.novel(fold)) <= set(np.unique(source.load_label(it)).tolist())
    ]
    assert hits, "the fixture should hold a val image with both novel classes of a fold"
    fold, i, novel = hits[0]
    n = len(source.fold_list("val", fold).items)
    episodes = make_episodes(source, fold=fold, shot=1, episodes=40 * n)
    assert {ep.cls for k, ep in enumerate(episodes) if k % n == i} == novel


def test_train_split_uses_base_classes(source):
    episodes = make_episodes(source, fold=1, shot=1, episodes=40, split="train")
    assert {ep.cls for ep in episodes} <= set(source.base(1))
    assert {ep.query for ep in episodes} <= {it.id for it in source.fold_list("train", 1).items}


def test_same_seed_gives_identical_csv_bytes(source, tmp_path):
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    write_episodes_csv(a, make_episodes(source, 0, 2, episodes=25, seed=321))
    write_episodes_csv(b, make_episodes(source, 0, 2, episodes=25, seed=321))
    write_episodes_csv(c, make_episodes(source, 0, 2, episodes=25, seed=322))
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    assert a.read_text().splitlines()[0] == "query,class,supports"
    assert read_episodes_csv(a) == make_episodes(source, 0, 2, episodes=25, seed=321)


def test_csv_errors_name_file_and_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        read_episodes_csv(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("query,cls,supports\n")
    with pytest.raises(ValueError, match="bad.csv.*header"):
        read_episodes_csv(bad)
    bad.write_text("query,class,supports\nimg_1,x,img_2\n")
    with pytest.raises(ValueError, match="bad.csv:2.*not an integer"):
        read_episodes_csv(bad)
    bad.write_text("query,class,supports\nimg_1,3\n")
    with pytest.raises(ValueError, match="bad.csv:2"):
        read_episodes_csv(bad)


def test_too_few_images_for_k_shots_is_a_clear_error(source):
    with pytest.raises(ValueError, match=r"class \d.*sub_class_file_list_0.txt \(fold 0\).*20-shot"):
        make_episodes(source, fold=0, shot=20, episodes=5)


# --- transforms --------------------------------------------------------------------------------


def test_val_transform_stretches_bilinear_and_nearest():
    image = np.zeros((1, 2, 3), np.uint8)
    image[0, 1] = 100
    label = np.array([[1, 255]], np.uint8)
    img, lab = val_transform(image, label, 4)
    assert img.shape == (3, 4, 4) and img.dtype == torch.float32
    assert lab.shape == (4, 4) and lab.dtype == torch.int64
    # half-pixel bilinear (cv2 INTER_LINEAR): source x = (x + 0.5) / 2 - 0.5 -> 0, 25, 75, 100
    assert img[0, 0].tolist() == [0, 25, 75, 100]
    assert lab[0].tolist() == [1, 1, 255, 255]  # nearest never invents values


def test_blur_is_the_5x5_binomial_kernel():
    image = np.zeros((9, 9, 3), np.float32)
    image[4, 4] = 256
    out = blur(image)
    k = np.array([1, 4, 6, 4, 1])
    np.testing.assert_allclose(out[2:7, 2:7, 0], np.outer(k, k), atol=1e-4)
    assert out[..., 1].sum() == pytest.approx(256)


def test_rotate_fills_uncovered_pixels():
    image = np.full((40, 40, 3), 7, np.float32)
    label = np.ones((40, 40), np.uint8)
    img, lab = rotate(image, label, 10)
    assert lab[0, 0] == 255 and lab[20, 20] == 1
    np.testing.assert_allclose(img[0, 0], FILL, atol=1e-3)
    np.testing.assert_allclose(img[20, 20], 7, atol=1e-3)


def test_pad_crop_pads_with_mean_and_ignore():
    image = np.full((20, 24, 3), 9, np.float32)
    img, lab = pad_crop(image, np.zeros((20, 24), np.uint8), 32, np.random.default_rng(0))
    assert img.shape == (32, 32, 3) and lab.shape == (32, 32)
    assert lab[0, 0] == 255 and lab[16, 16] == 0  # 6 rows / 4 columns of padding each side
    np.testing.assert_allclose(img[0, 0], FILL)


def test_pad_crop_keeps_most_of_the_foreground():
    label = np.zeros((64, 64), np.uint8)
    label[30:38, 10:18] = 1  # 64 pixels; a single random 40 x 40 crop keeps them with p = 11/25
    image = np.zeros((64, 64, 3), np.float32)
    for seed in range(20):
        _, lab = pad_crop(image, label, 40, np.random.default_rng(seed))
        assert (lab == 1).sum() >= 0.85 * 64


def test_train_transform_is_driven_by_the_generator():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (50, 70, 3)).astype(np.uint8)
    label = np.zeros((50, 70), np.uint8)
    label[10:30, 20:50] = 1
    label[0] = 255
    a = train_transform(image, label, 48, np.random.default_rng(5))
    b = train_transform(image, label, 48, np.random.default_rng(5))
    outs = [train_transform(image, label, 48, np.random.default_rng(s)) for s in range(6, 12)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert any(not torch.equal(a[0], o[0]) for o in outs)
    assert a[0].shape == (3, 48, 48) and a[1].shape == (48, 48) and a[1].dtype == torch.int64
    assert set(torch.unique(a[1]).tolist()) <= {0, 1, 255}
    assert 0 <= a[0].min() and a[0].max() <= 255


# --- datasets ----------------------------------------------------------------------------------


def test_binarise_keeps_ignore_and_rejects_foreign_values():
    label = np.array([[0, 3, 5], [255, 3, 1]], np.uint8)
    assert binarise(label, 3, 8, "x.png").tolist() == [[0, 1, 0], [255, 1, 0]]
    with pytest.raises(ValueError, match="x.png.*value 9"):
        binarise(np.array([[9]], np.uint8), 3, 8, "x.png")


def test_episode_dataset_sample(source):
    episodes = make_episodes(source, fold=0, shot=2, episodes=6)
    data = EpisodeDataset(source, episodes, fold=0, size=40)
    s = data[3]
    ep, query = episodes[3], data.items[episodes[3].query]
    assert s["query"].shape == (3, 40, 40) and s["query"].dtype == torch.float32
    assert s["supports"].shape == (2, 3, 40, 40) and s["support_masks"].shape == (2, 40, 40)
    assert s["cls"] == ep.cls and s["index"] == 3
    raw = source.load_label(query)
    assert s["raw_label"].tolist() == binarise(raw, ep.cls, 8, "").tolist()
    for m in (s["query_label"], *s["support_masks"]):
        assert m.dtype == torch.int64 and set(torch.unique(m).tolist()) <= {0, 1, 255}
        assert (m == 1).any()
    batch = collate([data[0], data[1]])
    assert batch["supports"].shape == (2, 2, 3, 40, 40) and len(batch["raw_label"]) == 2


def test_fold_is_inferred_from_val_episodes_only(source):
    assert EpisodeDataset(source, make_episodes(source, fold=2, shot=1, episodes=5)).fold == 2
    train = make_episodes(source, fold=1, shot=1, episodes=5, split="train")
    with pytest.raises(ValueError, match="pass fold="):
        EpisodeDataset(source, train[:1], split="train")  # one base class is base in 3 folds
    assert EpisodeDataset(source, train, fold=1, split="train")[0]["cls"] == train[0].cls


def test_empty_support_mask_warns(source):
    fl = source.fold_list("val", 0)
    without = next(it for it in fl.by_class[2] if 1 not in np.unique(source.load_label(it)))
    episode = Episode(fl.by_class[1][0].id, 1, (without.id,))
    with pytest.warns(UserWarning, match=f"{without.label}.*empty"):
        sample = EpisodeDataset(source, [episode], size=32)[0]
    assert not (sample["support_masks"] == 1).any()


def test_unknown_episode_id_is_a_clear_error(source):
    with pytest.raises(KeyError, match="nope.*lists/val fold 0"):
        EpisodeDataset(source, [Episode("nope", 1, ("img_040",))], fold=0)


def _all(data, workers):
    loader = DataLoader(data, batch_size=3, num_workers=workers, collate_fn=collate)
    return [b for b in loader]


def test_train_mode_is_identical_for_any_number_of_workers(source):
    episodes = make_episodes(source, fold=0, shot=1, episodes=6)
    data = EpisodeDataset(source, episodes, fold=0, size=32, train=True, seed=3)
    a, b = _all(data, 0), _all(data, 2)
    for x, y in zip(a, b):
        for key in ("query", "query_label", "supports", "support_masks"):
            assert torch.equal(x[key], y[key])
    data.set_epoch(1)
    assert not torch.equal(data[0]["query"], a[0]["query"][0])


def test_train_episode_dataset_draws_base_episodes_per_epoch(source):
    data = TrainEpisodeDataset(source, fold=1, shot=1, size=32, seed=5)
    assert len(data) == len(source.fold_list("train", 1).items)
    first = [data[i] for i in range(len(data))]
    assert all(s["cls"] in source.base(1) for s in first)
    assert torch.equal(data[2]["query"], first[2]["query"])  # (seed, epoch, index) fixes a sample
    data.set_epoch(1)
    again = [data[i] for i in range(len(data))]
    assert any(not torch.equal(a["supports"], b["supports"]) for a, b in zip(first, again))
