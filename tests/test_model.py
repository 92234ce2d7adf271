"""FSSAM end to end on tiny configs: shapes, gradients, switches, caching, checkpoints."""
import pytest
import torch

import fss_sam2
from fss_sam2.model import FSSAM, dice_loss

S = 128  # tiny-toy SAM 2 image size (memory grid 8 x 8)


def episode(b=2, k=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    query = torch.rand(b, 3, S, S, generator=g) * 255
    supports = torch.rand(b, k, 3, S, S, generator=g) * 255
    masks = torch.zeros(b, k, S, S, dtype=torch.long)
    masks[..., 32:96, 40:100] = 1
    masks[..., 30:32, :] = 255  # an ignore band
    return query, supports, masks


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return fss_sam2.load_model(sam2="tiny-toy", dino="tiny-toy", image_size=S)


@pytest.mark.parametrize("k", [1, 5])
def test_forward_backward_reaches_only_the_trainable_set(model, k):
    query, supports, masks = episode(k=k)
    model.train()
    try:
        logits = model(query, supports, masks)
        assert logits.shape == (2, S, S) and logits.dtype == torch.float32
        label = torch.zeros(2, S, S, dtype=torch.long)
        label[:, 40:90, 40:90] = 1
        model.loss(logits, label).backward()
    finally:
        model.eval()
    trainable = {id(p) for g in model.trainable_parameters() for p in g["params"]}
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad, "no gradient at all"
    assert all(id(dict(model.named_parameters())[n]) in trainable for n in with_grad)
    for part in ("memory_encoder", "memory_attention", "sam_mask_decoder.transformer"):
        assert any(n.startswith(f"sam2.{part}.") for n in with_grad), part
    frozen = ("image_encoder", "sam_prompt_encoder", "obj_ptr_proj", "mask_downsample")
    assert not any(n.startswith(tuple(f"sam2.{f}" for f in frozen)) for n in with_grad)
    assert not any(n.startswith("prompt_generator.dino") for n in with_grad)
    model.zero_grad(set_to_none=True)


def test_official_trainable_groups(model):
    groups = model.trainable_parameters()
    assert [g["name"] for g in groups] == ["sam_mask_decoder", "memory_encoder", "memory_attention"]
    n_train = sum(p.numel() for g in groups for p in g["params"])
    assert n_train == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert set(model.trainable_state_dict()) == {
        k for k in model.state_dict() if k.split(".")[1] in ("sam_mask_decoder", "memory_encoder", "memory_attention")
    }


def test_cached_priors_give_the_same_logits(model):
    query, supports, masks = episode(k=2)
    with torch.no_grad():
        logits, priors = model(query, supports, masks, return_priors=True)
        assert priors.shape == (2, 2, 2, S, S)
        assert torch.equal(model(query, supports, masks, priors=priors), logits)
        assert torch.equal(model.compute_priors(query, supports, masks), priors)


def test_ignore_pixels_in_support_masks_count_as_background(model):
    query, supports, masks = episode()
    zeroed = masks.clone()
    zeroed[zeroed == 255] = 0
    with torch.no_grad():
        assert torch.equal(model(query, supports, masks), model(query, supports, zeroed))


def test_switches_change_the_computation(model):
    query, supports, masks = episode(k=3)
    base = dict(sam2=model.sam2, dino=model.prompt_generator.dino)
    outs = {}
    with torch.no_grad():
        for name, kw in {
            "full": {},
            "no_imr": {"num_refine": 0},
            "no_scma": {"calibrate": False},
            "naive": {"query_memory": False},
            "official_kshot": {"kshot_calibration": "official"},
            "v2": {"refine_version": "v2"},
        }.items():
            outs[name] = FSSAM(**base, **kw).eval()(query, supports, masks)
        priors_only = FSSAM(**base, priors_only=True).eval()(query, supports, masks)
    for name, out in outs.items():
        assert out.shape == (2, S, S) and torch.isfinite(out).all(), name
        if name != "full":
            assert not torch.allclose(out, outs["full"]), f"switch {name} changed nothing"
    # priors only: the prediction is the discriminative prior itself (sigmoid(logit(p)) = p)
    prior = model.compute_priors(query, supports, masks)[:, :, 1].mean(1)
    assert torch.allclose(torch.sigmoid(priors_only), prior.clamp(1e-6, 1 - 1e-6), atol=1e-5)


def test_one_shot_official_and_mean_calibration_agree(model):
    query, supports, masks = episode(k=1)
    base = dict(sam2=model.sam2, dino=model.prompt_generator.dino)
    with torch.no_grad():
        a = FSSAM(**base, kshot_calibration="official").eval()(query, supports, masks)
        b = FSSAM(**base, kshot_calibration="mean").eval()(query, supports, masks)
    assert torch.equal(a, b)


def test_dice_loss_by_hand():
    logits = torch.tensor([[[10.0, -10.0], [10.0, 0.0]]])  # p ~ [1, 0, 1, 0.5]
    target = torch.tensor([[[1, 0], [255, 1]]])
    p = torch.sigmoid(logits).flatten()
    # official: 255 counts as background -> t = [1,0,0,1]
    t = torch.tensor([1.0, 0, 0, 1])
    expected = 1 - 2 * (p * t).sum() / (p.pow(2).sum() + t.pow(2).sum())
    assert torch.allclose(dice_loss(logits, target), expected)
    keep = torch.tensor([1.0, 1, 0, 1])
    expected_masked = 1 - 2 * (p * t * keep).sum() / ((p * keep).pow(2).sum() + t.pow(2).sum())
    assert torch.allclose(dice_loss(logits, target, mask_ignore=True), expected_masked)


def test_bad_inputs_are_named(model):
    query, supports, masks = episode()
    with pytest.raises(ValueError, match="query"):
        model(query[:, :, :64, :64], supports, masks)
    with pytest.raises(ValueError, match="support_masks"):
        model(query, supports, masks[:, :, :64])
    with pytest.raises(ValueError, match="refine_version"):
        FSSAM(model.sam2, model.prompt_generator.dino, refine_version="v3")


def test_official_checkpoint_layout_round_trips(model, tmp_path):
    """A random model saved as the authors' DDP checkpoint loads into ours with equal outputs."""
    state = {f"module.{k.replace('prompt_generator.dino.', 'dino.')}": v for k, v in model.state_dict().items()}
    path = tmp_path / "best_1shot.pth"
    torch.save({"epoch": 3, "state_dict": state, "optimizer": {"state": {}, "param_groups": []}}, path)
    loaded = fss_sam2.load_model(path, sam2="tiny-toy", dino="tiny-toy", image_size=S)
    query, supports, masks = episode()
    with torch.no_grad():
        assert torch.equal(loaded(query, supports, masks), model(query, supports, masks))
    with pytest.raises(ValueError, match="SAM 2.0 tiny-toy|small"):
        fss_sam2.load_model(path, sam2="small", dino="tiny-toy", image_size=S)


def test_not_a_checkpoint_is_named(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"foo": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="weights.pt"):
        fss_sam2.load_model(path, sam2="tiny-toy", dino="tiny-toy", image_size=S)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("switches", [{}, {"num_refine": 0}, {"calibrate": False}, {"query_memory": False},
                                      {"priors_only": True}, {"kshot_calibration": "official"}])
def test_trace_gives_the_forward_logits_bit_for_bit(k, switches):
    torch.manual_seed(0)
    model = fss_sam2.load_model(sam2="tiny-toy", dino="tiny-toy", image_size=S, **switches)
    query, supports, masks = episode(k=k, seed=3)
    with torch.no_grad():
        expected = model(query, supports, masks)
    trace = model.trace(query, supports, masks)
    assert torch.equal(trace.logits, expected)
    if model.priors_only:
        assert trace.memories is None and trace.priors.disc.shape == (2, k, S, S)
        return
    layers = len(model.sam2.memory_attention.layers)
    assert len(trace.attention.weights) == layers
    for w in trace.attention.weights:  # softmax rows over the attended keys
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))
    if not model.query_memory:
        assert trace.priors is None and trace.query_memory is None and trace.attention_calibrated is None
        assert trace.attention.weights[0].shape == (2, 1, 64, k * 64 + 4 * k)  # support tokens + pointers
        return
    assert len(trace.refinement) == model.num_refine
    if model.num_refine:
        assert torch.equal(trace.refinement[-1]["disc_memory"], trace.query_memory)
    else:
        assert torch.equal(trace.query_memory, trace.memories.disc)
    own = trace.attention_calibrated if model.calibrates else trace.attention_plain
    assert own is trace.attention
    assert len(trace.attention_calibrated.calibration) == layers and trace.attention_plain.calibration == []
    assert trace.attention_plain.query_attention[0].shape == (2, 1, 64, 64)
    assert trace.memories.support.shape == (2, k, 64, 8, 8) and trace.memories.prior_disc.shape == (2, 1, 8, 8)


def test_trace_rounds_override_leaves_the_model_alone(model):
    query, supports, masks = episode(seed=4)
    trace = model.trace(query, supports, masks, rounds=5, version="v2")
    assert len(trace.refinement) == 5 and model.num_refine == 3 and model.refine_version == "v1"
    _, steps = model.refine(trace.memories, rounds=5, version="v2", history=True)
    assert torch.equal(steps[-1]["disc_memory"], trace.query_memory)
