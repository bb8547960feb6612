"""Built-in synthetic dataset: anti-aliased coloured shapes on smooth colour-gradient backgrounds.

Every example is a pure function of (seed, split, index): a bilinear four-corner colour
background, zero to two small distractor shapes, and one large shaded main shape drawn last. The
label is the type of the main shape. Shapes are rendered from signed distance functions in
resolution-independent coordinates, so (seed, split, index) gives the same scene at any resolution.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np

# split name -> (stream id mixed into the seed, default number of examples)
SPLITS: dict[str, tuple[int, int]] = {"train": (0, 50_000), "test": (1, 10_000)}

_SQRT3 = np.float32(np.sqrt(3.0))


def _box(px: np.ndarray, py: np.ndarray, hx: float, hy: float) -> np.ndarray:
    qx, qy = np.abs(px) - hx, np.abs(py) - hy
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0)


def _sd_circle(px: np.ndarray, py: np.ndarray, s: float) -> np.ndarray:
    return np.hypot(px, py) - s


def _sd_square(px: np.ndarray, py: np.ndarray, s: float) -> np.ndarray:
    return _box(px, py, 0.8 * s, 0.8 * s)


def _sd_triangle(px: np.ndarray, py: np.ndarray, s: float) -> np.ndarray:
    # Equilateral triangle with circumradius s (Inigo Quilez's exact SDF).
    r = s * _SQRT3 / 2
    x = np.abs(px) - r
    y = py + r / _SQRT3
    fold = x + _SQRT3 * y > 0
    x, y = np.where(fold, (x - _SQRT3 * y) / 2, x), np.where(fold, (-_SQRT3 * x - y) / 2, y)
    x = x - np.clip(x, -2 * r, 0)
    return -np.hypot(x, y) * np.sign(y)


def _sd_ring(px: np.ndarray, py: np.ndarray, s: float) -> np.ndarray:
    return np.abs(np.hypot(px, py) - 0.8 * s) - 0.25 * s


def _sd_cross(px: np.ndarray, py: np.ndarray, s: float) -> np.ndarray:
    return np.minimum(_box(px, py, s, 0.3 * s), _box(px, py, 0.3 * s, s))


def _sd_ellipse(px: np.ndarray, py: np.ndarray, s: float) -> np.ndarray:
    # First-order distance approximation; exact enough for a one-pixel anti-aliased edge.
    a, b = s, 0.5 * s
    k = np.hypot(px / a, py / b)
    return (k - 1) * b


# Label i is the i-th entry; num_classes=k uses the first k.
SHAPES: dict[str, Callable[[np.ndarray, np.ndarray, float], np.ndarray]] = {
    "circle": _sd_circle,
    "square": _sd_square,
    "triangle": _sd_triangle,
    "ring": _sd_ring,
    "cross": _sd_cross,
    "ellipse": _sd_ellipse,
}
SHAPE_NAMES: tuple[str, ...] = tuple(SHAPES)


@functools.cache
def _grid(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution
    y, x = np.meshgrid(c, c, indexing="ij")
    return x, y


def _bilinear(corners: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """corners (2, 2, 3) [row][col] -> colours at (x, y), shape x.shape + (3,)."""
    x, y = np.asarray(x)[..., None], np.asarray(y)[..., None]
    top = (1 - x) * corners[0, 0] + x * corners[0, 1]
    bottom = (1 - x) * corners[1, 0] + x * corners[1, 1]
    return (1 - y) * top + y * bottom


def _draw(
    img: np.ndarray,
    rng: np.random.Generator,
    kind: int,
    size: float,
    centre: np.ndarray,
    background: np.ndarray,
    resolution: int,
) -> None:
    x, y = _grid(resolution)
    angle = rng.uniform(0, 2 * np.pi)
    ca, sa = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    dx, dy = x - np.float32(centre[0]), y - np.float32(centre[1])
    px, py = ca * dx + sa * dy, -sa * dx + ca * dy
    dist = SHAPES[SHAPE_NAMES[kind]](px, py, np.float32(size))
    alpha = np.clip(0.5 - dist * resolution, 0, 1)[..., None]

    colour = rng.uniform(0, 1, 3).astype(np.float32)
    bg = _bilinear(background, *centre)
    if np.linalg.norm(colour - bg) < 0.5:  # keep the shape visible against the background
        colour = np.where(bg > 0.5, 0.4 * colour, 0.6 + 0.4 * colour).astype(np.float32)
    # A linear light gradient across the shape gives it some interior structure.
    light = rng.uniform(-0.3, 0.3, 2).astype(np.float32) / np.float32(size)
    shade = np.clip(1 + light[0] * px + light[1] * py, 0.5, 1.5)[..., None]
    fill = np.clip(colour * shade, 0, 1)
    img *= 1 - alpha
    img += alpha * fill


def render(
    seed: int, index: int, resolution: int, num_classes: int = 4, split: str = "train"
) -> tuple[np.ndarray, int]:
    """One example: ((resolution, resolution, 3) uint8 image, int label in [0, num_classes))."""
    stream = SPLITS[split][0]
    rng = np.random.default_rng(np.random.SeedSequence([seed, stream, index]))
    x, y = _grid(resolution)
    background = rng.uniform(0.05, 0.95, (2, 2, 3)).astype(np.float32)
    img = _bilinear(background, x, y)
    for _ in range(rng.integers(0, 3)):
        _draw(
            img,
            rng,
            kind=int(rng.integers(num_classes)),
            size=rng.uniform(0.06, 0.12),
            centre=rng.uniform(0.1, 0.9, 2),
            background=background,
            resolution=resolution,
        )
    label = int(rng.integers(num_classes))
    size = rng.uniform(0.2, 0.32)
    _draw(
        img,
        rng,
        kind=label,
        size=size,
        centre=rng.uniform(0.5 - (0.42 - size), 0.5 + (0.42 - size), 2),
        background=background,
        resolution=resolution,
    )
    return np.rint(img * 255).astype(np.uint8), label


class SyntheticShapes:
    """Random-access source of synthetic shape images.

    Items are dicts {'image': (R, R, 3) uint8, 'label': () int32}, a pure function of
    (seed, split, index).
    """

    def __init__(
        self,
        resolution: int = 32,
        *,
        split: str = "train",
        num_examples: int | None = None,
        num_classes: int = 4,
        seed: int = 0,
    ):
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}; available splits: {sorted(SPLITS)}.")
        if not 1 <= num_classes <= len(SHAPES):
            raise ValueError(f"num_classes must be in 1..{len(SHAPES)}, got {num_classes}.")
        if resolution < 4:
            raise ValueError(f"resolution must be >= 4, got {resolution}.")
        self.resolution = int(resolution)
        self.split = split
        self.num_examples = SPLITS[split][1] if num_examples is None else int(num_examples)
        self.num_classes = int(num_classes)
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = int(index)
        if not 0 <= index < self.num_examples:
            raise IndexError(f"index {index} out of range for {self.num_examples} examples.")
        image, label = render(self.seed, index, self.resolution, self.num_classes, self.split)
        return {"image": image, "label": np.int32(label)}

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
        return [self[i] for i in indices]

    def __repr__(self) -> str:
        return (
            f"SyntheticShapes(resolution={self.resolution}, split={self.split!r}, "
            f"num_examples={self.num_examples}, num_classes={self.num_classes}, seed={self.seed})"
        )
