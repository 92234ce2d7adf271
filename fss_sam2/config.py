"""Run configurations: one YAML per official setting, a typed schema, `--set k=v` overrides.

A config file may name files to merge under it, relative to its own folder:
    defaults: [base/pascal.yaml, base/sam2_small.yaml]
Merge order: schema defaults < each `defaults` file (in order, recursively) < the file < overrides.
`defaults` entries must name files inside the folder of the config that was loaded (the one given
to `load_config`), at any depth, or a packaged config (`fss_sam2/configs`, e.g. by its absolute
path); an absolute path or `..` leading elsewhere is refused before anything is read, unless
`load_config(..., defaults_anywhere=True)`.
Overrides are OmegaConf dotlist items `section.key=value`; a key that exists in one section only
may be given by its short name (`max_steps=20` means `train.max_steps=20`).
No environment interpolation: a config is saved with every checkpoint and results.json, so a
value may not use OmegaConf's `${oc.env:VAR}` resolver (in a file, an override or a stored
config); write the value itself, or let the shell expand it (`--set root=$DATA/pascal`), so that
what was used is what is saved.
Unknown keys and bad values raise ValueError naming the file or override and the key.
"""
from __future__ import annotations

import difflib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Optional

from omegaconf import DictConfig, OmegaConf, read_write
from omegaconf.errors import OmegaConfBaseException

from .constants import LIST_DATASETS

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
PACKAGED_CONFIGS = "configs"  # the folder of fss_sam2 that ships the YAML configs (package data)


@dataclass
class DataConfig:
    dataset: str = "pascal"  # toy | pascal | coco (a root prepared by `fss-sam2 data ...`)
    root: str = "data/pascal"
    fold: int = 0
    shot: int = 1
    image_size: int = 512  # episodes are cropped (train) / stretched (val) to this square side
    train_scale: list[float] = field(default_factory=lambda: [0.9, 1.1])  # RandScale range
    val_episodes: int = 1000
    val_seed: int = 321
    # official: the authors' test.py episodes for val_seed (docs/episodes.md); seeded: one NumPy generator
    stream: str = "official"
    stream_workers: int = 32  # the authors' DataLoader worker count the official stream reproduces
    val_batch: int = 1  # episodes per evaluation batch (does not change the metrics)
    workers: int = 8  # DataLoader processes per rank


@dataclass
class ModelConfig:
    """FSSAM's backbones and switches (see `fss_sam2.model.FSSAM`)."""

    sam2: str = "small"  # small | base_plus | large (SAM 2.0 Hiera); tiny-toy(-64): tests, the toy
    sam2_checkpoint: Optional[str] = None  # SAM 2.0 file or hub id; None = random weights
    dino: str = "vitb14"  # vits14 | vitb14 | vitl14 | vitg14 | tiny-toy
    dino_checkpoint: Optional[str] = None  # dinov2_*_pretrain.pth; None = random weights
    num_refine: int = 3  # rounds of iterative memory refinement (0 = off)
    refine_version: str = "v1"
    calibrate: bool = True  # support-calibrated memory attention
    kshot_calibration: str = "mean"  # mean (intended) | official (released 5-shot weights)
    bias_scale: float = 10.0  # scale of the calibration bias
    query_memory: bool = True  # False: the naive "support as memory" SAM 2 baseline
    priors_only: bool = False  # True: predict with the DINOv2 prior alone (ablation)
    dice_ignore: bool = False  # True: Dice loss skips label-255 pixels (official: background)


@dataclass
class TrainConfig:
    device: str = "auto"  # auto (cuda if present) | cpu | cuda | cuda:N
    epochs: int = 300  # the poly schedule spans epochs x iterations per epoch
    batch_size: int = 8  # global: split evenly over the processes of a torchrun job
    lr: float = 1e-3
    weight_decay: float = 0.0
    power: float = 0.9  # lr = lr0 * (1 - it / max_it) ** power, it = 1, 2, ...
    warmup_steps: int = 0  # linear warm-up iterations before the poly decay (official: none)
    early_stop: int = 100  # stop after this many epochs without a better val mIoU
    val_every: int = 1  # validate at the end of every N-th epoch
    mid_epoch_val_from: Optional[int] = 101  # from this 0-based epoch on, also validate mid-epoch
    seed: int = 321
    precision: str = "auto"  # auto | bf16 | fp16 | fp32 (see autocast_dtype)
    compile: bool = False  # torch.compile the model
    max_steps: Optional[int] = None  # stop after this many steps in all (schedule unchanged)
    save_every: Optional[int] = None  # write last.pt every N steps (and at every epoch end)
    log_every: int = 10  # a log.csv row every N steps
    tensorboard: bool = False  # also write TensorBoard scalars (needs `tensorboard`)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out: str = "runs/default"


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def _short_names() -> dict[str, str]:
    """Short key -> full key, for keys that exist in exactly one section."""
    seen: dict[str, list[str]] = {}
    for section, schema in SECTIONS.items():
        for f in fields(schema):
            seen.setdefault(f.name, []).append(f"{section}.{f.name}")
    return {k: v[0] for k, v in seen.items() if len(v) == 1}


SHORT_NAMES = _short_names()


def _known_keys() -> list[str]:
    return ["out", *(f"{s}.{f.name}" for s, schema in SECTIONS.items() for f in fields(schema))]


def _check_keys(raw: dict, where: str) -> None:
    """Every key of `raw` must exist in the schema; the error suggests the closest known key."""
    known = _known_keys()
    bad = []
    for key, value in raw.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ValueError(f"{where}: '{key}' must be a mapping of keys, got {value!r}")
            bad += [f"{key}.{k}" for k in value if f"{key}.{k}" not in known]
        elif key != "out":
            bad.append(key)
    if bad:
        hints = [f"'{b}'" + "".join(f" (did you mean '{m}'?)" for m in difflib.get_close_matches(b, known, 1)) for b in bad]
        raise ValueError(f"{where}: unknown key(s) {', '.join(hints)}")


def packaged_configs():
    """The folder of the configs shipped in the package, `fss_sam2/configs` (an importlib.resources
    Traversable: a `pathlib.Path` in an installed or editable package); `folder / "toy.yaml"` is a
    config `load_config` reads."""
    return resources.files(__package__) / PACKAGED_CONFIGS


def packaged_config_names() -> list[str]:
    """The short names of the packaged configs (`toy`, `pascal_fold0_small_1shot`, ...)."""
    return sorted(f.name[: -len(".yaml")] for f in packaged_configs().iterdir()
                  if f.name.endswith(".yaml") and f.is_file())


def find_config(path):
    """The config file that `path` names: the file itself when it exists; else, for a bare name
    (no folder part), the packaged config `NAME` or `NAME.yaml` (`toy`, `pascal_fold0_small_1shot`).
    A Traversable (e.g. `packaged_configs() / "toy.yaml"`) is returned as it is. Raises
    FileNotFoundError naming `path` and the packaged configs of similar names."""
    if not isinstance(path, (str, os.PathLike)):
        return path
    text = os.fspath(path)
    file = Path(text)
    if file.is_file():
        return file
    names = packaged_config_names()
    stem = file.name[: -len(".yaml")] if file.name.endswith(".yaml") else file.name
    if text and not os.path.dirname(text):
        folder = packaged_configs()
        for candidate in (text, f"{text}.yaml"):
            packaged = folder / candidate
            if packaged.is_file():
                return packaged
        where = "neither a file nor a packaged config"
    else:
        where = f"no such file ({file.resolve()})"
        if stem in names:
            where += f"; the packaged config of that name is `--config {stem}`"
    close = [n for n in difflib.get_close_matches(stem, names, 3, 0.5) if n != stem or not os.path.dirname(text)]
    hint = f"; did you mean {' or '.join(repr(n) for n in close)}?" if close else ""
    shown = [n for n in ("toy", "pascal_fold0_small_1shot", "coco_fold0_small_1shot") if n in names] or names[:3]
    raise FileNotFoundError(f"{text}: config file not found: {where}{hint} (the {len(names)} packaged configs, "
                            f"usable by name: {', '.join(shown)}, ...; in {packaged_configs()})")


_ENV_INTERPOLATION = re.compile(r"\$\{\s*oc\.env\s*:")


def _refuse_environment(raw, where: str, key: str = "") -> None:
    """ValueError naming `where` and the key of any value (or key) that reads an environment
    variable through `${oc.env:...}` (see the module docstring)."""
    items = raw.items() if isinstance(raw, dict) else enumerate(raw) if isinstance(raw, list) else ()
    for k, value in items:
        name = f"{key}.{k}" if key else str(k)
        if isinstance(k, str) and _ENV_INTERPOLATION.search(k) or isinstance(value, str) and _ENV_INTERPOLATION.search(value):
            raise ValueError(f"{where}: '{name}' reads an environment variable (${{oc.env:...}}), which is not "
                             "allowed: configs are saved with checkpoints and results; write the value, or let "
                             "the shell expand it (--set key=$VAR)")
        _refuse_environment(value, where, name)


def _inside(target: Path, home: Path) -> bool:
    try:
        target.relative_to(home)
    except ValueError:
        return False
    return True


def _default_file(path, name, home, anywhere: bool):
    """The file a `defaults` entry `name` of config `path` names; ValueError (nothing read)
    when it leads out of `home`, the folder of the config that was loaded."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{path}: `defaults` entries must be file names, got {name!r}")
    refuse = (f"{path}: `defaults` entry {name!r} names a file outside {home}; defaults must be files in the "
              "config's folder or below it, or packaged configs (load_config(..., defaults_anywhere=True) "
              "allows others)")
    if isinstance(path, Path):
        target = (path.parent / name).resolve()
        packaged = packaged_configs()
        if not (anywhere or _inside(target, Path(home))
                or isinstance(packaged, Path) and _inside(target, packaged.resolve())):
            raise ValueError(refuse)
        return target
    # an importlib.resources Traversable (e.g. a zipped package): resolve the name by its parts
    parts = list(_parts_below(path, home))
    entry = PurePosixPath(name)
    if entry.is_absolute():
        raise ValueError(refuse)
    for part in entry.parts:
        if part == "..":
            if not parts:
                raise ValueError(refuse)
            parts.pop()
        elif part != ".":
            parts.append(part)
    target = home
    for part in parts:
        target = target / part
    return target


def _parts_below(path, home) -> tuple[str, ...]:
    """The folder names from Traversable `home` down to the folder of `path`."""
    here, there = PurePosixPath(str(path)).parent, PurePosixPath(str(home))
    try:
        return here.relative_to(there).parts
    except ValueError:
        return ()


def _read_yaml(path, chain: tuple = (), home=None, anywhere: bool = False) -> list[tuple[dict, str]]:
    """The (mapping, file name) layers of `path` (a Path or an importlib.resources Traversable):
    its defaults first (recursively, relative to its folder, inside `home`: the folder of the
    config that was loaded), then itself."""
    if isinstance(path, Path):
        path = path.resolve()
    if home is None:
        home = path.parent
    if str(path) in map(str, chain):
        raise ValueError(f"{path}: `defaults` form a cycle ({' -> '.join(str(p) for p in (*chain, path))})")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found" + (f" (named in {chain[-1]})" if chain else ""))
    try:
        with path.open("r", encoding="utf-8") as f:
            raw = OmegaConf.to_container(OmegaConf.load(f))
    except Exception as e:  # YAML syntax errors come in several types
        raise ValueError(f"{path}: not a readable YAML config ({e})") from None
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    _refuse_environment(raw, str(path))
    defaults = raw.pop("defaults", [])
    if isinstance(defaults, str):
        defaults = [defaults]
    if not isinstance(defaults, list):
        raise ValueError(f"{path}: `defaults` must be a list of file names, got {defaults!r}")
    layers = []
    for name in defaults:
        layers += _read_yaml(_default_file(path, name, home, anywhere), (*chain, path), home, anywhere)
    _check_keys(raw, str(path))
    return layers + [(raw, str(path))]


def parse_overrides(overrides: Sequence[str]) -> dict:
    """`key=value` items (short names allowed) -> a nested mapping, values parsed as YAML."""
    items = []
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"override {item!r}: expected key=value, e.g. train.max_steps=100")
        if key in SECTIONS:
            raise ValueError(f"override {item!r}: '{key}' is a section; set one key, e.g. {key}.{fields(SECTIONS[key])[0].name}=...")
        if "." not in key and key != "out":
            if key not in SHORT_NAMES:
                hint = difflib.get_close_matches(key, [*SHORT_NAMES, *_known_keys()], 1)
                raise ValueError(f"override {item!r}: unknown key '{key}'" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
            key = SHORT_NAMES[key]
        items.append(f"{key}={value}")
        if _ENV_INTERPOLATION.search(value):
            _refuse_environment({key: value}, f"override {item!r}")
    try:
        raw = OmegaConf.to_container(OmegaConf.from_dotlist(items))
    except OmegaConfBaseException as e:
        raise ValueError(f"overrides {list(overrides)}: {e}") from None
    _check_keys(raw, "override")
    return raw


def build_config(layers: Sequence[tuple[dict, str]], where: str) -> DictConfig:
    """Merge mappings over the schema, then check the values (errors name `where`)."""
    cfg = OmegaConf.structured(Config)
    for raw, origin in layers:
        try:
            cfg = OmegaConf.merge(cfg, raw)
        except OmegaConfBaseException as e:
            key = getattr(e, "full_key", None) or "?"
            msg = str(e).splitlines()[0]
            raise ValueError(f"{origin}: bad value for '{key}': {msg}") from None
    validate(cfg, where)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def load_config(path, overrides: Sequence[str] = (), *, defaults_anywhere: bool = False) -> DictConfig:
    """The config of `path` (None: schema defaults) with `overrides` applied on top. `path`: a
    config file, the short name of a packaged config (`toy`, `pascal_fold0_small_1shot`: see
    `find_config`), or a file of `packaged_configs()` (e.g. `runs.CONFIGS / "toy.yaml"`).
    defaults_anywhere: let `defaults` entries name files outside the config's folder."""
    file = find_config(path) if path is not None else None
    layers = _read_yaml(file, anywhere=defaults_anywhere) if file is not None else []
    if overrides:
        layers.append((parse_overrides(overrides), f"override {' '.join(overrides)}"))
    return build_config(layers, _where(file if file is not None else "schema defaults", overrides))


def config_from_dict(raw: dict, overrides: Sequence[str] = (), where: str = "config") -> DictConfig:
    """A config from a plain mapping (e.g. the one stored in a checkpoint), checked like a file."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a config (a mapping of sections), got {type(raw).__name__}")
    _refuse_environment(raw, where)
    _check_keys(raw, where)
    layers = [(raw, where)]
    if overrides:
        layers.append((parse_overrides(overrides), f"override {' '.join(overrides)}"))
    return build_config(layers, _where(where, overrides))


def _where(origin, overrides: Sequence[str]) -> str:
    return f"{origin}" + (f" with --set {' '.join(overrides)}" if overrides else "")


def with_resolved_weights(cfg: DictConfig) -> DictConfig:
    """A copy of `cfg` whose `model.sam2_checkpoint` / `model.dino_checkpoint` are absolute when
    they name existing files: a run records where its frozen weights are, so that evaluation and
    prediction started from another folder find them (a hub id or a missing file stays as given,
    and loading reports it)."""
    cfg = cfg.copy()
    with read_write(cfg):  # configs are read-only once validated
        for key in ("sam2_checkpoint", "dino_checkpoint"):
            value = cfg.model.get(key)
            if value and Path(value).is_file():
                cfg.model[key] = str(Path(value).resolve())
    return cfg


def to_dict(cfg: DictConfig) -> dict:
    """Plain nested dict (what checkpoints store)."""
    return OmegaConf.to_container(cfg, resolve=True)


def _require(ok: bool, where: str, key: str, value, expected: str) -> None:
    if not ok:
        raise ValueError(f"{where}: {key}={value!r}: expected {expected}")


def validate(cfg: DictConfig, where: str = "config") -> None:
    """Value checks the schema's types cannot express."""
    from .backbones.dinov2 import DINOV2_CONFIGS
    from .backbones.sam2_model import SAM2_CONFIGS

    d, m, t = cfg.data, cfg.model, cfg.train
    _require(d.dataset in LIST_DATASETS, where, "data.dataset", d.dataset, f"one of {LIST_DATASETS}")
    _require(d.fold in range(4), where, "data.fold", d.fold, "0..3")
    _require(d.shot >= 1, where, "data.shot", d.shot, ">= 1")
    _require(d.image_size >= 16 and d.image_size % 16 == 0, where, "data.image_size", d.image_size, "a multiple of 16")
    scale = list(d.train_scale)
    _require(len(scale) == 2 and 0 < scale[0] <= scale[1], where, "data.train_scale", scale, "[min, max] with 0 < min <= max")
    for key in ("val_episodes", "val_batch"):
        _require(d[key] >= 1, where, f"data.{key}", d[key], ">= 1")
    _require(d.workers >= 0, where, "data.workers", d.workers, ">= 0")
    _require(d.stream in ("official", "seeded") and d.stream_workers >= 0, where, "data.stream/stream_workers",
             f"{d.stream}/{d.stream_workers}", "stream 'official' or 'seeded', stream_workers >= 0")
    _require(m.sam2 in SAM2_CONFIGS, where, "model.sam2", m.sam2, f"one of {sorted(SAM2_CONFIGS)}")
    _require(m.dino in DINOV2_CONFIGS, where, "model.dino", m.dino, f"one of {sorted(DINOV2_CONFIGS)}")
    _require(m.num_refine >= 0, where, "model.num_refine", m.num_refine, ">= 0")
    _require(m.kshot_calibration in ("mean", "official"), where, "model.kshot_calibration", m.kshot_calibration,
             "'mean' or 'official'")
    _require(t.device == "auto" or t.device == "cpu" or t.device.startswith("cuda"), where, "train.device", t.device,
             "auto, cpu, cuda or cuda:N")
    for key in ("epochs", "batch_size", "val_every", "early_stop", "log_every"):
        _require(t[key] >= 1, where, f"train.{key}", t[key], ">= 1")
    _require(t.lr > 0, where, "train.lr", t.lr, "> 0")
    _require(t.weight_decay >= 0, where, "train.weight_decay", t.weight_decay, ">= 0")
    _require(t.power >= 0, where, "train.power", t.power, ">= 0")
    _require(t.warmup_steps >= 0, where, "train.warmup_steps", t.warmup_steps, ">= 0")
    _require(t.precision in PRECISIONS, where, "train.precision", t.precision, f"one of {PRECISIONS}")
    for key in ("max_steps", "save_every", "mid_epoch_val_from"):
        _require(t[key] is None or t[key] >= (0 if key == "mid_epoch_val_from" else 1), where, f"train.{key}", t[key],
                 "null or " + (">= 0" if key == "mid_epoch_val_from" else ">= 1"))


