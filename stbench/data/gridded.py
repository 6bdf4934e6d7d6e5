"""Gridded reanalysis files (ERA5, CAMS) as users download them: GRIB via cfgrib, NetCDF via xarray.

``grid_source(paths, ...)`` opens every file lazily with xarray (GRIB through cfgrib with no index files
written, NetCDF through netCDF4 or h5netcdf) and returns a ``StreamSource`` that reads one time chunk
at a time, so the prepared array is never held in memory.

* **Locations** are the grid points, flattened row-major (latitude as in the file, then longitude),
  with coordinates (latitude, longitude) in degrees; longitudes are mapped to [-180, 180).
  ``bbox=(lat0, lat1, lon0, lon1)`` keeps the points inside the box (both ends included; a box that
  crosses the antimeridian or 0 degrees on a 0..360 grid works), ``stride=k`` every k-th point along
  both axes.
* **Graph**: ``graph="grid"`` (default) links each point to its 4 neighbours on the kept grid (0/1,
  symmetric, no self-loops, no wrap-around); ``graph="kernel"`` is a Gaussian kernel of great-circle
  distances, ``exp(-(d/sigma)^2)`` with sigma the std of the distances and entries below 0.1 set to 0.
  Above 20,000 points no dense graph is stored.
* **Channels** are the chosen variables in order (a variable with a level dimension gives one channel
  per level, ``t_850``); any of them can be the target.
* **Time**: every file's valid times (``time`` + ``step`` for forecast fields such as accumulated
  precipitation) are merged onto one sorted axis; several files (months, or variables in separate
  files) are combined. A time a variable has twice is kept from the first file (sorted by name) and
  dropped from the others with a warning; times a variable lacks are missing (masked).
"""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stbench import UserError, warn
from stbench.data.stream import StreamSource, chunk_steps

GRIB_EXT = (".grib", ".grb", ".grib1", ".grib2", ".grb2")
NETCDF_EXT = (".nc", ".nc4", ".netcdf", ".cdf")
FORMATS_EXTRA = 'pip install "stbench[formats]"'
ALIASES = {"10u": "u10", "10v": "v10", "2t": "t2m", "2d": "d2m", "100u": "u100", "100v": "v100"}
TIME_DIMS = ("time", "valid_time", "date", "datetime", "t")
LAT_NAMES = ("latitude", "lat", "nav_lat")
LON_NAMES = ("longitude", "lon", "lng", "nav_lon")
DENSE_LIMIT = 20_000

# The STemDist paper's defaults (documented in the README): six input variables, the first the target.
ERA5_VARIABLES = ("u10", "v10", "t2m", "msl", "sp", "tp")
CAMS_VARIABLES = ("co", "no2", "go3", "so2", "pm2p5", "pm10")


def xarray_module(what: str):
    try:
        import xarray
    except ImportError:
        raise UserError(f"reading {what} needs xarray (and cfgrib for GRIB, netCDF4 or h5netcdf for "
                        f"NetCDF): {FORMATS_EXTRA}") from None
    return xarray


def grid_files(source: Path, exts=GRIB_EXT + NETCDF_EXT) -> list[Path]:
    source = Path(source)
    if source.is_file():
        return [source]
    found = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in exts)
    if not found:
        raise UserError(f"{source} holds no GRIB ({', '.join(GRIB_EXT)}) or NetCDF ({', '.join(NETCDF_EXT)}) "
                        "files: --source must be such a file or a folder of them")
    return found


def _one_line(err: Exception) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def open_file(path: Path) -> list:
    """A file as a list of xarray Datasets (a GRIB file with mixed levels gives several)."""
    is_grib = path.suffix.lower() in GRIB_EXT
    xr = xarray_module("GRIB files" if is_grib else "NetCDF files")
    if is_grib:
        try:
            import cfgrib
        except (ImportError, RuntimeError) as err:
            raise UserError(f"reading {path.name} needs cfgrib and the ecCodes library ({_one_line(err)}): "
                            f"{FORMATS_EXTRA}") from None
        kwargs = {"indexpath": ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return [xr.open_dataset(path, engine="cfgrib", backend_kwargs=kwargs, cache=False,
                                        decode_timedelta=True)]
        except Exception as err:  # noqa: BLE001 - cfgrib raises many kinds; one line names the file
            if type(err).__name__ != "DatasetBuildError":
                raise UserError(f"cannot read {path.name} in {path.parent} ({_one_line(err)}): expected a "
                                "GRIB file of gridded fields") from None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return list(cfgrib.open_datasets(str(path), backend_kwargs=kwargs, cache=False))
        except Exception as err:  # noqa: BLE001
            raise UserError(f"cannot read {path.name} in {path.parent} ({_one_line(err)}): expected a GRIB "
                            "file of gridded fields") from None
    try:
        return [xr.open_dataset(path, cache=False, decode_timedelta=True)]
    except ValueError as err:
        if "engine" in str(err).lower():
            raise UserError(f"reading {path.name} needs netCDF4 or h5netcdf: {FORMATS_EXTRA}") from None
        raise UserError(f"cannot read {path.name} in {path.parent} ({_one_line(err)}): expected a NetCDF "
                        "file") from None
    except Exception as err:  # noqa: BLE001
        raise UserError(f"cannot read {path.name} in {path.parent} ({_one_line(err)}): expected a NetCDF "
                        "file") from None


def _find(names, candidates) -> str | None:
    lower = {str(n).lower(): n for n in names}
    return next((lower[c] for c in candidates if c in lower), None)


def _time_dim(var) -> str | None:
    for dim in var.dims:
        if str(dim).lower() in TIME_DIMS:
            return dim
    for dim in var.dims:
        coord = var.coords.get(dim)
        if coord is not None and np.issubdtype(coord.dtype, np.datetime64):
            return dim
    return None


def _seconds(values) -> np.ndarray:
    return np.asarray(values).astype("datetime64[s]")


@dataclass
class _Part:
    """One variable in one file: where its valid times are."""
    path: Path
    var: object                       # xarray DataArray
    tdim: str | None
    sdim: str | None                  # forecast step dimension, if any
    times: np.ndarray                 # (K,) datetime64[s]
    pos: np.ndarray                   # (K, 2) time index, step index (-1 when absent)


@dataclass
class _Variable:
    name: str
    keys: set
    parts: list = field(default_factory=list)
    levels: list = field(default_factory=list)     # [(dim, values)] dims beyond time/step/space


def _part(path: Path, var) -> _Part:
    tdim = _time_dim(var)
    sdim = "step" if "step" in var.dims else None
    if tdim is None:
        stamp = var.coords.get("valid_time", var.coords.get("time"))
        if stamp is None or stamp.ndim != 0:
            raise UserError(f"{path.name}: variable {var.name} has no time dimension (dims {var.dims}): "
                            "expected fields over time")
        return _Part(path, var, None, None, _seconds([stamp.values]), np.array([[-1, -1]]))
    base = _seconds(var.coords[tdim].values)
    if sdim is None:
        times = base
        if "valid_time" in var.coords and var.coords["valid_time"].dims == (tdim,):
            times = _seconds(var.coords["valid_time"].values)
        return _Part(path, var, tdim, None, times, np.stack([np.arange(times.size), -np.ones(times.size, int)], 1))
    if "valid_time" in var.coords and var.coords["valid_time"].ndim == 2:
        valid = _seconds(var.coords["valid_time"].values)
    else:
        steps = np.asarray(var.coords["step"].values).astype("timedelta64[s]")
        valid = base[:, None] + steps[None, :]
    ii, jj = np.meshgrid(np.arange(valid.shape[0]), np.arange(valid.shape[1]), indexing="ij")
    keep = ~np.isnat(valid.ravel())
    return _Part(path, var, tdim, sdim, valid.ravel()[keep], np.stack([ii.ravel(), jj.ravel()], 1)[keep])


def _keys(name: str, var) -> set:
    keys = {str(name).lower()}
    for attr in ("GRIB_shortName", "GRIB_cfVarName", "short_name"):
        if attr in var.attrs:
            keys.add(str(var.attrs[attr]).lower())
    keys |= {ALIASES[k] for k in list(keys) if k in ALIASES}
    return keys


def _catalogue(paths: list[Path]) -> tuple[dict[str, _Variable], tuple]:
    """Every gridded variable in the files, and the (lat, lon) names and values of the first."""
    variables: dict[str, _Variable] = {}
    grid = None
    for path in paths:
        for ds in open_file(path):
            lat_name, lon_name = _find(ds.coords, LAT_NAMES), _find(ds.coords, LON_NAMES)
            for name, var in ds.data_vars.items():
                if lat_name is None or lon_name is None or lat_name not in var.dims or lon_name not in var.dims:
                    continue
                lat = np.asarray(ds.coords[lat_name].values, dtype=np.float64)
                lon = np.asarray(ds.coords[lon_name].values, dtype=np.float64)
                if grid is None:
                    grid = (lat_name, lon_name, lat, lon, path)
                elif lat.shape != grid[2].shape or lon.shape != grid[3].shape or \
                        not (np.allclose(lat, grid[2]) and np.allclose(lon, grid[3])):
                    raise UserError(f"{path.name} has a different grid ({lat.size} x {lon.size} points) from "
                                    f"{grid[4].name} ({grid[2].size} x {grid[3].size}): prepare files of one "
                                    "grid together (or cut them to the same box first)")
                entry = variables.setdefault(str(name), _Variable(str(name), _keys(name, var)))
                part = _part(path, var)
                entry.parts.append(part)
                levels = [(d, np.asarray(var.coords[d].values) if d in var.coords else np.arange(var.sizes[d]))
                          for d in var.dims if d not in (part.tdim, part.sdim, lat_name, lon_name)]
                if entry.parts[0] is part:
                    entry.levels = levels
                elif [(d, len(v)) for d, v in levels] != [(d, len(v)) for d, v in entry.levels]:
                    raise UserError(f"{path.name}: variable {name} has dimensions {var.dims}, unlike in "
                                    f"{entry.parts[0].path.name}: expected the same levels in every file")
    if grid is None:
        raise UserError(f"no gridded variable (with latitude and longitude dimensions) in "
                        f"{', '.join(p.name for p in paths[:3])}: expected ERA5/CAMS-style fields")
    return variables, grid


def _resolve(variables: dict[str, _Variable], wanted: str, files: str) -> str:
    key = wanted.strip().lower()
    key = ALIASES.get(key, key)
    for name, var in variables.items():
        if key in var.keys:
            return name
    raise UserError(f"variable {wanted!r} is not in {files} (it has {', '.join(variables)}): "
                    f"choose from those with --variables / --target")


def _axis_selection(values: np.ndarray, low: float, high: float, stride: int, periodic: bool) -> np.ndarray:
    if periodic:
        span = (high - low) % 360.0
        inside = ((values - low) % 360.0) <= span + 1e-9 if high - low < 360 else np.ones(values.size, bool)
        idx = np.flatnonzero(inside)
        if idx.size and idx.size < values.size:       # start at the box's western edge
            order = np.argsort((values[idx] - low) % 360.0, kind="stable")
            idx = idx[order]
    else:
        idx = np.flatnonzero((values >= low - 1e-9) & (values <= high + 1e-9))
    return idx[::stride]


def parse_bbox(text) -> tuple[float, float, float, float] | None:
    if text is None:
        return None
    if isinstance(text, (tuple, list)):
        parts = list(text)
    else:
        parts = [p for p in str(text).split(",") if p.strip()]
    try:
        lat0, lat1, lon0, lon1 = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise UserError(f"--bbox {text!r} must be four numbers lat0,lat1,lon0,lon1 in degrees, "
                        "e.g. 49,59,-11,2") from None
    if not (-90 <= min(lat0, lat1) and max(lat0, lat1) <= 90):
        raise UserError(f"--bbox {text!r}: latitudes must lie in -90..90")
    return min(lat0, lat1), max(lat0, lat1), lon0, lon1


def grid_source(paths: list[Path], *, kind: str, variables=None, default_variables=(), target=None,
                default_target=None, bbox=None, stride=1, graph: str = "grid", description: str = "",
                mask_zeros: bool | None = False, defaults_strict: bool = False) -> StreamSource:
    """A StreamSource over the grid points of ``paths`` (see the module docstring)."""
    from stbench.data.prepare import _haversine_km, _sources, gaussian_kernel
    from stbench.data.synthetic import grid_adjacency

    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
        raise UserError(f"--stride {stride!r} must be a positive integer (keep every k-th grid point)")
    if graph not in ("grid", "kernel"):
        raise UserError(f"--graph {graph!r} must be grid (4-neighbour) or kernel (Gaussian of distances)")
    files = ", ".join(p.name for p in paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    catalogue, (lat_name, lon_name, lat, lon, _) = _catalogue(paths)
    if isinstance(variables, str):
        variables = [v for v in variables.split(",") if v.strip()]
    absent_defaults = []
    if variables:
        chosen = []
        for v in variables:
            name = _resolve(catalogue, v, files)
            if name not in chosen:
                chosen.append(name)
    else:
        present, absent = [], []
        for v in default_variables:
            try:
                present.append(_resolve(catalogue, v, files))
            except UserError:
                absent.append(v)
        chosen = present or list(catalogue)
        absent_defaults = absent if present else []
    if target is None:
        target = chosen[0] if variables or default_target is None else default_target
        if _target_missing(catalogue, target):
            raise UserError(f"{kind}: the default target {target} is not in {files} (it has "
                            f"{', '.join(catalogue)}): choose one with --target")
    if isinstance(target, int) or str(target).strip().isdigit():
        k = int(target)
        if not 0 <= k < len(chosen):
            raise UserError(f"--target {target} is out of range: the variables are {', '.join(chosen)}")
        target = chosen[k]
    target_name = _resolve(catalogue, str(target), files)
    if target_name not in chosen:
        chosen.insert(0, target_name)
    if absent_defaults:
        warn(f"{kind}: the default variables {', '.join(absent_defaults)} are not in {files}; using "
             f"{', '.join(chosen)} (choose with --variables)")
    # spatial selection
    spacing = float(np.abs(np.diff(lon)).min()) if lon.size > 1 else 0.0
    periodic = bool(lon.size > 1 and (lon.max() > 180.0 or np.ptp(lon) + spacing >= 359.9))
    if bbox is not None:
        lat0, lat1, lon0, lon1 = bbox
        lat_idx = _axis_selection(lat, lat0, lat1, stride, False)
        if periodic:
            lon_idx = _axis_selection(lon, lon0 % 360.0 if lon.min() >= 0 else lon0,
                                      lon1 % 360.0 if lon.min() >= 0 else lon1, stride, True)
        else:
            lon_idx = _axis_selection(lon, lon0, lon1, stride, False)
        if lat_idx.size == 0 or lon_idx.size == 0:
            raise UserError(f"--bbox {lat0},{lat1},{lon0},{lon1} holds no grid point of {files} (latitudes "
                            f"{lat.min()}..{lat.max()}, longitudes {lon.min()}..{lon.max()})")
    else:
        lat_idx, lon_idx = np.arange(lat.size)[::stride], np.arange(lon.size)[::stride]
    n_lat, n_lon = lat_idx.size, lon_idx.size
    n = n_lat * n_lon
    # channels
    channels, layout = [], []          # layout: (variable, level index tuple, channel)
    for name in chosen:
        var = catalogue[name]
        combos = [()]
        for dim, values in var.levels:
            combos = [c + (i,) for c in combos for i in range(len(values))]
        for combo in combos:
            label = name
            named = [_level_label(var.levels[k][1][i]) for k, i in enumerate(combo) if len(var.levels[k][1]) > 1]
            if named:
                label += "_" + "_".join(named)
            layout.append((name, combo, len(channels)))
            channels.append(label)
    targets = [next(ch for var, combo, ch in layout if var == target_name)]
    # time axis
    all_times = np.unique(np.concatenate([p.times for v in chosen for p in catalogue[v].parts]))
    if all_times.size < 2:
        raise UserError(f"{files} hold {all_times.size} time step(s): expected at least 2")
    dropped = Counter()
    index = {}                           # variable -> list of (part, global positions, part rows)
    for name in chosen:
        taken = np.zeros(all_times.size, dtype=bool)
        entries = []
        for part in sorted(catalogue[name].parts, key=lambda p: p.path.name):
            where = np.searchsorted(all_times, part.times)
            fresh = ~taken[where]
            _, first = np.unique(where, return_index=True)
            once = np.zeros(where.size, dtype=bool)
            once[first] = True
            keep = fresh & once
            dropped[name] += int(where.size - keep.sum())
            taken[where[keep]] = True
            order = np.argsort(where[keep], kind="stable")
            entries.append((part, where[keep][order], part.pos[keep][order]))
        index[name] = entries
    notes = []
    if sum(dropped.values()):
        notes.append(f"{kind}: dropped {sum(dropped.values())} duplicate time steps "
                     f"({', '.join(f'{k}: {v}' for k, v in dropped.items() if v)}): the first file (by name) "
                     "holding a time is kept")
    diffs = np.diff(all_times).astype(np.int64)
    freq_s = int(Counter(diffs.tolist()).most_common(1)[0][0])
    if (diffs != freq_s).any():
        notes.append(f"{kind}: time steps are irregular ({int((diffs != freq_s).sum())} gaps differ from "
                     f"{freq_s // 60} minutes); missing times are not filled")
    lat_sel, lon_sel = lat[lat_idx], lon[lon_idx]
    lat_n, lon_n = np.meshgrid(lat_sel, ((lon_sel + 180.0) % 360.0) - 180.0, indexing="ij")
    coords = np.stack([lat_n.ravel(), lon_n.ravel()], axis=1).astype(np.float64)
    adj, graph_meta = None, {}
    if n > DENSE_LIMIT:
        notes.append(f"{kind}: {n} grid points: no dense adjacency stored (above {DENSE_LIMIT})")
        graph_meta = {"kind": "none (too many points for a dense matrix)"}
    elif graph == "grid":
        adj = grid_adjacency(n_lat, n_lon)
        graph_meta = {"kind": "grid-4-neighbour", "weights": "0/1, symmetric, no self-loops, no wrap-around"}
    else:
        adj, info = gaussian_kernel(_haversine_km(coords))
        graph_meta = dict(info, distance="great-circle between grid points")
    lat_slice = _as_slice(lat_idx)
    lon_slice = _as_slice(lon_idx)

    def read(start: int, stop: int) -> np.ndarray:
        out = np.full((stop - start, n, len(channels)), np.nan, dtype=np.float32)
        for name, entries in index.items():
            chans = [(combo, ch) for var, combo, ch in layout if var == name]
            for part, where, pos in entries:
                lo, hi = np.searchsorted(where, [start, stop])
                if hi <= lo:
                    continue
                rows = where[lo:hi] - start
                block = _read_part(part, pos[lo:hi], lat_name, lon_name, lat_slice, lon_slice)
                for combo, ch in chans:
                    sub = block[(slice(None),) + combo] if combo else block
                    out[rows, :, ch] = sub.reshape(len(rows), n)
        return out

    var_meta = {}
    for name in chosen:
        attrs = catalogue[name].parts[0].var.attrs
        var_meta[name] = {k: str(attrs[a]) for k, a in (("units", "units"), ("long_name", "long_name"),
                                                       ("grib_short_name", "GRIB_shortName")) if a in attrs}
    meta = {"channels": channels, "targets": targets, "freq_minutes": max(1, freq_s // 60),
            "description": description or f"{kind} fields on a {n_lat}x{n_lon} grid",
            "grid": {"n_lat": int(n_lat), "n_lon": int(n_lon), "order": "row-major (latitude, longitude)",
                     "latitude": [float(lat_sel[0]), float(lat_sel[-1])],
                     "longitude": [float(coords[0, 1]), float(coords[-1, 1])],
                     "bbox": list(bbox) if bbox is not None else None, "stride": stride},
            "graph": graph_meta, "variables": var_meta, "source": _sources(*paths)}
    if mask_zeros is not None:
        meta["mask_zeros"] = mask_zeros
    bytes_per_step = lat.size * lon.size * max(1, len(channels))
    return StreamSource(shape=(int(all_times.size), n, len(channels)), meta=meta, read=read, adj=adj,
                        coords=coords, timestamps=all_times.astype("datetime64[s]"),
                        chunk_steps=chunk_steps(bytes_per_step, 1), notes=notes)


def _target_missing(catalogue, target) -> bool:
    try:
        _resolve(catalogue, str(target), "")
        return False
    except UserError:
        return True


def _level_label(value) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _as_slice(idx: np.ndarray):
    if idx.size == 1:
        return slice(int(idx[0]), int(idx[0]) + 1)
    step = int(idx[1] - idx[0])
    if step > 0 and np.array_equal(idx, np.arange(idx[0], idx[0] + step * idx.size, step)):
        return slice(int(idx[0]), int(idx[-1]) + 1, step)
    return idx


def _read_part(part: _Part, pos: np.ndarray, lat_name, lon_name, lat_sel, lon_sel) -> np.ndarray:
    """Values (k, [levels...], n_lat, n_lon) for the given (time, step) positions of one part."""
    var = part.var.isel({lat_name: lat_sel, lon_name: lon_sel})
    if part.tdim is None:
        order = [d for d in var.dims if d not in (lat_name, lon_name)] + [lat_name, lon_name]
        block = np.asarray(var.transpose(*order).values, dtype=np.float32)[None]
    else:
        i0, i1 = int(pos[:, 0].min()), int(pos[:, 0].max()) + 1
        var = var.isel({part.tdim: slice(i0, i1)})
        order = [part.tdim] + ([part.sdim] if part.sdim else [])
        order += [d for d in var.dims if d not in order and d not in (lat_name, lon_name)] + [lat_name, lon_name]
        data = np.asarray(var.transpose(*order).values, dtype=np.float32)
        if part.sdim:
            block = data[pos[:, 0] - i0, pos[:, 1]]
        else:
            block = data[pos[:, 0] - i0]
    return block
