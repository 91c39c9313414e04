"""FractalDB: formula-driven categories of fractal images (Kataoka et al., ACCV 2020).

A *category* is an iterated function system (IFS) of ``n ~ U{2, ..., 7}`` affine maps
``(x, y) -> (a x + b y + e, c x + d y + f)`` whose six parameters are drawn uniformly in
``(-1, 1)``. The attractor is drawn with the chaos game: at every step one map is picked with
probability ``p_i = |a_i d_i - b_i c_i| / sum_j |a_j d_j - b_j c_j|`` and applied to the current
point. A candidate category is kept only if its rendered point cloud covers at least ``threshold``
of the image's pixels (the paper's filling rate, 0.2); otherwise a new candidate is drawn. This is
the official category search (``param_search/ifs_search.py``), with two documented differences:
the filling rate is measured on the rendering the pool actually produces (``size`` px, ``points``
points; the official search renders 512 px), and clouds that diverge are rejected.

Intra-category variation (our rule, a continuous form of the official ``weights_0.1.csv`` grid,
which multiplies one of ``a..f`` by 0.8, 0.9, 1.1 or 1.2 in every map of the system):

* instance ``i`` of a category multiplies one parameter, chosen uniformly among ``a..f``, by a
  weight drawn uniformly in ``[0.8, 1.2]``, in every map; the map probabilities stay those of the
  category (as in the official renderer, which reads them from the category file);
* it is mirrored left-right with probability 1/2 (the official renderer saves flipped copies);
* an instance whose perturbed system diverges (non-finite points) is redrawn; instances are not
  held to the threshold (the official renderer does not check them either).

Drawing the weight from the range rather than the 25-row grid keeps every instance distinct for any
``instances``. Rendering follows the official ``draw_point``: the cloud's bounding box is stretched
to the image minus a pad of ``round(6 / 512 * size)`` pixels, y points up, one pixel per point on a
black background. ``color="gray"`` paints occupied pixels 127 (the official gray rendering);
``color="map"`` (default) gives each map a hue ``k / 7`` at the official saturation and value (0.75)
and paints each pixel with the mean colour of the points that land on it.

Chaos games run in lock-step with numpy: ``B`` systems times ``K`` chains per system advance
together (``K = points / 400``, at most 256), each chain starts at the origin and its first
``burn_in`` (100) points are dropped. The official renderer runs one chain of ``points`` steps from
the origin; many short chains sample the same invariant measure once past the burn-in, and make the
Python-level loop ~250x shorter.
Everything is a pure function of ``seed``: candidate ``j`` and instance ``i`` of candidate ``j``
have their own random streams, so the first ``m`` categories (and instances) of a larger database
are exactly those of a smaller one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from matplotlib.colors import hsv_to_rgb

from divssl.errors import ConfigError, RunFailed

MIN_MAPS = 2
MAX_MAPS = 7
WEIGHT_RANGE = (0.8, 1.2)
PARAM_NAMES = ("a", "b", "c", "d", "e", "f")
COLORS = ("map", "gray")
BURN_IN = 100
# FractalDB's renderer: hue wheel at saturation 0.75 and value 0.75; gray points are 127.
MAP_PALETTE = hsv_to_rgb(
    np.stack([np.arange(MAX_MAPS) / MAX_MAPS, np.full(MAX_MAPS, 0.75), np.full(MAX_MAPS, 0.75)], 1)
).astype(np.float32)
GRAY_LEVEL = 127
_BATCH = 64  # systems per lock-step batch: 64 x 250 chains keeps numpy calls large, memory small
_SEARCH_STREAM, _INSTANCE_STREAM, _CHAIN_STREAM = 0, 1, 2


@dataclass(frozen=True)
class IFS:
    """An iterated function system.

    Attributes:
        params: (n, 6) float64, rows ``(a, b, c, d, e, f)`` of the maps.
        probs: (n,) float64, map selection probabilities (sum to 1).
    """

    params: np.ndarray
    probs: np.ndarray


@dataclass(frozen=True)
class FractalInstance:
    """One image of a category: the perturbed system and whether it is mirrored.

    Attributes:
        category: label of the category.
        system: the perturbed IFS (probabilities of the category).
        param_index: which of ``a..f`` (0..5) was scaled.
        weight: the scale factor.
        flip: mirrored left-right.
        seed_key: key of the instance's random streams.
    """

    category: int
    system: IFS
    param_index: int
    weight: float
    flip: bool
    seed_key: tuple[int, ...]


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def map_probabilities(params: np.ndarray) -> np.ndarray:
    """Selection probabilities proportional to ``|det|`` of each map's linear part.

    Args:
        params: (n, 6) rows ``(a, b, c, d, e, f)``.

    Returns:
        (n,) probabilities ``|ad - bc| / sum |ad - bc|``.
    """
    det = np.abs(params[:, 0] * params[:, 3] - params[:, 1] * params[:, 2])
    return det / det.sum()


def sample_ifs(rng: np.random.Generator) -> IFS:
    """Draw a candidate category: ``n ~ U{2..7}`` maps, parameters ``U(-1, 1)``."""
    n = int(rng.integers(MIN_MAPS, MAX_MAPS + 1))
    params = rng.uniform(-1.0, 1.0, size=(n, 6))
    return IFS(params=params, probs=map_probabilities(params))


def perturb(system: IFS, param_index: int, weight: float) -> IFS:
    """Scale parameter ``param_index`` (0..5 for ``a..f``) of every map; probabilities are kept."""
    params = system.params.copy()
    params[:, param_index] *= weight
    return IFS(params=params, probs=system.probs)


def map_thresholds(probs: np.ndarray) -> np.ndarray:
    """Boundaries between consecutive maps on [0, 1) for inverse-CDF map selection.

    Args:
        probs: (n,) probabilities, ``n <= 7``.

    Returns:
        (6,) float32: the cumulative probabilities of maps ``0..n-2``, then 2.0 (never crossed),
        so a uniform ``u`` selects map ``sum(u >= thresholds)``, always in ``0..n-1``.
    """
    thresholds = np.full(MAX_MAPS - 1, 2.0, dtype=np.float32)
    thresholds[: len(probs) - 1] = np.cumsum(probs)[:-1] / np.sum(probs)
    return thresholds


def _select(u: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    # Inverse CDF by six vectorised comparisons; for <= 7 maps this is ~10x faster than
    # np.searchsorted (measured: 0.12 vs 1.6 ms per 125k draws) and gives the same indices.
    idx = np.zeros(u.shape, dtype=np.int8)
    for k in range(MAX_MAPS - 1):
        idx += u >= thresholds[k]
    return idx


def choose_maps(probs: np.ndarray, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """The chaos game's map choices: indices drawn i.i.d. with the given probabilities.

    Args:
        probs: (n,) probabilities.
        shape: output shape.
        rng: random stream.

    Returns:
        int8 array of ``shape`` with values in ``0..n-1``.
    """
    return _select(rng.random(shape, dtype=np.float32), map_thresholds(probs))


def _chains_for(points: int) -> int:
    # ~400 recorded steps per chain: the burn-in costs 25%, numpy calls stay over 10^4 elements.
    return int(np.clip(points // 400, 1, 256))


@dataclass
class _Clouds:
    """Lock-step chaos-game output of B systems, K chains, T recorded steps.

    ``x``, ``y`` (T, B, K) float32 and ``maps`` (T, B, K) int8; the last step holds only
    ``last`` valid chains, so each system has exactly ``(T - 1) * K + last`` points.
    """

    x: np.ndarray
    y: np.ndarray
    maps: np.ndarray
    last: int


def _lockstep(
    systems: Sequence[IFS], points: int, rngs: Sequence[np.random.Generator], burn_in: int, k: int
) -> _Clouds:
    n_sys = len(systems)
    steps = burn_in + -(-points // k)
    coefs = np.zeros((n_sys * MAX_MAPS, 6), dtype=np.float32)
    maps_bsk = np.empty((n_sys, steps, k), dtype=np.int8)
    for b, (system, rng) in enumerate(zip(systems, rngs, strict=True)):
        coefs[b * MAX_MAPS : b * MAX_MAPS + len(system.params)] = system.params
        maps_bsk[b] = choose_maps(system.probs, (steps, k), rng)
    # (B, steps, K) -> (steps, B*K): each step's choices contiguous.
    maps = maps_bsk.transpose(1, 0, 2).reshape(steps, n_sys * k)
    offsets = np.repeat(np.arange(n_sys, dtype=np.intp) * MAX_MAPS, k)
    cols = [np.ascontiguousarray(coefs[:, j]) for j in range(6)]
    x = np.zeros(n_sys * k, dtype=np.float32)
    y = np.zeros(n_sys * k, dtype=np.float32)
    xs = np.empty((steps - burn_in, n_sys * k), dtype=np.float32)
    ys = np.empty_like(xs)
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(steps):
            # mode="wrap" skips the bounds check (indices are valid by construction): ~30% faster.
            choice = offsets + maps[t]
            a, b_, c, d, e, f = (np.take(col, choice, mode="wrap") for col in cols)
            nx = a * x
            nx += b_ * y
            nx += e
            ny = c * x
            ny += d * y
            ny += f
            x, y = nx, ny
            if t >= burn_in:
                xs[t - burn_in] = x
                ys[t - burn_in] = y
    shape = (steps - burn_in, n_sys, k)
    last = points - (steps - burn_in - 1) * k
    return _Clouds(xs.reshape(shape), ys.reshape(shape), maps[burn_in:].reshape(shape), last)


def chaos_game(
    systems: Sequence[IFS],
    points: int,
    rngs: Sequence[np.random.Generator],
    burn_in: int = BURN_IN,
    chains: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the chaos game of several systems in lock-step.

    Each system runs ``chains`` independent chains from the origin; the first ``burn_in`` points of
    every chain are dropped and the rest, taken step-major, give ``points`` points.

    Args:
        systems: B systems.
        points: recorded points per system.
        rngs: one random stream per system (map choices).
        burn_in: dropped iterations per chain.
        chains: chains per system; default about ``points / 400``.

    Returns:
        ``xy`` (B, points, 2) float32, possibly non-finite for divergent systems, and
        ``maps`` (B, points) int8, the index of the map that produced each point. With one chain,
        ``xy[:, t + 1] = f_{maps[:, t + 1]}(xy[:, t])``.
    """
    clouds = _lockstep(systems, points, rngs, burn_in, chains or _chains_for(points))

    def flat(arr: np.ndarray) -> np.ndarray:
        # (T, B, K) -> (B, T*K) step-major, cut to `points`.
        return arr.transpose(1, 0, 2).reshape(len(systems), -1)[:, :points]

    xy = np.stack([flat(clouds.x), flat(clouds.y)], axis=-1)
    return xy, flat(clouds.maps)


def _bounds(v: np.ndarray, last: int) -> tuple[np.ndarray, np.ndarray]:
    # Per-system min and max over the valid points of a (T, B, K) array (NaN/inf propagate).
    # Reducing the contiguous step axis first is ~2x faster than axis=(0, 2) in one call.
    lo = np.minimum(v[:-1].min(axis=0, initial=np.inf).min(axis=1), v[-1, :, :last].min(axis=1))
    hi = np.maximum(v[:-1].max(axis=0, initial=-np.inf).max(axis=1), v[-1, :, :last].max(axis=1))
    return lo, hi


def _to_pixels(v: np.ndarray, lo: np.ndarray, hi: np.ndarray, span: int) -> np.ndarray:
    # Stretch each system's [lo, hi] to pixel 0 .. span - 1 in place (the official __rescale);
    # the result stays float32 but integer-valued.
    extent = hi - lo
    scale = (span / np.where(extent > 0, extent, 1.0)).astype(np.float32)
    v -= lo.astype(np.float32)[None, :, None]
    v *= scale[None, :, None]
    np.clip(v, 0, span - 1, out=v)
    return np.floor(v, out=v)


def _batch_size(points: int, size: int) -> int:
    # Systems per batch: at most 2^23 points (~150 MB of work arrays) and 2^23 (pixel, map) bins,
    # which also keeps every bin index below 2^24, where float32 integers are exact.
    return max(1, min(_BATCH, 2**23 // points, 2**23 // (MAX_MAPS * size * size)))


def _render(clouds: _Clouds, size: int, color: str, flips: np.ndarray) -> tuple[np.ndarray, ...]:
    """Draw lock-step clouds (consumed in place): (B, size, size, 3) uint8 and the finite mask."""
    _, n_sys, _ = clouds.x.shape
    total = n_sys * size * size
    if (total + 1) * MAX_MAPS > 2**24:
        raise ValueError(f"{n_sys} systems of {size} px exceed one render batch")
    (lo_x, hi_x), (lo_y, hi_y) = _bounds(clouds.x, clouds.last), _bounds(clouds.y, clouds.last)
    finite = np.isfinite(lo_x) & np.isfinite(hi_x) & np.isfinite(lo_y) & np.isfinite(hi_y)
    if not finite.all():  # divergent systems: drawn blank below
        clouds.x[:, ~finite] = 0.0
        clouds.y[:, ~finite] = 0.0
        for arr in (lo_x, hi_x, lo_y, hi_y):
            arr[~finite] = 0.0
    pad = round(6 / 512 * size)
    span = size - 2 * pad
    # Bin = b * size^2 + (size - 1 - pad - iy) * size + pad + ix (y points up), computed in place
    # in float32 (exact below 2^24; half the memory traffic of int64) and converted once.
    flat = _to_pixels(clouds.y, lo_y, hi_y, span)
    flat *= -size
    flat += _to_pixels(clouds.x, lo_x, hi_x, span)
    offset = np.arange(n_sys) * size * size + (size - 1 - pad) * size + pad
    flat += offset.astype(np.float32)[None, :, None]
    flat[-1, :, clouds.last :] = total  # unused chains of the last step go to a dropped bin
    if color == "gray":
        hit = np.bincount(flat.astype(np.intp).ravel(), minlength=total + 1)[:total] > 0
        rgb = np.repeat(np.where(hit, np.float32(GRAY_LEVEL), np.float32(0.0))[:, None], 3, 1)
    else:
        # One bincount over (pixel, map) pairs, then the mean palette colour of each pixel.
        flat *= MAX_MAPS
        flat += clouds.maps
        bins = np.bincount(flat.astype(np.intp).ravel(), minlength=(total + 1) * MAX_MAPS)
        per_map = bins[: total * MAX_MAPS]
        per_map = per_map.reshape(total, MAX_MAPS).astype(np.float32)
        count = per_map.sum(axis=1, keepdims=True)
        rgb = 255.0 * (per_map @ MAP_PALETTE) / np.maximum(count, 1.0)
    images = np.rint(rgb).astype(np.uint8).reshape(n_sys, size, size, 3)
    images[~finite] = 0
    images[flips] = images[flips, :, ::-1]
    return images, finite


def render_points(
    xy: np.ndarray, maps: np.ndarray, size: int, color: str = "map", flips: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw point clouds, one pixel per point, each cloud's bounding box stretched to the image.

    Args:
        xy: (B, P, 2) points.
        maps: (B, P) map index of each point (colours for ``color="map"``).
        size: image side in pixels.
        color: ``"map"`` or ``"gray"``.
        flips: (B,) bool, mirror left-right.

    Returns:
        Images (B, size, size, 3) uint8, black where no point landed and all black for a cloud
        with non-finite points, and the (B,) bool mask of finite clouds.
    """
    xy = np.asarray(xy, dtype=np.float32)
    maps = np.asarray(maps, dtype=np.int8)
    flip_arr = np.zeros(len(xy), bool) if flips is None else np.asarray(flips, dtype=bool)
    images = np.zeros((len(xy), size, size, 3), dtype=np.uint8)
    finite = np.zeros(len(xy), dtype=bool)
    batch = _batch_size(xy.shape[1], size)
    for start in range(0, len(xy), batch):
        sl = slice(start, start + batch)
        clouds = _Clouds(  # one chain per cloud: (P, B, 1)
            x=np.ascontiguousarray(xy[sl, :, 0].T[:, :, None]),
            y=np.ascontiguousarray(xy[sl, :, 1].T[:, :, None]),
            maps=np.ascontiguousarray(maps[sl].T[:, :, None]),
            last=1,
        )
        images[sl], finite[sl] = _render(clouds, size, color, flip_arr[sl])
    return images, finite


def fill_ratio(images: np.ndarray) -> np.ndarray:
    """Fraction of pixels that are not black (FractalDB's filling rate).

    Args:
        images: (B, H, W, 3) uint8.

    Returns:
        (B,) float64 in [0, 1].
    """
    return (images > 0).any(axis=-1).mean(axis=(1, 2))


def render_systems(
    systems: Sequence[IFS],
    seed_keys: Sequence[tuple[int, ...]],
    seed: int,
    size: int,
    points: int,
    color: str = "map",
    flips: Sequence[bool] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render systems in lock-step batches.

    Args:
        systems: B systems.
        seed_keys: per-system key of its chaos-game stream (``rng(seed, 2, *key)``).
        seed: database seed.
        size: image side.
        points: points per image.
        color: ``"map"`` or ``"gray"``.
        flips: per-system left-right mirror.

    Returns:
        Images (B, size, size, 3) uint8 and the (B,) finite-cloud mask.
    """
    flip_arr = np.zeros(len(systems), bool) if flips is None else np.asarray(flips, bool)
    images = np.zeros((len(systems), size, size, 3), dtype=np.uint8)
    finite = np.zeros(len(systems), dtype=bool)
    batch = _batch_size(points, size)
    for start in range(0, len(systems), batch):
        sl = slice(start, start + batch)
        rngs = [_rng(seed, _CHAIN_STREAM, *key) for key in seed_keys[sl]]
        clouds = _lockstep(systems[sl], points, rngs, BURN_IN, _chains_for(points))
        images[sl], finite[sl] = _render(clouds, size, color, flip_arr[sl])
    return images, finite


def _check(categories: int, instances: int, size: int, points: int, threshold: float) -> None:
    if categories < 1:
        raise ConfigError("fractaldb.categories", f"must be >= 1, got {categories}")
    if instances < 1:
        raise ConfigError("fractaldb.instances", f"must be >= 1, got {instances}")
    if size < 8:
        raise ConfigError("fractaldb.size", f"must be >= 8 pixels, got {size}")
    if points < 1:
        raise ConfigError("fractaldb.points", f"must be >= 1, got {points}")
    if not 0.0 <= threshold < 1.0:
        raise ConfigError("fractaldb.threshold", f"must be in [0, 1), got {threshold}")
    if points < threshold * size * size:
        raise ConfigError(
            "fractaldb.points",
            f"{points} points cannot cover {threshold} of a {size}x{size} image",
        )


@dataclass(frozen=True)
class Category:
    """A kept category.

    Attributes:
        system: its IFS (parameters in (-1, 1)).
        candidate: index of the candidate in the search stream.
        prototype: (size, size, 3) uint8, the unperturbed rendering whose filling rate passed.
    """

    system: IFS
    candidate: int
    prototype: np.ndarray


def search_categories(
    categories: int,
    size: int = 64,
    points: int = 100_000,
    threshold: float = 0.2,
    seed: int = 0,
    color: str = "map",
    max_candidates: int | None = None,
) -> list[Category]:
    """Draw candidate systems until ``categories`` of them fill at least ``threshold``.

    Candidate ``j`` is drawn from its own stream, so the result does not depend on batching and
    the categories of a smaller search are a prefix of a larger one.

    Args:
        categories: number of categories to keep.
        size: rendering side used for the filling rate.
        points: points per rendering.
        threshold: minimum filling rate.
        seed: database seed.
        color: rendering colour of the prototypes (does not change the filling rate).
        max_candidates: give up after this many candidates (default ``200 + 100 * categories``;
            also given up after 1024 candidates without a single pass).

    Returns:
        The kept categories, in candidate order.

    Raises:
        ConfigError: not enough candidates pass the threshold.
    """
    limit = max_candidates or 200 + 100 * categories
    kept: list[Category] = []
    for start in range(0, limit, _BATCH):
        if start >= 1024 and not kept:
            limit = start
            break
        cand = list(range(start, min(start + _BATCH, limit)))
        systems = [sample_ifs(_rng(seed, _SEARCH_STREAM, j)) for j in cand]
        images, finite = render_systems(systems, [(0, j) for j in cand], seed, size, points, color)
        ok = finite & (fill_ratio(images) >= threshold)
        for pos in np.flatnonzero(ok)[: categories - len(kept)]:
            kept.append(Category(systems[pos], cand[pos], images[pos]))
        if len(kept) == categories:
            return kept
    raise ConfigError(
        "fractaldb.threshold",
        f"only {len(kept)} of {categories} categories fill {threshold} after {limit} candidates; "
        "lower the threshold or raise points",
    )


def draw_instance(
    category: int, candidate: int, system: IFS, index: int, seed: int, attempt: int = 0
) -> FractalInstance:
    """The intra-category variation of instance ``index``: one parameter scaled, maybe mirrored."""
    key = (candidate, index, attempt)
    rng = _rng(seed, _INSTANCE_STREAM, *key)
    param_index = int(rng.integers(0, 6))
    weight = float(rng.uniform(*WEIGHT_RANGE))
    flip = bool(rng.random() < 0.5)
    return FractalInstance(
        category=category,
        system=perturb(system, param_index, weight),
        param_index=param_index,
        weight=weight,
        flip=flip,
        seed_key=(1, *key),
    )


def render_instances(
    instances: Sequence[FractalInstance], seed: int, size: int, points: int, color: str = "map"
) -> tuple[np.ndarray, np.ndarray]:
    """Render instances (B, size, size, 3) uint8 and return them with the finite-cloud mask."""
    return render_systems(
        [inst.system for inst in instances],
        [inst.seed_key for inst in instances],
        seed,
        size,
        points,
        color,
        [inst.flip for inst in instances],
    )


def generate_fractaldb(
    categories: int = 100,
    instances: int = 10,
    size: int = 64,
    points: int = 100_000,
    threshold: float = 0.2,
    seed: int = 0,
    color: str = "map",
    max_attempts: int = 50,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Generate a FractalDB: ``categories x instances`` images, category-major.

    Args:
        categories: number of IFS categories.
        instances: images per category.
        size: image side in pixels.
        points: chaos-game points per image.
        threshold: minimum filling rate of a category (its unperturbed rendering).
        seed: database seed.
        color: ``"map"`` (colour by map) or ``"gray"``.
        max_attempts: redraws allowed for an instance whose perturbed system diverges.

    Returns:
        ``images`` (categories * instances, size, size, 3) uint8, ``labels`` (N,) int64 (category
        id) and class names ``fractal_0000``, ...

    Raises:
        ConfigError: bad arguments, or a threshold that the categories cannot meet.
    """
    if color not in COLORS:
        raise ConfigError("fractaldb.color", f"unknown value {color!r}", COLORS)
    _check(categories, instances, size, points, threshold)
    kept = search_categories(categories, size, points, threshold, seed, color)
    images = np.zeros((categories * instances, size, size, 3), dtype=np.uint8)
    positions = np.arange(categories * instances)
    for attempt in range(max_attempts):
        todo = [
            draw_instance(c, kept[c].candidate, kept[c].system, i, seed, attempt)
            for c, i in (divmod(int(p), instances) for p in positions)
        ]
        rendered, finite = render_instances(todo, seed, size, points, color)
        images[positions[finite]] = rendered[finite]
        positions = positions[~finite]
        if len(positions) == 0:
            labels = np.repeat(np.arange(categories, dtype=np.int64), instances)
            return images, labels, [f"fractal_{c:04d}" for c in range(categories)]
    raise RunFailed(
        f"{len(positions)} FractalDB instances diverged in {max_attempts} redraws (seed {seed})"
    )


def with_flip(instance: FractalInstance, flip: bool) -> FractalInstance:
    """The same instance (same system and random stream) mirrored or not."""
    return replace(instance, flip=flip)
