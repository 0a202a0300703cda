"""The map of a large projection: a server-side density image of ALL points under a WebGL scatter of a
fixed-size sample, with selections applied to all points on the server.

Why: plotly sends every point to the browser (~20 bytes per point per render; 2.99 s for 50,000
points in headless Chromium), so a million points cannot be drawn as markers. Binning the stored
coordinates with numpy (one `np.bincount` over all points and colour categories) and blending the
per-category counts into one RGBA image costs tens of milliseconds and a few hundred KB of PNG
whatever the number of points. Plotly's lasso and box only fire on a trace with points, so a sample
(`SAMPLE_POINTS`) is drawn invisibly over the image; the polygon (box or lasso) that the selection event
carries is then applied to every stored point here (`selection_mask`), so a lasso returns all the
objects inside it, not only the sampled ones.

No Streamlit here: pages/_density.py draws it; tests call these functions directly.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lcdash.errors import LcdashError

#: Projections with at least this many points get the density view; smaller ones keep the plain
#: scatter (every point a marker, hover on every point). Measured: the plain scatter draws 50,000
#: points in 2.99 s; `LCDASH_DENSITY_MIN_POINTS` overrides (tests use a small value).
DENSITY_MIN_POINTS = 50_000
#: Points drawn as (invisible) markers so that plotly's lasso / box fire and hovering names objects.
SAMPLE_POINTS = 20_000
#: Density image size in pixels (the chart stretches it over the plot area).
IMAGE_WIDTH, IMAGE_HEIGHT = 1000, 600
ENV_MIN_POINTS = "LCDASH_DENSITY_MIN_POINTS"
ENV_SAMPLE = "LCDASH_DENSITY_SAMPLE"


def _env_count(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise LcdashError(f"{name} must be a whole number of points, got {raw!r}") from None
    if value < 1:
        raise LcdashError(f"{name} must be at least 1, got {value}")
    return value


def density_min_points() -> int:
    """The point count from which Explore draws the density view (`LCDASH_DENSITY_MIN_POINTS`, else
    DENSITY_MIN_POINTS)."""
    return _env_count(ENV_MIN_POINTS, DENSITY_MIN_POINTS)


def sample_size() -> int:
    """How many points the density view draws as markers (`LCDASH_DENSITY_SAMPLE`, else SAMPLE_POINTS):
    fewer for a slow browser; the browser tests use a small sample to show that a lasso selects the
    unsampled points too."""
    return _env_count(ENV_SAMPLE, SAMPLE_POINTS)


@dataclass
class MapPoints:
    """The stored coordinates of one projection: oid int64[N], x, y float32[N] (one row per (object,
    band), in the store's order)."""

    oid: np.ndarray
    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        self.oid = np.asarray(self.oid, np.int64).reshape(-1)
        self.x = np.asarray(self.x, np.float32).reshape(-1)
        self.y = np.asarray(self.y, np.float32).reshape(-1)
        if not (self.oid.size == self.x.size == self.y.size):
            raise LcdashError(f"map points need as many x and y as oids, got {self.oid.size}, "
                              f"{self.x.size}, {self.y.size}")

    def __len__(self) -> int:
        return int(self.oid.size)

    def extent(self, pad: float = 0.02) -> tuple[float, float, float, float]:
        """(x0, x1, y0, y1) around every point, padded by `pad` of the span on each side."""
        return extent_of(self.x, self.y, pad)


def extent_of(x, y, pad: float = 0.02) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) around the points, padded; a zero span gets a unit width so bins exist."""
    x = np.asarray(x)
    y = np.asarray(y)
    if x.size == 0:
        return (-1.0, 1.0, -1.0, 1.0)
    out = []
    for v in (x, y):
        lo, hi = float(np.min(v)), float(np.max(v))
        span = hi - lo if hi > lo else 1.0
        out += [lo - pad * span, hi + pad * span]
    return tuple(out)


# --- colours ----------------------------------------------------------------------------------------


@dataclass
class Colouring:
    """How each point is coloured: categories (codes int32[N] into `names` / `colours`, -1 never) or a
    numeric value per point (`values` float64[N], NaN = missing, drawn grey), plus what the legend or
    the colour bar says."""

    name: str | None
    codes: np.ndarray | None = None
    names: list[str] | None = None
    colours: list[str] | None = None
    values: np.ndarray | None = None
    log: bool = False
    vmin: float = 0.0
    vmax: float = 1.0


def colouring(values: pd.Series | np.ndarray | None, name: str | None = None) -> Colouring:
    """Categories or a numeric scale for `values`, with the same rules as the plain scatter
    (`plots.is_categorical`, at most MAX_CATEGORIES named categories, missing and "other" grey, a log
    scale for positive values spanning more than 100x)."""
    from lcdash.plots import CATEGORY_COLOURS, MAX_CATEGORIES, MISSING_COLOUR, is_categorical

    if values is None:
        return Colouring(name=None)
    values = pd.Series(values) if not isinstance(values, pd.Series) else values.reset_index(drop=True)
    if is_categorical(values):
        # through category codes: a million strings are hashed once, never copied
        cat = values if isinstance(values.dtype, pd.CategoricalDtype) else values.astype("category")
        names = [str(c) for c in cat.cat.categories] + ["(none)"]
        old = cat.cat.codes.to_numpy().astype(np.int64)
        old[old < 0] = len(names) - 1                                    # missing -> "(none)"
        counts = np.bincount(old, minlength=len(names))
        keep = [i for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
        if len(keep) > MAX_CATEGORIES:
            keep = keep[:MAX_CATEGORIES]
            names.append("(other)")
        shown = sorted({names[i] for i in keep} | ({"(other)"} if "(other)" in names else set()),
                       key=lambda c: (c in ("(none)", "(other)"), c))
        new_code = {c: i for i, c in enumerate(shown)}
        lookup = np.array([new_code.get(names[i], new_code.get("(other)", -1)) for i in range(len(counts))],
                          np.int32)
        codes = lookup[old]
        grey = ("(none)", "(other)")
        colours = [MISSING_COLOUR if c in grey else CATEGORY_COLOURS[i % len(CATEGORY_COLOURS)]
                   for i, c in enumerate(shown)]
        return Colouring(name=name, codes=codes, names=shown, colours=colours)
    num = pd.to_numeric(values, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    ok = np.isfinite(num)
    shown = num[ok]
    log = bool(shown.size) and shown.min() > 0 and shown.max() / shown.min() > 100
    if log:
        num = np.where(ok, np.log10(np.where(ok & (num > 0), num, 1.0)), np.nan)
        shown = num[ok]
    vmin, vmax = (float(shown.min()), float(shown.max())) if shown.size else (0.0, 1.0)
    return Colouring(name=name, values=num, log=log, vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1.0)


def _rgb(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def _viridis(t: np.ndarray) -> np.ndarray:
    """t in [0, 1] -> RGB float [.., 3] on plotly's Viridis (the scatter's numeric colour scale)."""
    from plotly.colors import sequential

    stops = np.array([_rgb(c) for c in sequential.Viridis], np.float64)
    pos = np.linspace(0.0, 1.0, len(stops))
    return np.stack([np.interp(t, pos, stops[:, k]) for k in range(3)], axis=-1)


# --- the density image ------------------------------------------------------------------------------


def _bins(x, y, extent, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(flat pixel index, inside mask): row 0 is the top of the image (largest y)."""
    x0, x1, y0, y1 = extent
    fx = (np.asarray(x, np.float64) - x0) / (x1 - x0)
    fy = (np.asarray(y, np.float64) - y0) / (y1 - y0)
    inside = (fx >= 0) & (fx <= 1) & (fy >= 0) & (fy <= 1)
    ix = np.minimum((fx[inside] * width).astype(np.int64), width - 1)
    iy = np.minimum(((1.0 - fy[inside]) * height).astype(np.int64), height - 1)
    return iy * width + ix, inside


def density_counts(x, y, extent, width: int = IMAGE_WIDTH, height: int = IMAGE_HEIGHT,
                   codes: np.ndarray | None = None, n_codes: int = 1) -> np.ndarray:
    """Points per pixel (and per category when `codes` are given): int64 [n_codes, height, width].
    Points outside `extent` are left out."""
    flat, inside = _bins(x, y, extent, width, height)
    if codes is not None:
        flat = np.asarray(codes, np.int64)[inside] * (width * height) + flat
    counts = np.bincount(flat, minlength=n_codes * width * height)
    return counts.reshape(n_codes, height, width)


def _alpha(total: np.ndarray) -> np.ndarray:
    """Opacity by count on a log scale: a lone point stays visible, dense cores saturate."""
    peak = float(total.max()) if total.size else 0.0
    if peak <= 0:
        return np.zeros(total.shape)
    a = 0.45 + 0.55 * np.log1p(total) / np.log1p(peak)
    return np.where(total > 0, a, 0.0)


def density_image(x, y, colour: Colouring | None = None, extent=None, width: int = IMAGE_WIDTH,
                  height: int = IMAGE_HEIGHT) -> np.ndarray:
    """An RGBA uint8 [height, width, 4] image of all points over `extent` (default: all points).

    Categories: each pixel's colour is the count-weighted mean of its categories' colours (so mixed
    regions show as mixed); numeric values: Viridis at the pixel's mean value, grey where a pixel only
    holds points without a value. Opacity grows with log(count)."""
    from lcdash.plots import CATEGORY_COLOURS, MISSING_COLOUR

    colour = colour or Colouring(name=None)
    extent = extent or extent_of(x, y)
    img = np.zeros((height, width, 4), np.uint8)
    if colour.codes is not None:
        k = len(colour.names)
        counts = density_counts(x, y, extent, width, height, colour.codes, k).reshape(k, -1)
        total = counts.sum(axis=0)
        rgbs = np.array([_rgb(c) for c in colour.colours], np.float64)           # [k, 3]
        rgb = (rgbs.T @ counts) / np.maximum(total, 1)                            # [3, HW]
        rgb = rgb.T
    elif colour.values is not None:
        flat, inside = _bins(x, y, extent, width, height)
        v = colour.values[inside]
        ok = np.isfinite(v)
        total = np.bincount(flat, minlength=width * height)
        n_ok = np.bincount(flat[ok], minlength=width * height)
        sums = np.bincount(flat[ok], weights=v[ok], minlength=width * height)
        mean = sums / np.maximum(n_ok, 1)
        t = np.clip((mean - colour.vmin) / (colour.vmax - colour.vmin), 0.0, 1.0)
        rgb = np.where((n_ok > 0)[:, None], _viridis(t), np.array(_rgb(MISSING_COLOUR), np.float64))
    else:
        total = density_counts(x, y, extent, width, height).reshape(-1)
        rgb = np.broadcast_to(np.array(_rgb(CATEGORY_COLOURS[0]), np.float64), (total.size, 3))
    img[..., :3] = np.clip(np.rint(rgb), 0, 255).astype(np.uint8).reshape(height, width, 3)
    img[..., 3] = np.rint(255 * _alpha(total)).astype(np.uint8).reshape(height, width)
    return img


def png_data_uri(rgba: np.ndarray) -> str:
    """A data: URI of the RGBA image as PNG (what a plotly layout image loads)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba, np.uint8), "RGBA").save(buf, format="PNG", compress_level=3)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# --- selections -------------------------------------------------------------------------------------


def select_box(x, y, xs: Sequence[float], ys: Sequence[float]) -> np.ndarray:
    """Boolean mask of the points inside the box spanned by xs = [x0, x1], ys = [y0, y1] (any order)."""
    x = np.asarray(x)
    y = np.asarray(y)
    xlo, xhi = sorted(float(v) for v in xs[:2])
    ylo, yhi = sorted(float(v) for v in ys[:2])
    return (x >= xlo) & (x <= xhi) & (y >= ylo) & (y <= yhi)


def select_lasso(x, y, xs: Sequence[float], ys: Sequence[float]) -> np.ndarray:
    """Boolean mask of the points inside the closed polygon (xs, ys): a bounding-box prefilter, then
    matplotlib's point-in-polygon (C++) on the candidates only."""
    from matplotlib.path import Path

    x = np.asarray(x)
    y = np.asarray(y)
    px = np.asarray(xs, np.float64)
    py = np.asarray(ys, np.float64)
    out = np.zeros(x.shape, bool)
    if px.size < 3 or px.size != py.size:
        return out
    cand = np.flatnonzero((x >= px.min()) & (x <= px.max()) & (y >= py.min()) & (y <= py.max()))
    if cand.size:
        path = Path(np.column_stack([px, py]), closed=False)
        out[cand] = path.contains_points(np.column_stack([x[cand], y[cand]]).astype(np.float64))
    return out


def _pairs(area: Mapping) -> tuple[list[float], list[float]]:
    xs, ys = area.get("x") or [], area.get("y") or []
    try:
        return [float(v) for v in xs], [float(v) for v in ys]
    except (TypeError, ValueError):
        return [], []


def selection_mask(x, y, selection: Mapping) -> np.ndarray | None:
    """Points inside any box or lasso of a Streamlit plotly selection (``{"box": [{"x": [x0, x1],
    "y": [y0, y1]}, ...], "lasso": [{"x": [...], "y": [...]}, ...]}``, data coordinates): the union.
    None when the selection holds no box or lasso (e.g. a click on one point)."""
    mask = None
    for kind, fn in (("box", select_box), ("lasso", select_lasso)):
        for area in selection.get(kind) or []:
            xs, ys = _pairs(area)
            if len(xs) < 2 or len(xs) != len(ys):
                continue
            part = fn(x, y, xs, ys)
            mask = part if mask is None else mask | part
    return mask


def selection_key(selection: Mapping) -> str:
    """A short fingerprint of a selection's boxes, lassos and clicked points (to skip reapplying the
    same selection on every rerun)."""
    import hashlib
    import json

    from lcdash.plots import selected_oid

    parts = {k: selection.get(k) or [] for k in ("box", "lasso")}
    parts["points"] = sorted({o for p in selection.get("points") or [] if (o := selected_oid(p)) is not None})
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def selected_oids(points: MapPoints, selection: Mapping) -> list[int]:
    """Every object inside the selection's boxes / lassos, over all points (sorted, unique); without a
    box or lasso, the clicked points' object ids (customdata[0])."""
    from lcdash.plots import selected_oid

    mask = selection_mask(points.x, points.y, selection)
    if mask is not None:
        return np.unique(points.oid[mask]).tolist()
    return sorted({o for p in selection.get("points") or [] if (o := selected_oid(p)) is not None})


# --- the figure -------------------------------------------------------------------------------------


def image_size(n: int) -> tuple[int, int]:
    """Pixels of the density image for `n` visible points: IMAGE_WIDTH x IMAGE_HEIGHT from a million
    points on, coarser below (2 sqrt(n) wide, at least 240) so that sparse points stay visible as the
    chart stretches the pixels, instead of one faint screen pixel each."""
    width = int(np.clip(2 * np.sqrt(max(n, 1)), 240, IMAGE_WIDTH))
    return width, max(1, round(width * IMAGE_HEIGHT / IMAGE_WIDTH))


def sample_indices(n: int, k: int = SAMPLE_POINTS, seed: int = 0) -> np.ndarray:
    """`k` of `n` row indices (all when n <= k), sorted, the same for the same (n, k, seed)."""
    if n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def density_figure(points: MapPoints, colour: Colouring | None = None, extent=None, title: str | None = None,
                   hover=None, sample: int = SAMPLE_POINTS, height: int = 620,
                   revision: str = "explore", width: int | None = None, image_height: int | None = None):
    """The plotly figure: the density image of every point in `extent` (default: all) as a layout image,
    an invisible Scattergl of a sample of those points (customdata[0] = oid, so lasso, box and hover
    work), legend entries for the categories or a colour bar for a numeric colour.

    `hover`: optional function of the sampled oids -> their hover texts (e.g. object ids: fetched for
    the sample only, never for all points). The image is `image_size` pixels unless given."""
    import plotly.graph_objects as go

    colour = colour or Colouring(name=None)
    extent = tuple(float(v) for v in (extent or points.extent()))
    x0, x1, y0, y1 = extent
    inside = np.flatnonzero((points.x >= x0) & (points.x <= x1) & (points.y >= y0) & (points.y <= y1))
    auto_w, auto_h = image_size(inside.size)
    img = density_image(points.x, points.y, colour, extent, width or auto_w, image_height or auto_h)
    idx = inside[sample_indices(inside.size, sample)]
    fig = go.Figure()
    fig.add_layout_image(source=png_data_uri(img), xref="x", yref="y", x=x0, y=y1, sizex=x1 - x0,
                         sizey=y1 - y0, xanchor="left", yanchor="top", sizing="stretch", layer="below")
    marker: dict = {"size": 5, "opacity": 0}
    if colour.values is not None:
        marker.update(color=np.nan_to_num(colour.values[idx], nan=colour.vmin), colorscale="Viridis",
                      cmin=colour.vmin, cmax=colour.vmax, showscale=True,
                      colorbar={"title": {"text": f"log10 {colour.name}" if colour.log else colour.name}})
    text = None if hover is None else np.asarray(list(hover(points.oid[idx])), dtype=object).astype(str)
    fig.add_trace(go.Scattergl(
        x=points.x[idx], y=points.y[idx], mode="markers", name="sample", showlegend=False,
        customdata=points.oid[idx].astype(np.float64)[:, None],  # float64: see plots._scatter_trace
        text=text, hovertemplate=("%{text}" if text is not None else "oid %{customdata[0]}")
        + "<extra></extra>",
        marker=marker, selected={"marker": {"opacity": 0}}, unselected={"marker": {"opacity": 0}}))
    if colour.codes is not None:
        counts = np.bincount(colour.codes, minlength=len(colour.names))
        for name, col, n in zip(colour.names, colour.colours, counts, strict=True):
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"{name} ({n:,})",
                                     marker={"size": 9, "color": col}, hoverinfo="skip"))
        fig.update_layout(legend={"title": {"text": colour.name}, "itemclick": False,
                                  "itemdoubleclick": False})
    fig.update_layout(title=title, height=height, dragmode="lasso", uirevision=revision,
                      margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
                      xaxis={"showticklabels": False, "title": None, "range": [x0, x1], "showgrid": False,
                             "zeroline": False},
                      yaxis={"showticklabels": False, "title": None, "range": [y0, y1], "showgrid": False,
                             "zeroline": False},
                      plot_bgcolor="white", hovermode="closest")
    return fig


# --- neighbours on a large map ----------------------------------------------------------------------


def map_input_batches(batches, kind: str = "weighted") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(oid, band, X) like `projection.map_input` on all embeddings, built from `(oid, band, layers)`
    batches (`store.maps.iter_embeddings`): one [N, d] float32 matrix, standardised in place with
    float64 sums, so the peak is X plus one batch of layers (load_embeddings + map_input hold every
    layer of every object and a float64 copy: ~10x more at a million objects)."""
    from lcdash.projection import select_embedding

    oids, bands, parts = [], [], []
    total = sq = None
    for oid, band, layers in batches:
        part = select_embedding(layers, kind).astype(np.float32, copy=False)
        wide = part.astype(np.float64)
        total = wide.sum(0) if total is None else total + wide.sum(0)
        sq = (wide * wide).sum(0) if sq is None else sq + (wide * wide).sum(0)
        oids.append(oid)
        bands.append(np.asarray(band, dtype=str))
        parts.append(part)
    if not parts:
        raise LcdashError("no embeddings to find neighbours in")
    X = np.concatenate(parts)
    del parts
    n = X.shape[0]
    mean = total / n
    std = np.sqrt(np.maximum(sq / n - mean * mean, 0.0))
    scale = np.where(std > 1e-12, std, 1.0)
    for lo in range(0, n, 65_536):
        X[lo:lo + 65_536] = (X[lo:lo + 65_536] - mean) / scale
    return np.concatenate(oids), np.concatenate(bands), X
