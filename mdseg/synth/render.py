"""Paint a `Landscape` into optical, SAR and label arrays: per-class spectra and backscatter, texture, and the
imperfections of real pairs (building shadows, mixed pixels, speckle, SAR misregistration, a nodata corner).

Optical: 4 bands red, green, blue, near-infrared, uint8 digital numbers 1–255 (0 = nodata). SAR: VV backscatter
σ0 in dB (float32), 4-look speckle. Label: class indices of `catalog.WHU_CLASSES`, 255 where unlabelled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine
from rasterio.features import rasterize

from mdseg.data.catalog import WHU_CLASSES
from mdseg.synth.landscape import BANK_WIDTH, Landscape

FARMLAND, CITY, VILLAGE, WATER, FOREST, ROAD, OTHERS = range(len(WHU_CLASSES))
UNLABELLED = 255
LOOKS = 4  # equivalent number of looks of the speckle

# Mean reflectance of each surface as (red, green, blue, nir) digital numbers.
_CROPS = np.array([(65, 95, 60, 165), (95, 110, 80, 130), (135, 125, 65, 120), (55, 100, 55, 175)], dtype=np.float32)
_BARE = np.array([(150, 132, 112, 118), (132, 124, 102, 106)], dtype=np.float32)  # bare soil, dry grass
_FOREST = np.array((45, 68, 48, 128), dtype=np.float32)
_BANK = np.array((158, 148, 126, 112), dtype=np.float32)
_LAKES = np.array([(35, 55, 70, 18), (45, 70, 62, 26)], dtype=np.float32)  # clear, algae-green
_RIVER = np.array((72, 84, 82, 30), dtype=np.float32)  # silty
_TREES = np.array((58, 84, 52, 138), dtype=np.float32)
_YARD = np.array((138, 122, 100, 104), dtype=np.float32)
_TILES = np.array([(158, 88, 74, 96), (118, 118, 124, 94), (96, 126, 168, 92)], dtype=np.float32)  # red, grey, blue
_ROOFS = np.array([(172, 170, 168, 124), (140, 140, 142, 108), (88, 126, 176, 92), (112, 110, 112, 90)], np.float32)
_STREET = np.array((108, 108, 112, 84), dtype=np.float32)
_ASPHALT = np.array((80, 84, 90, 68), dtype=np.float32)
_SHADOW = 0.45  # fraction of light left in a building's shadow


@dataclass(frozen=True)
class SceneArrays:
    """`opt` (4, H, W) uint8, 0 = nodata; `sar` (H, W) float32 dB; `label` (H, W) uint8, 255 = unlabelled."""

    opt: np.ndarray
    sar: np.ndarray
    label: np.ndarray


def render(land: Landscape, rng: np.random.Generator) -> SceneArrays:
    """Optical, SAR and label arrays of `land`, textures and noise drawn from `rng`."""
    n = land.size
    shape = (n, n)
    lo, lo2, mid, mid2 = (_noise(rng, shape, s) for s in (40.0, 60.0, 5.0, 3.0))
    fine, crowns = _noise(rng, shape, 0.7), _noise(rng, shape, 1.3)
    label = np.full(shape, OTHERS, dtype=np.uint8)
    opt = np.empty((4, n, n), dtype=np.float32)
    opt[:] = _BARE[0][:, None, None]
    sar = np.full(shape, -16.0, dtype=np.float32)

    # Fields: one crop per field with its own tone, rows and backscatter; fallow fields are bare.
    count = len(land.parcels)
    pid = _burn(land.parcels, n, np.arange(1, count + 1), np.int32)
    tone = _CROPS[rng.integers(len(_CROPS), size=count + 1)] * rng.uniform(0.9, 1.1, (count + 1, 1))
    tone += rng.normal(0, 5, (count + 1, 4))
    fallow = np.concatenate([[True], land.fallow])
    tone[fallow] = _BARE[rng.integers(len(_BARE), size=count + 1)][fallow] + rng.normal(0, 5, (count + 1, 4))[fallow]
    period = rng.uniform(3, 6, count + 1)
    amp = np.where(fallow | (rng.random(count + 1) < 0.25), 0.0, rng.uniform(4, 10, count + 1))
    angle = np.concatenate([[0.0], land.field_angle])
    field_db = np.where(fallow, rng.uniform(-17, -15, count + 1), rng.uniform(-14.5, -11, count + 1))
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, count + 1)
    rows = np.sin(2 * np.pi * (x * np.cos(angle)[pid] + y * np.sin(angle)[pid]) / period[pid] + phase[pid])
    rows *= amp[pid]
    inside = pid > 0
    label[inside] = np.where(fallow[pid[inside]], OTHERS, FARMLAND)
    texture = 1 + 0.05 * lo + 0.03 * mid + 0.05 * mid * fallow[pid]
    opt[:, inside] = (tone[pid].transpose(2, 0, 1) * texture + rows * np.array([0.6, 0.6, 0.5, 1.5])[:, None, None])[
        :, inside
    ]
    sar[inside] = (field_db[pid] + 0.08 * rows + 0.6 * lo)[inside]

    # Bare land and dry grass.
    ids = _burn(land.meadows, n, np.arange(1, len(land.meadows) + 1), np.int32)
    kind = _BARE[rng.integers(len(_BARE), size=len(land.meadows) + 1)]
    _paint(label, opt, sar, ids > 0, OTHERS, kind[ids] * (1 + 0.06 * mid + 0.03 * fine)[..., None], -16 + mid)

    # Forest: crowns and the gaps between them.
    mask = _burn(land.forests, n) > 0
    colour = _FOREST * (1 + 0.05 * lo + 0.18 * crowns)[..., None]
    colour[..., 3] += 10 * crowns
    _paint(label, opt, sar, mask, FOREST, colour, -8 + 0.8 * crowns + 0.5 * lo)

    # Water: sandy banks, then rivers and lakes; wind roughens the backscatter in broad patches.
    banks = [line.buffer(w / 2 + BANK_WIDTH) for line, w in land.rivers]
    _paint(label, opt, sar, _burn(banks, n) > 0, OTHERS, _BANK * (1 + 0.05 * mid)[..., None], -15 + mid)
    water_db = -21 + 1.5 * lo2
    rivers = _burn([line.buffer(w / 2) for line, w in land.rivers], n) > 0
    _paint(label, opt, sar, rivers, WATER, _RIVER * (1 + 0.04 * lo)[..., None], water_db)
    ids = _burn(land.lakes, n, np.arange(1, len(land.lakes) + 1), np.int32)
    kind = _LAKES[rng.integers(len(_LAKES), size=len(land.lakes) + 1)]
    _paint(label, opt, sar, ids > 0, WATER, kind[ids] * (1 + 0.04 * lo)[..., None], water_db)

    # Villages: houses among trees and yards.
    mask = _burn(land.villages, n) > 0
    trees = 1 / (1 + np.exp(-2.5 * mid2))
    ground = trees[..., None] * _TREES + (1 - trees[..., None]) * _YARD
    ground *= (1 + 0.08 * fine)[..., None]
    _paint(label, opt, sar, mask, VILLAGE, ground, -12 + 5 * trees)
    _buildings(opt, sar, land.houses, np.ones(len(land.houses)), _TILES, rng, n, bounce_db=5.0)

    # City: streets, parks, buildings with shadows and double-bounce returns.
    if land.city is not None:
        mask = _burn([land.city], n) > 0
        _paint(label, opt, sar, mask, CITY, _STREET * (1 + 0.04 * fine)[..., None], -10 + 0.5 * fine)
        parks = _burn(land.parks, n) > 0
        opt[:, parks] = (_TREES * (1 + 0.1 * crowns)[..., None])[parks].T
        sar[parks] = -9
        _buildings(opt, sar, land.buildings, land.building_height, _ROOFS, rng, n, bounce_db=9.0)

    # Roads: asphalt, a tone per road.
    for line, width in land.roads:
        mask = _burn([line.buffer(width / 2)], n) > 0
        colour = (_ASPHALT + rng.normal(0, 5, 4)) * (1 + 0.03 * fine)[..., None]
        _paint(label, opt, sar, mask, ROAD, colour, -19 + 0.5 * fine)

    haze = lo2[None] * np.array([2, 3, 5, 1], dtype=np.float32)[:, None, None]
    opt = _blur(opt + haze) + rng.normal(0, 1.2, opt.shape).astype(np.float32)
    opt = np.clip(np.round(opt), 1, 255).astype(np.uint8)
    power = _blur(10 ** (_shift(sar, land.sar_shift) / 10))
    power = power * rng.gamma(LOOKS, 1 / LOOKS, shape) + 10**-2.5 * rng.gamma(1.0, 1.0, shape)  # speckle + noise floor
    sar_db = np.round(10 * np.log10(power), 2).astype(np.float32)
    corner = _burn([land.nodata], n) > 0
    opt[:, corner] = 0
    label[corner] = UNLABELLED
    return SceneArrays(opt=opt, sar=sar_db, label=label)


def _burn(geoms: Sequence, size: int, values: Sequence[int] | None = None, dtype=np.uint8) -> np.ndarray:
    """Rasterise pixel-coordinate geometries onto a size × size grid (later geometries win): `values[i]`, or 1."""
    shapes = [(g, int(v)) for g, v in zip(geoms, values if values is not None else [1] * len(geoms), strict=True)]
    shapes = [(g, v) for g, v in shapes if g is not None and not g.is_empty]
    if not shapes:
        return np.zeros((size, size), dtype=dtype)
    return rasterize(shapes, out_shape=(size, size), transform=Affine.identity(), fill=0, dtype=dtype)


def _paint(
    label: np.ndarray, opt: np.ndarray, sar: np.ndarray, mask: np.ndarray, cls: int, colour: np.ndarray, db
) -> None:
    """Set class `cls` where `mask`: `colour` (H, W, 4) digital numbers, `db` (H, W) or a scalar backscatter."""
    label[mask] = cls
    opt[:, mask] = colour[mask].T
    sar[mask] = db[mask] if isinstance(db, np.ndarray) else db


def _buildings(
    opt: np.ndarray,
    sar: np.ndarray,
    buildings: list,
    heights: np.ndarray,
    roofs: np.ndarray,
    rng: np.random.Generator,
    size: int,
    bounce_db: float,
) -> None:
    """Roofs (a colour per building), their shadows on the ground to the north-west (the sun in the south-east),
    and a bright double-bounce line where a wall faces the radar (which looks from the east)."""
    if not buildings:
        return
    count = len(buildings)
    ids = _burn(buildings, size, np.arange(1, count + 1), np.int32)
    on = ids > 0
    arr = np.array(buildings, dtype=object)
    offset = np.repeat(heights, shapely.get_num_coordinates(arr))[:, None]
    shade = shapely.convex_hull(shapely.union(arr, shapely.transform(arr, lambda xy: xy - offset)))
    shadow = (_burn(list(shade), size) > 0) & ~on
    opt[:, shadow] *= _SHADOW
    colour = roofs[rng.integers(len(roofs), size=count + 1)] * rng.uniform(0.85, 1.15, (count + 1, 1))
    opt[:, on] = colour[ids[on]].T
    wall = np.zeros_like(on)
    wall[:, 1:] = on[:, :-1] & ~on[:, 1:]  # the pixel just east of a building's east wall
    roof_db = rng.uniform(-1, 4, count + 1)
    sar[on] = roof_db[ids[on]]
    sar[wall] = bounce_db
    sar[shadow] -= 3


def _noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Gaussian noise smoothed with a Gaussian of `scale` px (through the FFT, so it wraps), float32.

    Scaled to unit variance in expectation (not per draw), so a small scene shows a piece of the same field."""
    white = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    gain = np.exp(-2 * (np.pi * scale) ** 2 * (np.fft.fftfreq(shape[1])[None, :] ** 2 + fy**2))
    smooth = np.fft.irfft2(np.fft.rfft2(white) * gain[:, : shape[1] // 2 + 1], s=shape)
    return (smooth / np.sqrt(np.mean(gain**2))).astype(np.float32)


def _blur(a: np.ndarray) -> np.ndarray:
    """Mix each pixel with its neighbours ([1, 2, 1] / 4 along both axes, edges repeated): the sensor's blur, which
    makes the pixels along class borders mixed."""
    pad = [(0, 0)] * (a.ndim - 2) + [(1, 1), (1, 1)]
    p = np.pad(a, pad, mode="edge")
    rows = 0.25 * p[..., :-2, :] + 0.5 * p[..., 1:-1, :] + 0.25 * p[..., 2:, :]
    return 0.25 * rows[..., :-2] + 0.5 * rows[..., 1:-1] + 0.25 * rows[..., 2:]


def _shift(a: np.ndarray, offset: tuple[int, int]) -> np.ndarray:
    """`a` moved by (dy, dx) pixels on the same grid, edges repeated: the SAR's slight misregistration."""
    dy, dx = offset
    p = np.pad(a, ((abs(dy), abs(dy)), (abs(dx), abs(dx))), mode="edge")
    h, w = a.shape
    return p[abs(dy) - dy : abs(dy) - dy + h, abs(dx) - dx : abs(dx) - dx + w]
