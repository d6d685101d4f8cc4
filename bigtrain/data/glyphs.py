"""Glyphs: a built-in, learnable image set of the ten digits drawn as pen strokes; no download, no fonts.

Each digit is a few hand-designed polylines in a unit box (y pointing down). A sample perturbs the stroke
points, applies a random affine map (rotation, shear, anisotropic scale, translation), draws the strokes
with a random pen width (anti-aliased: ink from each pixel's distance to the pen path), then varies contrast
and background and adds pixel noise. Random draws are per sample; the drawing is vectorised over chunks.
Everything about sample `i` is a pure function of `(seed, i)`, so the set is identical on every
machine and rank and any slice of it can be regenerated alone.

The variation is strong enough that a linear classifier on raw pixels falls well short of a small CNN
(measured in tests/data/test_glyphs.py).
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_SIZE = 16
"""Side of a glyph image when the DataModule sets no `image_size`."""

CLASSES = [str(d) for d in range(10)]

Stroke = list[tuple[float, float]]


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float, n: int = 10) -> Stroke:
    """Points along an elliptical arc; angles in degrees, 0 = right, 90 = down (image coordinates)."""
    steps = [start + (end - start) * k / (n - 1) for k in range(n)]
    return [(cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a))) for a in steps]


# One list of strokes per digit. Shapes follow common handwriting rather than a font, so classes overlap
# in pixel space (4/9, 3/5/8, 1/7) and a model must learn the shapes, not memorise templates.
STROKES: list[list[Stroke]] = [
    [_arc(0.5, 0.5, 0.28, 0.4, -90, 270, 18)],
    [[(0.32, 0.28), (0.55, 0.1), (0.55, 0.9)]],
    [_arc(0.5, 0.32, 0.26, 0.22, 200, 360, 8) + [(0.7, 0.5), (0.22, 0.9), (0.8, 0.9)]],
    [_arc(0.47, 0.3, 0.25, 0.2, 210, 450, 9) + _arc(0.47, 0.7, 0.28, 0.2, 270, 510, 10)],
    [[(0.62, 0.9), (0.62, 0.1), (0.2, 0.64), (0.82, 0.64)]],
    [[(0.76, 0.1), (0.32, 0.1), (0.28, 0.46)] + _arc(0.48, 0.66, 0.28, 0.24, 235, 500, 11)],
    [[(0.72, 0.12)] + _arc(0.5, 0.68, 0.26, 0.22, 200, 540, 14)],
    [[(0.2, 0.1), (0.8, 0.1), (0.42, 0.9)]],
    [_arc(0.5, 0.29, 0.2, 0.19, 90, 450, 12), _arc(0.5, 0.7, 0.25, 0.21, -90, 270, 14)],
    [_arc(0.48, 0.32, 0.25, 0.22, 0, 360, 14) + [(0.72, 0.4), (0.66, 0.9)]],
]


def _segment_table(strokes: list[Stroke], length: int) -> tuple[np.ndarray, np.ndarray]:
    """A digit's points (K, 2) and the point indices (length, 2) of its segments, padded to `length`."""
    points, pairs = [], []
    for stroke in strokes:
        base = len(points)
        points += stroke
        pairs += [(base + j, base + j + 1) for j in range(len(stroke) - 1)]
    # Padding repeats the first segment, which leaves every pixel's nearest distance unchanged.
    pairs += [pairs[0]] * (length - len(pairs))
    return np.asarray(points, dtype=np.float64), np.asarray(pairs, dtype=np.intp)


SEGMENTS = max(sum(len(s) - 1 for s in strokes) for strokes in STROKES)
TABLES = [_segment_table(strokes, SEGMENTS) for strokes in STROKES]

# Ranges of the per-sample draws: rotation (degrees), shear, x and y scale, x and y shift (frame widths),
# pen width (pixels at DEFAULT_SIZE), contrast, background level, pixel noise std.
LOW = np.array([-18, -0.3, 0.7, 0.75, -0.12, -0.12, 0.9, 0.6, 0.0, 0.03])
HIGH = np.array([18, 0.3, 1.1, 1.1, 0.12, 0.12, 2.0, 1.0, 0.25, 0.12])


def _sample(label: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Segments (S, 2, 2) in pixel coordinates and the pen/contrast/background/noise levels of one glyph."""
    angle, shear, sx, sy, tx, ty, *rest = rng.uniform(LOW, HIGH)
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    # rotation @ shear @ diag(sx, sy), multiplied out.
    linear = np.array([[cos * sx, (cos * shear - sin) * sy], [sin * sx, (sin * shear + cos) * sy]])
    points, pairs = TABLES[label]
    points = points + rng.normal(0.0, 0.025, size=points.shape)
    # Centre, map, shrink to 80% of the frame, shift, then scale to pixels.
    mapped = ((points - 0.5) @ linear.T * 0.8 + 0.5 + (tx, ty)) * size
    levels = np.array(rest) * (size / DEFAULT_SIZE, 1.0, 1.0, 1.0)
    return mapped[pairs], levels


def _draw(segments: np.ndarray, width: np.ndarray, size: int) -> np.ndarray:
    """Anti-aliased strokes (n, size, size) in [0, 1]: coverage from each pixel's distance to the pen path."""
    centres = np.arange(size, dtype=np.float32) + 0.5
    px, py = np.tile(centres, size), np.repeat(centres, size)  # (P,) row-major pixel centres
    # x and y kept apart: numpy reduces a trailing axis of length 2 far slower than it adds two arrays.
    ax, ay = segments[:, :, None, 0, 0], segments[:, :, None, 0, 1]  # (n, S, 1)
    dx, dy = segments[:, :, None, 1, 0] - ax, segments[:, :, None, 1, 1] - ay
    rx, ry = px - ax, py - ay  # (n, S, P)
    t = np.clip((rx * dx + ry * dy) / np.maximum(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
    gx, gy = rx - t * dx, ry - t * dy
    dist = np.sqrt((gx * gx + gy * gy).min(axis=1))  # (n, P)
    ink = np.clip(width[:, None] / 2 + 0.5 - dist, 0.0, 1.0)
    return ink.reshape(-1, size, size)


def make_glyphs(
    num_samples: int, *, size: int = DEFAULT_SIZE, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, size, size) uint8 and labels (N,) int64; sample i depends only on (seed, i)."""
    images = np.empty((num_samples, size, size), dtype=np.uint8)
    labels = np.empty(num_samples, dtype=np.int64)
    # Bounds the (chunk, segments, pixels) distance arrays to about 16 MB each at any image size.
    chunk = max(1, 4_000_000 // (SEGMENTS * size * size))
    for first in range(0, num_samples, chunk):
        n = min(chunk, num_samples - first)
        segments = np.empty((n, SEGMENTS, 2, 2), dtype=np.float32)
        levels = np.empty((n, 4), dtype=np.float32)  # pen width, contrast, background, noise std
        noise = np.empty((n, size, size), dtype=np.float32)
        for k in range(n):
            # Modulo 2**64 so any int seed (even negative) gives a valid, distinct SeedSequence entropy.
            rng = np.random.default_rng([seed % 2**64, first + k])
            labels[first + k] = rng.integers(10)
            segments[k], levels[k] = _sample(int(labels[first + k]), size, rng)
            noise[k] = rng.standard_normal((size, size))
        ink = _draw(segments, levels[:, 0], size)
        contrast, background, std = (levels[:, j, None, None] for j in (1, 2, 3))
        pixels = background + contrast * ink + std * noise
        images[first : first + n] = np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)
    return images, labels
