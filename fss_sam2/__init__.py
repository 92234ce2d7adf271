"""fss-sam2: FSSAM few-shot segmentation on SAM 2 — package, tutorials and reproduction bundle."""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["FSSAM", "build_model", "load_model", "__version__"]


def __getattr__(name):  # lazy: `import fss_sam2` stays cheap (no torch / sam2 import)
    if name == "FSSAM":
        from .model import FSSAM

        return FSSAM
    if name in ("load_model", "build_model"):
        from . import loading

        return getattr(loading, name)
    raise AttributeError(f"module 'fss_sam2' has no attribute {name!r}")
