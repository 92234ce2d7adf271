"""The tutorial notebooks (committed clean, executed under papermill on the toy profile) and the
plumbing they stand on (`fss_sam2.tutorial`)."""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from fss_sam2 import tutorial
from fss_sam2.toy import standins
from fss_sam2.toy.sam2_standin import TOY_SAM2
from fss_sam2.tutorial import SMOKE_WORLD, SYNTHETIC

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
GUARD = "if fss_sam2_tutorial_in_colab:"


def _ids(path: Path) -> str:
    return path.stem


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.fixture(scope="module")
def smoke_world(tmp_path_factory) -> Path:
    """The CI world, generated once for every test of this file (and reused by the notebooks)."""
    root = tmp_path_factory.mktemp("notebooks") / "toy"
    tutorial.ensure_toy_world(root, SMOKE_WORLD, progress=False)
    return root


@pytest.fixture(scope="module")
def tut(smoke_world, tmp_path_factory):
    return tutorial.setup("toy", "cpu", smoke_world, tmp_path_factory.mktemp("cache"), smoke=True, progress=False)


# ---- notebooks as files ----


def test_notebooks_found():
    names = {p.name for p in NOTEBOOKS}
    assert {"01_episodes.ipynb", "03_pseudo_prompt_generator.ipynb", "04_iterative_memory_refinement.ipynb",
            "05_support_calibrated_attention.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_committed_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} has outputs: clear them before committing"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: expected one cell tagged 'parameters', found {len(tagged)}"
    params = nb.cells[tagged[0]].source
    for name in ("PROFILE", "DEVICE", "DATA_ROOT", "CACHE_DIR", "FOLD", "SHOT", "EPISODES", "SEED",
                 "FIGURES_DIR", "SMOKE"):
        assert re.search(rf"^{name} = ", params, re.M), f"{path.name}: parameter {name} missing"
    first = nb.cells[0].source
    assert first.startswith("# ") and "What you'll learn" in first
    assert f"colab.research.google.com/github/fss-sam2/fss-sam2/blob/main/notebooks/{path.name}" in first


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_shell_magics_only_in_the_colab_guard(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        lines = cell.source.splitlines()
        guarded = False
        for line in lines:
            if line.startswith(GUARD):
                guarded = True
            elif line and not line[0].isspace():
                guarded = False
            if line.lstrip().startswith(("!", "%")):
                assert guarded and line[0].isspace(), f"{path.name} cell {i}: magic outside the Colab guard: {line!r}"


# ---- notebooks executed ----


def test_python3_kernel_is_this_interpreter(tmp_path, monkeypatch):
    """papermill's `python3` kernel must run the venv's Python (jupyter_client maps `python`)."""
    pm = pytest.importorskip("papermill")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys\nprint(sys.executable)")])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "in.ipynb")
    out = pm.execute_notebook(str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3",
                              progress_bar=False)
    printed = out.cells[0].outputs[0]["text"].strip()
    assert Path(printed).resolve() == Path(sys.executable).resolve()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_executes(path, smoke_world, tmp_path, monkeypatch):
    pm = pytest.importorskip("papermill")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    figures = tmp_path / "figures"
    smoke = {
        "PROFILE": "toy", "DEVICE": "cpu", "DATA_ROOT": str(smoke_world), "CACHE_DIR": str(tmp_path / "cache"),
        "FIGURES_DIR": str(figures), "FOLD": 0, "SHOT": 1, "EPISODES": 4, "SEED": 321, "SMOKE": True,
        "INTERACTIVE": False, "ROUNDS": 3,
    }
    declared = pm.inspect_notebook(str(path))
    out = pm.execute_notebook(
        str(path), str(tmp_path / path.name), parameters={k: v for k, v in smoke.items() if k in declared},
        cwd=str(NOTEBOOK_DIR), kernel_name="python3", progress_bar=False, execution_timeout=300,
    )
    assert sorted(figures.glob(f"{path.name[:2]}_*.png")), f"{path.name} saved no figure to FIGURES_DIR"
    text = json.dumps([c.get("outputs", []) for c in out.cells])
    assert SYNTHETIC in text, f"{path.name}: toy outputs must carry the label {SYNTHETIC!r}"


# ---- tutorial plumbing ----


def test_toy_world_is_generated_once(tmp_path):
    settings = {"seed": 0, "size": 64, "images": 80, "clips": 1, "clip_frames": 2}
    root = tmp_path / "toy"
    assert tutorial.world_settings(root) is None
    assert tutorial.ensure_toy_world(root, settings, progress=False) is True
    assert tutorial.world_settings(root) == settings
    stamp = (root / "JPEGImages" / "toy_00000.jpg").stat().st_mtime_ns
    assert tutorial.ensure_toy_world(root, settings, progress=False) is False  # reused
    assert (root / "JPEGImages" / "toy_00000.jpg").stat().st_mtime_ns == stamp
    other = settings | {"seed": 1}
    assert tutorial.ensure_toy_world(root, other, progress=False) is True  # other settings: regenerated
    assert tutorial.world_settings(root) == other
    clips = root / "clips" / "clips.json"  # a world from an older clip generator: regenerated
    clips.write_text(json.dumps({k: v for k, v in json.loads(clips.read_text()).items() if k != "generator"}))
    assert tutorial.world_settings(root) is None
    assert tutorial.ensure_toy_world(root, other, progress=False) is True
    assert tutorial.world_settings(root) == other


def test_setup_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="profile"):
        tutorial.setup("toys", data_root=tmp_path)
    with pytest.raises(ValueError, match="data_root"):
        tutorial.setup("paper")


def test_setup_toy_session(tut, smoke_world):
    assert tut.image_size == 128 and tut.synthetic and tut.source.root == smoke_world
    assert tut.label == SYNTHETIC and SYNTHETIC in tut.title("x")
    table = tut.fold_table()
    assert list(table.index) == [0, 1, 2, 3] and table["val images"].min() > 0
    assert "1 star5" in table.loc[0, "novel classes (val)"]


def test_episode_of_a_class(tut):
    ep = tut.episode(1, 7, shot=1, seed=3)
    assert ep.cls == 7 and len(ep.supports) == 1 and ep.query not in ep.supports
    assert ep == tut.episode(1, 7, shot=1, seed=3)
    with pytest.raises(ValueError, match="not a novel class of fold 0"):
        tut.episode(0, 7, shot=1)


def test_batches_are_model_ready(tut):
    eps = tut.episodes(0, 1, n=3)
    batch = tut.batch(eps)
    assert batch["query"].shape == (3, 3, 128, 128) and batch["supports"].shape == (3, 1, 3, 128, 128)
    assert batch["support_masks"].shape == (3, 1, 128, 128) and len(batch["raw_label"]) == 3
    assert [len(b["cls"]) for b in tut.batches(eps, batch_size=2)] == [2, 1]


def test_model_uses_the_toy_standins(tut, tmp_path, monkeypatch):
    """In the toy profile the session's model loads the stand-in checkpoints of `fss_sam2.toy.standins`."""
    from fss_sam2.backbones.dinov2 import build_dinov2
    from fss_sam2.backbones.sam2_model import build_sam2_model

    torch.manual_seed(1)
    sam, dino = build_sam2_model(TOY_SAM2, 128), build_dinov2("tiny-toy")
    paths = {"sam2": str(tmp_path / "sam2.pt"), "dino": str(tmp_path / "dino.pt")}
    torch.save(sam.state_dict(), paths["sam2"])
    torch.save(dino.state_dict(), paths["dino"])
    calls = []
    monkeypatch.setattr(standins, "ensure_toy_standins", lambda root, cache_dir, seed=0, device="cpu": calls.append(
        (root, cache_dir, device)) or paths)
    monkeypatch.setattr(tut, "pretrained", True)
    model = tut.model()
    assert calls == [(tut.source.root, tut.cache_dir, tut.device)]
    assert tut.weights == "pretrained" and tut.label == SYNTHETIC
    loaded_sam, loaded_dino = model.sam2.state_dict(), model.prompt_generator.dino.state_dict()
    assert all(torch.equal(loaded_sam[k], v) for k, v in sam.state_dict().items())
    assert all(torch.equal(loaded_dino[k], v) for k, v in dino.state_dict().items())


def test_trace_of_a_batch_is_the_model_forward(tut):
    model = tut.model()
    assert tut.weights == "random" and tut.label == f"{SYNTHETIC}, random weights"
    batch = tut.batch(tut.episodes(0, 1, n=2))
    with torch.no_grad():
        expected = model(batch["query"], batch["supports"], batch["support_masks"])
    trace = tutorial.trace(model, batch)
    assert torch.equal(trace.logits, expected)
    plain = trace.attention_plain
    grid = tutorial.label_on_grid(batch["query_label"], (8, 8))
    everything = tutorial.attention_mass(plain.query_attention[0], torch.ones_like(grid, dtype=torch.bool))
    parts = sum(tutorial.attention_mass(plain.query_attention[0], grid == v) for v in grid.unique())
    torch.testing.assert_close(parts, everything)
    assert (everything > 0).all() and (everything < 1).all()  # the rest goes to supports and pointers


def test_attention_mass_by_hand():
    attn = torch.zeros(1, 2, 2, 4)  # (B,H,n,N)
    attn[0, 0, :, 0] = 0.5  # head 0: half of every row on location 0
    attn[0, 1, :, 3] = 1.0  # head 1: everything on location 3
    region = torch.tensor([[[True, False], [False, False]]])  # location 0 of a 2x2 grid
    assert tutorial.attention_mass(attn, region).tolist() == [0.25]


def test_binary_scores_by_hand():
    label = torch.tensor([[[1, 1, 0, 255]]])  # (1,1,4)
    prob = torch.tensor([[[0.9, 0.2, 0.7, 0.9]]])  # predicts pixels 0, 2 (3 is ignored)
    s = tutorial.binary_scores(prob, label)
    assert s["iou"].item() == pytest.approx(1 / 3)
    assert s["precision"].item() == pytest.approx(1 / 2)
    assert s["recall"].item() == pytest.approx(1 / 2)
    low = tutorial.binary_scores(torch.full((1, 1, 2, 2), 0.8), torch.ones(1, 4, 4, dtype=torch.long))
    assert low["iou"].item() == pytest.approx(1.0)  # resized to the label's size


def test_episode_explorer_follows_the_fold(tut):
    widgets = pytest.importorskip("ipywidgets")
    box = tutorial.episode_explorer(tut, fold=0)
    assert isinstance(box, widgets.VBox)
    fold_w, cls_w = box.children[0].children
    assert [c for _, c in cls_w.options] == tut.source.novel(0)
    fold_w.value = 2
    assert [c for _, c in cls_w.options] == tut.source.novel(2)


def test_episode_grid_shows_every_novel_class(tut):
    fig = tutorial.episode_grid(tut, fold=3, shot=1)
    titles = [ax.get_title() for ax in fig.axes]
    for c in tut.source.novel(3):
        assert any(tut.class_name(c) in t for t in titles)
    assert SYNTHETIC in fig._suptitle.get_text()
