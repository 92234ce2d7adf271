"""The synthetic world and its stand-in foundation models (the toy profile).

    world.py          procedurally generated classes, scenes and clips, written in the PASCAL layout
    sam2_standin.py   a tiny 64-wide SAM 2 pretrained class-agnostically on clips (tracking)
    dino_standin.py   a tiny DINOv2 pretrained on scenes of every class rendered apart from the dataset
    standins.py       copy the shipped stand-ins (or train another world's on first use), then reuse them from a cache
    shipped.py        the stand-ins the package ships (those of the default world)
    training.py       what the two pretraining loops share

Nothing in `fss_sam2.engine` imports this package: the real data and models never depend on it.
"""
