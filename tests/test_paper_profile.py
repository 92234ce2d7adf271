"""The paper profile, end to end, on a CPU: PASCAL-5i and COCO-20i built by `fss-sam2 data pascal`
and `fss-sam2 data coco` from raw fixtures in the real download formats (tests/fixtures_real.py),
random weights written in the release formats (SAM 2.0 `{"model": sd}`, the DINOv2 hub state
dict, the authors' DDP checkpoint), and EVERY notebook executed with PROFILE = "paper" from the
notebooks folder, as `fss-sam2 reproduce` runs them (papermill, cwd = notebooks/), failing on any
cell error.

What is reduced, and only through parameters the notebooks declare: the SAM 2 / DINOv2 sizes
(`tiny-toy`, built from the same sam2 Hydra config and loaded by the same loaders as Hiera-S /
ViT-B/14), the image size (IMAGE_SIZE = 128: at the paper's 512 one training step of even the
tiny SAM 2 takes ~45 s on 2 cores), the episodes (4) and the training (MAX_STEPS = 2).

The notebooks of one dataset run in order (07 evaluates what 06 trained, 08 reads what 07
wrote). The two datasets exercise both ways notebook 07 finds its models: PASCAL through
RUNS_DIR/pascal_fssam and _naive, COCO through explicit CHECKPOINT / NAIVE_CHECKPOINT whose
frozen SAM 2 / DINOv2 files have moved since training (so the explicit SAM2_CHECKPOINT /
DINO_CHECKPOINT must win over the paths stored in them); both evaluate the authors'-layout
checkpoint as OFFICIAL_CHECKPOINT.
"""
from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest
import torch

import fss_sam2
from fss_sam2.backbones.dinov2 import build_dinov2
from fss_sam2.backbones.sam2_model import build_sam2_model
from fss_sam2.cli import main
from fss_sam2.constants import SYNTHETIC
from fss_sam2.tutorial import reproduce as rp
from fss_sam2.tutorial.runs import run_checkpoint
from fixtures_real import write_coco_paper, write_voc_sbd_paper

pytest.importorskip("papermill")
# pycocotools' RLE decoding under NumPy 2 (while `fss-sam2 data coco` builds the labels)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob(rp.NOTEBOOK_GLOB))
BACKBONE = "tiny-toy"  # SAM 2 and DINOv2 size
IMAGE_SIZE = 128
EPISODES = 4
TIMINGS: dict[str, float] = {}  # test id -> seconds, printed at the end of the module


def _ids(path: Path) -> str:
    return path.stem


def write_release_weights(folder: Path, image_size: int = IMAGE_SIZE) -> dict[str, Path]:
    """Random weights in the release formats: SAM 2.0 (`{"model": state_dict}`, sam2_hiera_*.pt),
    DINOv2 (the hub's bare state dict, dinov2_*_pretrain.pth) and an authors' FSSAM checkpoint
    (their DDP layout, `{"state_dict": {"module.sam2.*", "module.dino.*"}}`, best_1shot.pth)."""
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    paths = {"sam2": folder / "sam2_hiera_tiny_toy.pt", "dino": folder / "dinov2_tiny_toy_pretrain.pth",
             "official": folder / "exp" / "split0" / "snapshot" / "best_1shot.pth"}
    torch.save({"model": build_sam2_model(BACKBONE, image_size).state_dict()}, paths["sam2"])
    torch.save(build_dinov2(BACKBONE).state_dict(), paths["dino"])
    model = fss_sam2.load_model(None, sam2=BACKBONE, dino=BACKBONE, image_size=image_size,
                                sam2_checkpoint=paths["sam2"], dino_checkpoint=paths["dino"])
    for p in model.parameters():  # not the pretrained files' weights: a "trained" FSSAM
        p.data.add_(0.01 * torch.randn_like(p))
    # as tests/test_evaluate_cli.py: the authors' names (module.sam2.*, module.dino.*)
    state = {f"module.{k.replace('prompt_generator.dino.', 'dino.')}": v for k, v in model.state_dict().items()}
    paths["official"].parent.mkdir(parents=True)
    torch.save({"epoch": 1, "state_dict": state}, paths["official"])
    return paths


@pytest.fixture(scope="module", params=["pascal", "coco"])
def paper(request, tmp_path_factory) -> dict:
    """A prepared root of the dataset, built from the raw fixture by the CLI, and the weights."""
    dataset = request.param
    base = tmp_path_factory.mktemp(f"paper_{dataset}")
    raw, root = base / "raw", base / "data" / dataset
    if dataset == "pascal":
        write_voc_sbd_paper(raw)
        argv = ["data", "pascal", "--voc", str(raw / "VOC2012"), "--sbd", str(raw / "SBD"), "--out", str(root)]
    else:
        write_coco_paper(raw)
        argv = ["data", "coco", "--coco", str(raw / "coco"), "--out", str(root)]
    assert main([*argv, "--quiet"]) == 0
    weights = write_release_weights(base / "pretrained")
    moved = base / "pretrained_before_moving"  # COCO: the weights notebook 06 trains over, removed after it
    if dataset == "coco":
        moved.mkdir()
        for key in ("sam2", "dino"):
            shutil.copy(weights[key], moved / weights[key].name)
    yield {"dataset": dataset, "base": base, "root": root, "weights": weights, "moved": moved}
    print("\nseconds per notebook:", json.dumps({k: v for k, v in TIMINGS.items() if dataset in k}, indent=1))


def parameters(paper: dict, notebook: str) -> dict:
    """What the notebook gets: the profile's parameters (`fss-sam2 reproduce`), the reduced sizes
    and budgets, and the checkpoints of this dataset's scenario (see the module docstring)."""
    base, weights, coco = paper["base"], paper["weights"], paper["dataset"] == "coco"
    params = rp.notebook_parameters("paper", base / "build", NOTEBOOK_DIR, data_root=paper["root"],
                                    sam2_checkpoint=weights["sam2"], dino_checkpoint=weights["dino"],
                                    sam2=BACKBONE, dino=BACKBONE, image_size=IMAGE_SIZE, workers=0)
    params |= {"FIGURES_DIR": str(base / "figures"), "FOLD": 0, "SHOT": 1, "EPISODES": EPISODES, "SEED": 321,
               "SMOKE": False, "INTERACTIVE": False, "ROUNDS": 3, "BATCH": 4, "FAILURES": 2,
               "MAX_STEPS": 2, "VAL_EPISODES": EPISODES, "OFFICIAL_CHECKPOINT": str(weights["official"])}
    nn = notebook[:2]
    if nn in ("03", "04", "05") and coco:
        params["CHECKPOINT"] = str(weights["official"])
    if nn == "06" and coco:  # trained over files that then move away
        params["SAM2_CHECKPOINT"] = str(paper["moved"] / weights["sam2"].name)
        params["DINO_CHECKPOINT"] = str(paper["moved"] / weights["dino"].name)
    if nn == "07" and coco:  # the runs given as files; RUNS_DIR holds nothing
        runs = base / "build" / "runs"
        params["CHECKPOINT"] = str(run_checkpoint(runs / "coco_fssam"))
        params["NAIVE_CHECKPOINT"] = str(run_checkpoint(runs / "coco_naive"))
        params["RUNS_DIR"] = str(base / "no_runs_here")
    if nn == "09":  # PASCAL: the authors' checkpoint; COCO: our run, its frozen files moved
        params["CHECKPOINT"] = (str(run_checkpoint(base / "build" / "runs" / "coco_fssam")) if coco
                                else str(weights["official"]))
    return params


def outputs_text(executed: Path) -> str:
    nb = json.loads(executed.read_text())
    parts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            parts.append("".join(out.get("text", "")))
            for kind in ("text/plain", "text/markdown", "text/html"):
                parts.append("".join(out.get("data", {}).get(kind, "")))
    return "\n".join(parts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_runs_on_the_paper_profile(path, paper, request, monkeypatch):
    # the kernels' PyTorch on one thread: the tiny models run fastest so, and two threads that
    # share 2 cores with other jobs wait on each other (an environment setting, no code path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    base, dataset = paper["base"], paper["dataset"]
    params = parameters(paper, path.name)
    before = sorted(p.name for p in NOTEBOOK_DIR.iterdir())
    start = time.perf_counter()
    rp.run_notebooks([path], base / "executed", params, progress=False, cell_timeout=600)  # raises on a cell error
    TIMINGS[request.node.callspec.id] = round(time.perf_counter() - start, 1)
    assert sorted(p.name for p in NOTEBOOK_DIR.iterdir()) == before, "the notebook wrote into notebooks/"
    text = outputs_text(base / "executed" / path.name)
    assert SYNTHETIC not in text, f"{path.name}: real-format data labelled {SYNTHETIC!r}"
    assert not re.search(r"\[\]", text), f"{path.name}: an empty label tag [] was printed"
    assert sorted((base / "figures").glob(f"{path.name[:2]}_*.png")), f"{path.name} saved no figure"
    nn = path.name[:2]
    if nn == "02":
        assert "has no clips (only the synthetic world has them): the tracking part is skipped" in text
    if nn == "06":
        for variant in ("fssam", "naive"):
            run = base / "build" / "runs" / f"{dataset}_{variant}"
            cfg = torch.load(run_checkpoint(run), map_location="cpu", weights_only=True)["config"]
            assert (cfg["data"]["dataset"], cfg["model"]["sam2"], cfg["data"]["image_size"]) == (dataset, BACKBONE,
                                                                                                 IMAGE_SIZE)
            assert cfg["data"]["workers"] == 0 and cfg["train"]["max_steps"] == 2
        if dataset == "coco":
            shutil.rmtree(paper["moved"])  # the frozen files the runs name are gone from now on
    if nn == "07":
        results = base / "build" / "results"
        for name in (f"{dataset}_fssam", f"{dataset}_naive", f"{dataset}_fssam_no_imr", f"{dataset}_fssam_authors"):
            r = json.loads((results / name / "results.json").read_text())
            assert r["dataset"] == dataset and r["episodes"] == EPISODES and r["synthetic"] is False
        authors = json.loads((results / f"{dataset}_fssam_authors" / "results.json").read_text())
        assert authors["checkpoint_kind"] == "official"
        given = json.loads((results / f"{dataset}_fssam" / "results.json").read_text())["checkpoint"]
        assert Path(given) == run_checkpoint(base / "build" / "runs" / f"{dataset}_fssam")
    if nn == "08":
        assert "measured here" in text
    if nn == "09":
        assert "same masks as section 2: True" in text


# ---- what the paper runs stand on, without executing notebooks ----

MODEL_NOTEBOOKS = [p for p in NOTEBOOKS if p.name[:2] not in ("01", "08")]


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


@pytest.mark.parametrize("path", MODEL_NOTEBOOKS, ids=_ids)
def test_model_notebooks_declare_the_paper_parameters(path):
    """Papermill must parse every one of them (a `=` in a comment, e.g., hides a parameter)."""
    import papermill as pm

    declared = set(pm.inspect_notebook(str(path)))
    assert {"SAM2_CHECKPOINT", "DINO_CHECKPOINT", "SAM2", "DINO", "IMAGE_SIZE"} <= declared
    if path.name.startswith("07"):
        assert {"CHECKPOINT", "NAIVE_CHECKPOINT", "OFFICIAL_CHECKPOINT", "WORKERS", "RUNS_DIR"} <= declared
    if path.name.startswith("06"):
        assert "WORKERS" in declared


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_colab_install_keeps_colabs_torch(path):
    install = "".join(_cells(path)[1]["source"])
    assert "if fss_sam2_tutorial_in_colab:" in install
    assert "!SAM2_BUILD_CUDA=0 pip install -q --no-deps --no-build-isolation sam2==1.1.0" in install
    assert "!pip install -q iopath hydra-core omegaconf" in install
    pips = [line for line in install.splitlines() if "pip install" in line]
    assert not any(re.search(r"\btorch(vision)?\b", line) for line in pips), pips
    assert "!pip install -q -e .." in install  # the package; its torch>=2.3 is met by Colab's


@pytest.mark.parametrize("path", MODEL_NOTEBOOKS, ids=_ids)
def test_colab_runtime_cell(path, monkeypatch):
    """After the parameters (so that papermill's and yours are seen): the GPU on Colab, and for
    the paper profile the weights by `fss-sam2 download`; nothing anywhere else."""
    import fss_sam2.cli

    cells = _cells(path)
    params = next(i for i, c in enumerate(cells) if "parameters" in c["metadata"].get("tags", []))
    source = "".join(cells[params + 1]["source"])
    assert source.startswith("# Colab only") and "if fss_sam2_tutorial_in_colab:" in source
    calls = []
    monkeypatch.setattr(fss_sam2.cli, "main", lambda argv: calls.append(argv) or 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    base = {"PROFILE": "paper", "DEVICE": "cpu", "SAM2_CHECKPOINT": None, "DINO_CHECKPOINT": None, "SAM2": None,
            "DINO": None}
    outside = {**base, "fss_sam2_tutorial_in_colab": False}
    exec(source, outside)
    assert (outside["DEVICE"], outside["SAM2_CHECKPOINT"], calls) == ("cpu", None, [])
    colab = {**base, "fss_sam2_tutorial_in_colab": True}
    exec(source, colab)
    assert colab["DEVICE"] == "cuda"
    assert calls == [["download", "sam2-small", "dinov2-vitb14", "--out", "../pretrained"]]
    assert colab["SAM2_CHECKPOINT"] == "../pretrained/sam2_hiera_small.pt"
    assert colab["DINO_CHECKPOINT"] == "../pretrained/dinov2_vitb14_pretrain.pth"
    given = {**base, "fss_sam2_tutorial_in_colab": True, "SAM2": "base_plus", "DINO": "vitl14",
             "SAM2_CHECKPOINT": "mine.pt"}
    exec(source, given)
    assert calls[-1] == ["download", "sam2-base-plus", "dinov2-vitl14", "--out", "../pretrained"]
    assert (given["SAM2_CHECKPOINT"], given["DINO_CHECKPOINT"]) == ("mine.pt", "../pretrained/dinov2_vitl14_pretrain.pth")
    toy = {**base, "fss_sam2_tutorial_in_colab": True, "PROFILE": "toy"}
    exec(source, toy)
    assert len(calls) == 2 and toy["DEVICE"] == "cuda"  # the toy profile downloads nothing


def test_label_tag_is_never_empty_brackets():
    from types import SimpleNamespace

    from fss_sam2.tutorial import Tutorial

    def tut(dataset, weights):
        return Tutorial(profile="toy" if dataset == "toy" else "paper", device=torch.device("cpu"),
                        source=SimpleNamespace(dataset=dataset), image_size=128, cache_dir=Path("."), weights=weights)

    assert (tut("pascal", "pretrained").label, tut("pascal", "pretrained").tag) == ("", "")
    assert tut("coco", "checkpoint").tag == "" and tut("coco", "checkpoint").title("x") == "x"
    assert tut("pascal", "random").tag == "  [random weights]"
    assert tut("toy", "random").tag == f"  [{SYNTHETIC}, random weights]"


def test_notebook_parameters_of_the_paper_profile(tmp_path):
    params = rp.notebook_parameters("paper", tmp_path / "b", tmp_path / "nb", data_root=tmp_path / "d",
                                    checkpoint="runs/p/best.pt", official_checkpoint="best_1shot.pth",
                                    naive_checkpoint=None, sam2="small", image_size=512, workers=2)
    assert params["CHECKPOINT"] == str((Path("runs/p/best.pt")).resolve())
    assert params["OFFICIAL_CHECKPOINT"] == str(Path("best_1shot.pth").resolve())
    assert (params["SAM2"], params["IMAGE_SIZE"], params["WORKERS"]) == ("small", 512, 2)
    assert "NAIVE_CHECKPOINT" not in params and "DINO" not in params
    with pytest.raises(TypeError, match="unknown keyword"):
        rp.notebook_parameters("paper", tmp_path, tmp_path, data_root=tmp_path, checkpont="x")
