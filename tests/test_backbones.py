"""Backbones: DINOv2 parity with Meta's implementation and hub layout, SAM 2.0 checkpoint
formats (release, bare, authors' FSSAM files) and the errors for wrong ones."""
from __future__ import annotations

from functools import partial

import pytest
import torch

from fss_sam2.backbones.dinov2 import (
    DINOV2_CONFIGS,
    DinoV2,
    DinoV2Config,
    build_dinov2,
    load_dinov2_weights,
)
from fss_sam2.backbones.sam2_checkpoint import (
    load_sam2_weights,
    read_sam2_checkpoint,
    sam2_size,
    validate_sam2_config,
)
from fss_sam2.backbones.sam2_model import build_sam2_model, encode_image, sam2_overrides

TOY_SIZE = 128  # image size of the tiny-toy SAM 2 in these tests


def official_vit(config: DinoV2Config):
    """Meta's DinoVisionTransformer with the hub's hyper-parameters (dinov2/hub/backbones.py)."""
    vits = pytest.importorskip(
        "dinov2.models.vision_transformer",
        reason="Meta's DINOv2 code: pip install --no-deps dinov2==0.0.1.dev2",
    )
    from dinov2.layers import MemEffAttention, NestedTensorBlock

    return vits.DinoVisionTransformer(
        img_size=config.img_size,
        patch_size=config.patch,
        embed_dim=config.dim,
        depth=config.depth,
        num_heads=config.heads,
        mlp_ratio=4,
        init_values=1.0,
        block_chunks=0,
        ffn_layer="swiglufused" if config.swiglu else "mlp",
        drop_path_uniform=True,  # no linspace .item(), so it also builds on the meta device
        block_fn=partial(NestedTensorBlock, attn_class=MemEffAttention),
    )


def test_dinov2_parameter_counts_and_vitg_swiglu_keys():
    # counts of Meta's hub models (checked against their code by the layout test below)
    counts = {"vits14": 22_056_576, "vitb14": 86_580_480, "vitl14": 304_368_640, "vitg14": 1_136_480_768}
    for name, count in counts.items():
        with torch.device("meta"):
            model = DinoV2(DINOV2_CONFIGS[name])
        assert sum(p.numel() for p in model.parameters()) == count, name
    assert model.state_dict()["blocks.39.mlp.w12.weight"].shape == (8192, 1536)
    assert model.state_dict()["blocks.39.mlp.w3.weight"].shape == (1536, 4096)


@pytest.mark.parametrize("name", ["vits14", "vitb14", "vitl14", "vitg14"])
def test_dinov2_state_dict_layout_is_the_hub_one(name):
    config = DINOV2_CONFIGS[name]
    with torch.device("meta"):  # shapes only: ViT-g has 1.1 B parameters
        ours, theirs = DinoV2(config), official_vit(config)
    shapes = lambda m: [(k, tuple(v.shape)) for k, v in m.state_dict().items()]  # noqa: E731
    assert shapes(ours) == shapes(theirs)
    assert ours.state_dict()["pos_embed"].shape == (1, 1 + 37 * 37, config.dim)


@pytest.mark.parametrize(
    "config",  # ViT-B/14 widths (one block, for speed); a stack of SwiGLU blocks as in ViT-g
    [DinoV2Config(dim=768, depth=1, heads=12), DinoV2Config(dim=96, depth=2, heads=4, swiglu=True)],
)
def test_dinov2_matches_official_patch_features(config):
    torch.manual_seed(0)
    theirs = official_vit(config).eval()
    with torch.no_grad():  # every parameter random, layer scales and norms included
        for p in theirs.parameters():
            p.normal_(0.0, 0.1 if p.dim() > 1 else 1.0)
    ours = DinoV2(config).eval()
    load_dinov2_weights(ours, theirs.state_dict(), "official")
    # 518: the pretraining grid (no resize); 560: FSSAM's; 392x476: non-square resize
    for height, width in [(518, 518), (560, 560), (392, 476)]:
        x = torch.randn(1, 3, height, width)
        with torch.no_grad():
            want = theirs.get_intermediate_layers(x, n=1, reshape=True, norm=True)[0]
            got = ours.patch_features(x)
        assert got.shape == (1, config.dim, height // 14, width // 14)
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_dinov2_vitb14_output_shape_at_560():
    with torch.device("meta"):
        model = DinoV2(DINOV2_CONFIGS["vitb14"])
        assert model.patch_features(torch.empty(1, 3, 560, 560)).shape == (1, 768, 40, 40)


def test_dinov2_loads_hub_file_and_authors_checkpoint(tmp_path):
    torch.manual_seed(0)
    source = DinoV2(DINOV2_CONFIGS["tiny-toy"]).eval()
    x = torch.randn(1, 3, 560, 560)
    with torch.no_grad():
        want = source.patch_features(x)
    hub_file = tmp_path / "dinov2_toy_pretrain.pth"
    torch.save(source.state_dict(), hub_file)
    authors_file = tmp_path / "train_epoch_1_0.5.pth"
    torch.save(
        {
            "state_dict": {"module.sam2.no_mem_embed": torch.zeros(1, 1, 256)}
            | {f"module.dino.{k}": v for k, v in source.state_dict().items()},
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]},
        },
        authors_file,
    )
    for checkpoint in [hub_file, authors_file, source.state_dict()]:
        model = build_dinov2("tiny-toy", checkpoint)
        assert not model.training and not any(p.requires_grad for p in model.parameters())
        with torch.no_grad():
            assert torch.equal(model.patch_features(x), want)


def test_dinov2_bad_checkpoints_are_named():
    torch.manual_seed(0)
    small = DinoV2(DINOV2_CONFIGS["vits14"]).state_dict()
    with pytest.raises(ValueError, match="checkpoint is DINOv2 ViT-S/14, you asked for vitb14"):
        build_dinov2("vitb14", small)
    toy = DinoV2(DINOV2_CONFIGS["tiny-toy"]).state_dict()
    broken = {k: v for k, v in toy.items() if k != "norm.bias"} | {"head.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"1 missing keys \['norm.bias'\], 1 unexpected keys \['head.weight'\]"):
        build_dinov2("tiny-toy", broken)
    with pytest.raises(ValueError, match="registers"):
        build_dinov2("tiny-toy", toy | {"register_tokens": torch.zeros(1, 4, 64)})
    with pytest.raises(ValueError, match="looks like a SAM 2 checkpoint"):
        build_dinov2("tiny-toy", {"image_encoder.trunk.pos_embed": torch.zeros(1)})
    with pytest.raises(ValueError, match="multiples of 14"):
        build_dinov2("tiny-toy").patch_features(torch.zeros(1, 3, 512, 512))


@pytest.fixture(scope="module")
def toy_sam():
    torch.manual_seed(0)
    return build_sam2_model("tiny-toy", image_size=TOY_SIZE)


def assert_same_encoding(a, b, size):
    images = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        fa, fb = encode_image(a, images), encode_image(b, images)
    for x, y in zip([fa.pix, fa.pos, *fa.high_res], [fb.pix, fb.pos, *fb.high_res]):
        assert torch.equal(x, y)


def test_sam2_small_builds_at_512_and_round_trips_release_format(tmp_path):
    torch.manual_seed(0)
    sam = build_sam2_model("small")
    images = torch.rand(1, 3, 512, 512) * 255
    with torch.no_grad():
        feats = encode_image(sam, images)
    assert feats.pix.shape == feats.pos.shape == (1, 256, 32, 32)
    assert [tuple(h.shape) for h in feats.high_res] == [(1, 32, 128, 128), (1, 64, 64, 64)]
    path = tmp_path / "sam2_hiera_small.pt"
    torch.save({"model": sam.state_dict()}, path)
    torch.manual_seed(1)
    loaded = build_sam2_model("small", checkpoint=path)
    assert_same_encoding(sam, loaded, 512)


def test_sam2_toy_round_trips_release_bare_and_authors_layouts(tmp_path, toy_sam):
    state = toy_sam.state_dict()
    files = {
        "release.pt": {"model": state},
        "bare.pt": state,
        "authors_ddp.pth": {
            "state_dict": {f"module.sam2.{k}": v for k, v in state.items()}
            | {"module.dino.cls_token": torch.zeros(1, 1, 768)},
            "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 1e-3, "params": [0]}]},
        },
        "authors_single_gpu.pth": {"state_dict": {f"sam2.{k}": v for k, v in state.items()}},
    }
    for name, content in files.items():
        torch.save(content, tmp_path / name)
        torch.manual_seed(1)
        loaded = build_sam2_model("tiny-toy", image_size=TOY_SIZE, checkpoint=tmp_path / name)
        assert read_sam2_checkpoint(tmp_path / name).keys() == state.keys()
        assert_same_encoding(toy_sam, loaded, TOY_SIZE)


def test_sam2_1_config_and_checkpoint_are_rejected(tmp_path, toy_sam):
    from sam2.build_sam import build_sam2

    overrides = sam2_overrides("tiny-toy", TOY_SIZE)
    sam21 = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", None, "cpu", hydra_overrides_extra=overrides)
    with pytest.raises(ValueError, match="add_tpos_enc_to_obj_ptrs=True .*no_obj_embed_spatial=a parameter"):
        validate_sam2_config(sam21)
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": sam21.state_dict()}, path)
    with pytest.raises(ValueError, match="sam2.1_hiera_tiny.pt: SAM 2.1 checkpoints are not supported"):
        build_sam2_model("tiny-toy", image_size=TOY_SIZE, checkpoint=path)
    with pytest.raises(ValueError, match="SAM 2.1 checkpoints are not supported"):
        build_sam2_model("small", checkpoint="facebook/sam2.1-hiera-small")  # refused before any download


def test_sam2_config_validation_names_each_wrong_flag(toy_sam):
    validate_sam2_config(toy_sam)
    toy_sam.memory_attention.layers[1].cross_attn_image.num_heads = 8
    toy_sam.fixed_no_obj_ptr = False
    try:
        with pytest.raises(ValueError, match=r"fixed_no_obj_ptr=False \(expected True\).*layers.1.cross_attn_image"):
            validate_sam2_config(toy_sam)
    finally:
        toy_sam.memory_attention.layers[1].cross_attn_image.num_heads = 1
        toy_sam.fixed_no_obj_ptr = True


def test_sam2_wrong_size_and_wrong_files_are_named(tmp_path, toy_sam):
    small_like = {"image_encoder.trunk.patch_embed.proj.weight": torch.zeros(96, 3, 7, 7)} | {
        f"image_encoder.trunk.blocks.{i}.norm1.weight": torch.zeros(1) for i in range(16)
    }
    assert sam2_size(small_like) == "small"
    with pytest.raises(ValueError, match="small.pt: checkpoint is SAM 2.0 small, model is tiny-toy"):
        load_sam2_weights(toy_sam, small_like, "small.pt")
    toy_file = tmp_path / "toy.pt"
    torch.save({"model": toy_sam.state_dict()}, toy_file)
    with pytest.raises(ValueError, match="toy.pt: checkpoint is SAM 2.0 tiny-toy, model is small"):
        build_sam2_model("small", checkpoint=toy_file)
    broken = dict(toy_sam.state_dict())
    del broken["no_obj_ptr"]
    with pytest.raises(ValueError, match=r"toy.pt: .*1 missing keys \['no_obj_ptr'\]"):
        load_sam2_weights(toy_sam, broken, "toy.pt")
    garbage = tmp_path / "notes.txt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="notes.txt: not a readable PyTorch checkpoint"):
        build_sam2_model("tiny-toy", image_size=TOY_SIZE, checkpoint=garbage)
    dino_file = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save({"cls_token": torch.zeros(1, 1, 384)}, dino_file)
    with pytest.raises(ValueError, match="no SAM 2 weights .*looks like a DINOv2 checkpoint"):
        read_sam2_checkpoint(dino_file)
    with pytest.raises(FileNotFoundError, match="missing/sam2_hiera_small.pt"):
        build_sam2_model("tiny-toy", image_size=TOY_SIZE, checkpoint="missing/sam2_hiera_small.pt")
