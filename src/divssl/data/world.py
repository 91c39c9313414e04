"""The world: a procedural labelled image generator with real structure for SSL to find.

A *class* of the world is a combination of factors that survive 16 px and colour jitter:

* a **shape** (disc, square, triangle, diamond, cross, ring, star, bar, half disc, tee),
* a **pattern** painted inside it in the shape's own frame (plain, horizontal / vertical /
  diagonal stripes, checker, dots, grid, concentric rings, two-tone split, bullseye),
* a **palette** tendency of the foreground hues (``any`` for the first 100 class ids, then
  ``warm``, ``cool``, ``green``).

Class ``g`` (global id, name ``f"c{g:03d}"``) takes shape ``r`` and pattern ``(r + q) mod 10`` of
the world's seeded shape and pattern orders, where ``q, r = divmod(g mod 100, 10)``, and palette
``g // 100``: ten consecutive ids use ten different shapes and ten different patterns, every
(shape, pattern) pair appears once per hundred ids, and 400 ids are defined. ``class_offset``
selects ids ``offset .. offset + K - 1``: classes with other identities built from the same
factors (the paper's out-of-distribution classes).

Nuisances drawn per sample: position, scale, small rotation, pattern phase, the colours of the
background and the two foreground tones (random hues and saturations; the three brightness levels
are assigned in a random order, so polarity carries no class information), a background gradient,
smooth background clutter and pixel noise. Raw pixels are therefore a poor feature while shape and
pattern stay visible to anything that looks at edges.

The domain ``shift`` s >= 0 changes rendering continuously (s = 0 is the base domain): foreground
contrast ``1 / (1 + 0.6 s)``, saturation ``1 / (1 + 0.5 s)``, hues rotated by ``0.1 s``,
background clutter amplitude ``0.06 + 0.2 s``, Gaussian blur of ``0.35 s`` px and pixel noise
``0.015 + 0.03 s``. Split ``ood`` renders at ``shift + ood_shift``. All random draws are made
before the domain is applied, so the same spec at two shifts shows the same scenes in two domains.

Determinism: samples of class ``g`` in split ``split`` come from their own stream
``SeedSequence(seed, spawn_key=(split, g))``: identical specs give byte-identical arrays, splits
draw disjoint streams, and a class looks the same whichever other classes are generated with it.
Shapes and patterns are rasterised at 2-4x and area-averaged (anti-aliasing); colours are composed
at the output size from the two coverage maps, which is exact because colours are flat per region.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from matplotlib.colors import hsv_to_rgb
from scipy import ndimage

from divssl.errors import ConfigError, unknown_choice

SHAPES = (
    "disc",
    "square",
    "triangle",
    "diamond",
    "cross",
    "ring",
    "star",
    "bar",
    "half_disc",
    "tee",
)
PATTERNS = (
    "plain",
    "stripes_h",
    "stripes_v",
    "stripes_d",
    "checker",
    "dots",
    "grid",
    "rings",
    "split",
    "bullseye",
)
PALETTES = ("any", "warm", "cool", "green")
_PALETTE_HUE = {"warm": 0.04, "cool": 0.6, "green": 0.33}  # hue centres; jitter +-0.08
SPLITS = ("train", "test", "ood")
MAX_CLASSES = len(SHAPES) * len(PATTERNS) * len(PALETTES)

# Geometry in units of the shape radius (the shape fits in the unit disc).
_RADIUS = 0.36  # shape radius / image side at scale 1
_OFFSET = 0.10  # max centre offset / image side
_SCALE = (0.85, 1.15)
_ROTATION = np.deg2rad(15.0)  # max |rotation|: keeps stripe and bar orientations distinct
_PERIOD = 0.7  # pattern period in shape radii (~4 px at 16 px)
_LEVELS = np.array([0.15, 0.52, 0.9])  # brightness levels, jittered by +-0.07
_CLUTTER_GRID = 4  # background clutter: smooth noise on a 4x4 grid, bilinearly upsampled


@dataclass(frozen=True)
class WorldClass:
    """Definition of one class of the world.

    Attributes:
        gid: global class id.
        name: ``f"c{gid:03d}"``.
        shape: entry of :data:`SHAPES`.
        pattern: entry of :data:`PATTERNS`.
        palette: entry of :data:`PALETTES`.
    """

    gid: int
    name: str
    shape: str
    pattern: str
    palette: str


@dataclass(frozen=True)
class Domain:
    """Rendering parameters of a domain (functions of the total shift s)."""

    shift: float
    contrast: float
    saturation: float
    hue_rotation: float
    clutter: float
    blur: float
    noise: float


def domain(shift: float) -> Domain:
    """Rendering parameters at total shift ``shift`` (0 = base domain); all monotone in shift."""
    s = float(shift)
    return Domain(
        shift=s,
        contrast=1.0 / (1.0 + 0.6 * s),
        saturation=1.0 / (1.0 + 0.5 * s),
        hue_rotation=0.1 * s,
        clutter=0.06 + 0.2 * s,
        blur=0.35 * s,
        noise=0.015 + 0.03 * s,
    )


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def world_class(gid: int, seed: int = 0) -> WorldClass:
    """The definition of class ``gid`` in the world of ``seed``.

    Raises:
        ConfigError: ``gid`` outside ``0 .. MAX_CLASSES - 1``.
    """
    if not 0 <= gid < MAX_CLASSES:
        raise ConfigError("world.class_offset", f"class id {gid} outside 0..{MAX_CLASSES - 1}")
    orders = _rng(seed, 99)
    shapes = orders.permutation(len(SHAPES))
    patterns = orders.permutation(len(PATTERNS))
    q, r = divmod(gid % (len(SHAPES) * len(PATTERNS)), len(SHAPES))
    return WorldClass(
        gid=gid,
        name=f"c{gid:03d}",
        shape=SHAPES[shapes[r]],
        pattern=PATTERNS[patterns[(r + q) % len(PATTERNS)]],
        palette=PALETTES[gid // (len(SHAPES) * len(PATTERNS))],
    )


# --------------------------------------------------------------------------- shapes and patterns
# Each takes local coordinates u, v (shape radii, v pointing up) of shape (n, H, W) and returns a
# boolean mask; patterns also take the per-sample phase (n, 1, 1) in [0, 1).

_Coords = tuple[np.ndarray, np.ndarray]


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r = np.hypot(u, v)
    phi = np.arctan2(v, u) - np.pi / 2  # one point up
    return r <= 0.42 + 0.53 * ((1.0 + np.cos(5.0 * phi)) / 2.0) ** 2


SHAPE_FNS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "disc": lambda u, v: u * u + v * v <= 0.9**2,
    "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.75,
    "triangle": lambda u, v: (v >= -0.55) & (v <= 1.0 - np.sqrt(3.0) * np.abs(u)),
    "diamond": lambda u, v: np.abs(u) + np.abs(v) <= 1.0,
    "cross": lambda u, v: (
        ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95))
    ),
    "ring": lambda u, v: (u * u + v * v <= 0.95**2) & (u * u + v * v >= 0.5**2),
    "star": _star,
    "bar": lambda u, v: (np.abs(u) <= 0.95) & (np.abs(v) <= 0.38),
    "half_disc": lambda u, v: (u * u + v * v <= 0.95**2) & (v >= -0.2),
    "tee": lambda u, v: (
        ((np.abs(u) <= 0.95) & (np.abs(v - 0.62) <= 0.3))
        | ((np.abs(u) <= 0.3) & (v >= -0.95) & (v <= 0.62))
    ),
}


def _frac(x: np.ndarray) -> np.ndarray:
    return x - np.floor(x)


PATTERN_FNS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "plain": lambda u, v, ph: np.zeros(u.shape, dtype=bool),
    "stripes_h": lambda u, v, ph: _frac(v / _PERIOD + ph) < 0.5,
    "stripes_v": lambda u, v, ph: _frac(u / _PERIOD + ph) < 0.5,
    "stripes_d": lambda u, v, ph: _frac((u + v) / (np.sqrt(2.0) * _PERIOD) + ph) < 0.5,
    "checker": lambda u, v, ph: (
        (np.floor(u / (0.7 * _PERIOD) + ph) + np.floor(v / (0.7 * _PERIOD) + ph)) % 2 == 0
    ),
    "dots": lambda u, v, ph: (
        (np.abs(_frac(u / _PERIOD + ph) - 0.5) ** 2) + (np.abs(_frac(v / _PERIOD + ph) - 0.5) ** 2)
        <= 0.3**2
    ),
    "grid": lambda u, v, ph: (
        (np.abs(_frac(u / _PERIOD + ph) - 0.5) <= 0.17)
        | (np.abs(_frac(v / _PERIOD + ph) - 0.5) <= 0.17)
    ),
    "rings": lambda u, v, ph: _frac(np.hypot(u, v) / _PERIOD + 0.5 * ph) < 0.5,
    "split": lambda u, v, ph: u >= 0.3 * (ph - 0.5),
    "bullseye": lambda u, v, ph: np.hypot(u, v) <= 0.42 + 0.1 * ph,
}


# --------------------------------------------------------------------------- sampling


@dataclass
class _Scenes:
    """Per-sample nuisances of n samples (all independent of the domain)."""

    centre: np.ndarray  # (n, 2) pixel offsets from the image centre (x right, y down)
    scale: np.ndarray  # (n,)
    angle: np.ndarray  # (n,) radians
    phase: np.ndarray  # (n,) pattern phase in [0, 1)
    levels: np.ndarray  # (n, 3) brightness of background, tone 1 (pattern), tone 2 (body)
    hues: np.ndarray  # (n, 3)
    sats: np.ndarray  # (n, 3)
    gradient: np.ndarray  # (n, 3): direction cos, sin and amplitude of the background ramp
    clutter: np.ndarray  # (n, G, G, 3) standard normal
    noise: np.ndarray  # (n, H, W, 3) standard normal


def _draw_scenes(rng: np.random.Generator, n: int, size: int, palette: str) -> _Scenes:
    levels = _LEVELS[np.argsort(rng.random((n, 3)), axis=1)] + rng.uniform(-0.07, 0.07, (n, 3))
    hues = rng.random((n, 3))
    if palette != "any":
        hues[:, 1:] = _PALETTE_HUE[palette] + rng.uniform(-0.08, 0.08, (n, 2))
    theta = rng.uniform(0.0, 2.0 * np.pi, n)
    return _Scenes(
        centre=rng.uniform(-_OFFSET, _OFFSET, (n, 2)) * size,
        scale=rng.uniform(*_SCALE, n),
        angle=rng.uniform(-_ROTATION, _ROTATION, n),
        phase=rng.random(n),
        levels=levels,
        hues=hues,
        sats=rng.uniform(0.25, 0.9, (n, 3)),
        gradient=np.stack([np.cos(theta), np.sin(theta), rng.uniform(0.0, 0.12, n)], axis=1),
        clutter=rng.standard_normal((n, _CLUTTER_GRID, _CLUTTER_GRID, 3)),
        noise=rng.standard_normal((n, size, size, 3)),
    )


def _supersampling(size: int) -> int:
    return int(np.clip(64 // size, 2, 4))


def _coverage(cls: WorldClass, scenes: _Scenes, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Anti-aliased coverage of the shape and of shape-and-pattern, each (n, size, size)."""
    ss = _supersampling(size)
    grid = (np.arange(size * ss, dtype=np.float32) + 0.5) / ss - size / 2.0
    dx = grid[None, None, :] - scenes.centre[:, 0, None, None].astype(np.float32)
    dy = grid[None, :, None] - scenes.centre[:, 1, None, None].astype(np.float32)
    radius = (_RADIUS * size * scenes.scale).astype(np.float32)[:, None, None]
    cos = np.cos(scenes.angle).astype(np.float32)[:, None, None]
    sin = np.sin(scenes.angle).astype(np.float32)[:, None, None]
    u = (cos * dx + sin * dy) / radius
    v = (sin * dx - cos * dy) / radius  # v points up
    body = SHAPE_FNS[cls.shape](u, v)
    paint = body & PATTERN_FNS[cls.pattern](u, v, scenes.phase.astype(np.float32)[:, None, None])
    return _area_mean(body, ss), _area_mean(paint, ss)


def _area_mean(mask: np.ndarray, ss: int) -> np.ndarray:
    """Box-downsample a boolean (n, size*ss, size*ss) mask to (n, size, size) float32 coverage.

    Written as ss + ss strided uint8 additions: ~15x faster than ``mean(axis=(2, 4))`` on the
    5-D view, which reduces over non-contiguous axes.
    """
    n, side = mask.shape[0], mask.shape[1] // ss
    blocks = mask.view(np.uint8).reshape(n, side, ss, side, ss)
    rows = blocks[:, :, 0].copy()
    for i in range(1, ss):
        rows += blocks[:, :, i]
    total = rows[..., 0].copy()
    for j in range(1, ss):
        total += rows[..., j]
    return total.astype(np.float32) / np.float32(ss * ss)


def _colours(scenes: _Scenes, dom: Domain) -> np.ndarray:
    """RGB of background, tone 1 and tone 2, (n, 3, 3), after the domain's colour changes."""
    levels = scenes.levels.copy()
    levels[:, 1:] = levels[:, :1] + dom.contrast * (levels[:, 1:] - levels[:, :1])
    hsv = np.stack(
        [_frac(scenes.hues + dom.hue_rotation), scenes.sats * dom.saturation, levels], axis=-1
    )
    return hsv_to_rgb(np.clip(hsv, 0.0, 1.0))


def _bilinear_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) matrix of 1-D linear interpolation between pixel centres, edges clamped.

    Equivalent to ``scipy.ndimage.zoom(order=1, grid_mode=True, mode="nearest")`` along one axis;
    as a matrix the 2-D upsampling of a whole batch is two matmuls (``zoom`` on the 4-D batch was
    the slowest step of generation).
    """
    pos = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0.0, src - 1.0)
    left = np.minimum(np.floor(pos).astype(int), src - 2)
    frac = pos - left
    mat = np.zeros((dst, src))
    mat[np.arange(dst), left] = 1.0 - frac
    mat[np.arange(dst), left + 1] = frac
    return mat


def _background(scenes: _Scenes, base: np.ndarray, size: int, dom: Domain) -> np.ndarray:
    """Background (n, size, size, 3): flat colour, linear ramp and smooth clutter."""
    coords = (np.arange(size) + 0.5) / size - 0.5
    ramp = (
        scenes.gradient[:, 0, None, None] * coords[None, None, :]
        + scenes.gradient[:, 1, None, None] * coords[None, :, None]
    ) * scenes.gradient[:, 2, None, None]
    up = _bilinear_matrix(_CLUTTER_GRID, size)
    # (n, G, G, 3) -> (n, 3, size, size) -> (n, size, size, 3): two small matrix products.
    clutter = (up @ scenes.clutter.transpose(0, 3, 1, 2) @ up.T).transpose(0, 2, 3, 1)
    return base[:, None, None, :] + ramp[..., None] + dom.clutter * clutter


def _render(cls: WorldClass, scenes: _Scenes, size: int, dom: Domain) -> np.ndarray:
    """Images (n, size, size, 3) uint8 of one class's scenes in a domain."""
    body, paint = _coverage(cls, scenes, size)
    rgb = _colours(scenes, dom)
    bg = _background(scenes, rgb[:, 0], size, dom)
    body, paint = body[..., None], paint[..., None]
    img = bg * (1.0 - body) + rgb[:, 2, None, None] * (body - paint) + rgb[:, 1, None, None] * paint
    if dom.blur > 0:
        img = ndimage.gaussian_filter(img, sigma=(0, dom.blur, dom.blur, 0), mode="nearest")
    img = img + dom.noise * scenes.noise
    return np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


MAX_WORLD_SIZE = 1024  # the world is generated in memory; larger sides are never needed
MAX_WORLD_BYTES = 16 * 2**30  # the generated uint8 array must fit in memory


def _validate(
    classes: int, per_class: int, size: int, seed: int, split: str, shift: float, ood_shift: float
) -> None:
    if not 1 <= classes <= MAX_CLASSES:
        raise ConfigError(
            "world.classes", f"must lie in 1..{MAX_CLASSES} (the world's class ids), got {classes}"
        )
    if per_class < 1:
        raise ConfigError("world.per_class", f"must be >= 1, got {per_class}")
    if not 8 <= size <= MAX_WORLD_SIZE:
        raise ConfigError("world.size", f"must lie in 8..{MAX_WORLD_SIZE} pixels, got {size}")
    nbytes = classes * per_class * size * size * 3
    if nbytes > MAX_WORLD_BYTES:
        raise ConfigError(
            "world.per_class",
            f"classes x per_class x size^2 x 3 = {nbytes / 2**30:.0f} GiB exceeds the in-memory "
            f"limit of {MAX_WORLD_BYTES // 2**30} GiB (use fewer images or smaller ones)",
        )
    if seed < 0:
        raise ConfigError("world.seed", f"must be >= 0, got {seed}")
    if split not in SPLITS:
        raise unknown_choice("world.split", str(split), SPLITS)
    if shift < 0:
        raise ConfigError("world.shift", f"must be >= 0, got {shift}")
    if ood_shift < 0:
        raise ConfigError("world.ood_shift", f"must be >= 0, got {ood_shift}")


def world_classes(classes: int = 10, seed: int = 0, class_offset: int = 0) -> list[WorldClass]:
    """Definitions of classes ``class_offset .. class_offset + classes - 1``."""
    if class_offset < 0 or class_offset + classes > MAX_CLASSES:
        raise ConfigError(
            "world.class_offset",
            f"classes {class_offset}..{class_offset + classes - 1} outside 0..{MAX_CLASSES - 1}",
        )
    return [world_class(g, seed) for g in range(class_offset, class_offset + classes)]


def generate_world(
    classes: int = 10,
    per_class: int = 500,
    size: int = 16,
    seed: int = 0,
    split: str = "train",
    shift: float = 0.0,
    ood_shift: float = 0.5,
    class_offset: int = 0,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Generate labelled world images, class-major.

    Args:
        classes: K, number of classes.
        per_class: images per class.
        size: image side in pixels.
        seed: world seed (class definitions and sample streams).
        split: ``train``, ``test`` or ``ood`` (disjoint sample streams; ``ood`` adds ``ood_shift``).
        shift: domain shift s >= 0.
        ood_shift: extra shift of the ``ood`` split.
        class_offset: first global class id. Ids below 100 are distinct (shape, pattern) pairs;
            ids ``g`` and ``g + 100`` share their pair and differ only in palette tendency, so
            out-of-distribution classes for a task on ids ``0..K-1`` are best taken from
            ``K..99``.

    Returns:
        ``images`` (K * per_class, size, size, 3) uint8, ``labels`` (K * per_class,) int64 in
        ``0..K-1`` and ``class_names`` (``"c003"``, ...), label ``k`` naming ``class_names[k]``.

    Raises:
        ConfigError: a bad argument, naming the field.
    """
    _validate(classes, per_class, size, seed, split, shift, ood_shift)
    defs = world_classes(classes, seed, class_offset)
    dom = domain(shift + (ood_shift if split == "ood" else 0.0))
    split_code = SPLITS.index(split)
    images = np.empty((classes * per_class, size, size, 3), dtype=np.uint8)
    # Samples per chunk: supersampled float32 arrays stay near 2^21 elements (8 MB).
    chunk = max(1, 2**21 // (size * _supersampling(size)) ** 2)
    for k, cls in enumerate(defs):
        rng = _rng(seed, split_code, cls.gid)
        for start in range(0, per_class, chunk):
            n = min(chunk, per_class - start)
            scenes = _draw_scenes(rng, n, size, cls.palette)
            lo = k * per_class + start
            images[lo : lo + n] = _render(cls, scenes, size, dom)
    labels = np.repeat(np.arange(classes, dtype=np.int64), per_class)
    return images, labels, [cls.name for cls in defs]
