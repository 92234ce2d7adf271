"""The frozen-feature cache: bit-identical outputs, keys that cannot go stale, LRU, disk tier."""
from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
import torch

import fss_sam2
from fss_sam2.data.episodes import make_episodes
from fss_sam2.data.sources import ListSource
from fss_sam2.engine import cache as cache_module
from fss_sam2.engine.cache import DINO, SAM, FeatureCache, image_key
from fss_sam2.engine.evaluate import call_model, evaluate
from fss_sam2.engine.runtime import atomic_write
from fss_sam2.model import FSSAM
from tests.fixtures_data import write_tiny_root

# 128 px: there this CPU's encoder kernels give every image the same bits in any batch size,
# the condition for a cached forward to equal the direct one bit for bit (see engine/cache.py)
S = 128

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return fss_sam2.load_model(sam2="tiny-toy", dino="tiny-toy", image_size=S)


def episode(b=2, k=1, seed=0, size=S):
    g = torch.Generator().manual_seed(seed)
    query = torch.rand(b, 3, size, size, generator=g) * 255
    supports = torch.rand(b, k, 3, size, size, generator=g) * 255
    supports[-1, 0] = query[0]  # an image twice in one batch: computed once
    masks = torch.zeros(b, k, size, size, dtype=torch.long)
    masks[..., size // 4: size // 2, size // 3: 3 * size // 4] = 1
    return query, supports, masks


@pytest.mark.parametrize("k", [1, 2])
def test_cached_forward_is_identical(model, k):
    query, supports, masks = episode(k=k)
    cache = FeatureCache()
    with torch.inference_mode():
        logits, priors = model(query, supports, masks, return_priors=True)
        for _ in range(2):  # misses, then hits
            features = cache.features(model, query, supports)
            out, out_priors = model(query, supports, masks, features=features, return_priors=True)
            assert torch.equal(out, logits) and torch.equal(out_priors, priors)
    unique = 2 + 2 * k - 1
    assert cache.stats()["misses"] == 2 * unique  # SAM 2 and DINOv2 entries of each distinct image
    assert cache.stats()["hits"] == 2 * unique


def test_hits_skip_both_encoders(model, monkeypatch):
    query, supports, masks = episode()
    cache = FeatureCache()
    with torch.inference_mode():
        expected = model(query, supports, masks)
        cache.features(model, query, supports)

        def refuse(*args, **kwargs):
            raise AssertionError("a frozen encoder ran")

        monkeypatch.setattr("fss_sam2.model.encode_image", refuse)
        monkeypatch.setattr(cache_module, "encode_image", refuse)
        monkeypatch.setattr(model.prompt_generator, "tokens", refuse)
        assert torch.equal(model(query, supports, masks, features=cache.features(model, query, supports)), expected)


def test_only_the_encoders_a_model_uses_are_cached(model):
    query, supports, masks = episode()
    base = dict(sam2=model.sam2, dino=model.prompt_generator.dino)
    for kw, parts in (({"query_memory": False}, {"sam"}), ({"priors_only": True}, {"dino"})):
        ablation = FSSAM(**base, **kw).eval()
        features = FeatureCache().features(ablation, query, supports)
        assert {"sam": features.sam is not None, "dino": features.tokens is not None} == {p: p in parts for p in ("sam", "dino")}
        with torch.inference_mode():
            assert torch.equal(ablation(query, supports, masks, features=features), ablation(query, supports, masks))


def test_keys_follow_frozen_weights_size_and_content(model):
    cache = FeatureCache()
    cpu = torch.device("cpu")
    sam_key, dino_key = cache.model_key(model, SAM, cpu), cache.model_key(model, DINO, cpu)
    assert sam_key != dino_key
    trunk = model.sam2.image_encoder.trunk.patch_embed.proj.weight
    trained = next(model.sam2.memory_attention.parameters())  # trainable: not an input of the cache
    dino = model.prompt_generator.dino.patch_embed.proj.weight
    saved = [t.clone() for t in (trunk, trained, dino)]
    try:
        with torch.no_grad():
            trained.add_(1.0)
            assert cache.model_key(model, SAM, cpu) == sam_key  # training does not invalidate the cache
            trunk.add_(1e-3)
            assert cache.model_key(model, SAM, cpu) != sam_key
            dino.mul_(2.0)
            assert cache.model_key(model, DINO, cpu) != dino_key
    finally:
        with torch.no_grad():
            for t, value in zip((trunk, trained, dino), saved):
                t.copy_(value)
    assert (cache.model_key(model, SAM, cpu), cache.model_key(model, DINO, cpu)) == (sam_key, dino_key)
    torch.manual_seed(0)
    small = fss_sam2.load_model(sam2="tiny-toy", dino="tiny-toy", image_size=64)
    same = small.prompt_generator.dino.state_dict()
    assert all(torch.equal(v, same[k]) for k, v in model.prompt_generator.dino.state_dict().items())
    assert cache.model_key(small, DINO, cpu) != dino_key  # same weights, other image size
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert cache.model_key(model, DINO, cpu) != dino_key  # bf16 features are other features
    image = torch.rand(3, S, S) * 255
    moved = image.clone()
    moved[0, 5, 7] += 1
    assert image_key(image) == image_key(image.clone()) != image_key(moved)


def test_changed_frozen_weights_are_recomputed(model):
    query, supports, masks = episode()
    cache = FeatureCache()
    weight = model.prompt_generator.dino.patch_embed.proj.weight
    old = weight.clone()
    try:
        with torch.inference_mode():
            before = model(query, supports, masks, features=cache.features(model, query, supports))
        with torch.no_grad():
            weight.mul_(-1.0)
        with torch.inference_mode():
            after = model(query, supports, masks, features=cache.features(model, query, supports))
            assert torch.equal(after, model(query, supports, masks)) and not torch.equal(after, before)
    finally:
        with torch.no_grad():
            weight.copy_(old)


def _entry(value: float, n: int = 256) -> dict:
    return {"x": torch.full((n,), float(value))}  # float32: n = 256 -> 1 KiB


def test_memory_tier_evicts_least_recently_used():
    cache = FeatureCache(max_bytes=3 * 1024)
    cpu = torch.device("cpu")
    for i in range(3):
        cache.put(("m", f"k{i}"), _entry(i))
    assert cache.get(("m", "k0"), cpu) is not None  # k0 is now the most recent
    cache.put(("m", "k3"), _entry(3))
    assert cache.get(("m", "k1"), cpu) is None  # the least recently used left
    assert all(cache.get(("m", k), cpu) is not None for k in ("k0", "k2", "k3"))
    assert cache.stats()["evictions"] == 1 and cache.bytes == 3 * 1024
    cache.put(("m", "big"), _entry(0, n=4096))  # larger than the budget: not kept in memory
    assert cache.get(("m", "big"), cpu) is None and cache.bytes == 3 * 1024


def test_disk_tier_serves_a_new_process(model, tmp_path):
    query, supports, masks = episode()
    with torch.inference_mode():
        expected = model(query, supports, masks)
        FeatureCache(disk=tmp_path).features(model, query, supports)
    files = sorted(tmp_path.rglob("*.pt"))
    assert len(files) == 2 * 3 and not list(tmp_path.rglob("*.tmp"))  # 3 distinct images x 2 parts
    assert len(list(tmp_path.glob("*/key.json"))) == 2
    files[0].write_bytes(b"PK\x03\x04 damaged")  # an unreadable file is a miss, then rewritten
    fresh = FeatureCache(max_bytes=0, disk=tmp_path)  # memory tier off: everything from disk
    with torch.inference_mode():
        assert torch.equal(model(query, supports, masks, features=fresh.features(model, query, supports)), expected)
    assert fresh.stats()["disk_hits"] == 5 and fresh.stats()["misses"] == 1
    assert torch.load(files[0], weights_only=True)  # rewritten whole


def _write_many(path: str, value: float, times: int) -> None:
    for _ in range(times):
        atomic_write(Path(path), lambda f: torch.save(_entry(value, n=1 << 16), f), shared=True)


def test_concurrent_writers_of_one_key_never_expose_a_partial_file(tmp_path):
    """Two processes (like two DDP ranks) rewrite one 256 KiB entry while this one reads it."""
    path = tmp_path / "ab" / "entry.pt"
    ctx = multiprocessing.get_context("fork")
    writers = [ctx.Process(target=_write_many, args=(str(path), v, 40)) for v in (1.0, 2.0)]
    for w in writers:
        w.start()
    reads = 0
    while any(w.is_alive() for w in writers) or reads == 0:
        if path.is_file():
            x = torch.load(path, weights_only=True)["x"]  # raises on a partial file
            assert x.numel() == 1 << 16 and x[0] in (1.0, 2.0) and torch.equal(x, torch.full_like(x, x[0]))
            reads += 1
    for w in writers:
        w.join()
        assert w.exitcode == 0
    assert reads > 0 and sorted(p.name for p in path.parent.iterdir()) == ["entry.pt"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return ListSource(write_tiny_root(tmp_path_factory.mktemp("tiny")))


def test_evaluation_with_cache_batches_and_workers(model, source):
    """Per-episode logits: the cache changes no bit; batching changes float rounding only
    (batched GEMMs of the post-encoder part), and not the metrics."""
    episodes = make_episodes(source, fold=0, shot=1, episodes=6)

    def run(batch_size, workers, step):
        logits = []

        def record(m, batch, device):
            out = step(m, batch, device)
            logits.extend(out)
            return out

        result = evaluate(model, source, episodes, size=S, batch_size=batch_size, num_workers=workers,
                          progress=False, step=record)
        return {k: v for k, v in result.items() if k != "seconds"}, torch.stack(logits)

    cache = FeatureCache()
    plain, plain_logits = run(3, 0, call_model)
    cached, cached_logits = run(3, 2, cache.step)
    assert torch.equal(cached_logits, plain_logits) and cached == plain
    distinct = {i for ep in episodes for i in (ep.query, *ep.supports)}
    assert len(distinct) < 12 and cache.stats()["misses"] == 2 * len(distinct)  # each image encoded once
    one, one_logits = run(1, 0, cache.step)
    assert one == plain
    torch.testing.assert_close(one_logits, plain_logits, rtol=0, atol=1e-4)
