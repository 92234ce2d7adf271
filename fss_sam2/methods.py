"""The name of an FSSAM variant, from its switches: what results.json records as `method` and
the results tables print (one place, so that the engine and the tutorial's tables agree).

    {}                                          FSSAM
    num_refine=0                                FSSAM w/o IMR
    calibrate=false                             FSSAM w/o SCMA
    num_refine=0, calibrate=false               FSSAM w/o IMR, SCMA
    num_refine=r (not 0, not the default 3)     IMR rounds = r
    query_memory=false                          SAM 2 (support as memory)
    priors_only=true                            priors only
A refinement version, bias scale or K-shot calibration other than the defaults is added in
parentheses, e.g. "FSSAM (IMR v2)".
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields

from .config import ModelConfig

BACKBONE_KEYS = ("sam2", "dino", "sam2_checkpoint", "dino_checkpoint")
# config `model:` keys that are FSSAM switches (see FSSAM's docstring): the rest of the schema
SWITCHES = tuple(f.name for f in fields(ModelConfig) if f.name not in BACKBONE_KEYS)
FULL = "FSSAM"
NAIVE = "SAM 2 (support as memory)"
PRIORS_ONLY = "priors only"


def method_name(switches: Mapping, shot: int = 1) -> str:
    """The method label of a model from its switches (a config's `model:` section or the
    switches of a built FSSAM; missing keys: the defaults). `shot` decides whether the K-shot
    calibration mode is worth naming (it changes nothing at 1-shot)."""
    d = asdict(ModelConfig())
    m = {**d, **switches}
    r, cal = m["num_refine"], m["calibrate"]
    if m["priors_only"]:
        return PRIORS_ONLY
    if not m["query_memory"]:
        return NAIVE
    if r not in (0, d["num_refine"]):
        name = f"IMR rounds = {r}" + ("" if cal else ", w/o SCMA")
    else:
        off = (["IMR"] if r == 0 else []) + ([] if cal else ["SCMA"])
        name = f"{FULL} w/o " + ", ".join(off) if off else FULL
    notes = []
    if r and m["refine_version"] != d["refine_version"]:
        notes.append(f"IMR {m['refine_version']}")
    if cal and m["bias_scale"] != d["bias_scale"]:
        notes.append(f"bias scale {m['bias_scale']:g}")
    if cal and shot > 1 and m["kshot_calibration"] != d["kshot_calibration"]:
        notes.append(f"{m['kshot_calibration']} {shot}-shot calibration")
    return f"{name} ({', '.join(notes)})" if notes else name
