"""Class splits of the few-shot benchmarks: which classes are novel in which fold (as released)."""
from __future__ import annotations

PASCAL_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)
# COCO 2014 category names in the order of their ids; label PNG value = position + 1 (1..80).
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)
NUM_FOLDS = 4
SPLIT_MODES = ("interleaved", "contiguous")


def novel_classes(num_classes: int, fold: int, split: str = "contiguous") -> list[int]:
    """Novel class ids (1-based) of `fold` among `num_classes` = 4 x classes per fold.

    contiguous: fold i holds classes n*i+1 .. n*i+n (PASCAL-5i; COCO "PANet" split).
    interleaved: fold i holds i+1, i+5, i+9, ... (COCO-20i "FWB" split, the official default).
    """
    if fold not in range(NUM_FOLDS):
        raise ValueError(f"fold={fold}: expected 0..{NUM_FOLDS - 1}")
    if num_classes % NUM_FOLDS:
        raise ValueError(f"num_classes={num_classes} is not a multiple of {NUM_FOLDS} folds")
    per_fold = num_classes // NUM_FOLDS
    if split == "contiguous":
        return list(range(per_fold * fold + 1, per_fold * (fold + 1) + 1))
    if split == "interleaved":
        return list(range(fold + 1, num_classes + 1, NUM_FOLDS))
    raise ValueError(f"split={split!r}: expected one of {SPLIT_MODES}")


def base_classes(num_classes: int, fold: int, split: str = "contiguous") -> list[int]:
    """The classes seen in training for `fold`: all classes that are not novel."""
    novel = set(novel_classes(num_classes, fold, split))
    return [c for c in range(1, num_classes + 1) if c not in novel]


def default_split(dataset: str) -> str:
    """COCO uses the interleaved split in every official config; PASCAL and toy are contiguous."""
    return "interleaved" if dataset == "coco" else "contiguous"
