"""The land-use layout of a synthetic scene as shapely geometries, in pixel coordinates (x right, y down, 1 px = 5 m).

A scene is a patchwork of field blocks (strips of one orientation per block, some fallow), forest and bare-land
patches, lakes and a meandering river (sandy banks, sometimes a tributary), one city of street blocks and
buildings, villages of small houses, and a road network joining the settlements to each other and to the scene
edge. Sizes are fixed in pixels (ground metres); counts grow with the scene's area.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import LineString, MultiPoint, Point, Polygon, box

# Sizes in pixels (5 m each).
ROAD_WIDTH = 4.0  # local roads: 20 m with verges; ≥ 3 px so a model can learn them
MAIN_ROAD_WIDTH = 6.0
RIVER_WIDTH = (10.0, 18.0)
STREAM_WIDTH = (5.0, 7.0)
BANK_WIDTH = 5.0  # sand / grass strip on each side of rivers


@dataclass(frozen=True)
class Landscape:
    """Geometries of one scene (pixel coordinates) and the per-object attributes the renderer needs.

    `parcels[i]` is a field, fallow (bare, class "others") where `fallow[i]`; `field_angle[i]` the direction of
    its crop rows (radians). `building_height` (px of shadow) goes with `buildings`. `roads` are
    (centre line, width px). `sar_shift` (dy, dx) px: the SAR's content offset. `nodata` is the corner without
    optical data.
    """

    size: int
    parcels: list[Polygon]
    fallow: np.ndarray
    field_angle: np.ndarray
    meadows: list[Polygon]
    forests: list[Polygon]
    lakes: list[Polygon]
    rivers: list[tuple[LineString, float]]
    city: Polygon | None
    parks: list[Polygon]
    buildings: list[Polygon]
    building_height: np.ndarray
    villages: list[Polygon]
    houses: list[Polygon]
    roads: list[tuple[LineString, float]]
    sar_shift: tuple[int, int]
    nodata: Polygon


def build_landscape(rng: np.random.Generator, size: int) -> Landscape:
    """Draw a scene layout of `size` × `size` pixels from `rng` (the same draws in the same order every time)."""
    area = (size / 1024.0) ** 2
    frame = box(0, 0, size, size)
    parcels, fallow, angles = _fields(rng, size, area)
    meadows = [_blob(rng, *_uniform_point(rng, size), rng.uniform(25, 60), 0.35) for _ in range(_count(rng, 4 * area))]
    forests = [_blob(rng, *_uniform_point(rng, size), rng.uniform(50, 140), 0.4) for _ in range(_count(rng, 7 * area))]
    rivers = _rivers(rng, size)
    water = shapely.union_all([line.buffer(w / 2 + BANK_WIDTH) for line, w in rivers])
    lakes = []
    for _ in range(_count(rng, 2 * area)):
        r = rng.uniform(40, 100)
        lakes.append(_blob(rng, *_place(rng, size, r, water, 10), r, 0.3))
        water = water.union(lakes[-1])
    city_r = min(rng.uniform(130, 190), 0.3 * size)
    city_centre = _place(rng, size, city_r, water, 15, inset=city_r)
    city = _blob(rng, *city_centre, city_r, 0.2).intersection(frame)
    parks, buildings, heights = _city_blocks(rng, city, city_centre, city_r)
    taken = water.union(city)
    villages, centres = [], []
    for _ in range(max(1, _count(rng, 6 * area))):
        r = rng.uniform(22, 40)
        c = _place(rng, size, r, taken, 30, inset=r)
        villages.append(_blob(rng, *c, r, 0.3).intersection(frame))
        centres.append(c)
        taken = taken.union(villages[-1])
    houses = [h for v in villages for h in _houses(rng, v)]
    roads = _roads(rng, size, city, city_centre, centres)
    shift = tuple(int(v) for v in rng.choice([-1, 1], 2))
    return Landscape(
        size=size,
        parcels=parcels,
        fallow=fallow,
        field_angle=angles,
        meadows=meadows,
        forests=forests,
        lakes=lakes,
        rivers=rivers,
        city=city,
        parks=parks,
        buildings=buildings,
        building_height=heights,
        villages=villages,
        houses=houses,
        roads=roads,
        sar_shift=(shift[0], shift[1]),
        nodata=_nodata_corner(rng, size),
    )


def _count(rng: np.random.Generator, expected: float) -> int:
    """An integer with mean `expected`: its floor, plus one with the probability of its fraction."""
    return int(expected) + int(rng.random() < expected - int(expected))


def _uniform_point(rng: np.random.Generator, size: int) -> tuple[float, float]:
    x, y = rng.uniform(0, size, 2)
    return float(x), float(y)


def _place(
    rng: np.random.Generator, size: int, radius: float, avoid, margin: float, inset: float = 0.0, tries: int = 40
) -> tuple[float, float]:
    """A centre at least `radius + margin` from `avoid`, `inset` px inside the frame; the farthest of `tries`
    draws when none is."""
    inset = min(inset, 0.45 * size)
    points = rng.uniform(inset, size - inset, (tries, 2))
    dist = shapely.distance(avoid, shapely.points(points)) if not avoid.is_empty else np.full(tries, np.inf)
    ok = np.nonzero(dist > radius + margin)[0]
    pick = ok[0] if ok.size else int(np.argmax(dist))
    return float(points[pick, 0]), float(points[pick, 1])


def _blob(rng: np.random.Generator, cx: float, cy: float, r: float, rough: float, n: int = 64) -> Polygon:
    """An irregular round patch: radius r modulated by 5 random harmonics of relative size `rough`."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    k = np.arange(1, 6)[:, None]
    amp = rough * rng.standard_normal((5, 1)) / k
    phase = rng.uniform(0, 2 * np.pi, (5, 1))
    rr = r * np.clip(1 + (amp * np.cos(k * t + phase)).sum(0), 0.35, 1.8)
    return Polygon(np.c_[cx + rr * np.cos(t), cy + rr * np.sin(t)]).buffer(0)


def _rotate(geoms: np.ndarray, angle: float, cx: float, cy: float) -> np.ndarray:
    """Rotate an array of geometries by `angle` (radians) about the origin, then move the origin to (cx, cy)."""
    c, s = np.cos(angle), np.sin(angle)
    m = np.array([[c, s], [-s, c]])
    return shapely.transform(geoms, lambda xy: xy @ m + (cx, cy))


def _fields(rng: np.random.Generator, size: int, area: float) -> tuple[list[Polygon], np.ndarray, np.ndarray]:
    """Field blocks (Voronoi cells) cut into strips of fields of one orientation each; 10 % lie fallow."""
    frame = box(0, 0, size, size)
    seeds = rng.uniform(0, size, (max(3, _count(rng, 14 * area)), 2))
    cells = shapely.voronoi_polygons(MultiPoint(seeds), extend_to=frame).geoms
    parcels: list[Polygon] = []
    angles: list[float] = []
    for cell in cells:
        region = cell.intersection(frame)
        if region.is_empty:
            continue
        angle = rng.uniform(0, np.pi)
        cx, cy = region.centroid.x, region.centroid.y
        reach = shapely.hausdorff_distance(region, Point(cx, cy)) + 2
        width = rng.uniform(14, 30)
        boxes = []
        y = -reach
        while y < reach:
            h = width * rng.uniform(0.7, 1.3)
            lengths = rng.uniform(35, 95, int(2 * reach / 35) + 2)
            xs = -reach + np.concatenate([[0], np.cumsum(lengths)])
            xs = xs[: np.searchsorted(xs, reach) + 1]
            boxes.append(shapely.box(xs[:-1], y, xs[1:], y + h))
            y += h
        strips = _rotate(np.concatenate(boxes), angle, cx, cy)
        pieces = shapely.intersection(strips, region)
        pieces = pieces[shapely.area(pieces) > 15]
        parcels.extend(pieces)
        row_angle = angle + (np.pi / 2 if rng.random() < 0.5 else 0.0)
        angles.extend([row_angle] * len(pieces))
    fallow = rng.random(len(parcels)) < 0.1
    return parcels, fallow, np.array(angles)


def _meander(rng: np.random.Generator, a: np.ndarray, b: np.ndarray, amp: float, n: int = 200) -> LineString:
    """A line from a to b swinging sideways by about `amp` px in 3 random harmonics."""
    t = np.linspace(0, 1, n)[:, None]
    d = b - a
    normal = np.array([-d[1], d[0]]) / np.hypot(*d)
    freq = rng.uniform(1.5, 5, 3)
    offset = sum(amp * rng.uniform(0.3, 1) / (i + 1) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
                 for i, f in enumerate(freq))  # fmt: skip
    return LineString(a + t * d + offset * normal)


def _edge_point(rng: np.random.Generator, size: int, side: int, out: float = 30.0) -> np.ndarray:
    """A point `out` px beyond side 0 left, 1 right, 2 top, 3 bottom, in the middle 80 % of it."""
    u = rng.uniform(0.1 * size, 0.9 * size)
    return np.array([(-out, u), (size + out, u), (u, -out), (u, size + out)][side])


def _rivers(rng: np.random.Generator, size: int) -> list[tuple[LineString, float]]:
    """A river from one side to the opposite one, and in 60 % of scenes a tributary reaching it from another."""
    side = int(rng.integers(4))
    a, b = _edge_point(rng, size, side), _edge_point(rng, size, side ^ 1)
    river = _meander(rng, a, b, rng.uniform(0.04, 0.1) * size)
    rivers = [(river, rng.uniform(*RIVER_WIDTH))]
    if rng.random() < 0.6:
        start = _edge_point(rng, size, (side + 2) % 4)
        join = np.array(river.interpolate(rng.uniform(0.3, 0.7), normalized=True).coords[0])
        rivers.append((_meander(rng, start, join, 0.05 * np.hypot(*(join - start))), rng.uniform(*STREAM_WIDTH)))
    return rivers


def _city_blocks(
    rng: np.random.Generator, city: Polygon, centre: tuple[float, float], radius: float
) -> tuple[list[Polygon], list[Polygon], np.ndarray]:
    """Parks and buildings of a city: a rotated street grid, each block split into 1–3 × 1–3 lots with a building
    each (8 % of blocks are parks). Buildings near the centre are taller (longer shadows)."""
    angle = rng.uniform(0, np.pi / 2)
    sx, sy = rng.uniform(22, 34, 2)
    street = rng.uniform(1.0, 1.5)  # half width, px
    nx, ny = int(radius / sx) + 2, int(radius / sy) + 2
    parks, lots = [], []
    for i in range(-nx, nx):
        for j in range(-ny, ny):
            x0, y0 = i * sx + street, j * sy + street
            x1, y1 = (i + 1) * sx - street, (j + 1) * sy - street
            if rng.random() < 0.08:
                parks.append(shapely.box(x0, y0, x1, y1))
                continue
            a, b = rng.integers(1, 4, 2)
            xs, ys = np.linspace(x0, x1, a + 1), np.linspace(y0, y1, b + 1)
            gx, gy = np.meshgrid(np.arange(a), np.arange(b))
            gap = rng.uniform(0.6, 1.6, gx.size)
            lots.append(
                shapely.box(
                    xs[gx.ravel()] + gap, ys[gy.ravel()] + gap, xs[gx.ravel() + 1] - gap, ys[gy.ravel() + 1] - gap
                )
            )
    cx, cy = centre
    parks_arr = _rotate(np.array(parks, dtype=object), angle, cx, cy) if parks else np.array([], dtype=object)
    lots_arr = _rotate(np.concatenate(lots), angle, cx, cy)
    inside = shapely.contains(city, shapely.centroid(lots_arr))
    lots_arr = shapely.intersection(lots_arr[inside], city)
    lots_arr = lots_arr[shapely.area(lots_arr) > 2]
    d = shapely.distance(shapely.centroid(lots_arr), Point(cx, cy)) / radius
    heights = 1 + 4 * np.clip(1 - d, 0, 1) * rng.uniform(0.4, 1.0, len(lots_arr))
    parks_arr = shapely.intersection(parks_arr, city)
    return [p for p in parks_arr if not p.is_empty], list(lots_arr), heights


def _houses(rng: np.random.Generator, village: Polygon) -> list[Polygon]:
    """Small houses (10–22 m a side), one per 30 px² of village, scattered with one orientation per village."""
    n = int(village.area / 30)
    minx, miny, maxx, maxy = village.bounds
    pts = rng.uniform((minx, miny), (maxx, maxy), (3 * n + 10, 2))
    pts = pts[shapely.contains_xy(village, pts[:, 0], pts[:, 1])][:n]
    half = rng.uniform(1.0, 2.2, (len(pts), 2))
    angle = rng.uniform(0, np.pi / 2)
    c, s = np.cos(angle), np.sin(angle)
    corners = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1), (-1, -1)], dtype=float)
    local = corners[None] * half[:, None, :]  # (n, 5, 2)
    rotated = local @ np.array([[c, s], [-s, c]])
    return list(shapely.polygons(rotated + pts[:, None, :]))


def _smooth_path(rng: np.random.Generator, a: np.ndarray, b: np.ndarray) -> LineString:
    """A gently curving road from a to b: two jittered midpoints, rounded by Chaikin corner cutting."""
    d = b - a
    length = np.hypot(*d)
    normal = np.array([-d[1], d[0]]) / max(length, 1e-9)
    pts = [a] + [a + f * d + rng.normal(0, 0.06 * length) * normal for f in (1 / 3, 2 / 3)] + [b]
    pts = np.array(pts)
    for _ in range(3):
        q = 0.75 * pts[:-1] + 0.25 * pts[1:]
        r = 0.25 * pts[:-1] + 0.75 * pts[1:]
        pts = np.vstack([pts[:1], np.column_stack([q, r]).reshape(-1, 2), pts[-1:]])
    return LineString(pts)


def _roads(
    rng: np.random.Generator,
    size: int,
    city: Polygon,
    centre: tuple[float, float],
    villages: list[tuple[float, float]],
) -> list[tuple[LineString, float]]:
    """Main roads from the city to 2–3 scene edges, and local roads joining every village to the network along
    the shortest links (a minimum spanning tree over the settlements). Roads end at the city's edge, where its
    streets take over, and at a village's centre."""

    def at_city(target: np.ndarray) -> np.ndarray:
        edge = city.boundary
        return np.array(edge.interpolate(edge.project(Point(*target))).coords[0])

    roads = []
    for side in rng.permutation(4)[: int(rng.integers(2, 4))]:
        end = _edge_point(rng, size, int(side))
        roads.append((_smooth_path(rng, at_city(end), end), MAIN_ROAD_WIDTH))
    nodes = np.array([centre, *villages])
    linked = [0]
    rest = list(range(1, len(nodes)))
    while rest:
        d = np.hypot(*(nodes[rest][:, None, :] - nodes[linked][None, :, :]).transpose(2, 0, 1))
        i, j = np.unravel_index(np.argmin(d), d.shape)
        a, b = nodes[linked[j]], nodes[rest[i]]
        roads.append((_smooth_path(rng, at_city(b) if linked[j] == 0 else a, b), ROAD_WIDTH))
        linked.append(rest.pop(i))
    return roads


def _nodata_corner(rng: np.random.Generator, size: int) -> Polygon:
    """A triangle in one corner, legs 6–14 % of the side: outside the optical image's swath."""
    a, b = rng.uniform(0.06, 0.14, 2) * size
    corner = int(rng.integers(4))
    x0, y0 = (0 if corner in (0, 3) else size), (0 if corner in (0, 1) else size)
    sx, sy = (1 if x0 == 0 else -1), (1 if y0 == 0 else -1)
    return Polygon([(x0, y0), (x0 + sx * a, y0), (x0, y0 + sy * b)])
