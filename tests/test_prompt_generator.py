"""Pseudo Prompt Generator: parity with a per-episode, per-shot numpy re-computation."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fss_sam2.modules.prompt_generator import PseudoPromptGenerator, dino_size

MEAN = np.array([0.485, 0.456, 0.406]) * 255
STD = np.array([0.229, 0.224, 0.225]) * 255


class TinyDino(nn.Module):
    """Stand-in for DINOv2: one 14x14 stride-14 conv; records its last input."""

    def __init__(self, dim=8):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=14, stride=14)
        self.seen = None

    def patch_features(self, x):
        self.seen = x
        return self.proj(x)


class ColourDino(nn.Module):
    """Token = mean normalised colour of its 14x14 patch."""

    def patch_features(self, x):
        return F.avg_pool2d(x, 14)


def episode(b=2, k=1, size=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    query = torch.rand(b, 3, size, size, generator=g) * 255
    supports = torch.rand(b, k, 3, size, size, generator=g) * 255
    masks = (torch.rand(b, k, size // 16, size // 16, generator=g) > 0.5).float()
    masks = F.interpolate(masks, size=(size, size), mode="nearest")  # blocky binary masks
    return query, supports, masks


def reference_priors(dino, query, supports, masks):
    """Loops over episodes and shots; prototypes, cosines and min-max in float64 numpy."""
    b, k, _, h, w = supports.shape
    side = h * 35 // 32

    def tokens(img):  # (3,H,W) 0..255 -> (C,t,t) numpy
        x = F.interpolate(img[None].double(), size=(side, side), mode="bilinear", align_corners=True)[0]
        x = (x.numpy() - MEAN[:, None, None]) / STD[:, None, None]
        with torch.no_grad():
            return dino.patch_features(torch.from_numpy(x).float()[None])[0].double().numpy()

    def cos_to(proto, feat):
        dots = np.einsum("c,cij->ij", proto, feat)
        return dots / (np.linalg.norm(proto) * np.linalg.norm(feat, axis=0) + 1e-7)

    def minmax(x):
        return (x - x.min()) / (x.max() - x.min() + 1e-7)

    def up(x):
        return F.interpolate(torch.from_numpy(x)[None, None], size=(h, w), mode="bilinear", align_corners=True)[0, 0].numpy()

    out = np.zeros((b, k, 2, h, w))
    for i in range(b):
        q = tokens(query[i])
        t = q.shape[-1]
        for j in range(k):
            s = tokens(supports[i, j])
            m = F.interpolate(masks[i, j][None, None].double(), size=(t, t), mode="bilinear", align_corners=True)
            m = m[0, 0].numpy()
            fg_proto = (s * m).sum(axis=(1, 2)) / (m.sum() + 5e-4)
            bg_proto = (s * (1 - m)).sum(axis=(1, 2)) / ((1 - m).sum() + 5e-4)
            fg = up(minmax(cos_to(fg_proto, q)))
            bg = up(minmax(cos_to(bg_proto, q)))
            out[i, j, 0] = fg
            out[i, j, 1] = minmax(np.maximum(fg - bg, 0))
    return out


@pytest.fixture
def generator():
    torch.manual_seed(0)
    return PseudoPromptGenerator(TinyDino())


def test_dino_size():
    assert dino_size(512) == 560 and dino_size(128) == 140 and dino_size(64) == 70
    for bad in (100, 96, 0):
        with pytest.raises(ValueError, match="multiple of 64"):
            dino_size(bad)


@pytest.mark.parametrize("k", [1, 3])
def test_matches_reference(generator, k):
    query, supports, masks = episode(b=2, k=k)
    priors = generator(query, supports, masks)
    assert priors.shape == (2, k, 2, 128, 128)
    ref = reference_priors(generator.dino, query, supports, masks)
    np.testing.assert_allclose(priors.double().numpy(), ref, atol=2e-5)


def test_range_and_per_shot_normalisation(generator):
    query, supports, masks = episode(b=2, k=3, seed=1)
    maps = generator.maps(query, supports, masks)
    priors = maps.priors
    assert priors.min() >= 0 and priors.max() <= 1
    # each shot spans [0,1] by itself: fg_sim / bg_sim on the token grid, ae at image size
    for x in (maps.fg_tokens, maps.bg_tokens, maps.disc):
        assert torch.all(x.amin(dim=(-2, -1)) < 1e-6) and torch.all(x.amax(dim=(-2, -1)) > 1 - 1e-5)
    for j in range(3):  # shot j of a 3-shot episode == the 1-shot episode of that support
        one = generator(query, supports[:, j : j + 1], masks[:, j : j + 1])
        torch.testing.assert_close(priors[:, j : j + 1], one, atol=1e-6, rtol=0)


def test_dino_input_resized_and_normalised(generator):
    query, supports, masks = episode(b=1, k=2)
    query = torch.tensor(MEAN, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, 128, 128)
    generator(query, supports, masks)
    seen = generator.dino.seen  # query first, then the B*K supports
    assert seen.shape == (3, 3, 140, 140)
    assert seen[0].abs().max() < 1e-5  # ImageNet mean (x255) maps to 0
    x = F.interpolate(supports[0, 1:2], size=(140, 140), mode="bilinear", align_corners=True)
    expected = (x - torch.tensor(MEAN).float().view(1, 3, 1, 1)) / torch.tensor(STD).float().view(1, 3, 1, 1)
    torch.testing.assert_close(seen[2:3], expected, atol=1e-5, rtol=1e-5)


def test_foreground_half_lights_up():
    gen = PseudoPromptGenerator(ColourDino())
    red, green = torch.tensor([255.0, 0, 0]), torch.tensor([0, 255.0, 0])
    img = torch.empty(1, 3, 128, 128)
    img[0, :, :, :64] = red.view(3, 1, 1)
    img[0, :, :, 64:] = green.view(3, 1, 1)
    mask = torch.zeros(1, 1, 128, 128)
    mask[..., :64] = 1  # the red half is the object
    priors = gen(img, img[:, None], mask)[0, 0]  # (2,H,W)
    left, right = priors[:, :, :64].mean(dim=(1, 2)), priors[:, :, 64:].mean(dim=(1, 2))
    assert torch.all(left > 0.85) and torch.all(right < 0.15), (left, right)
    assert priors[1, :, 80:].max() < 1e-6  # discriminative prior is exactly 0 deep in the background


def test_maps_for_tutorials(generator):
    query, supports, masks = episode(b=2, k=2, seed=3)
    maps = generator.maps(query, supports, masks)
    assert maps.fg_tokens.shape == maps.bg_tokens.shape == (2, 2, 10, 10)
    assert maps.fg.shape == maps.bg.shape == maps.disc.shape == (2, 2, 128, 128)
    torch.testing.assert_close(maps.priors, generator(query, supports, masks))
    torch.testing.assert_close(maps.fg[..., ::127, ::127], maps.fg_tokens[..., ::9, ::9])  # corners kept


def test_frozen_and_no_grad(generator):
    query, supports, masks = episode(b=1, k=1)
    generator.train()
    assert not generator.dino.training
    assert not any(p.requires_grad for p in generator.parameters())
    priors = generator(query.requires_grad_(), supports, masks)
    assert not priors.requires_grad


def test_bad_inputs(generator):
    query, supports, masks = episode(b=2, k=2)
    with pytest.raises(TypeError, match="patch_features"):
        PseudoPromptGenerator(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="support_masks"):
        generator(query, supports, masks[:, :1])
    with pytest.raises(ValueError, match="supports"):
        generator(query, supports[:1], masks)
    with pytest.raises(ValueError, match="multiple of 64"):
        q, s, m = episode(b=1, k=1, size=96)
        generator(q, s, m)
