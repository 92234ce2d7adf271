"""`predict` and `fss-sam2 predict`: your images of any size, k annotated examples, mask PNGs."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fss_sam2
from fss_sam2.baseline import ColourPrototypeBaseline
from fss_sam2.cli import main
from fss_sam2.data.transforms import val_transform
from fss_sam2.engine.predict import predict, to_mask
from tests.fixtures_data import train_two_steps, write_tiny_toy_root

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "toy.yaml")
CLS = 3  # images i with i % 8 == 2 hold class 3

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_tiny_toy_root(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def checkpoint(root, tmp_path_factory) -> Path:
    return train_two_steps(root, tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def model(checkpoint):
    return fss_sam2.load_model(checkpoint)


def image(root: Path, i: int) -> np.ndarray:
    return np.asarray(Image.open(root / "JPEGImages" / f"img_{i:03d}.png").convert("RGB"))


def truth(root: Path, i: int) -> np.ndarray:
    return np.asarray(Image.open(root / "SegmentationClassAug" / f"img_{i:03d}.png")) == CLS


@pytest.fixture(scope="module")
def files(root, tmp_path_factory) -> dict:
    """A support image + 0/255 mask PNG and a folder of three queries (two sizes, PNG and JPEG)."""
    tmp = tmp_path_factory.mktemp("files")
    support, mask = tmp / "support.png", tmp / "support_mask.png"
    shutil.copy(root / "JPEGImages" / "img_002.png", support)
    Image.fromarray(truth(root, 2).astype(np.uint8) * 255).save(mask)
    queries = tmp / "queries"
    queries.mkdir()
    for i in (10, 18):
        shutil.copy(root / "JPEGImages" / f"img_{i:03d}.png", queries / f"q{i}.png")
    Image.fromarray(image(root, 26)).save(queries / "q26.jpg", quality=95)
    return {"support": support, "mask": mask, "queries": queries}


def direct(model, support, mask, query, size=64) -> np.ndarray:
    """What predict must give: the protocol's stretch resize, one forward, logits back to size."""
    s, m = val_transform(support, mask.astype(np.uint8), size)
    q, _ = val_transform(query, np.zeros(query.shape[:2], np.uint8), size)
    with torch.inference_mode():
        logits = model(q[None], s[None, None], m[None, None])[0]
    return to_mask(logits, query.shape[:2])


def test_predict_equals_a_direct_forward_at_each_query_size(root, model):
    support, mask = image(root, 2), truth(root, 2)
    queries = [image(root, i) for i in (10, 18, 26)]  # sizes cycle through (40,56), (56,48), (56,48) ...
    masks = predict(model, [(support, mask)], queries, batch_size=2)
    assert [m.shape for m in masks] == [q.shape[:2] for q in queries] and all(m.dtype == bool for m in masks)
    for q, m in zip(queries, masks):
        assert np.array_equal(m, direct(model, support, mask, q))
    assert any(m.any() for m in masks) and not all(m.all() for m in masks)  # a real test: mixed masks
    low, high = (predict(model, [(support, mask)], queries[:1], threshold=t)[0] for t in (0.3, 0.7))
    assert (low >= masks[0]).all() and (masks[0] >= high).all()


def test_predict_with_the_colour_baseline_finds_the_object(root):
    """Through a model that works without training: the stretch there and back keeps the object."""
    support, mask = image(root, 2), truth(root, 2)
    masks = predict(ColourPrototypeBaseline(), [(support, mask)], [image(root, i) for i in (10, 18)], size=48)
    for i, m in zip((10, 18), masks):
        t = truth(root, i)
        assert (m & t).sum() / (m | t).sum() > 0.6


def test_predict_cli_on_a_folder(root, checkpoint, model, files, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(checkpoint), "--support", str(files["support"]), str(files["mask"]),
                 "--query", str(files["queries"]), "--out", str(out), "--overlay", "--device", "cpu"]) == 0
    assert "3 mask(s)" in capsys.readouterr().out
    assert sorted(p.name for p in out.glob("*.png")) == ["q10.png", "q18.png", "q26.png"]
    support = np.asarray(Image.open(files["support"]).convert("RGB"))
    for name in ("q10.png", "q18.png", "q26.jpg"):
        query = np.asarray(Image.open(files["queries"] / name).convert("RGB"))
        written = np.asarray(Image.open(out / f"{Path(name).stem}.png"))
        assert set(np.unique(written)) <= {0, 255}
        assert np.array_equal(written == 255, direct(model, support, truth(root, 2), query))
        assert np.asarray(Image.open(out / "overlays" / f"{Path(name).stem}.png")).shape == query.shape


def test_two_shots(root, checkpoint, files, tmp_path):
    second = tmp_path / "second_mask.png"
    Image.fromarray(truth(root, 34).astype(np.uint8)).save(second)  # a 0/1 mask works too
    out = tmp_path / "two"
    assert main(["predict", "--checkpoint", str(checkpoint), "--support", str(files["support"]), str(files["mask"]),
                 "--support", str(root / "JPEGImages" / "img_034.png"), str(second),
                 "--query", str(files["queries"] / "q10.png"), "--out", str(out), "--device", "cpu"]) == 0
    assert np.asarray(Image.open(out / "q10.png")).shape == image(root, 10).shape[:2]


def test_empty_support_mask_warns_then_proceeds_as_official(root, model):
    support, query = image(root, 2), image(root, 10)
    empty = np.zeros(support.shape[:2], bool)
    with pytest.warns(UserWarning, match="support 0 mask: the support mask is empty"):
        mask = predict(model, [(support, empty)], [query])[0]
    assert np.array_equal(mask, direct(model, support, empty, query))


def test_bad_files_are_named(root, checkpoint, files, tmp_path, capsys):
    base = ["predict", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"), "--device", "cpu"]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    assert main([*base, "--support", str(files["support"]), str(files["mask"]), "--query", str(broken)]) == 2
    assert f"{broken}: cannot read image" in capsys.readouterr().err
    small = tmp_path / "small_mask.png"
    Image.fromarray(np.full((10, 12), 255, np.uint8)).save(small)
    assert main([*base, "--support", str(files["support"]), str(small), "--query", str(files["queries"])]) == 2
    err = capsys.readouterr().err
    assert str(files["support"]) in err and str(small) in err and "sizes differ" in err
    assert main([*base, "--support", str(files["support"]), str(files["mask"]), "--query", str(tmp_path / "nope")]) == 2
    assert "nope: query image or folder not found" in capsys.readouterr().err
    clash = tmp_path / "clash"
    clash.mkdir()
    for ext in ("png", "jpg"):
        Image.fromarray(image(root, 10)).save(clash / f"a.{ext}")
    assert main([*base, "--support", str(files["support"]), str(files["mask"]), "--query", str(clash)]) == 2
    assert "a.jpg and" in capsys.readouterr().err
    inplace = ["predict", "--checkpoint", str(checkpoint), "--support", str(files["support"]), str(files["mask"]),
               "--query", str(files["queries"]), "--out", str(files["queries"]), "--device", "cpu"]
    assert main(inplace) == 2
    assert "would overwrite the query image" in capsys.readouterr().err


def test_authors_checkpoint_needs_a_config(model, files, tmp_path, capsys):
    state = {f"module.{k.replace('prompt_generator.dino.', 'dino.')}": v for k, v in model.state_dict().items()}
    official = tmp_path / "best_1shot.pth"
    torch.save({"state_dict": state}, official)
    args = ["predict", "--checkpoint", str(official), "--support", str(files["support"]), str(files["mask"]),
            "--query", str(files["queries"] / "q10.png"), "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    assert "pass --config too" in capsys.readouterr().err
    cfg = tmp_path / "toy64.yaml"
    cfg.write_text(f"defaults: [{CONFIG}]\ndata:\n  image_size: 64\n")
    assert main([*args, "--out", str(tmp_path / "b"), "--config", str(cfg)]) == 0
