"""A real (non-editable) install works: build the wheel, install it into a fresh venv, and run the
installed `fss-sam2` from a folder outside the checkout: toy data, two training steps and an
evaluation, with the configs named by their short names (read from the installed package data).

The fresh venv reaches the project venv's dependencies (torch, sam2, omegaconf, ...) through a
plain path line in a .pth file: such a line only appends the folder to sys.path, it does not make
it a site dir, so the project's editable-install finder (`__editable__*.pth` there) stays off and
`fss_sam2` can only come from the wheel (asserted below)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 180  # seconds per command; the whole test takes ~20 s on 2 cores


def _run(cmd: list, cwd: Path, env: dict | None = None, timeout: int = TIMEOUT) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, (f"{' '.join(map(str, cmd))} (in {cwd}) exited {r.returncode}\n"
                               f"--- stdout ---\n{r.stdout[-4000:]}\n--- stderr ---\n{r.stderr[-6000:]}")
    return r


def _source_copy(dest: Path) -> Path:
    """What the wheel is built from, copied out of the checkout: building in place would leave
    build/lib and build/bdist.* in the repository's build/ (the demo's output folder), and a stale
    build/lib can put deleted files into the wheel."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "fss_sam2", dest / "fss_sam2", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def test_wheel_install_runs_outside_the_checkout(tmp_path):
    # the wheel, and the package data in it
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          _source_copy(tmp_path / "src"), "-w", dist], cwd=tmp_path)
    (wheel,) = dist.glob("fss_sam2-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    configs = REPO / "fss_sam2" / "configs"
    expected = {f"fss_sam2/configs/{p.relative_to(configs).as_posix()}" for p in configs.rglob("*.yaml")}
    assert {"fss_sam2/configs/toy.yaml", "fss_sam2/configs/base/pascal.yaml"} <= expected
    assert expected <= shipped, f"configs missing from the wheel: {sorted(expected - shipped)}"
    assert "fss_sam2/resources/paper_numbers.csv" in shipped

    # a fresh venv (no pip of its own: this interpreter's pip installs into it), then the project
    # venv's site-packages as a plain .pth line, for the dependencies
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    python, script = venv / "bin" / "python", venv / "bin" / "fss-sam2"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel],
         cwd=tmp_path)
    assert script.is_file(), "the wheel installed no fss-sam2 console script"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path).stdout.strip())
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "_fss_sam2_test_deps.pth").write_text("".join(f"{p}\n" for p in ours))

    work = tmp_path / "work"  # outside the checkout: nothing there to find configs/ by
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env |= {"PATH": os.pathsep.join([str(venv / "bin"), env.get("PATH", "")]), "VIRTUAL_ENV": str(venv)}

    probe = _run([python, "-c", "import json, fss_sam2, torch, sam2, omegaconf\n"
                  "from fss_sam2.tutorial.runs import CONFIGS\n"
                  "from fss_sam2.config import find_config\n"
                  "print(json.dumps({'package': fss_sam2.__file__, 'configs': str(CONFIGS),"
                  " 'toy': str(find_config('toy'))}))"], cwd=work, env=env)
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    assert Path(found["package"]).resolve().is_relative_to(site.resolve()), found  # the wheel, not the checkout
    assert Path(found["configs"]).resolve() == (site / "fss_sam2" / "configs").resolve(), found
    assert Path(found["toy"]).resolve() == (site / "fss_sam2" / "configs" / "toy.yaml").resolve(), found

    fast = ["workers=0", "image_size=64", "batch_size=2"]
    _run([script, "data", "toy", "--out", "world", "--images", "160", "--clips", "0", "--quiet"], cwd=work, env=env)
    _run([script, "train", "--config", "toy", "--set", "root=world", "max_steps=2", "val_episodes=4", "log_every=1",
          *fast, "--out", "run", "--quiet"], cwd=work, env=env)
    assert (work / "run" / "last.pt").is_file()
    assert json.loads((work / "run" / "summary.json").read_text())["steps"] == 2
    _run([script, "evaluate", "--config", "toy", "--checkpoint", "run/last.pt", "--episodes", "4", "--workers", "0",
          "--set", "root=world", *fast, "--out", "ev", "--quiet"], cwd=work, env=env)
    results = json.loads((work / "ev" / "results.json").read_text())
    assert "miou" in results and 0.0 <= results["miou"] <= 1.0
    assert (results["dataset"], results["episodes"]) == ("toy", 4)
