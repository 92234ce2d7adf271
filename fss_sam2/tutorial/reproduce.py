"""Execute every tutorial notebook, in order, with papermill (`fss-sam2 reproduce`).

Each `notebooks/NN_*.ipynb` runs with the notebooks folder as its working directory and gets the
profile, the device and the build paths as parameters (only those its `parameters` cell defines);
the executed copies and `timings.json` go to OUT/notebooks. The toy profile regenerates the
synthetic world, the toy models, the toy results and tables and the figures; the paper profile
runs the same notebooks on the data and weights given.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
TIMINGS = "timings.json"


class NotebookFailed(RuntimeError):
    """A cell of a notebook raised; the message names the notebook and the executed copy."""


def find_notebooks(notebooks_dir: str | Path) -> list[Path]:
    """The numbered notebooks `NN_*.ipynb` of a folder, in order."""
    folder = Path(notebooks_dir)
    found = sorted(folder.glob(NOTEBOOK_GLOB))
    if not found:
        raise FileNotFoundError(f"{folder}: no notebooks named NN_*.ipynb")
    return found


def notebook_parameters(profile: str, out: str | Path, notebooks_dir: str | Path, smoke: bool = False,
                        device: str = "cpu", data_root: str | Path | None = None,
                        sam2_checkpoint: str | None = None, dino_checkpoint: str | None = None) -> dict:
    """The parameters every notebook may take (absolute paths, since notebooks run in their own
    folder). Figures go to the repository's figures/ folder, except in smoke runs (OUT/figures)."""
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
    if sam2_checkpoint is not None:
        params["SAM2_CHECKPOINT"] = str(Path(sam2_checkpoint).resolve())
    if dino_checkpoint is not None:
        params["DINO_CHECKPOINT"] = str(Path(dino_checkpoint).resolve())
    return params


@contextmanager
def _package_on_path():
    """Let the notebook kernels import this very package (also when it is not pip-installed)."""
    root = str(Path(__file__).resolve().parents[2])
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


def reproduce(profile: str = "toy", out: str | Path = "build", notebooks_dir: str | Path = "notebooks",
              smoke: bool = False, device: str = "cpu", progress: bool = True, data_root: str | Path | None = None,
              sam2_checkpoint: str | None = None, dino_checkpoint: str | None = None) -> dict:
    """Run every notebook of `notebooks_dir` with `profile` into OUT/notebooks; returns the
    seconds each took (also in OUT/notebooks/timings.json)."""
    params = notebook_parameters(profile, out, notebooks_dir, smoke, device, data_root, sam2_checkpoint,
                                 dino_checkpoint)
    return run_notebooks(find_notebooks(notebooks_dir), Path(out) / "notebooks", params, progress)


