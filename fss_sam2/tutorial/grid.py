"""The evaluation grid: every fold and shot asked for, FSSAM against its ablations and the naive
SAM 2, each number with its interval (`fss-sam2 reproduce`, notebook 07).

For each fold in `folds`, shot in `shots` and training seed in `training_seeds`:
  train   FSSAM and the naive "support as memory" SAM 2 (`runs.VARIANTS`) through `ensure_run`
          and `tutorial_config`, so that a finished run is reused (notebooks 06 and 07 find the
          same runs). A shot in `train_shots` gets its own runs, as in the paper; any other shot
          evaluates the weights trained at 1-shot with its K supports (docs/deviations.md, "Toy
          5-shot weights"). Run folders are tutorial_config's names, with _seed{S} when the
          training seed is not the official 321.
  evaluate on `episodes` episodes of the official stream (`episode_seed`, 321): FSSAM, its
          inference-time ablations on the same weights (w/o IMR: num_refine=0, w/o SCMA:
          calibrate=false, both, IMR rounds `imr_rounds`, the priors alone; at shots > 1 only
          those `kshot_ablations` names, if given) and the naive model,
          one FeatureCache for all (the ablations reuse the frozen encoders' outputs), into
          RESULTS_DIR/<name>/results.json: toy_fssam, toy_fssam_no_imr, ..., toy_naive (fold 0,
          1-shot), toy_fssam_fold1_5shot_no_scma, ..., toy_fssam_seed1_imr5, .... An evaluation
          whose results.json already holds this checkpoint, config and episodes is reused.
  compare FSSAM with every other evaluation of its setting on the same episodes (paired
          bootstrap, `stats.paired_miou_difference`), and, where a setting has >= 2 training
          seeds, the mean over them (`stats.hierarchical_miou_difference`), into
          RESULTS_DIR/ablations_<dataset>.json (`tables.ABLATIONS`; merged with what earlier
          grids wrote there).

`plan_grid` lists the runs and evaluations without training or reading anything but the config.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from ..config import ModelConfig, TrainConfig, to_dict
from ..constants import SYNTHETIC, SYNTHETIC_NOTE
from ..data.folds import NUM_FOLDS
from ..engine.cache import FeatureCache
from ..engine.checkpoint import LEARNING_FREE, config_diff
from ..engine.evaluate import evaluate_checkpoint
from ..engine.runtime import atomic_write_text
from ..stats import EPISODE_SCORES, RESAMPLES, hierarchical_miou_difference, paired_miou_difference
from ..toy import standins
from ..toy.world import SMOKE_WORLD, TOY_WORLD, ensure_toy_world
from .runs import VARIANTS, ensure_run, run_checkpoint, tutorial_config, weight_overrides
from .session import EPISODE_SEED, PROFILES
from .tables import ABLATIONS

DEFAULT_SEED = TrainConfig().seed  # the official training seed: run names carry any other
FULL_ROUNDS = ModelConfig().num_refine  # FSSAM's own IMR rounds: evaluating them again is FSSAM itself


@dataclass(frozen=True)
class Training:
    """One run to train (or find): `variant` (a key of runs.VARIANTS) on `fold` at `shot` with
    training seed `seed`, in RUNS_DIR/`name`."""

    variant: str
    fold: int
    shot: int
    seed: int
    name: str


@dataclass(frozen=True)
class Evaluation:
    """The weights of `run` evaluated at `shot` with the inference-time config overrides
    `switches`, into RESULTS_DIR/`name`."""

    name: str
    run: Training
    shot: int
    switches: tuple[str, ...]


@dataclass(frozen=True)
class Grid:
    """What `plan_grid` lists: the runs (each once, in order) and the evaluations of their weights."""

    trainings: tuple[Training, ...]
    evaluations: tuple[Evaluation, ...]


def inference_variants(imr_rounds: Sequence[int]) -> dict[str, tuple[str, ...]]:
    """Results-folder suffix -> config overrides of FSSAM and its inference-time ablations."""
    return {
        "": (),
        "_no_imr": ("model.num_refine=0",),
        "_no_scma": ("model.calibrate=false",),
        "_no_imr_scma": ("model.num_refine=0", "model.calibrate=false"),
        **{f"_imr{r}": (f"model.num_refine={r}",) for r in imr_rounds},
        "_priors_only": ("model.priors_only=true",),
    }


def _integers(name: str, values, low: int, high: int | None = None, what: str = "") -> tuple[int, ...]:
    """`values` as a tuple of distinct integers in low..high (None: no upper bound), else a
    ValueError naming the argument."""
    values = tuple(values)
    limits = f"{low}..{high}" if high is not None else f">= {low}"
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < low or (high is not None and v > high):
            raise ValueError(f"{name}={list(values)}: {v!r} is not {what or 'an integer'} {limits}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name}={list(values)}: expected distinct values")
    return values


def _seeded(name: str, seed: int) -> str:
    return name if seed == DEFAULT_SEED else f"{name}_seed{seed}"


def plan_grid(profile: str, data_root: str | Path, *, folds: Sequence[int] = (0,), shots: Sequence[int] = (1,),
              training_seeds: Sequence[int] = (DEFAULT_SEED,), train_shots: Sequence[int] = (1,),
              imr_rounds: Sequence[int] = (1, 5), kshot_ablations: Sequence[str] | None = None,
              config: str | Path | None = None) -> Grid:
    """The runs to train and the evaluations of the grid, by name (see the module docstring);
    bad arguments raise ValueError naming the argument. `kshot_ablations`: the suffixes of
    `inference_variants` (e.g. "_no_imr") evaluated at shots > 1 (None: all of them). `data_root`
    and `config` only decide the dataset of the names (the paper profile reads it from the root's
    fss_meta.json)."""
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r}: expected one of {PROFILES}")
    folds = _integers("folds", folds, 0, NUM_FOLDS - 1, "a fold")
    shots = _integers("shots", shots, 1, what="a shot")
    training_seeds = _integers("training_seeds", training_seeds, 0, what="a seed")
    train_shots = _integers("train_shots", train_shots, 1, what="a shot")
    imr_rounds = _integers("imr_rounds", imr_rounds, 1, what="a number of IMR rounds")
    for name, values in (("folds", folds), ("shots", shots), ("training_seeds", training_seeds)):
        if not values:
            raise ValueError(f"{name}=[]: expected at least one")
    if FULL_ROUNDS in imr_rounds:
        raise ValueError(f"imr_rounds={list(imr_rounds)}: {FULL_ROUNDS} rounds is FSSAM itself (evaluated anyway)")
    extra = sorted(set(train_shots) - set(shots) - {1})
    if extra:
        raise ValueError(f"train_shots={list(train_shots)}: {extra} not among shots={list(shots)}")
    ablations = inference_variants(imr_rounds)
    if kshot_ablations is not None:
        unknown = sorted(set(kshot_ablations) - set(ablations) - {""})
        if unknown:
            raise ValueError(f"kshot_ablations={list(kshot_ablations)}: {unknown} are not among {sorted(ablations)[1:]}")

    def name(variant: str, fold: int, shot: int) -> str:
        return tutorial_config(profile, variant, data_root, fold=fold, shot=shot, config=config)[1]

    trainings, evaluations = {}, []
    for fold in folds:
        for shot in shots:
            trained_shot = shot if shot in train_shots else 1
            for seed in training_seeds:
                for variant in VARIANTS:
                    key = (variant, fold, trained_shot, seed)
                    if key not in trainings:
                        trainings[key] = Training(variant, fold, trained_shot, seed,
                                                  _seeded(name(variant, fold, trained_shot), seed))
                    base = _seeded(name(variant, fold, shot), seed)
                    switches = ({k: v for k, v in ablations.items()
                                 if shot == 1 or kshot_ablations is None or k in ("", *kshot_ablations)}
                                if variant == "fssam" else {"": ()})
                    evaluations += [Evaluation(base + suffix, trainings[key], shot, s)
                                    for suffix, s in switches.items()]
    return Grid(tuple(trainings.values()), tuple(evaluations))


# ---- running it ----


def toy_weights(data_root: str | Path, cache_dir: str | Path, device: str) -> dict:
    """The toy stand-ins' files {"sam2": path, "dino": path} (one pair serves every fold; trained
    once, then read from `cache_dir`), as the tutorial session asks for them, so that the runs of
    notebooks 06 and 07 are the grid's."""
    paths = standins.ensure_toy_standins(data_root, cache_dir, device=device)
    return {"sam2": paths["sam2"], "dino": paths["dino"]}


def _finished(out: Path, cfg, checkpoint: Path, episodes: int, episode_seed: int) -> dict | None:
    """The results.json in `out` when it holds this evaluation (checkpoint, config up to
    settings that change no number, episodes, written after the checkpoint), else None."""
    path = out / "results.json"
    if not (path.is_file() and (out / EPISODE_SCORES).is_file()):
        return None
    try:
        r = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    want = json.loads(json.dumps(to_dict(cfg), default=str))
    same = (Path(str(r.get("checkpoint"))).resolve() == checkpoint.resolve() and r.get("episodes") == episodes
            and "miou_ci95" in r
            and [s.get("seed") for s in r.get("seeds", [])] == [episode_seed]
            and not config_diff(r.get("config") or {}, want, LEARNING_FREE)
            and path.stat().st_mtime_ns >= checkpoint.stat().st_mtime_ns)
    return r if same else None


def run_grid(profile: str, data_root: str | Path, runs_dir: str | Path, results_dir: str | Path, *,
             folds: Sequence[int] = (0,), shots: Sequence[int] = (1,),
             training_seeds: Sequence[int] = (DEFAULT_SEED,), train_shots: Sequence[int] = (1,),
             imr_rounds: Sequence[int] = (1, 5), kshot_ablations: Sequence[str] | None = None,
             episodes: int = 1000, episode_seed: int = EPISODE_SEED,
             device: str = "cpu", cache_dir: str | Path | None = None, sam2_checkpoint: str | Path | None = None,
             dino_checkpoint: str | Path | None = None, checkpoints: Mapping[str, str | Path] | None = None,
             train: bool = True, smoke: bool = False, config: str | Path | None = None,
             max_steps: int | None = None, val_episodes: int | None = None, sam2: str | None = None,
             dino: str | None = None, image_size: int | None = None, workers: int | None = None,
             progress: bool = True) -> pd.DataFrame:
    """Train, evaluate and compare the grid of `plan_grid` (see the module docstring); returns
    one row per evaluation: name, fold, shot, training seed, trained shot, method, mIoU, its 95%
    interval and FB-IoU (%), seconds (measured when it ran), reused, path of its results.json.

    toy: the synthetic world at `data_root` (generated if missing; `smoke`: the CI world, random
    weights, `runs.SMOKE` training) and the stand-ins cached in `cache_dir`. paper: a prepared
    root and the SAM 2.0 / DINOv2 files `sam2_checkpoint` / `dino_checkpoint`. `train`: train
    missing runs (else only look them up in `runs_dir`; a missing one is skipped with a line
    saying so). `checkpoints` ({"fssam": file, "naive": file}, one fold and training seed only):
    evaluate these weights for every shot instead of RUNS_DIR's. The other keywords go to
    `tutorial_config`."""
    grid = plan_grid(profile, data_root, folds=folds, shots=shots, training_seeds=training_seeds,
                     train_shots=train_shots, imr_rounds=imr_rounds, kshot_ablations=kshot_ablations, config=config)
    if episodes < 1:
        raise ValueError(f"episodes={episodes}: expected >= 1")
    checkpoints = {k: v for k, v in (checkpoints or {}).items() if v is not None}
    unknown = set(checkpoints) - set(VARIANTS)
    if unknown:
        raise ValueError(f"checkpoints: unknown variant(s) {sorted(unknown)}; expected {sorted(VARIANTS)}")
    if checkpoints and (len(folds) > 1 or len(training_seeds) > 1):
        raise ValueError(f"checkpoints={checkpoints}: given files serve one fold and one training seed, not "
                         f"folds={list(folds)}, training_seeds={list(training_seeds)}")
    for variant, path in checkpoints.items():
        if not Path(path).is_file():
            raise FileNotFoundError(f"checkpoints[{variant!r}] = {str(path)!r}: no such file")
    runs_dir, results_dir = Path(runs_dir), Path(results_dir)
    toy = profile == "toy"
    if toy:
        ensure_toy_world(data_root, SMOKE_WORLD if smoke else TOY_WORLD, progress)
    tag = f"  [{SYNTHETIC}{', random weights' if smoke else ''}]" if toy else ""
    explicit = weight_overrides(sam2_checkpoint, dino_checkpoint)  # win over the files our checkpoints name
    options = dict(device=device, config=config, max_steps=max_steps, val_episodes=val_episodes, smoke=smoke,
                   sam2=sam2, dino=dino, image_size=image_size, workers=workers)
    weights = {}  # the frozen files, found (toy: trained) when a config first needs them

    def configure(variant: str, fold: int, shot: int, seed: int):
        if not weights:
            weights.update(toy_weights(data_root, cache_dir or Path(data_root).parent / "cache", device)
                           if toy and not smoke else {"sam2": sam2_checkpoint, "dino": dino_checkpoint})
        return tutorial_config(profile, variant, data_root, fold=fold, shot=shot, seed=seed,
                               sam2_checkpoint=weights["sam2"], dino_checkpoint=weights["dino"], **options)[0]

    found = {}  # Training -> checkpoint file
    for run in grid.trainings:
        if run.variant in checkpoints:
            found[run] = Path(checkpoints[run.variant])
            print(f"{run.name}: given {found[run]}{tag}", flush=True)
            continue
        if train:
            s = ensure_run(configure(run.variant, run.fold, run.shot, run.seed), runs_dir / run.name, replace=toy,
                           progress=progress)
            print(f"{run.name}: {'found' if s['reused'] else 'trained'}: {s['steps']} steps, {s['seconds']:.0f} s "
                  f"of training{tag}", flush=True)
        try:
            found[run] = run_checkpoint(runs_dir / run.name)
        except FileNotFoundError as e:
            print(f"{e}: its evaluations are skipped", flush=True)

    cache = FeatureCache()
    rows = []
    for ev in grid.evaluations:
        if ev.run not in found:
            continue
        cfg = configure(ev.run.variant, ev.run.fold, ev.shot, ev.run.seed)
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(ev.switches)))  # results.json names the switches
        out, checkpoint = results_dir / ev.name, found[ev.run]
        r = _finished(out, cfg, checkpoint, episodes, episode_seed)
        reused = r is not None
        if r is None:
            r = evaluate_checkpoint(cfg, checkpoint, out, episodes=episodes, seeds=(episode_seed,), device=device,
                                    cache=cache, overrides=[*ev.switches, *explicit], progress=progress)
        seconds = sum(s["seconds"] for s in r["seeds"])
        low, high = (100 * v for v in r["miou_ci95"])
        print(f"{ev.name:34s} {r['method']:26s} mIoU {100 * r['miou']:5.1f} [{low:.1f}, {high:.1f}]  "
              f"FB-IoU {100 * r['fb_iou']:5.1f}  ({episodes} episodes, {seconds:.0f} s{', found' if reused else ''})"
              f"{tag}", flush=True)
        rows.append({"name": ev.name, "variant": ev.run.variant, "fold": ev.run.fold, "shot": ev.shot,
                     "training seed": ev.run.seed, "trained shot": r["trained_shot"], "method": r["method"],
                     "mIoU": 100 * r["miou"], "mIoU 95% CI": [low, high], "FB-IoU": 100 * r["fb_iou"],
                     "seconds": seconds, "reused": reused, "path": str(out / "results.json")})
    table = pd.DataFrame(rows, columns=["name", "variant", "fold", "shot", "training seed", "trained shot", "method",
                                        "mIoU", "mIoU 95% CI", "FB-IoU", "seconds", "reused", "path"])
    if rows:
        path = write_ablations(results_dir, table)
        print(f"paired differences with their 95% intervals -> {path}{tag}", flush=True)
    return table


# ---- the ablation file ----


def _comparisons(results_dir: Path, reference: str, others: Sequence[tuple[str, str]]) -> list[dict]:
    """FSSAM (`reference`, a results folder name) against each (method, folder) of `others`."""
    out = []
    for method, name in others:
        d = paired_miou_difference(results_dir / reference, results_dir / name)
        out.append({"method": method, "name": name, **d, "excludes_zero": not d["ci95"][0] <= 0 <= d["ci95"][1]})
    return out


def write_ablations(results_dir: str | Path, evaluations: pd.DataFrame) -> Path:
    """Write RESULTS_DIR/ablations_<dataset>.json (atomically) from the evaluations of a grid
    (`run_grid`'s rows): per setting (fold, shot, training seed) FSSAM against every other
    evaluation of it, and per (fold, shot) with >= 2 training seeds the mean over them. Settings
    written by earlier grids stay unless this one replaces them (or their results are gone)."""
    results_dir = Path(results_dir)
    records = {name: json.loads((results_dir / name / "results.json").read_text()) for name in evaluations["name"]}
    dataset = next(iter(records.values()))["dataset"]
    path = results_dir / ABLATIONS.format(dataset=dataset)
    settings = {}
    if path.is_file():
        for s in json.loads(path.read_text()).get("settings", []):
            names = [s["reference"], *(c["name"] for c in s["comparisons"])]
            if all((results_dir / n / EPISODE_SCORES).is_file() for n in names):
                settings[s["fold"], s["shot"], s["training_seed"]] = s
    for (fold, shot, seed), g in evaluations.groupby(["fold", "shot", "training seed"]):
        full = g[(g["variant"] == "fssam") & (g["method"] == "FSSAM")]
        if full.empty:
            continue
        reference = full["name"].iloc[0]
        others = [(m, n) for m, n in zip(g["method"], g["name"]) if n != reference]
        settings[int(fold), int(shot), int(seed)] = {
            "fold": int(fold), "shot": int(shot), "training_seed": int(seed),
            "trained_shot": records[reference]["trained_shot"], "episode_seed": records[reference]["ci95_seed"],
            "episodes": records[reference]["episodes"], "reference": reference,
            "miou": records[reference]["miou"], "comparisons": _comparisons(results_dir, reference, others),
        }
    across = []
    for fold, shot in sorted({(f, k) for f, k, _ in settings}):
        seeds = sorted((s for f, k, s in settings if (f, k) == (fold, shot)), key=lambda s: (s != DEFAULT_SEED, s))
        if len(seeds) < 2:
            continue
        entries = [settings[fold, shot, s] for s in seeds]
        by_method = [{c["method"]: c["name"] for c in e["comparisons"]} for e in entries]
        comparisons = []
        for method in [m for m in by_method[0] if all(m in b for b in by_method)]:
            pairs = [(results_dir / e["reference"], results_dir / b[method]) for e, b in zip(entries, by_method)]
            d = hierarchical_miou_difference(pairs)
            comparisons.append({"method": method, **d, "excludes_zero": not d["ci95"][0] <= 0 <= d["ci95"][1]})
        across.append({"fold": fold, "shot": shot, "training_seeds": seeds, "comparisons": comparisons})
    synthetic = dataset == "toy"
    record = {
        "dataset": dataset, "synthetic": synthetic, "label": SYNTHETIC_NOTE if synthetic else None,
        "delta": "mIoU(FSSAM) - mIoU(method), fractions, on the same episodes (each setting's episode_seed); "
                 "> 0: FSSAM is better, i.e. what the switched-off part adds",
        "ci95": f"95% percentile bootstrap interval, {RESAMPLES} resamples, generator seed 0: settings paired "
                "over the episodes; across_training_seeds hierarchical (training seeds, then episodes)",
        "settings": [settings[k] for k in sorted(settings, key=lambda k: (k[0], k[1], k[2] != DEFAULT_SEED, k[2]))],
        "across_training_seeds": across,
    }
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    return path
