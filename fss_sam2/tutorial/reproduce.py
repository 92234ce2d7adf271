"""Execute every tutorial notebook, in order, with papermill (`fss-sam2 reproduce`).

The toy profile first runs the evaluation grid (`tutorial.grid`) into OUT/runs and OUT/results:
fold 0, 1- and 5-shot, training seed 321 (`make demo`); with `full`, every fold at 1- and
5-shot, and training seeds 321, 1 and 2 for fold 0, 1-shot (`GRIDS`). Then each
`notebooks/NN_*.ipynb` runs with the notebooks folder as its working directory and gets the
profile, the device, the build paths and the grid's shots and training seeds as parameters (only
those its `parameters` cell defines), so that notebooks 06 and 07 find the grid's runs and
results and reuse them; the executed copies and `timings.json` go to OUT/notebooks. The paper
profile runs the same notebooks on the data and weights given (notebook 07 runs the grid of its
fold on the runs it finds). Smoke runs (CI) skip the grid: the notebooks run theirs, 1-shot.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

from ..config import TrainConfig

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
TIMINGS = "timings.json"
# the grids of the toy profile (keywords of `grid.plan_grid` / `grid.run_grid`): the demo's, and
# with `full` every fold plus three training seeds of the first setting. The demo evaluates at
# 5-shot only the removals of IMR and SCMA (a 5-shot evaluation costs twice a 1-shot one; the
# paper's ablations are 1-shot); `full` every ablation at every shot.
SHOTS = (1, 5)
DEFAULT_SEED = TrainConfig().seed  # the official training seed
DEMO_KSHOT_ABLATIONS = ("_no_imr", "_no_scma")
GRIDS = {
    "demo": ({"folds": (0,), "shots": SHOTS, "training_seeds": (DEFAULT_SEED,),
              "kshot_ablations": DEMO_KSHOT_ABLATIONS},),
    "full": ({"folds": (0, 1, 2, 3), "shots": SHOTS, "training_seeds": (DEFAULT_SEED,)},
             {"folds": (0,), "shots": (1,), "training_seeds": (DEFAULT_SEED, 1, 2)}),
}


class NotebookFailed(RuntimeError):
    """A cell of a notebook raised; the message names the notebook and the executed copy."""


def find_notebooks(notebooks_dir: str | Path) -> list[Path]:
    """The numbered notebooks `NN_*.ipynb` of a folder, in order."""
    folder = Path(notebooks_dir)
    found = sorted(folder.glob(NOTEBOOK_GLOB))
    if not found:
        raise FileNotFoundError(f"{folder}: no notebooks named NN_*.ipynb")
    return found


# optional parameters: keyword of `notebook_parameters` -> (notebook parameter, is a path)
OPTIONAL = {
    "sam2_checkpoint": ("SAM2_CHECKPOINT", True),  # SAM 2.0 release file (sam2_hiera_*.pt)
    "dino_checkpoint": ("DINO_CHECKPOINT", True),  # DINOv2 hub file (dinov2_*_pretrain.pth)
    "checkpoint": ("CHECKPOINT", True),  # a trained FSSAM: our best.pt or the authors' best_1shot.pth
    "naive_checkpoint": ("NAIVE_CHECKPOINT", True),  # our naive "support as memory" run (notebook 07)
    "official_checkpoint": ("OFFICIAL_CHECKPOINT", True),  # the authors' release file (notebook 07)
    "sam2": ("SAM2", False),  # SAM 2 size: small | base_plus | large (tiny-toy: tests)
    "dino": ("DINO", False),  # DINOv2 size: vits14 | vitb14 | vitl14 | vitg14 (tiny-toy: tests)
    "image_size": ("IMAGE_SIZE", False),  # the model's input side (paper: 512)
    "workers": ("WORKERS", False),  # DataLoader processes (notebooks 06, 07)
}


def notebook_parameters(profile: str, out: str | Path, notebooks_dir: str | Path, smoke: bool = False,
                        device: str = "cpu", data_root: str | Path | None = None,
                        sam2_checkpoint: str | None = None, dino_checkpoint: str | None = None,
                        **optional) -> dict:
    """The parameters every notebook may take (absolute paths, since notebooks run in their own
    folder). Figures go to the repository's figures/ folder, except in smoke runs (OUT/figures).
    `optional` (keys of OPTIONAL: checkpoint, naive_checkpoint, official_checkpoint, sam2, dino,
    image_size, workers) and the two weight files become parameters only when given."""
    unknown = set(optional) - set(OPTIONAL)
    if unknown:
        raise TypeError(f"notebook_parameters: unknown keyword(s) {sorted(unknown)}; expected {sorted(OPTIONAL)}")
    if profile not in ("toy", "paper"):
        raise ValueError(f"profile={profile!r}: expected 'toy' or 'paper'")
    out = Path(out).resolve()
    if profile == "paper" and data_root is None:
        raise ValueError("profile 'paper' needs --data-root (a root prepared by `fss-sam2 data pascal|coco`)")
    figures = out / "figures" if smoke else Path(notebooks_dir).resolve().parent / "figures"
    params = {
        "PROFILE": profile,
        "DEVICE": device,
        "DATA_ROOT": str(Path(data_root).resolve() if data_root is not None else out / "toy"),
        "CACHE_DIR": str(out / "cache"),
        "RESULTS_DIR": str(out / "results"),
        "TABLES_DIR": str(out / "tables"),
        "RUNS_DIR": str(out / "runs"),
        "FIGURES_DIR": str(figures),
        "SMOKE": smoke,
    }
    given = {"sam2_checkpoint": sam2_checkpoint, "dino_checkpoint": dino_checkpoint, **optional}
    for key, value in given.items():
        if value is not None:
            name, is_path = OPTIONAL[key]
            params[name] = str(Path(value).resolve()) if is_path else value
    return params


@contextmanager
def _package_on_path():
    """Let the notebook kernels import this very package (also when it is not pip-installed): the
    folder holding the imported `fss_sam2` (the checkout, or site-packages) goes first on PYTHONPATH."""
    import fss_sam2

    root = str(Path(fss_sam2.__file__).resolve().parents[1])
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([root, old] if old else [root])
    try:
        yield
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old


def run_notebooks(notebooks: list[Path], out_dir: str | Path, parameters: dict, progress: bool = True,
                  cell_timeout: int | None = None) -> dict:
    """Execute `notebooks` in order into `out_dir` (working directory: each notebook's folder),
    each with the `parameters` its parameters cell declares. Writes out_dir/timings.json after
    every notebook: {name: seconds}. Raises NotebookFailed on the first cell error."""
    try:
        import papermill as pm
    except ImportError:
        raise ImportError("running the notebooks needs papermill: pip install 'fss-sam2[notebooks]'") from None

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    with _package_on_path():
        for path in notebooks:
            declared = pm.inspect_notebook(str(path))
            given = {k: v for k, v in parameters.items() if k in declared}
            target = out_dir / path.name
            if progress:
                print(f"{path.name} ...", flush=True)
            start = time.perf_counter()
            try:
                pm.execute_notebook(str(path), str(target), parameters=given, cwd=str(path.parent),
                                    kernel_name="python3", progress_bar=progress, execution_timeout=cell_timeout)
            except pm.PapermillExecutionError as e:
                raise NotebookFailed(f"{path.name} failed in cell {e.exec_count}: {e.ename}: {e.evalue} "
                                     f"(the executed notebook, with the traceback, is {target})") from None
            timings[path.name] = round(time.perf_counter() - start, 1)
            (out_dir / TIMINGS).write_text(json.dumps(timings, indent=1) + "\n")
            if progress:
                print(f"{path.name}: {timings[path.name]:.1f} s -> {target}", flush=True)
    return timings


def reproduction_grids(profile: str, full: bool = False, smoke: bool = False,
                       train_shots: Sequence[int] = (1,)) -> list[dict]:
    """The grids `reproduce` runs before the notebooks, as keywords of `grid.plan_grid` /
    `grid.run_grid`: the toy profile's `GRIDS` ("full" or "demo") with those of `train_shots`
    each grid evaluates (and 1, the weights the other shots fall back to); none in
    smoke runs (the CI world is too small for 5-shot episodes; notebook 07 runs its own grid) or
    for the paper profile (`full` is the toy's: a paper setting trains for hours on GPUs)."""
    if full and profile != "toy":
        raise ValueError("--full: the toy profile only (the paper profile trains one `fss-sam2 train` per setting)")
    if smoke or profile != "toy":
        return []
    other = sorted(set(train_shots) - set(SHOTS))
    if other:
        raise ValueError(f"--train-shots {' '.join(map(str, train_shots))}: the grid evaluates shots "
                         f"{', '.join(map(str, SHOTS))}, not {', '.join(map(str, other))}")
    return [{**g, "train_shots": tuple(k for k in train_shots if k in g["shots"] or k == 1)}
            for g in GRIDS["full" if full else "demo"]]


def reproduce(profile: str = "toy", out: str | Path = "build", notebooks_dir: str | Path = "notebooks",
              smoke: bool = False, device: str = "cpu", progress: bool = True, data_root: str | Path | None = None,
              sam2_checkpoint: str | None = None, dino_checkpoint: str | None = None, full: bool = False,
              train_shots: Sequence[int] = (1,), **optional) -> dict:
    """Run the grids of `reproduction_grids`, then every notebook of `notebooks_dir` with
    `profile` into OUT/notebooks; returns the seconds each notebook took (also in
    OUT/notebooks/timings.json) and, under "grid", the grids' seconds. `optional`: see
    `notebook_parameters`."""
    params = notebook_parameters(profile, out, notebooks_dir, smoke, device, data_root, sam2_checkpoint,
                                 dino_checkpoint, **optional)
    grids = reproduction_grids(profile, full, smoke, train_shots)
    timings = {}
    if grids:
        from .grid import run_grid  # torch, the toy: loaded when a grid runs, not by every `fss-sam2` command

        start = time.perf_counter()
        for g in grids:
            run_grid(profile, params["DATA_ROOT"], params["RUNS_DIR"], params["RESULTS_DIR"], device=device,
                     cache_dir=params["CACHE_DIR"], workers=optional.get("workers"), progress=progress, **g)
        timings["grid"] = round(time.perf_counter() - start, 1)
    first = grids[0] if grids else {"shots": (1,), "train_shots": tuple(train_shots)}
    seeds = sorted({s for g in grids for s in g["training_seeds"]} | {DEFAULT_SEED},
                   key=lambda s: (s != DEFAULT_SEED, s))
    kshot = first.get("kshot_ablations")
    params |= {"SHOTS": list(first["shots"]), "TRAIN_SHOTS": list(first["train_shots"]), "TRAINING_SEEDS": seeds,
               "KSHOT_ABLATIONS": None if kshot is None else list(kshot)}
    return {**timings, **run_notebooks(find_notebooks(notebooks_dir), Path(out) / "notebooks", params, progress)}
