"""Values the whole package shares, defined once."""
from __future__ import annotations

# label value of pixels that count for nothing (object borders in VOC, crowds in COCO)
IGNORE = 255

# datasets with the PASCAL-5i layout (fold lists on disk): they train, evaluate and give episodes
LIST_DATASETS = ("toy", "pascal", "coco")
# every dataset kind `fss_sam2.data.open_source` reads; "folder" is your own images (evaluate only)
DATASETS = (*LIST_DATASETS, "folder")

# the tag every synthetic-world number and figure carries
SYNTHETIC = "synthetic world (toy models)"
SYNTHETIC_NOTE = f"{SYNTHETIC} — not comparable to the paper"
