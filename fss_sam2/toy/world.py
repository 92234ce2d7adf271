"""The synthetic world (`toy`): 20 shape classes drawn procedurally on cluttered backgrounds.

A class is a silhouette (a star, a ring, a keyhole, ...) and a material: the kind of pattern
its individuals mostly wear and its scale (`CLASS_MATERIALS`; four classes share each kind, so
a material alone does not name the class), as fur, feathers or wheels are parts a class shows
in every photo. Every instance draws its own colours, pattern phase and orientation, scale,
rotation, aspect, mirror and smooth deformation, and one in `ATYPICAL` wears a random pattern,
so a support and a query are different identities of one class: matching colours fails,
matching shapes and materials works; distractors wear the same materials. Scenes hold
1-3 objects (sometimes two of one class) among distractors that belong to no class (blobs,
scribbles), some drawn in front as occluders; labels follow the visible pixels.

Written in the PASCAL layout so the real loaders run on it (everything deterministic by seed):
  JPEGImages/toy_XXXXX.jpg            RGB, side about `size` (+-20 %, not square)
  SegmentationClassAug/toy_XXXXX.png  VOC palette PNG: class id 1..20, 0 background,
                                      255 on a band along every instance boundary
                                      (2 px at size 160, like VOC's 5 px at 500)
  lists/, fss_meta.json               fold lists by the official rule (sources.write_dataset)
  clips/cXXXX/tYY.jpg|png, clips/clips.json   clips: one individual moving smoothly (labelled) among
                                              1-2 unlabelled companions
"""
from __future__ import annotations

import colorsys
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from tqdm.auto import tqdm

from ..constants import IGNORE
from ..data.lists import MIN_CLASS_PIXELS, Item, class_pixel_counts
from ..data.pascal import voc_palette
from ..data.sources import META_FILE, write_dataset

TOY_CLASSES = (
    "star5", "ring", "cross", "crescent", "arrow",
    "heart", "gear", "spiral", "L-shape", "hourglass",
    "triangle", "trefoil", "keyhole", "lightning", "frame",
    "dumbbell", "chevron", "tee", "bars", "pacman",
)  # class id = index + 1; contiguous folds: fold f is novel for ids 5f+1 .. 5f+5
NUM_TOY_CLASSES = len(TOY_CLASSES)
# the label every number, table and figure measured on this world carries
TEXTURES = ("solid", "stripes", "dots", "noise", "gradient", "checker")
# class id c -> (pattern kind, frequency band in radians per canonical unit) its individuals
# mostly wear: five kinds x (coarse, fine) bands, each of the ten worn by two classes
_BANDS = ((5.0, 9.0), (12.0, 20.0))
CLASS_MATERIALS = {c: (("stripes", "dots", "noise", "checker", "gradient")[(c - 1) % 5], _BANDS[(c - 1) // 5 % 2])
                   for c in range(1, NUM_TOY_CLASSES + 1)}
ATYPICAL = 0.15  # share of individuals that wear a random pattern instead of their class's
# object half-size as a share of the image side: a class object fills ~10-40 % of its image, as
# PASCAL's do (an object spans 2-5 of the DINOv2 stand-in's 10 tokens a side at 128 px); clips:
# the tracked individual and its companions
OBJECT_SCALE = (0.24, 0.38)
CLIP_SCALE = (0.22, 0.34)
COMPANION_SCALE = (0.17, 0.28)
JPEG_QUALITY = 90
VAL_EVERY = 4  # block b of NUM_TOY_CLASSES consecutive images is val when b % 4 == 3 (25 %)
SUPERSAMPLE = 3  # sub-pixels per side for anti-aliased coverage
REF_AREA = 500 * 375  # typical PASCAL image, for scaling the official 2048-pixel rule

Shape = Callable[[np.ndarray, np.ndarray], np.ndarray]  # canonical (u, v) -> inside (bool)


def scaled_min_pixels(size: int) -> int:
    """The official 2048-pixel class-area rule scaled by area from ~500x375 to size x size."""
    return max(1, round(MIN_CLASS_PIXELS * size * size / REF_AREA))


# ---- shapes, in canonical coordinates: u right, v down, the object spans about [-1, 1]^2 ----


def _in_polygon(u: np.ndarray, v: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test, vectorised over the points (u, v)."""
    inside = np.zeros(np.broadcast(u, v).shape, bool)
    x0, y0 = pts[-1]
    for x1, y1 in pts:
        if y0 != y1:
            crosses = (y0 > v) != (y1 > v)
            inside ^= crosses & (u < x0 + (v - y0) * (x1 - x0) / (y1 - y0))
        x0, y0 = x1, y1
    return inside


def _polygon(points) -> Shape:
    return partial(_in_polygon, pts=np.asarray(points, float))


def _regular(n: int, radii: Sequence[float], start: float = -math.pi / 2) -> np.ndarray:
    """Vertices at n equal angles, radii cycling (a star when two radii alternate)."""
    a = start + 2 * math.pi * np.arange(n) / n
    r = np.resize(np.asarray(radii, float), n)
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def _disk(u, v, cx, cy, r):
    return (u - cx) ** 2 + (v - cy) ** 2 < r * r


def _box(u, v, x0, x1, y0, y1):
    return (u > x0) & (u < x1) & (v > y0) & (v < y1)


def _ring(u, v):
    r2 = u * u + v * v
    return (r2 < 1) & (r2 > 0.58**2)


def _cross(u, v):
    return _box(u, v, -0.3, 0.3, -1, 1) | _box(u, v, -1, 1, -0.3, 0.3)


def _crescent(u, v):
    return _disk(u, v, 0, 0, 1) & ~_disk(u, v, 0.45, 0, 0.8)


def _heart(u, v):
    lobes = _disk(u, v, -0.45, -0.4, 0.52) | _disk(u, v, 0.45, -0.4, 0.52)
    return lobes | _in_polygon(u, v, np.array([(-0.93, -0.25), (0.93, -0.25), (0, 1)]))


def _gear(u, v):
    r = np.hypot(u, v)
    teeth = np.clip(3 * np.cos(8 * np.arctan2(v, u)), -1, 1) * 0.5 + 0.5
    return (r < 0.7 + 0.28 * teeth) & (r > 0.3)


def _spiral(u, v):
    r = np.hypot(u, v)
    turn = np.mod(np.arctan2(v, u), 2 * math.pi) / (2 * math.pi)
    s = r / 0.42 - turn  # integer on the spiral r = 0.42 (n + turn)
    return ((np.abs(s - np.round(s)) < 0.27) & (s > -0.27) & (r < 1)) | (r < 0.14)


def _l_shape(u, v):
    return _box(u, v, -0.8, -0.2, -1, 1) | _box(u, v, -0.8, 0.8, 0.4, 1)


def _hourglass(u, v):
    a = np.abs(v)
    return ((a < 0.85) & (np.abs(u) < 0.1 + 0.7 * a)) | ((a > 0.78) & (a < 1) & (np.abs(u) < 0.8))


def _trefoil(u, v):
    lobes = [_disk(u, v, 0.52 * math.cos(a), 0.52 * math.sin(a), 0.45) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    return lobes[0] | lobes[1] | lobes[2] | _disk(u, v, 0, 0, 0.35)


def _keyhole(u, v):
    t = (v + 0.4) / 1.4
    return _disk(u, v, 0, -0.4, 0.5) | ((t > 0) & (v < 1) & (np.abs(u) < 0.14 + 0.3 * t))


def _frame(u, v):
    m = np.maximum(np.abs(u), np.abs(v))
    return (m < 1) & (m > 0.62)


def _dumbbell(u, v):
    return _disk(u, v, -0.62, 0, 0.38) | _disk(u, v, 0.62, 0, 0.38) | _box(u, v, -0.62, 0.62, -0.13, 0.13)


def _tee(u, v):
    return _box(u, v, -0.9, 0.9, -1, -0.55) | _box(u, v, -0.2, 0.2, -1, 1)


def _bars(u, v):
    a = np.abs(u)
    return (np.abs(v) < 0.9) & ((a < 0.14) | (np.abs(a - 0.6) < 0.14))


def _pacman(u, v):
    return (u * u + v * v < 1) & (np.abs(np.arctan2(v, u)) > 0.6)


SHAPES: tuple[Shape, ...] = (
    _polygon(_regular(10, (1.0, 0.42))),
    _ring,
    _cross,
    _crescent,
    _polygon([(-1, -0.17), (0.15, -0.17), (0.15, -0.6), (1, 0), (0.15, 0.6), (0.15, 0.17), (-1, 0.17)]),
    _heart,
    _gear,
    _spiral,
    _l_shape,
    _hourglass,
    _polygon(_regular(3, (1.0,))),
    _trefoil,
    _keyhole,
    _polygon([(-0.15, -1), (0.55, -1), (0.15, -0.2), (0.6, -0.2), (-0.35, 1), (-0.05, 0.1), (-0.5, 0.1)]),
    _frame,
    _dumbbell,
    _polygon([(-1, -0.75), (-0.55, -0.75), (0, 0.1), (0.55, -0.75), (1, -0.75), (0, 0.85)]),
    _tee,
    _bars,
    _pacman,
)
assert len(SHAPES) == NUM_TOY_CLASSES


def _area_gains(target: float = 1.6) -> tuple[float, ...]:
    """Per-class scale factors that bring thin and fat silhouettes to similar areas."""
    g = np.linspace(-1.5, 1.5, 121, dtype=np.float32)
    areas = [float(shape(g[None], g[:, None]).mean()) * 9 for shape in SHAPES]  # canonical units^2
    return tuple(float(np.clip(math.sqrt(target / a), 0.85, 1.35)) for a in areas)


AREA_GAINS = _area_gains()


def _blob(u, v, harmonics):
    """Distractor: an amorphous filled blob r < 1 + sum a_k cos(k phi + p_k)."""
    phi = np.arctan2(v, u)
    edge = 1 + sum(a * np.cos(k * phi + p) for k, a, p in harmonics)
    return u * u + v * v < edge * edge


def _scribble(u, v, pts, width):
    """Distractor: a thick open polyline through pts (n,2)."""
    d2 = np.full(np.broadcast(u, v).shape, np.inf)
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((u - x0) * dx + (v - y0) * dy) / (dx * dx + dy * dy + 1e-9), 0, 1)
        d2 = np.minimum(d2, (u - x0 - t * dx) ** 2 + (v - y0 - t * dy) ** 2)
    return d2 < width * width


# ---- appearance ----


@dataclass(frozen=True)
class Texture:
    """Two colours mixed by a pattern laid in the object's own coordinates."""

    kind: str  # one of TEXTURES
    c1: np.ndarray  # (3,1,1) RGB 0..255
    c2: np.ndarray  # (3,1,1)
    freq: float  # radians per canonical unit
    angle: float
    phase: float
    waves: np.ndarray  # (3, 3) rows (fx, fy, phase) for "noise"


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A random colour (3,1,1) float32 0..255, broadcastable over a (3,h,w) canvas."""
    h, s, v = rng.random(), rng.uniform(0.25, 1), rng.uniform(0.3, 1)
    return np.array(colorsys.hsv_to_rgb(h, s, v), np.float32).reshape(3, 1, 1) * 255


def sample_texture(rng: np.random.Generator, kinds: Sequence[str] = TEXTURES, freq=(8.0, 22.0)) -> Texture:
    """Random colours and pattern; `freq` bounds the pattern frequency (radians per unit)."""
    c1 = _colour(rng)
    c2 = _colour(rng) if rng.random() < 0.6 else c1 * rng.uniform(0.35, 0.75)
    waves = np.column_stack([rng.uniform(-6, 6, 3), rng.uniform(-6, 6, 3), rng.uniform(0, 2 * math.pi, 3)])
    kind = kinds[rng.integers(len(kinds))]
    return Texture(kind, c1, c2, rng.uniform(*freq), rng.uniform(0, math.pi), rng.uniform(0, 2 * math.pi), waves)


def _instance_texture(class_id: int, rng: np.random.Generator) -> Texture:
    """An individual's texture: its class's material (random colours, phase, orientation) but
    for an `ATYPICAL` share of individuals, and distractors, who wear any pattern."""
    if class_id and rng.random() >= ATYPICAL:
        kind, band = CLASS_MATERIALS[class_id]
        return sample_texture(rng, kinds=(kind,), freq=band)
    return sample_texture(rng)


def _paint_texture(tex: Texture, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Colours (3,h,w) float32 of texture coordinates u, v (h,w)."""
    along = u * math.cos(tex.angle) + v * math.sin(tex.angle)
    if tex.kind == "solid":
        t = np.zeros_like(u)
    elif tex.kind == "stripes":
        t = np.clip(3 * np.sin(tex.freq * along + tex.phase), -1, 1) * 0.5 + 0.5
    elif tex.kind == "dots":
        across = -u * math.sin(tex.angle) + v * math.cos(tex.angle)
        period = 2 * math.pi / tex.freq
        fx = np.mod(along / period, 1) - 0.5
        fy = np.mod(across / period, 1) - 0.5
        t = (fx * fx + fy * fy < 0.09).astype(np.float32)
    elif tex.kind == "noise":
        t = sum(np.sin(fx * u + fy * v + p) for fx, fy, p in tex.waves.tolist()) / 6 + 0.5
    elif tex.kind == "gradient":
        t = np.clip(0.5 + 0.5 * along, 0, 1)
    elif tex.kind == "checker":
        across = -u * math.sin(tex.angle) + v * math.cos(tex.angle)
        k = tex.freq / math.pi
        t = ((np.floor(along * k) + np.floor(across * k)) % 2).astype(np.float32)
    else:
        raise ValueError(f"texture kind {tex.kind!r}: expected one of {TEXTURES}")
    return tex.c1 + (tex.c2 - tex.c1) * t.astype(np.float32)


# ---- one object: a shape placed in the image with its own identity ----


@dataclass(frozen=True)
class Instance:
    """One drawn object: its shape plus everything that makes it an individual."""

    shape: Shape
    class_id: int  # 1..20, 0 for a distractor
    cx: float  # centre in pixels (pixel i covers [i, i+1))
    cy: float
    sx: float  # half extent in pixels along the canonical u, v axes (scale x aspect)
    sy: float
    angle: float
    mirror: float  # +1 or -1
    radial: tuple[int, float, float]  # (k, amplitude, phase): outline wobble
    warp: tuple[float, float, float, float, float]  # (amplitude, fu, fv, pu, pv): elastic bend
    texture: Texture
    shade: tuple[float, float]  # (strength, direction) of a linear lighting ramp

    def moved(self, cx: float, cy: float, scale: float, angle: float) -> Instance:
        """The same individual at another place, size and orientation (clips)."""
        return Instance(
            self.shape, self.class_id, cx, cy, self.sx * scale, self.sy * scale, angle, self.mirror,
            self.radial, self.warp, self.texture, self.shade,
        )

    @property
    def extent(self) -> float:
        """Radius in pixels that surely holds the object."""
        return 1.5 * max(self.sx, self.sy) * (1 + self.radial[1]) + self.warp[0] * max(self.sx, self.sy) + 2


def sample_instance(
    class_id: int,
    rng: np.random.Generator,
    cx: float,
    cy: float,
    scale: float,
    shape: Shape | None = None,
) -> Instance:
    """A random individual of `class_id` (0 = distractor, then give `shape`) centred at (cx, cy)."""
    if shape is None:
        if not 1 <= class_id <= NUM_TOY_CLASSES:
            raise ValueError(f"class_id={class_id}: expected 1..{NUM_TOY_CLASSES}")
        shape = SHAPES[class_id - 1]
        scale *= AREA_GAINS[class_id - 1]
    aspect = math.exp(rng.uniform(-0.28, 0.28))
    return Instance(
        shape=shape,
        class_id=class_id,
        cx=cx,
        cy=cy,
        sx=scale * aspect,
        sy=scale / aspect,
        angle=rng.uniform(0, 2 * math.pi),
        mirror=float(rng.choice([-1.0, 1.0])),
        radial=(int(rng.integers(2, 6)), rng.uniform(0, 0.1), rng.uniform(0, 2 * math.pi)),
        warp=(rng.uniform(0, 0.1), rng.uniform(1.5, 3), rng.uniform(1.5, 3), rng.uniform(0, 6.3), rng.uniform(0, 6.3)),
        texture=_instance_texture(class_id, rng),
        shade=(rng.uniform(0, 0.25), rng.uniform(0, 2 * math.pi)),
    )


def _distractor(rng: np.random.Generator, cx: float, cy: float, scale: float) -> Instance:
    """An object of no class: an amorphous blob or a thick scribble, textured like the classes."""
    if rng.random() < 0.55:
        harmonics = [(k, rng.uniform(0, 0.15), rng.uniform(0, 2 * math.pi)) for k in (2, 3, 4)]
        shape = partial(_blob, harmonics=harmonics)
    else:
        steps = rng.normal(0, 0.8, (int(rng.integers(3, 7)), 2))
        pts = np.cumsum(steps, 0)
        pts = pts - pts.mean(0)
        pts *= 0.9 / (np.abs(pts).max() + 1e-6)  # inside the unit square, like the classes
        shape = partial(_scribble, pts=pts, width=rng.uniform(0.06, 0.14))
    return sample_instance(0, rng, cx, cy, scale, shape=shape)


def _canonical(inst: Instance, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates xs (1,w), ys (h,1) -> canonical (u, v), each (h,w): inverse placement."""
    dx, dy = xs - inst.cx, ys - inst.cy
    c, s = math.cos(inst.angle), math.sin(inst.angle)
    u = (c * dx + s * dy) / inst.sx * inst.mirror
    v = (c * dy - s * dx) / inst.sy
    b, fu, fv, pu, pv = inst.warp
    u, v = u + b * np.sin(fu * v + pu), v + b * np.sin(fv * u + pv)
    k, a, p = inst.radial
    wobble = 1 + a * np.sin(k * np.arctan2(v, u) + p)
    return u / wobble, v / wobble


def _layer(inst: Instance, h: int, w: int):
    """Where `inst` lands in an h x w image: (y0, x0, alpha (bh,bw), colour (3,bh,bw)) or None.

    Coverage is sampled at pixel centres, then SUPERSAMPLE^2 times on pixels next to an edge.
    """
    r = inst.extent
    x0, x1 = max(int(inst.cx - r), 0), min(int(inst.cx + r) + 2, w)
    y0, y1 = max(int(inst.cy - r), 0), min(int(inst.cy + r) + 2, h)
    if x0 >= x1 or y0 >= y1:
        return None
    px = np.arange(x0, x1, dtype=np.float32)[None] + 0.5  # (1, bw)
    py = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5  # (bh, 1)
    u, v = _canonical(inst, px, py)  # (bh, bw)
    inside = inst.shape(u, v)
    if not inside.any():
        return None
    edge = np.zeros_like(inside)  # pixels with a 4-neighbour on the other side
    step = inside[1:] != inside[:-1]
    edge[1:] |= step
    edge[:-1] |= step
    step = inside[:, 1:] != inside[:, :-1]
    edge[:, 1:] |= step
    edge[:, :-1] |= step
    alpha = inside.astype(np.float32)
    iy, ix = np.nonzero(edge)
    sub = (np.arange(SUPERSAMPLE, dtype=np.float32) + 0.5) / SUPERSAMPLE - 0.5
    oy, ox = (g.ravel() for g in np.meshgrid(sub, sub, indexing="ij"))
    su, sv = _canonical(inst, px[0, ix][:, None] + ox, py[iy, 0][:, None] + oy)  # (n_edge, ss^2)
    alpha[iy, ix] = inst.shape(su, sv).mean(1, dtype=np.float32)
    colour = _paint_texture(inst.texture, u, v)
    strength, direction = inst.shade
    light = 1 + strength * (u * math.cos(direction) + v * math.sin(direction))
    return y0, x0, alpha, colour * light


def _composite(canvas: np.ndarray, owner: np.ndarray | None, inst: Instance, layer_id: int) -> None:
    """Draw `inst` over canvas (3,h,w); where it covers > half a pixel, owner (h,w) := layer_id."""
    found = _layer(inst, *canvas.shape[1:])
    if found is None:
        return
    y0, x0, alpha, colour = found
    win = (slice(y0, y0 + alpha.shape[0]), slice(x0, x0 + alpha.shape[1]))
    canvas[:, win[0], win[1]] += (colour - canvas[:, win[0], win[1]]) * alpha
    if owner is not None:
        owner[win][alpha > 0.5] = layer_id


# ---- scenes ----


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Cluttered background (3,h,w) float32: gradient, a faint texture, soft colour blobs."""
    side = max(h, w)
    ys = np.arange(h, dtype=np.float32)[:, None] / side
    xs = np.arange(w, dtype=np.float32)[None] / side
    base = sample_texture(rng, kinds=("gradient",))
    t = np.clip(0.5 + (xs - 0.5) * math.cos(base.angle) + (ys - 0.5) * math.sin(base.angle), 0, 1)
    img = base.c1 + (base.c2 - base.c1) * t
    if rng.random() < 0.7:
        tex = sample_texture(rng, kinds=("stripes", "dots", "noise", "checker"), freq=(15.0, 60.0))
        img = img * 0.7 + _paint_texture(tex, *np.broadcast_arrays(xs, ys)) * 0.3
    for _ in range(int(rng.integers(2, 7))):  # soft axis-aligned Gaussian blobs (separable)
        cx, cy = rng.uniform(0, w / side), rng.uniform(0, h / side)
        rx, ry = rng.uniform(0.06, 0.3), rng.uniform(0.06, 0.3)
        a = np.exp(-(((ys - cy) / ry) ** 2)) * (np.exp(-(((xs - cx) / rx) ** 2)) * rng.uniform(0.4, 0.9))
        img += (_colour(rng) - img) * a
    return img


def _finish(rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    """Canvas (3,h,w) float -> image (h,w,3) uint8 with a little sensor noise (uniform, cheap)."""
    canvas += (rng.random(canvas.shape, dtype=np.float32) - 0.5) * rng.uniform(6, 18)
    return (np.clip(canvas, 0, 255, out=canvas) + 0.5).astype(np.uint8).transpose(1, 2, 0)


def _label(owner: np.ndarray, classes: Sequence[int], band: int) -> np.ndarray:
    """Class map (h,w) uint8 from the owner map (layer ids), with 255 on a `band`-px strip along
    every change of owner: ceil(band/2) px on the side of the upper layer, the rest outside."""
    lut = np.zeros(256, np.uint8)
    lut[1 : len(classes) + 1] = classes
    label = lut[owner]
    inner, outer = (band + 1) // 2, band // 2
    edge = ndimage.minimum_filter(owner, 2 * inner + 1, mode="nearest") < owner
    if outer:
        edge |= ndimage.maximum_filter(owner, 2 * outer + 1, mode="nearest") > owner
    label[edge] = IGNORE
    return label


def _band(size: int) -> int:
    """Ignore-band width: VOC's ~5 px at ~500 px scaled to the image size (2 px at 160)."""
    return max(1, round(size / 100))


def render_scene(
    rng: np.random.Generator, h: int, w: int, classes: Sequence[int], band: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """One image (h,w,3) uint8 and its label (h,w) uint8 holding objects of `classes` (the first,
    the primary, placed near the centre), distractors behind and in front of them."""
    side = min(h, w)
    canvas = _background(rng, h, w)
    owner = np.zeros((h, w), np.uint8)
    n_front = int(rng.integers(0, 3))
    for _ in range(int(rng.integers(1, 4))):  # distractors behind the objects
        _composite(canvas, None, _distractor(rng, rng.uniform(0, w), rng.uniform(0, h), side * rng.uniform(0.08, 0.22)), 0)
    shrink = 1.0 if len(classes) == 1 else 0.75
    for i, c in enumerate(classes):
        lo, hi = (0.3, 0.7) if i == 0 else (0.12, 0.88)
        scale = side * rng.uniform(*OBJECT_SCALE) * shrink
        inst = sample_instance(c, rng, w * rng.uniform(lo, hi), h * rng.uniform(lo, hi), scale)
        _composite(canvas, owner, inst, i + 1)
    for _ in range(n_front):  # occluders: smaller, near the objects
        inst = _distractor(rng, w * rng.uniform(0.2, 0.8), h * rng.uniform(0.2, 0.8), side * rng.uniform(0.06, 0.14))
        _composite(canvas, owner, inst, 0)
    return _finish(rng, canvas), _label(owner, classes, band)


def _scene_classes(index: int, rng: np.random.Generator) -> list[int]:
    """Class ids of image `index`: primary = index % 20 + 1 (balanced), a partner class that cycles
    with the block (so every class also co-occurs in val), sometimes a second of the same class."""
    n = NUM_TOY_CLASSES
    primary, block = index % n, index // n
    classes = [primary + 1]
    count = rng.choice([1, 2, 3], p=[0.35, 0.45, 0.2])
    if count >= 2:
        classes.append((primary + 1 + (7 * block) % (n - 1)) % n + 1)
    if count == 3:
        classes.append(primary + 1 if rng.random() < 0.3 else int(rng.integers(1, n + 1)))
    return classes


def make_image(seed: int, index: int, size: int, min_pixels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Image `index` of the world `seed`: (image (h,w,3) uint8, label (h,w) uint8), h, w ~ size.

    Its own generator (seed, 0, index) makes it independent of the order of generation. The
    primary object is redrawn (up to 20 times) until it shows >= 1.5 x min_pixels labelled pixels.
    """
    rng = np.random.default_rng([seed, 0, index])
    h, w = (int(round(size * f)) for f in rng.uniform(0.8, 1.2, 2))
    classes = _scene_classes(index, rng)
    need = 1.5 * (scaled_min_pixels(size) if min_pixels is None else min_pixels)
    for _ in range(20):
        img, label = render_scene(rng, h, w, classes, _band(size))
        if class_pixel_counts(label).get(classes[0], 0) >= need:
            break
    return img, label


# ---- clips: one individual moving smoothly ----

# version of the world's generator (clips and images), recorded in clips/clips.json: a world of
# another version is regenerated (`world_settings`) and the stand-ins' cache keys on it. 2:
# companions (other individuals) share the clip; 3: class materials, objects of PASCAL's size
CLIP_GENERATOR = 3
CLIPS_FILE = Path("clips") / "clips.json"


def render_clip(seed: int, index: int, size: int, frames: int) -> tuple[list[int], list[np.ndarray], list[np.ndarray]]:
    """Clip `index` before labelling: (class ids of its layers [tracked, companions...], frames
    [(h,w,3) uint8], owner maps [(h,w) uint8]: 1 where the tracked individual is seen, 2, 3 where
    a companion is, 0 elsewhere).

    The tracked individual, of class index % 20 + 1, translates, rotates and scales smoothly
    over a slowly panning background with distractors; 1-2 companions (other individuals, a
    quarter of them of the same class) move on their own paths behind it, so its mask changes
    only with the motion. A tracker must read its memory to tell them apart, as on SAM 2's
    own videos."""
    rng = np.random.default_rng([seed, 1, index])
    class_id = index % NUM_TOY_CLASSES + 1
    h, w = (int(round(size * f)) for f in rng.uniform(0.85, 1.15, 2))
    side, margin = min(h, w), max(4, size // 10)
    world = _background(rng, h + 2 * margin, w + 2 * margin)
    for _ in range(int(rng.integers(2, 5))):
        pos = rng.uniform(0, w + 2 * margin), rng.uniform(0, h + 2 * margin)
        _composite(world, None, _distractor(rng, *pos, side * rng.uniform(0.08, 0.2)), 0)
    pan = rng.uniform(0, 2 * margin, (2, 2))  # start and end offsets (x, y) of the camera
    scale0 = side * rng.uniform(*CLIP_SCALE)
    inst = sample_instance(class_id, rng, 0, 0, 1.0)
    start, end = rng.uniform(0.35, 0.65, (2, 2)) * (w, h)
    spin, grow = rng.uniform(-0.25, 0.25), rng.uniform(-0.05, 0.05)  # per frame: radians, log-scale
    companions = []  # (individual, start and end (2,2), scale, spin)
    for _ in range(int(rng.integers(1, 3))):
        other = class_id if rng.random() < 0.25 else int(rng.integers(1, NUM_TOY_CLASSES + 1))
        companions.append((sample_instance(other, rng, 0, 0, 1.0), rng.uniform(0.1, 0.9, (2, 2)) * (w, h),
                           side * rng.uniform(*COMPANION_SCALE), rng.uniform(-0.25, 0.25)))
    images, owners = [], []
    for t in range(frames):
        f = t / max(frames - 1, 1)
        ox, oy = (pan[0] * (1 - f) + pan[1] * f).astype(int)
        canvas = world[:, oy : oy + h, ox : ox + w].copy()
        owner = np.zeros((h, w), np.uint8)
        for j, (other, path, scale, turn) in enumerate(companions):
            pos = path[0] * (1 - f) + path[1] * f
            _composite(canvas, owner, other.moved(*pos.tolist(), scale, other.angle + turn * t), j + 2)
        cx, cy = (start * (1 - f) + end * f).tolist()
        _composite(canvas, owner, inst.moved(cx, cy, scale0 * math.exp(grow * t), inst.angle + spin * t), 1)
        images.append(_finish(rng, canvas))
        owners.append(owner)
    return [class_id] + [c[0].class_id for c in companions], images, owners


def layer_label(owner: np.ndarray, layer: int, class_id: int, size: int) -> np.ndarray:
    """The label (h,w) uint8 of one layer of a clip's owner map: class_id on it, 0 elsewhere,
    255 on the ignore band along its outline (width as the world's images of side `size`)."""
    return _label((owner == layer).astype(np.uint8), [class_id], _band(size))


def make_clip(seed: int, index: int, size: int, frames: int) -> tuple[int, list[np.ndarray], list[np.ndarray]]:
    """Clip `index` as written to disk (`render_clip`): (class id, frames [(h,w,3) uint8],
    labels [(h,w) uint8]) where only the tracked individual is labelled."""
    classes, images, owners = render_clip(seed, index, size, frames)
    return classes[0], images, [layer_label(owner, 1, classes[0], size) for owner in owners]


# ---- pictures for notebooks ----


def draw_instance(
    class_id: int, rng: np.random.Generator, size: int = 64, clutter: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """One random individual of `class_id` centred in a size x size picture.

    Returns (image (size,size,3) uint8, mask (size,size) bool); on a plain light background, or
    on a cluttered one with distractors behind it when `clutter`.
    """
    if clutter:
        canvas = _background(rng, size, size)
        for _ in range(2):
            _composite(canvas, None, _distractor(rng, *rng.uniform(0, size, 2), size * 0.15), 0)
    else:
        canvas = np.full((3, size, size), 235, np.float32)
    owner = np.zeros((size, size), np.uint8)
    _composite(canvas, owner, sample_instance(class_id, rng, size / 2, size / 2, size * rng.uniform(0.28, 0.36)), 1)
    return _finish(rng, canvas), owner == 1


def render_class_gallery(
    per_class: int = 3, size: int = 64, seed: int = 0, cols: int = 5, names: bool = True, clutter: bool = False
) -> np.ndarray:
    """A grid (H,W,3) uint8 of `per_class` individuals of every class, `cols` classes a row
    (the default 5 makes each row one fold's novel classes), each class titled by its name."""
    title, gap = (12 if names else 0), 4
    cell_w, cell_h = per_class * size + (per_class - 1) * 2, size + title
    rows = math.ceil(NUM_TOY_CLASSES / cols)
    pic = Image.new("RGB", (cols * (cell_w + gap) + gap, rows * (cell_h + gap) + gap), "white")
    draw = ImageDraw.Draw(pic)
    for c, name in enumerate(TOY_CLASSES, 1):
        top = gap + (c - 1) // cols * (cell_h + gap)
        left = gap + (c - 1) % cols * (cell_w + gap)
        if names:
            draw.text((left + 1, top), f"{c} {name}", fill=(0, 0, 0))
        for j in range(per_class):
            img, _ = draw_instance(c, np.random.default_rng([seed, 2, c, j]), size, clutter)
            pic.paste(Image.fromarray(img), (left + j * (size + 2), top + title))
    return np.asarray(pic)


# ---- the whole world on disk ----


def _save_pair(img: np.ndarray, label: np.ndarray, jpg: Path, png: Path, palette: list[int]) -> None:
    Image.fromarray(img).save(jpg, quality=JPEG_QUALITY)
    lab = Image.fromarray(label)  # mode L
    lab.putpalette(palette)  # -> mode P, indices unchanged
    lab.save(png)


def _clear(out: Path) -> None:
    """Remove a previous toy world's files so that `out` holds exactly the new one; refuse to
    write into a folder that holds another dataset."""
    meta = out / META_FILE
    if meta.is_file():
        if json.loads(meta.read_text()).get("dataset") != "toy":
            raise FileExistsError(f"{meta}: {out} holds another dataset; refusing to write the toy world over it")
    elif (out / "lists").exists() or (out / "clips").exists():
        raise FileExistsError(f"{out}: has lists/ or clips/ but no {META_FILE}; choose an empty folder for the toy world")
    for pattern in ("JPEGImages/toy_*.jpg", "SegmentationClassAug/toy_*.png"):
        for f in out.glob(pattern):
            f.unlink()
    for d in ("clips", "lists"):
        if (out / d).is_dir():
            shutil.rmtree(out / d)


def generate_toy_world(
    out: str | Path,
    seed: int = 0,
    size: int = 160,
    images: int = 1000,
    clips: int = 40,
    clip_frames: int = 8,
    progress: bool = True,
) -> dict:
    """Write the synthetic world to `out` (byte-identical for identical arguments).

    Image i has primary class i % 20 + 1; blocks of 20 consecutive images go to val one in four
    (the rest to train). Returns a summary: counts, seconds, images per class and split.
    """
    if images < VAL_EVERY * NUM_TOY_CLASSES:
        raise ValueError(f"images={images}: need >= {VAL_EVERY * NUM_TOY_CLASSES} so that every class has val images")
    if size < 32:
        raise ValueError(f"size={size}: need >= 32 pixels")
    if clips < 0 or clip_frames < 2:
        raise ValueError(f"clips={clips}, clip_frames={clip_frames}: need clips >= 0 and clip_frames >= 2")
    t0 = time.perf_counter()
    out = Path(out)
    _clear(out)
    (out / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (out / "SegmentationClassAug").mkdir(parents=True, exist_ok=True)
    palette = voc_palette()
    min_pixels = scaled_min_pixels(size)
    split_items: dict[str, list[Item]] = {"train": [], "val": []}
    per_class = {s: dict.fromkeys(TOY_CLASSES, 0) for s in split_items}
    for i in tqdm(range(images), desc="toy images", disable=not progress):
        img, label = make_image(seed, i, size, min_pixels)
        item = Item(f"JPEGImages/toy_{i:05d}.jpg", f"SegmentationClassAug/toy_{i:05d}.png")
        _save_pair(img, label, out / item.image, out / item.label, palette)
        split = "val" if (i // NUM_TOY_CLASSES) % VAL_EVERY == VAL_EVERY - 1 else "train"
        split_items[split].append(item)
        for c, n in class_pixel_counts(label).items():
            per_class[split][TOY_CLASSES[c - 1]] += n >= min_pixels
    records = []
    for k in tqdm(range(clips), desc="toy clips", disable=not progress):
        class_id, frames, labels = make_clip(seed, k, size, clip_frames)
        folder = out / "clips" / f"c{k:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        pairs = [(f"clips/{folder.name}/t{t:02d}.jpg", f"clips/{folder.name}/t{t:02d}.png") for t in range(clip_frames)]
        for (jpg, png), img, label in zip(pairs, frames, labels):
            _save_pair(img, label, out / jpg, out / png, palette)
        records.append({
            "id": folder.name, "class_id": class_id, "class_name": TOY_CLASSES[class_id - 1],
            "images": [jpg for jpg, _ in pairs], "labels": [png for _, png in pairs],
        })
    if clips:
        meta = {"seed": seed, "size": size, "generator": CLIP_GENERATOR, "clips": records}
        (out / CLIPS_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    lists = write_dataset(
        out, "toy", TOY_CLASSES, "contiguous", split_items["train"], split_items["val"], min_pixels, progress
    )
    return {
        "root": str(out),
        "seed": seed,
        "size": size,
        "images": images,
        "train": len(split_items["train"]),
        "val": len(split_items["val"]),
        "clips": clips,
        "clip_frames": clip_frames,
        "min_pixels": min_pixels,
        "lists": lists,
        "images_per_class": per_class,
        "seconds": round(time.perf_counter() - t0, 2),
    }


# ---- reading a world back ----


def read_clips_meta(root: str | Path) -> dict:
    """clips/clips.json of a toy world: {"seed", "size", "frames", "clips": [records]}."""
    path = Path(root) / CLIPS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the toy world has no clips (generate it with clips > 0)")
    meta = json.loads(path.read_text())
    if not meta.get("clips"):
        raise ValueError(f"{path}: lists no clips")
    return {**meta, "frames": len(meta["clips"][0]["images"])}


# the world `fss-sam2 data toy` writes by default (and `make demo`), so both share one folder
TOY_WORLD = {"seed": 0, "size": 160, "images": 1000, "clips": 40, "clip_frames": 8}


# the smallest world whose val lists give 1-shot episodes in every fold (2 val images a class)
SMOKE_WORLD = {"seed": 0, "size": 160, "images": 160, "clips": 4, "clip_frames": 8}


def world_settings(root: str | Path) -> dict | None:
    """The generation settings of the toy world at `root`, read back from its files; None when
    `root` holds no complete toy world (or one without clips, whose seed is not recorded, or
    one written by an older version of the clip generator)."""
    root = Path(root)
    meta, clips = root / META_FILE, root / "clips" / "clips.json"
    if not meta.is_file() or not clips.is_file():
        return None
    if json.loads(meta.read_text()).get("dataset") != "toy":
        return None
    record = json.loads(clips.read_text())
    if not record["clips"] or record.get("generator") != CLIP_GENERATOR:
        return None
    return {
        "seed": record["seed"],
        "size": record["size"],
        "images": len(list((root / "JPEGImages").glob("toy_*.jpg"))),
        "clips": len(record["clips"]),
        "clip_frames": len(record["clips"][0]["images"]),
    }


def ensure_toy_world(root: str | Path, settings: dict, progress: bool = True) -> bool:
    """Generate the toy world at `root` unless the same one is there. Returns True if generated."""
    if world_settings(root) == settings:
        return False
    generate_toy_world(root, progress=progress, **settings)
    return True
