"""The synthetic world and its stand-in foundation models (the toy profile).

    world.py          procedurally generated classes, scenes and clips, written in the PASCAL layout
    sam2_standin.py   a tiny SAM 2 pretrained class-agnostically on clips (tracking)
    dino_standin.py   a tiny DINOv2 pretrained on scenes of every class rendered apart from the dataset
    standins.py       train each stand-in on first use (or copy the shipped one), then reuse it from a cache
    shipped.py        the stand-in the package ships (the DINOv2 one of the default world)
    training.py       what the two pretraining loops share

Nothing in `fss_sam2.engine` imports this package: the real data and models never depend on it.
"""
