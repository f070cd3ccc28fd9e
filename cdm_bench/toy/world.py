"""The toy world: scenes of 1-3 coloured shapes on a textured background, 32x32 RGB.

A *scene* has 1-3 distinct objects, each a (colour, shape) pair named in the caption, e.g.
``"a red circle, a blue square and a green triangle"`` (objects in canonical order: by shape,
then colour). Everything else is left open by the caption and drawn at random: object
positions, sizes, rotations, small colour jitter, and a muted background texture (stripes,
checks, gradient or smooth noise, in two low-saturation colours). Each caption therefore maps
to a broad, multi-modal image distribution, and a one-step sampler visibly averages it.

Numpy only (imports fast). Rendering uses only correctly-rounded float operations (+ - * /,
sqrt, floor, min/max), so an image's bytes do not depend on how many images are rendered
together.

Example::

    >>> import numpy as np
    >>> from cdm_bench.toy import world
    >>> scene = world.sample_scene(np.random.default_rng(0))
    >>> img = world.render(scene)
    >>> img.shape, img.dtype
    ((32, 32, 3), dtype('uint8'))
    >>> world.attributes(world.caption(scene)) == [f"{c} {s}" for c, s in scene.objects]
    True
"""

from __future__ import annotations

import colorsys
import dataclasses
import hashlib
import json
import math
import re
import zlib
from dataclasses import dataclass, field

import numpy as np

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.12, 0.10),
    "green": (0.10, 0.78, 0.20),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.88, 0.10),
    "cyan": (0.10, 0.85, 0.90),
    "magenta": (0.88, 0.15, 0.85),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
BACKGROUNDS: tuple[str, ...] = ("stripes", "checks", "gradient", "noise")


@dataclass(frozen=True)
class WorldConfig:
    """Everything that defines the world's distribution (hashed into artefact keys)."""

    size: int = 32
    colors: tuple[str, ...] = tuple(COLORS)
    shapes: tuple[str, ...] = SHAPES
    backgrounds: tuple[str, ...] = BACKGROUNDS
    min_objects: int = 1
    max_objects: int = 3
    min_radius: float = 4.5
    max_radius: float = 8.0
    color_jitter: float = 0.06
    max_tokens: int = 12
    version: str = "1"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


DEFAULT = WorldConfig()


# ---------------------------------------------------------------------------------------
# scenes
@dataclass
class Obj:
    color: str
    shape: str
    cx: float
    cy: float
    radius: float
    angle: float  # radians
    rgb: tuple[float, float, float]


@dataclass
class Background:
    kind: str
    c1: tuple[float, float, float]
    c2: tuple[float, float, float]
    angle: float = 0.0  # direction of stripes / gradient
    period: float = 6.0  # stripes period / checks cell size (px)
    phase: float = 0.0
    grid: np.ndarray | None = None  # smooth-noise control grid (g, g) in [0, 1]


@dataclass
class Scene:
    objects: list[tuple[str, str]]  # (colour, shape) in canonical (caption) order
    layout: list[Obj] = field(default_factory=list)  # painting order
    background: Background | None = None


def _canonical(objs: list[tuple[str, str]], cfg: WorldConfig = DEFAULT) -> list[tuple[str, str]]:
    return sorted(objs, key=lambda o: (cfg.shapes.index(o[1]), cfg.colors.index(o[0])))


def _muted(u: np.ndarray) -> tuple[float, float, float]:
    """Three uniforms -> a low-saturation, mid-dark RGB colour."""
    return colorsys.hsv_to_rgb(float(u[0]), 0.05 + 0.30 * float(u[1]), 0.18 + 0.37 * float(u[2]))


def _sample_background(rng: np.random.Generator, cfg: WorldConfig) -> Background:
    u = rng.random(10)
    kind = cfg.backgrounds[min(int(u[0] * len(cfg.backgrounds)), len(cfg.backgrounds) - 1)]
    bg = Background(kind, _muted(u[1:4]), _muted(u[4:7]))
    if kind == "stripes":
        bg.angle = math.floor(u[7] * 4) * math.pi / 4 + 0.3 * (u[8] - 0.5)
        bg.period = 4.0 + 6.0 * u[9]
        bg.phase = float(u[8])
    elif kind == "checks":
        bg.period = 3.0 + 5.0 * u[7]
        bg.phase = float(u[8])
    elif kind == "gradient":
        bg.angle = 2 * math.pi * u[7]
    elif kind == "noise":
        g = 3 + min(int(u[7] * 3), 2)
        bg.grid = rng.random((g, g))
    return bg


def _sample_layout(rng: np.random.Generator, objects: list[tuple[str, str]], cfg: WorldConfig) -> list[Obj]:
    """Positions/sizes/rotations/jitter for the given objects; painting order is random."""
    order = rng.permutation(len(objects))
    n, jit = cfg.size, cfg.color_jitter
    placed: list[Obj] = []
    for i in order:
        color, shape = objects[int(i)]
        rmax = cfg.max_radius
        for attempt in range(200):
            if attempt and attempt % 40 == 0:
                rmax = max(cfg.min_radius, rmax * 0.85)
            u = rng.random(3)
            r = cfg.min_radius + (rmax - cfg.min_radius) * u[0]
            cx, cy = r + (n - 2 * r) * u[1], r + (n - 2 * r) * u[2]
            if all(math.hypot(cx - o.cx, cy - o.cy) >= 0.9 * (r + o.radius) for o in placed):
                break
        u = rng.random(4)
        base = COLORS[color]
        rgb = tuple(min(1.0, max(0.0, base[c] + jit * (2 * u[c] - 1))) for c in range(3))
        angle = 2 * math.pi * u[3] if shape != "circle" else 0.0
        placed.append(Obj(color, shape, float(cx), float(cy), float(r), float(angle), rgb))
    return placed


def sample_objects(rng: np.random.Generator, cfg: WorldConfig = DEFAULT) -> list[tuple[str, str]]:
    k = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    combos = len(cfg.colors) * len(cfg.shapes)
    picks = rng.choice(combos, size=k, replace=False)
    objs = [(cfg.colors[int(p) % len(cfg.colors)], cfg.shapes[int(p) // len(cfg.colors)]) for p in picks]
    return _canonical(objs, cfg)


def sample_scene(rng: np.random.Generator, cfg: WorldConfig = DEFAULT) -> Scene:
    """A random scene: objects (what the caption says) + layout and background (what it doesn't)."""
    objects = sample_objects(rng, cfg)
    return Scene(objects, _sample_layout(rng, objects, cfg), _sample_background(rng, cfg))


def scene_for_prompt(prompt: str, seed: int, cfg: WorldConfig = DEFAULT) -> Scene:
    """A random scene matching ``prompt``; deterministic in (prompt, seed)."""
    objects = [(a.split()[0], a.split()[1]) for a in attributes(prompt, cfg)]
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(prompt.encode()), 7])
    return Scene(objects, _sample_layout(rng, objects, cfg), _sample_background(rng, cfg))


# ---------------------------------------------------------------------------------------
# captions
def caption(scene: Scene | list[tuple[str, str]]) -> str:
    objs = scene.objects if isinstance(scene, Scene) else scene
    parts = [f"a {c} {s}" for c, s in objs]
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


_ATTR_RE = re.compile(r"\ba\s+([a-z]+)\s+([a-z]+)")


def attributes(prompt: str, cfg: WorldConfig = DEFAULT) -> list[str]:
    """Parse a caption into its attributes, e.g. ``["red circle", "blue square"]``.

    Raises ValueError for words outside the world's vocabulary; "" -> [].
    """
    out = []
    for color, shape in _ATTR_RE.findall(prompt.lower()):
        if color not in cfg.colors or shape not in cfg.shapes:
            raise ValueError(f"not a toy-world object: {color!r} {shape!r} in {prompt!r}")
        out.append(f"{color} {shape}")
    if prompt.strip() and not out:
        raise ValueError(f"not a toy-world caption: {prompt!r}")
    return out


def attribute_names(cfg: WorldConfig = DEFAULT) -> list[str]:
    """All colour x shape attributes, the scorer's label order (shape-major)."""
    return [f"{c} {s}" for s in cfg.shapes for c in cfg.colors]


def sample_prompts(n: int, seed: int, cfg: WorldConfig = DEFAULT) -> list[str]:
    rng = np.random.default_rng([int(seed), 11])
    return [caption(sample_objects(rng, cfg)) for _ in range(n)]


# ---------------------------------------------------------------------------------------
# rendering
def _sdf(shape: str, px: np.ndarray, py: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Signed distance (px units, approx.) of points (M,H,W) in object frames; r (M,1,1)."""
    if shape == "circle":
        return np.sqrt(px * px + py * py) - r
    if shape == "square":
        return np.maximum(np.abs(px), np.abs(py)) - 0.8 * r
    if shape == "triangle":  # equilateral, circumradius r, inradius r/2
        s3 = math.sqrt(3.0) / 2.0
        d1 = -py
        d2 = s3 * px + 0.5 * py
        d3 = -s3 * px + 0.5 * py
        return np.maximum(np.maximum(d1, d2), d3) - 0.5 * r
    if shape == "cross":
        ax, ay, w = np.abs(px), np.abs(py), 0.33 * r
        return np.minimum(np.maximum(ax - r, ay - w), np.maximum(ax - w, ay - r))
    raise ValueError(shape)


def _tri_wave(t: np.ndarray) -> np.ndarray:
    """Period-1 soft square wave in [0, 1] without transcendental functions."""
    f = t - np.floor(t)
    tri = np.abs(2.0 * f - 1.0)  # 1 -> 0 -> 1
    return np.clip((tri - 0.5) * 4.0 + 0.5, 0.0, 1.0)


def _background_mix(bgs: list[Background], n: int) -> np.ndarray:
    """(N, n, n) mixing field in [0, 1] between c1 (0) and c2 (1)."""
    coords = np.arange(n, dtype=np.float64) + 0.5
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    mix = np.zeros((len(bgs), n, n))
    kinds = np.array([b.kind for b in bgs])
    for kind in set(kinds.tolist()):
        idx = np.nonzero(kinds == kind)[0]
        sel = [bgs[i] for i in idx]
        ang = np.array([b.angle for b in sel])[:, None, None]
        per = np.array([b.period for b in sel])[:, None, None]
        ph = np.array([b.phase for b in sel])[:, None, None]
        if kind == "stripes":
            ca, sa = np.array([math.cos(a) for a in ang.ravel()]), np.array([math.sin(a) for a in ang.ravel()])
            t = (xx * ca[:, None, None] + yy * sa[:, None, None]) / per + ph
            mix[idx] = _tri_wave(t)
        elif kind == "checks":
            off = ph * per
            cx = np.floor((xx + off) / per)
            cy = np.floor((yy + off) / per)
            mix[idx] = np.abs(np.mod(cx + cy, 2.0))
        elif kind == "gradient":
            ca, sa = np.array([math.cos(a) for a in ang.ravel()]), np.array([math.sin(a) for a in ang.ravel()])
            proj = (xx - n / 2) * ca[:, None, None] + (yy - n / 2) * sa[:, None, None]
            mix[idx] = np.clip(proj / (n * 0.75) + 0.5, 0.0, 1.0)
        elif kind == "noise":
            for j, b in zip(idx, sel):  # bilinear upsampling of the control grid, elementwise
                g = b.grid.shape[0]
                u = coords / n * (g - 1)
                i0 = np.minimum(np.floor(u).astype(int), g - 2)
                fu = u - i0
                gy0, gy1 = i0[:, None], i0[:, None] + 1
                gx0, gx1 = i0[None, :], i0[None, :] + 1
                wy, wx = fu[:, None], fu[None, :]
                top = b.grid[gy0, gx0] * (1 - wx) + b.grid[gy0, gx1] * wx
                bot = b.grid[gy1, gx0] * (1 - wx) + b.grid[gy1, gx1] * wx
                mix[j] = top * (1 - wy) + bot * wy
        else:
            raise ValueError(kind)
    return mix


def render_batch(scenes: list[Scene], cfg: WorldConfig = DEFAULT) -> np.ndarray:
    """Render scenes -> uint8 (N, n, n, 3), vectorised over images and objects."""
    n, N = cfg.size, len(scenes)
    if N > 256:  # keep the float working set cache-sized
        return np.concatenate([render_batch(scenes[i:i + 256], cfg) for i in range(0, N, 256)])
    if N == 0:
        return np.zeros((0, n, n, 3), np.uint8)
    mix = _background_mix([s.background for s in scenes], n)[..., None]
    c1 = np.array([s.background.c1 for s in scenes])[:, None, None, :]
    c2 = np.array([s.background.c2 for s in scenes])[:, None, None, :]
    img = c1 * (1.0 - mix) + c2 * mix

    # Objects are drawn in a (w, w) window around their centre: every shape lies within
    # 1.2 * radius of its centre, so alpha is exactly 0 outside the window and the result
    # equals a full-frame rendering.
    w = min(n, 2 * int(math.ceil(1.2 * cfg.max_radius + 2.5)))
    ar = np.arange(w)
    planes = np.ascontiguousarray(img.transpose(3, 0, 1, 2)).reshape(3, N * n * n)
    max_k = max(len(s.layout) for s in scenes)
    for slot in range(max_k):  # painting order
        for shape in cfg.shapes:
            items = [(i, s.layout[slot]) for i, s in enumerate(scenes)
                     if len(s.layout) > slot and s.layout[slot].shape == shape]
            if not items:
                continue
            idx = np.array([i for i, _ in items])
            objs = [o for _, o in items]
            ox = np.array([min(max(int(math.floor(o.cx)) - w // 2, 0), n - w) for o in objs])
            oy = np.array([min(max(int(math.floor(o.cy)) - w // 2, 0), n - w) for o in objs])
            gx = (ox[:, None] + ar[None, :])[:, None, :]  # (M, 1, w) pixel column
            gy = (oy[:, None] + ar[None, :])[:, :, None]  # (M, w, 1) pixel row
            cx = np.array([o.cx for o in objs])[:, None, None]
            cy = np.array([o.cy for o in objs])[:, None, None]
            r = np.array([o.radius for o in objs])[:, None, None]
            ca = np.array([math.cos(o.angle) for o in objs])[:, None, None]
            sa = np.array([math.sin(o.angle) for o in objs])[:, None, None]
            dx, dy = (gx + 0.5) - cx, (gy + 0.5) - cy
            px, py = dx * ca + dy * sa, dy * ca - dx * sa
            alpha = np.clip(0.5 - _sdf(shape, px, py, r), 0.0, 1.0)
            rgb = np.array([o.rgb for o in objs]).T[:, :, None, None]
            flat = (idx[:, None, None] * (n * n) + gy * n + gx).reshape(-1)
            cur = np.take(planes, flat, axis=1).reshape((3,) + alpha.shape)
            new = (cur * (1.0 - alpha) + rgb * alpha).reshape(3, -1)
            for c in range(3):
                np.put(planes[c], flat, new[c])
    img = planes.reshape(3, N, n, n).transpose(1, 2, 3, 0)
    return np.clip(np.floor(img * 255.0 + 0.5), 0, 255).astype(np.uint8)


def render(scene: Scene, cfg: WorldConfig = DEFAULT) -> np.ndarray:
    """One scene -> uint8 (n, n, 3)."""
    return render_batch([scene], cfg)[0]


def render_for_prompt(prompt: str, seed: int, cfg: WorldConfig = DEFAULT) -> np.ndarray:
    """A random real image matching ``prompt``; deterministic in (prompt, seed)."""
    return render(scene_for_prompt(prompt, seed, cfg), cfg)


def make_dataset(n: int, seed: int, cfg: WorldConfig = DEFAULT) -> tuple[np.ndarray, list[str]]:
    """n fresh scenes -> (uint8 images (n, s, s, 3), captions)."""
    rng = np.random.default_rng([int(seed), 13])
    scenes = [sample_scene(rng, cfg) for _ in range(n)]
    images = render_batch(scenes, cfg)
    return images, [caption(s) for s in scenes]


# ---------------------------------------------------------------------------------------
# tokenizer
SPECIALS = ("<pad>", "<unk>", "a", "and", ",")


def vocabulary(cfg: WorldConfig = DEFAULT) -> list[str]:
    """Token id -> word; id 0 is padding."""
    return list(SPECIALS) + list(cfg.colors) + list(cfg.shapes)


VOCAB_SIZE = 32  # room for the default vocabulary (15 words); the model's embedding size
_TOKEN_RE = re.compile(r"[a-z]+|,")


def tokenize(prompts: list[str] | str, cfg: WorldConfig = DEFAULT, max_tokens: int | None = None) -> np.ndarray:
    """Captions -> int64 (B, L) token ids, right-padded with 0; "" -> all padding."""
    if isinstance(prompts, str):
        prompts = [prompts]
    length = max_tokens or cfg.max_tokens
    ids = {w: i for i, w in enumerate(vocabulary(cfg))}
    if len(ids) > VOCAB_SIZE:
        raise ValueError(f"vocabulary of {len(ids)} words exceeds VOCAB_SIZE={VOCAB_SIZE}")
    out = np.zeros((len(prompts), length), dtype=np.int64)
    for b, p in enumerate(prompts):
        toks = [ids.get(w, 1) for w in _TOKEN_RE.findall(p.lower())]
        if len(toks) > length:
            raise ValueError(f"prompt has {len(toks)} tokens > {length}: {p!r}")
        out[b, : len(toks)] = toks
    return out
