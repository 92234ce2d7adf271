"""The tutorial in JupyterLab, in a real (headless) browser: notebook 01 with `INTERACTIVE = True`,
run through the Run menu, its episode explorer drawn and redrawn by its controls.

JupyterLab serves a temporary copy of notebooks/ (the repository's notebooks are never opened),
on 127.0.0.1, a free port and a random token; the copy's parameters point at a tiny synthetic
world in the same temporary folder. Needs `jupyterlab` and `selenium` (the `notebooks` and `dev`
extras) and Chromium with its chromedriver (Debian: `apt-get install chromium chromium-driver`;
.ci/run installs them); skipped otherwise. Screenshots go to build/lab_screenshots/.
"""
from __future__ import annotations

import json
import platform
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = "01_episodes.ipynb"
SCREENSHOTS = REPO / "build" / "lab_screenshots"
SERVER_START_S = 60  # a cold JupyterLab on 2 cores takes ~3 s
KERNEL_START_S = 90  # page load + kernel start (~10 s)
RUN_ALL_S = 180  # notebook 01 on the smoke world (~15 s)
REDRAW_S = 60  # one explorer redraw (~1 s)

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the `dev` extra)")
pytest.importorskip("jupyterlab", reason="jupyterlab is not installed (the `notebooks` extra)")
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait


def _which(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
        if found:
            return found
    return None


CHROMIUM = _which("chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER = _which("chromedriver")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (Debian: apt-get install chromium chromium-driver)"),
    pytest.mark.skipif(CHROMEDRIVER is None, reason="no chromedriver (Debian: apt-get install chromium-driver)"),
]

# JupyterLab settings for the test's own settings folder: no news / update pop-ups over the
# notebook, and every cell kept in the DOM (no windowed rendering), so Selenium finds them all
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}

# the state of the open notebook, read from JupyterLab's application object (--expose-app-in-browser)
NOTEBOOK_STATE_JS = """
const nb = window.jupyterapp && window.jupyterapp.shell.currentWidget;
if (!nb || !nb.content || !nb.sessionContext || !nb.context.isReady) return null;
const kernel = nb.sessionContext.session && nb.sessionContext.session.kernel;
const cells = nb.content.widgets.filter(c => c.model.type === 'code');
const errors = [];
for (const c of cells) for (const o of c.model.outputs.toJSON())
  if (o.output_type === 'error') errors.push(o.ename + ': ' + o.evalue);
return {
  kernel: kernel ? kernel.status : null,
  dirty: nb.context.model.dirty,
  code_cells: cells.length,
  executed: cells.filter(c => c.model.executionCount !== null).length,
  pending: cells.filter(c => c.promptNode && c.promptNode.textContent.includes('*')).length,
  errors: errors,
};
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _set_parameters(path: Path, values: dict) -> None:
    """Rewrite `NAME = ...` lines of the notebook's cell tagged `parameters` (in the tmp copy)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    for name, value in values.items():
        cell.source, n = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", cell.source, flags=re.MULTILINE)
        assert n == 1, f"{path.name}: parameter {name} not found in the parameters cell"
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on a tmp copy of notebooks/ (tmp/notebooks, with tmp/build/toy the smoke world):
    yields (base URL, token, notebook folder); stopped, with its kernels, at teardown."""
    from fss_sam2 import tutorial
    from fss_sam2.tutorial import SMOKE_WORLD

    tmp = tmp_path_factory.mktemp("lab")
    notebooks = tmp / "notebooks"
    shutil.copytree(REPO / "notebooks", notebooks, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    settings = tmp / "lab-settings"
    for name, value in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(value))

    port, token = _free_port(), secrets.token_hex(16)
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={notebooks}",
        f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={tmp / 'lab-workspaces'}",
        "--expose-app-in-browser",
    ]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp / "jupyter-config"),  # no user config (~/.jupyter) applies
        "JUPYTER_RUNTIME_DIR": str(tmp / "jupyter-runtime"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    log_path = tmp / "jupyterlab.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp,
                                  start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        # while the server starts: the smoke world, and the copy's parameters pointing at it
        world = tmp / "build" / "toy"
        tutorial.ensure_toy_world(world, SMOKE_WORLD, progress=False)
        _set_parameters(notebooks / NOTEBOOK, {
            "DATA_ROOT": str(world), "CACHE_DIR": str(tmp / "build" / "cache"), "FIGURES_DIR": str(tmp / "figures"),
            "EPISODES": 4, "SMOKE": True, "INTERACTIVE": True,
        })
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"JupyterLab exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with no_proxy.open(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer in {SERVER_START_S} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.25)
        yield base, token, notebooks
    finally:
        server.terminate()  # SIGTERM: jupyter_server stops, shutting its kernels down first
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        try:  # anything left in the server's own process group (a kernel it failed to stop)
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1500",
                "--disable-gpu", "--no-first-run", "--disable-extensions", "--no-proxy-server"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _state(driver):
    return driver.execute_script(NOTEBOOK_STATE_JS)


def _explorer_image(driver) -> str | None:
    """The src of the episode image the explorer's output widget shows (None while it redraws)."""
    return driver.execute_script("""
        const img = document.querySelector('.jp-Notebook .widget-vbox .widget-output img');
        return img && img.complete && img.naturalWidth > 0 ? img.getAttribute('src') : null;""")


def _control(driver, kind: str, label: str):
    """The explorer control (ipywidgets CSS class `kind`) whose description is `label`."""
    for box in driver.find_elements(By.CSS_SELECTOR, f".jp-Notebook .{kind}"):
        labels = box.find_elements(By.CSS_SELECTOR, "label.widget-label")
        if labels and labels[0].text.strip() == label:
            return box
    raise AssertionError(f"no {kind} control labelled {label!r} in the episode explorer")


def _ran_all(driver) -> bool:
    """Every code cell executed and the kernel idle (or an error stopped the run)."""
    s = _state(driver)
    return bool(s["errors"]) or (s["kernel"] == "idle" and s["pending"] == 0 and s["executed"] == s["code_cells"])


def _wait_for_new_image(driver, old: str, what: str) -> str:
    WebDriverWait(driver, REDRAW_S, poll_frequency=0.2).until(
        lambda d: (_explorer_image(d) or old) != old, f"the episode shown did not change after {what}")
    return _explorer_image(driver)


@pytest.mark.timeout(420)
def test_episode_explorer_in_jupyterlab(lab, browser):
    base, token, notebooks = lab
    path = notebooks / NOTEBOOK
    as_copied = json.loads(path.read_text())
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()

    browser.get(f"{base}/lab/tree/{NOTEBOOK}?token={token}")
    WebDriverWait(browser, KERNEL_START_S, poll_frequency=0.25).until(
        lambda d: (_state(d) or {}).get("kernel") == "idle", "the notebook did not open with an idle kernel")

    # opening alone rewrites the notebook's metadata with what the kernel reports (the notebook then
    # shows as modified): save it (Ctrl+S) and check nothing else changes, cells, ids and format included
    dirty_on_open = _state(browser)["dirty"]
    mtime = path.stat().st_mtime_ns
    ActionChains(browser).key_down(Keys.CONTROL).send_keys("s").key_up(Keys.CONTROL).perform()
    WebDriverWait(browser, 30, poll_frequency=0.2).until(
        lambda d: path.stat().st_mtime_ns != mtime and not _state(d)["dirty"], "Ctrl+S did not save the notebook")
    text = path.read_text()
    saved = json.loads(text)
    assert text == json.dumps(saved, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    assert saved["cells"] == as_copied["cells"]
    assert (saved["nbformat"], saved["nbformat_minor"]) == (as_copied["nbformat"], as_copied["nbformat_minor"])
    rewritten = sorted(k for k in saved["metadata"].keys() | as_copied["metadata"].keys()
                       if saved["metadata"].get(k) != as_copied["metadata"].get(k))
    assert set(rewritten) <= {"kernelspec", "language_info"}, rewritten
    if as_copied["metadata"]["language_info"].get("version") == platform.python_version():
        # the notebooks are committed with what JupyterLab writes for this Python: opening them
        # changes nothing, so they do not show as modified
        assert rewritten == [] and not dirty_on_open
    print(f"\nJupyterLab on open (modified: {dirty_on_open}) rewrote "
          f"{json.dumps({k: saved['metadata'][k] for k in rewritten})}")

    # Run > Run All Cells, as a reader would
    browser.find_element(By.XPATH, "//li[contains(@class,'lm-MenuBar-item')][normalize-space()='Run']").click()
    WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.CSS_SELECTOR, ".lm-Menu-item[data-command='runmenu:run-all']")
    ).click()
    WebDriverWait(browser, RUN_ALL_S, poll_frequency=0.5).until(_ran_all, "Run All Cells did not finish")
    state = _state(browser)
    assert not state["errors"], f"{NOTEBOOK} failed in JupyterLab: {state['errors']}"
    t_run = time.monotonic() - t0

    # the explorer: fold / class dropdowns, a shot slider, a seed box, and an episode image
    WebDriverWait(browser, REDRAW_S, poll_frequency=0.2).until(_explorer_image, "the episode explorer shows no image")
    fold = _control(browser, "widget-dropdown", "fold")
    cls = _control(browser, "widget-dropdown", "class")
    _control(browser, "widget-slider", "shot")
    seed = _control(browser, "widget-text", "seed")
    browser.execute_script("arguments[0].closest('.jp-Cell').scrollIntoView({block: 'start'})", fold)
    before = _explorer_image(browser)
    browser.save_screenshot(str(SCREENSHOTS / "before.png"))

    # another class: another episode
    select = Select(cls.find_element(By.TAG_NAME, "select"))
    assert len(select.options) >= 2, "the class dropdown offers a single class"
    select.select_by_index(1)
    other_class = _wait_for_new_image(browser, before, "choosing another class")
    # another seed (the IntText commits on Enter): another draw of that class
    box = seed.find_element(By.TAG_NAME, "input")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("7", Keys.ENTER)
    after = _wait_for_new_image(browser, other_class, "changing the seed")
    browser.execute_script("arguments[0].closest('.jp-Cell').scrollIntoView({block: 'start'})", fold)
    browser.save_screenshot(str(SCREENSHOTS / "after.png"))
    assert len({before, other_class, after}) == 3
    state = _state(browser)
    assert not state["errors"], state["errors"]
    print(f"opened + ran all cells in {t_run:.1f} s, explorer redrawn twice, {time.monotonic() - t0:.1f} s "
          f"in all; screenshots in {SCREENSHOTS}")
