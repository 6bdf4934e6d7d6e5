"""Converters from real released file formats to the canonical ``STData``.

Every ``prepare_xxx(source)`` is a pure function of the files under ``source``: it never writes, and any
missing, unreadable or inconsistent input raises ``UserError`` with a one-line message naming the file.
Missing readings become mask False with 0 stored; genuine zeros stay values (``mask_zeros`` in meta tells
the metrics whether a zero target should be ignored, as the traffic references do).
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from stbench import UserError
from stbench.data.core import STData, file_sha256
from stbench.data.synthetic import grid_adjacency

KERNEL_THRESHOLD = 0.1
SPLITS = ("train", "val", "test")
_CHUNK_BYTES = 1 << 26          # stream release windows in blocks of about 64 MiB
_SAMPLES = 16                   # windows per split whose consistency is checked


# ------------------------------------------------------------------------------------ shared helpers
def _fail(path: Path, expected: str, err: Exception | None = None) -> UserError:
    """One-line UserError naming the file, what was expected, and the first line of the cause."""
    cause = f" ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no detail'})" if err else ""
    return UserError(f"cannot read {path.name} in {path.parent}{cause}: expected {expected}")


def _require(folder: Path, filename: str, hint: str) -> Path:
    path = folder / filename
    if not path.is_file():
        raise UserError(f"{filename} not found in {folder}: --source must be {hint}")
    return path


def _folder(source: Path) -> Path:
    source = Path(source)
    return source if source.is_dir() else source.parent


def _read_csv(path: Path, expected: str, **kwargs) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kwargs)
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise _fail(path, expected, err) from err


def _read_matrix(path: Path, n: int, expected: str) -> np.ndarray:
    """A headerless numeric (n, n) CSV matrix as float32."""
    table = _read_csv(path, expected, header=None)
    try:
        mat = table.to_numpy(dtype=np.float64)
    except (ValueError, TypeError) as err:
        raise _fail(path, expected, err) from err
    if mat.shape != (n, n) or not np.isfinite(mat).all():
        raise UserError(f"{path.name} in {path.parent} has shape {mat.shape}: expected {expected} "
                        f"of shape ({n}, {n}) with finite entries")
    return mat.astype(np.float32)


def _load_npz(path: Path, keys: tuple[str, ...], expected: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise UserError(f"{path.name} in {path.parent} lacks key(s) {missing} "
                                f"(has {npz.files}): expected {expected}")
            return {k: npz[k] for k in keys}
    except UserError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise _fail(path, expected, err) from err


def _is_numeric(dtype: np.dtype) -> bool:
    return np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)


def _array3(path: Path, arr: np.ndarray, expected: str) -> np.ndarray:
    """A numeric (T, N, C) array; a 2-d (T, N) one gets a channel axis."""
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    if arr.ndim != 3 or not _is_numeric(arr.dtype):
        raise UserError(f"{path.name} in {path.parent}: 'data' has shape {arr.shape} and dtype {arr.dtype}: "
                        f"expected {expected}")
    return arr


def _split_missing(values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """float32 values with NaN/inf replaced by 0, and a mask (None when everything is observed)."""
    values = np.asarray(values, dtype=np.float32)
    finite = np.isfinite(values)
    if finite.all():
        return values, None
    return np.where(finite, values, np.float32(0.0)), finite


def _sources(*paths: Path) -> dict:
    return {"files": {p.name: file_sha256(p) for p in paths}}


def _regular_times(start: str, steps: int, freq_minutes: int) -> np.ndarray:
    return (np.datetime64(start, "s")
            + np.arange(steps, dtype=np.int64) * np.timedelta64(freq_minutes * 60, "s"))


def _haversine_km(coords: np.ndarray) -> np.ndarray:
    """Pairwise great-circle distances (km) between (lat, lon) rows."""
    lat, lon = np.deg2rad(coords[:, 0]), np.deg2rad(coords[:, 1])
    dlat = lat[:, None] - lat[None, :]
    dlon = lon[:, None] - lon[None, :]
    h = np.sin(dlat / 2) ** 2 + np.cos(lat[:, None]) * np.cos(lat[None, :]) * np.sin(dlon / 2) ** 2
    return 2 * 6371.0 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def gaussian_kernel(dist: np.ndarray, threshold: float = KERNEL_THRESHOLD) -> tuple[np.ndarray, dict]:
    """exp(-(d/sigma)^2) with sigma = std of the off-diagonal distances, entries below threshold set to 0."""
    off = dist[~np.eye(len(dist), dtype=bool)]
    sigma = float(np.std(off)) if off.size else 1.0
    sigma = sigma if sigma > 0 else 1.0
    adj = np.exp(-np.square(dist / sigma))
    adj[adj < threshold] = 0.0
    info = {"kind": "gaussian-kernel", "formula": "exp(-(d/sigma)^2), sigma = std of distances",
            "sigma_km": round(sigma, 6), "threshold": threshold, "self_loops": True}
    return adj.astype(np.float32), info


# ------------------------------------------------------------------------------- STemDist / PatchSTG
class _SplitReader:
    """Streams the windows of one split npz and keeps what reconstruction and the checks need."""

    def __init__(self, path: Path):
        self.path = path
        self.x_first: np.ndarray | None = None       # (M, N, F): first step of every x window
        self.samples: dict[int, np.ndarray] = {}
        self.last_x = self.first_x = self.last_y = None
        self.y_samples: dict[int, np.ndarray] = {}
        self.count = 0

    def read(self) -> "_SplitReader":
        try:
            with zipfile.ZipFile(self.path) as archive:
                names = {n.removesuffix(".npy"): n for n in archive.namelist()}
                for key in ("x", "y"):
                    if key not in names:
                        raise UserError(f"{self.path.name} in {self.path.parent} has no '{key}' array "
                                        f"(has {sorted(names)}): expected x and y window arrays")
                self._read_x(archive, names["x"])
                if self.x_first is None:
                    raise UserError(f"{self.path.name} in {self.path.parent} holds no windows: "
                                    "expected at least one x/y window per split")
                self._read_y(archive, names["y"])
        except UserError:
            raise
        except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as err:
            raise _fail(self.path, "an npz with x (M, L, N, F) and y (M, L, N, F_y) windows", err) from err
        return self

    def _blocks(self, archive: zipfile.ZipFile, member: str):
        """Yield (shape, start, block) along the first axis, reading at most _CHUNK_BYTES at a time."""
        with archive.open(member) as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            if len(shape) != 4 or not _is_numeric(dtype):
                raise UserError(f"{self.path.name}: '{member}' has shape {shape} and dtype {dtype}: "
                                "expected a numeric 4-d window array (M, L, N, F)")
            if fortran:   # column-major arrays cannot be streamed by window: read whole
                with archive.open(member) as again:
                    yield shape, 0, np.lib.format.read_array(again, allow_pickle=False)
                return
            row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
            rows = max(1, _CHUNK_BYTES // max(row_bytes, 1))
            for start in range(0, shape[0], rows):
                count = min(rows, shape[0] - start)
                raw = fh.read(count * row_bytes)
                if len(raw) != count * row_bytes:
                    raise UserError(f"{self.path.name}: '{member}' is truncated: re-download the release")
                yield shape, start, np.frombuffer(raw, dtype=dtype).reshape((count,) + tuple(shape[1:]))

    def _sample_ids(self, m: int) -> set[int]:
        return set(np.unique(np.linspace(0, max(m - 2, 0), _SAMPLES).astype(int)).tolist())

    def _read_x(self, archive, member: str) -> None:
        wanted: set[int] = set()
        for shape, start, block in self._blocks(archive, member):
            if self.x_first is None:
                self.count = shape[0]
                self.x_first = np.empty((shape[0],) + tuple(shape[2:]), dtype=np.float32)
                wanted = self._sample_ids(shape[0])
                self.first_x = np.array(block[0], dtype=np.float32)
            self.x_first[start:start + len(block)] = block[:, 0]
            for i in range(start, start + len(block)):
                if i in wanted or i - 1 in wanted:
                    self.samples[i] = np.array(block[i - start], dtype=np.float32)
            self.last_x = np.array(block[-1], dtype=np.float32)

    def _read_y(self, archive, member: str) -> None:
        wanted = self._sample_ids(self.count)
        for shape, start, block in self._blocks(archive, member):
            if shape[0] != self.count:
                raise UserError(f"{self.path.name}: x has {self.count} windows but y has {shape[0]}: "
                                "expected one y window per x window")
            for i in range(start, start + len(block)):
                if i in wanted:
                    self.y_samples[i] = np.array(block[i - start], dtype=np.float32)
            self.last_y = np.array(block[-1], dtype=np.float32)


def _check_split(split: _SplitReader) -> None:
    """Windows must be stride-1 and y must continue x, with y[..., 0] the future of x feature 0."""
    name = split.path.name
    fy = split.last_y.shape[-1]
    for i, window in split.samples.items():
        nxt = split.samples.get(i + 1)
        if nxt is None:
            continue
        if not np.array_equal(window[1:], nxt[:-1], equal_nan=True):
            raise UserError(f"{name}: x windows {i} and {i + 1} are not consecutive stride-1 windows: "
                            "--source must hold the unshuffled STemDist/PatchSTG release")
        if i in split.y_samples:
            y0, x_next = split.y_samples[i][0], nxt[-1]
            if not np.array_equal(y0[..., 0], x_next[..., 0], equal_nan=True):
                raise UserError(f"{name}: y[{i}, 0, :, 0] is not the step after x[{i}, -1, :, 0]: "
                                "the target must be channel 0 of x, predicted from the next step on")
            if not np.array_equal(y0, x_next[..., :fy], equal_nan=True):
                raise UserError(f"{name}: y[{i}, 0] does not equal the step after x[{i}]: "
                                "expected y features to be the first x features of the following steps")


def _check_continuity(prev: _SplitReader, nxt: _SplitReader) -> None:
    """The first window of a split starts one step after the previous split's last window."""
    fy = prev.last_y.shape[-1]
    ok = np.array_equal(nxt.first_x[:-1], prev.last_x[1:], equal_nan=True) and np.array_equal(
        nxt.first_x[-1][..., :fy], prev.last_y[0], equal_nan=True)
    if not ok:
        raise UserError(f"{nxt.path.name} does not continue {prev.path.name}: its first window must start "
                        "one step after the last one there (windows made with stride 1, then split)")


def _check_shapes(splits: list[_SplitReader]) -> tuple[int, int, int, int, int]:
    shapes = {(s.last_x.shape, s.last_y.shape) for s in splits}
    if len(shapes) != 1:
        raise UserError(f"window shapes differ between {', '.join(s.path.name for s in splits)}: "
                        "expected the same (L, N, F) in every split")
    (seq_len, n, f), (horizon, n_y, fy) = shapes.pop()
    if n_y != n or fy > f or fy < 1:
        raise UserError(f"{splits[0].path.name}: y windows (., {horizon}, {n_y}, {fy}) do not fit x "
                        f"windows (., {seq_len}, {n}, {f}): expected the same locations and F_y <= F")
    return seq_len, horizon, n, f, fy


def _check_y_against_series(split: _SplitReader, series: np.ndarray, offset: int, seq_len: int) -> None:
    for i, y in split.y_samples.items():
        start = offset + i + seq_len
        if not np.array_equal(y, series[start:start + len(y), :, :y.shape[-1]], equal_nan=True):
            raise UserError(f"{split.path.name}: y[{i}] is not the {len(y)} steps after x[{i}]: "
                            "expected y[..., 0] to be the future of x feature 0")


def prepare_release(source: Path, target_name: str = "target", freq_minutes: int = 60,
                    description: str = "", *, mask_zeros: bool) -> STData:
    """Rebuild the contiguous (T, N, F) series from train/val/test npz windows (stride 1, split after).

    ``mask_zeros`` has no default: the registration states whether a 0 target means "missing"."""
    folder = _folder(source)
    hint = "a folder with train.npz/val.npz/test.npz as released by the STemDist authors"
    paths = [_require(folder, f"{s}.npz", hint) for s in SPLITS]
    splits = [_SplitReader(p).read() for p in paths]
    seq_len, horizon, n, f, fy = _check_shapes(splits)
    for split in splits:
        _check_split(split)
    for prev, nxt in zip(splits, splits[1:]):
        _check_continuity(prev, nxt)
    total = sum(s.count for s in splits)
    series = np.zeros((total + seq_len + horizon - 1, n, f), dtype=np.float32)
    offset = 0
    for split in splits:
        series[offset:offset + split.count] = split.x_first
        split.x_first = None                       # free each split's copy as soon as it is placed
        offset += split.count
    series[total:total + seq_len - 1] = splits[-1].last_x[1:]
    series[total + seq_len - 1:, :, :fy] = splits[-1].last_y
    offset = 0
    for split in splits:
        _check_y_against_series(split, series, offset, seq_len)
        offset += split.count
    values, mask = _split_missing(series)
    if fy < f:   # the last `horizon` steps of features absent from y are unknown
        mask = np.ones(values.shape, dtype=bool) if mask is None else mask
        mask[total + seq_len - 1:, :, fy:] = False
        values[total + seq_len - 1:, :, fy:] = 0.0
    channels = [target_name] + [f"feature{i}" for i in range(1, f)]
    meta = {"channels": channels, "targets": [0], "freq_minutes": freq_minutes, "mask_zeros": mask_zeros,
            "description": description or "STemDist/PatchSTG release windows rebuilt into one series",
            "source_split_windows": {s: sp.count for s, sp in zip(SPLITS, splits)},
            "window": {"input_len": seq_len, "output_len": horizon},
            "source": _sources(*paths)}
    return STData(values=values, mask=mask, meta=meta)


# ----------------------------------------------------------------------------------------------- PEMS
PEMS_CHANNELS = {1: ["flow"], 3: ["flow", "occupancy", "speed"]}


def _pems_file(source: Path) -> Path:
    source = Path(source)
    if source.is_file():
        return source
    found = sorted(source.glob("*.npz"))
    if len(found) != 1:
        raise UserError(f"{source} holds {len(found)} .npz files: --source must be a PEMS .npz file "
                        "or a folder with exactly one")
    return found[0]


def _pems_adjacency(csv: Path, n: int, ids_file: Path | None) -> np.ndarray:
    """Directed 0/1 adjacency from a from,to,cost edge list (node ids mapped through ids_file if given)."""
    expected = "a from,to,cost edge list"
    edges = _read_csv(csv, expected)
    if edges.shape[1] < 2:
        raise UserError(f"{csv.name} in {csv.parent} has {edges.shape[1]} column(s): expected {expected}")
    try:
        src, dst = (edges.iloc[:, i].to_numpy(dtype=np.int64) for i in (0, 1))
    except (ValueError, TypeError) as err:
        raise _fail(csv, expected + " with integer node ids", err) from err
    if ids_file is not None:
        try:
            ids = np.loadtxt(ids_file, dtype=np.int64, delimiter=",").ravel()
        except (OSError, ValueError) as err:
            raise _fail(ids_file, "one integer sensor id per line", err) from err
        lookup = {int(v): i for i, v in enumerate(ids)}
        if not all(int(v) in lookup for v in np.concatenate([src, dst])):
            raise UserError(f"{csv.name} names nodes missing from {ids_file.name}: expected matching files")
        src = np.array([lookup[int(v)] for v in src], dtype=np.int64)
        dst = np.array([lookup[int(v)] for v in dst], dtype=np.int64)
    if src.size and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= n):
        raise UserError(f"{csv.name}: node ids outside 0..{n - 1}: put the PEMS id list (e.g. PEMS03.txt) "
                        "next to the npz")
    adj = np.zeros((n, n), dtype=np.float32)
    adj[src, dst] = 1.0
    return adj


def _pems_edge_file(npz: Path) -> Path | None:
    """``<stem>.csv`` next to the npz, else the only .csv in its folder, else None."""
    same = npz.with_suffix(".csv")
    if same.is_file():
        return same
    others = sorted(npz.parent.glob("*.csv"))
    return others[0] if len(others) == 1 else None


def prepare_pems(source: Path, start: str | None = None) -> STData:
    """PEMS03/04/07/08 ``data`` (T, N, C) npz; optional ``<stem>.csv`` edge list next to it."""
    path = _pems_file(source)
    expected = "a PEMS npz with key 'data' of shape (T, N, C)"
    data = _array3(path, _load_npz(path, ("data",), expected)["data"], expected)
    values, mask = _split_missing(data)
    t, n, c = values.shape
    channels = PEMS_CHANNELS.get(c, ["flow"] + [f"feature{i}" for i in range(1, c)])
    files = [path]
    meta = {"channels": channels, "targets": [0], "freq_minutes": 5, "mask_zeros": True,
            "description": f"{path.stem} traffic detectors (flow target), 5-minute aggregates"}
    adj = None
    csv = _pems_edge_file(path)
    if csv is not None:
        ids = path.with_suffix(".txt")
        ids = ids if ids.is_file() else None
        adj = _pems_adjacency(csv, n, ids)
        files += [csv] + ([ids] if ids else [])
        meta["graph"] = {"kind": "edge-list", "weights": "0/1 directed (from -> to), distance not used",
                         "file": csv.name}
    meta["source"] = _sources(*files)
    stamps = _regular_times(start, t, 5) if start else None
    return STData(values=values, mask=mask, adj=adj, timestamps=stamps, meta=meta)


# ------------------------------------------------------------------------------ shared small datasets
def prepare_los_loop(source: Path) -> STData:
    """LOS-LOOP (T-GCN): los_speed.csv (2016 x 207 mph, header = sensor ids) and los_adj.csv."""
    folder = _folder(source)
    hint = "the LOS-LOOP folder (los_speed.csv, los_adj.csv)"
    speed_path, adj_path = _require(folder, "los_speed.csv", hint), _require(folder, "los_adj.csv", hint)
    table = _read_csv(speed_path, "a numeric table with one column per sensor")
    values, mask = _numeric(table, speed_path, "numeric speeds")
    adj = _read_matrix(adj_path, values.shape[1], "a headerless square adjacency matrix")
    meta = {"channels": ["speed"], "targets": [0], "freq_minutes": 5, "mask_zeros": True,
            "description": "LOS-LOOP: one week of METR-LA loop-detector speeds (mph), Los Angeles",
            "sensor_ids": [str(c) for c in table.columns],
            "graph": {"kind": "as provided", "file": adj_path.name,
                      "weights": "weighted connectivity in [0, 1], symmetric, self-loops"},
            "source": _sources(speed_path, adj_path)}
    stamps = _regular_times("2012-03-01T00:00:00", values.shape[0], 5)
    return STData(values=values[:, :, None], mask=None if mask is None else mask[:, :, None], adj=adj,
                  timestamps=stamps, meta=meta)


def _numeric(table: pd.DataFrame, path: Path, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        arr = table.to_numpy(dtype=np.float64)
    except (ValueError, TypeError) as err:
        raise _fail(path, what, err) from err
    return _split_missing(arr)


def prepare_sz_taxi(source: Path) -> STData:
    """SZ-TAXI (T-GCN): SZ_taxi.npz key data (2976, 156, 1) km/h and SZ_taxi.csv 0/1 adjacency."""
    folder = _folder(source)
    hint = "the SZ-TAXI folder (SZ_taxi.npz, SZ_taxi.csv)"
    npz_path, adj_path = _require(folder, "SZ_taxi.npz", hint), _require(folder, "SZ_taxi.csv", hint)
    expected = "key 'data' of shape (T, N, 1)"
    data = _array3(npz_path, _load_npz(npz_path, ("data",), expected)["data"], expected)
    values, mask = _split_missing(data)
    adj = _read_matrix(adj_path, values.shape[1], "a headerless 0/1 adjacency matrix")
    meta = {"channels": ["speed"], "targets": [0], "freq_minutes": 15, "mask_zeros": True,
            "description": "SZ-TAXI: taxi speeds (km/h) on 156 Shenzhen Luohu roads, January 2015; "
                           "zero speeds kept as values (mask_zeros ignores them in metrics)",
            "graph": {"kind": "as provided", "file": adj_path.name, "weights": "0/1"},
            "source": _sources(npz_path, adj_path)}
    stamps = _regular_times("2015-01-01T00:00:00", values.shape[0], 15)
    return STData(values=values, mask=mask, adj=adj, timestamps=stamps, meta=meta)


def prepare_era5_uk(source: Path):
    """ERA5 UK 2 m temperature (derived npz): grid (T, lat, lon) flattened row-major to N locations.

    Without the derived npz, the original GRIB in the folder is read through xarray/cfgrib instead
    (the same values, streamed; needs the ``formats`` extra)."""
    folder = _folder(source)
    name = "era5-2mt-2019-03-uk.t2m.derived.npz"
    grib = folder / "era5-2mt-2019-03-uk.grib"
    if not (folder / name).is_file() and (grib.is_file() or Path(source).suffix.lower() == ".grib"):
        from stbench.data.gridded import grid_source
        path = Path(source) if Path(source).is_file() else grib
        return grid_source([path], kind="ERA5-UK", variables=["t2m"], mask_zeros=False,
                           description="ERA5 2 m temperature (K) over the UK, March 2019, 0.25 degree grid")
    path = _require(folder, name, "the ERA5-UK-T2M folder")
    expected = "keys t2m (T, lat, lon), latitude, longitude, time (unix seconds)"
    arrays = _load_npz(path, ("t2m", "latitude", "longitude", "time"), expected)
    grid, lat, lon, time = arrays["t2m"], arrays["latitude"], arrays["longitude"], arrays["time"]
    numeric = all(_is_numeric(a.dtype) for a in arrays.values())
    if not numeric or grid.ndim != 3 or grid.shape[1:] != (lat.size, lon.size) or time.size != grid.shape[0]:
        raise UserError(f"{name}: t2m {grid.shape}, latitude {lat.shape}, longitude {lon.shape}, "
                        f"time {time.shape} are inconsistent: expected {expected}")
    t, n_lat, n_lon = grid.shape
    values, mask = _split_missing(grid.reshape(t, n_lat * n_lon, 1))
    lat_n, lon_n = np.meshgrid(lat.astype(np.float64), lon.astype(np.float64), indexing="ij")
    coords = np.stack([lat_n.ravel(), lon_n.ravel()], axis=1)
    stamps = time.astype(np.int64).astype("datetime64[s]")
    step = np.diff(time.astype(np.int64))
    if step.size and (step[0] < 60 or (step != step[0]).any()):
        raise UserError(f"{name}: 'time' is not evenly spaced by whole minutes: expected hourly unix seconds")
    freq = int(step[0] // 60) if step.size else 60
    meta = {"channels": ["t2m"], "targets": [0], "freq_minutes": freq, "mask_zeros": False,
            "description": "ERA5 2 m temperature (K) over the UK, March 2019, 0.25 degree grid",
            "grid": {"n_lat": n_lat, "n_lon": n_lon, "order": "row-major (latitude, longitude)"},
            "graph": {"kind": "grid-4-neighbour", "weights": "0/1"},
            "source": _sources(path)}
    return STData(values=values, mask=mask, adj=grid_adjacency(n_lat, n_lon), coords=coords,
                  timestamps=stamps, meta=meta)


def prepare_beijing_pm25(source: Path) -> STData:
    """Beijing PM2.5 (36 stations, hourly): NaN readings masked; Gaussian-kernel graph from coordinates."""
    folder = _folder(source)
    hint = "the BEIJING-PM25 folder (pm25_ground.txt, pm25_latlng.txt)"
    data_path = _require(folder, "pm25_ground.txt", hint)
    loc_path = _require(folder, "pm25_latlng.txt", hint)
    table = _read_csv(data_path, "a datetime column plus one column per station", dtype={"datetime": str})
    if "datetime" not in table.columns:
        raise UserError(f"pm25_ground.txt in {folder} has no 'datetime' column: "
                        "expected datetime plus one column per station")
    try:
        times = pd.to_datetime(table.pop("datetime"), format="%Y/%m/%d %H:%M:%S")
    except ValueError as err:
        raise _fail(data_path, "datetimes like 2014/05/01 01:00:00", err) from err
    table.index = times
    if times.duplicated().any():
        raise UserError(f"pm25_ground.txt in {folder} repeats timestamps: expected one row per hour")
    table = table.reindex(pd.date_range(times.min(), times.max(), freq="h"))
    values, mask = _numeric(table, data_path, "numeric PM2.5 readings")
    coords = _station_coords(loc_path, [str(c) for c in table.columns])
    adj, graph = gaussian_kernel(_haversine_km(coords))
    meta = {"channels": ["pm25"], "targets": [0], "freq_minutes": 60, "mask_zeros": False,
            "description": "Beijing PM2.5 (ug/m3) at 36 stations, May 2014 - April 2015; NaN = missing",
            "station_ids": [str(c) for c in table.columns],
            "graph": dict(graph, distance="haversine between station coordinates"),
            "source": _sources(data_path, loc_path)}
    return STData(values=values[:, :, None], mask=None if mask is None else mask[:, :, None], adj=adj,
                  coords=coords, timestamps=table.index.to_numpy().astype("datetime64[s]"), meta=meta)


def _station_coords(path: Path, ids: list[str]) -> np.ndarray:
    expected = "sensor_id, latitude, longitude columns"
    table = _read_csv(path, expected, dtype={"sensor_id": str})
    if not {"sensor_id", "latitude", "longitude"} <= set(table.columns):
        raise UserError(f"{path.name} in {path.parent} has columns {list(table.columns)}: "
                        f"expected {expected}")
    table = table.set_index("sensor_id")
    absent = [i for i in ids if i not in table.index]
    if absent:
        raise UserError(f"{path.name} has no coordinates for stations {absent[:5]}: expected every station")
    return table.loc[ids, ["latitude", "longitude"]].to_numpy(dtype=np.float64)


# -------------------------------------------------------------------------------------------- CHARGED
CHARGED_TABLES = ("volume", "duration", "e_price", "s_price")
CHARGED_WEATHER = ("temp", "humidity", "precip", "windspeed")
CHARGED_CITIES = {"SPO": "Sao Paulo", "MEL": "Melbourne", "JHB": "Johannesburg"}


def _charged_folder(source: Path, city: str) -> Path:
    """Accept the city folder itself or the CHARGED folder holding it."""
    source = _folder(source)
    if not (source / "volume.csv").is_file() and (source / city).is_dir():
        source = source / city
    info = source / "info.csv"
    if info.is_file():
        table = _read_csv(info, "city information with an abbreviation column")
        abbr = str(table["abbreviation"].iloc[0]) if "abbreviation" in table.columns and len(table) else city
        if abbr.upper() != city:
            raise UserError(f"{source} holds CHARGED city {abbr}, not {city}: point --source at "
                            f"CHARGED/{city} or the CHARGED folder")
    return source


def _charged_table(path: Path, index: pd.DatetimeIndex | None, ids: list[str]) -> pd.DataFrame:
    expected = "a [time x station] table with timestamps in the first column"
    table = _read_csv(path, expected, index_col=0)
    try:
        table.index = pd.to_datetime(table.index)
    except (ValueError, TypeError) as err:
        raise _fail(path, expected, err) from err
    table.columns = [str(c) for c in table.columns]
    absent = [i for i in ids if i not in table.columns]
    if absent:
        raise UserError(f"{path.name} in {path.parent} lacks stations {absent[:5]}: expected one column per "
                        "station of stations.csv")
    return table.reindex(index=index if index is not None else table.index, columns=ids)


def _charged_stations(folder: Path, hint: str) -> tuple[list[str], np.ndarray]:
    path = _require(folder, "stations.csv", hint)
    table = _read_csv(path, "station_id, longitude, latitude columns")
    cols = {c.lower(): c for c in table.columns}
    lat = next((cols[c] for c in ("latitude", "lat") if c in cols), None)
    lon = next((cols[c] for c in ("longitude", "lon", "lng") if c in cols), None)
    if lat is None or lon is None or "station_id" not in cols:
        raise UserError(f"stations.csv in {folder} has columns {list(table.columns)}: expected station_id, "
                        "longitude, latitude")
    ids = [str(v) for v in table[cols["station_id"]]]
    coords = table[[lat, lon]].to_numpy(dtype=np.float64)
    return ids, coords


def _charged_weather(path: Path, index: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
    """City-wide weather columns (T, 4) on the series' hours: forward-filled, still-missing flagged."""
    expected = f"a 'time' column and {', '.join(CHARGED_WEATHER)}"
    table = _read_csv(path, expected)
    if not {"time", *CHARGED_WEATHER} <= set(table.columns):
        raise UserError(f"{path.name} in {path.parent} has columns {list(table.columns)}: "
                        f"expected {expected}")
    try:
        table.index = pd.to_datetime(table["time"])
        table = table[~table.index.duplicated()]
        weather = table[list(CHARGED_WEATHER)].apply(pd.to_numeric, errors="coerce")
    except (ValueError, TypeError) as err:
        raise _fail(path, expected, err) from err
    weather = weather.reindex(index).ffill().to_numpy(dtype=np.float64)
    return _split_missing(weather)[0], np.isfinite(weather)


def prepare_charged(source: Path, city: str = "SPO") -> STData:
    """CHARGED EV charging: volume (target), duration, prices, plus city weather broadcast to stations."""
    city = city.upper()
    folder = _charged_folder(source, city)
    hint = f"the CHARGED/{city} folder (or CHARGED holding {city}/)"
    ids, coords = _charged_stations(folder, hint)
    paths = [_require(folder, f"{name}.csv", hint) for name in CHARGED_TABLES]
    volume = _charged_table(paths[0], None, ids)
    tables = [volume] + [_charged_table(p, volume.index, ids) for p in paths[1:]]
    stacked = np.stack([t.to_numpy(dtype=np.float64) for t in tables], axis=-1)
    values, mask = _split_missing(stacked)
    channels = list(CHARGED_TABLES)
    weather_path = folder / "weather.csv"
    if weather_path.is_file():
        weather, seen = _charged_weather(weather_path, volume.index)
        shape = (len(volume.index), len(ids), len(CHARGED_WEATHER))
        values = np.concatenate([values, np.broadcast_to(weather[:, None, :], shape)], axis=-1)
        base_mask = np.ones(stacked.shape, dtype=bool) if mask is None else mask
        weather_mask = np.broadcast_to(seen[:, None, :], shape)
        mask = None if seen.all() and mask is None else np.concatenate([base_mask, weather_mask], axis=-1)
        channels += list(CHARGED_WEATHER)
        paths.append(weather_path)
    dist_path = _require(folder, "distance.csv", hint)
    adj, graph = gaussian_kernel(_charged_distances(dist_path, ids))
    meta = {"channels": channels, "targets": [0], "freq_minutes": 60, "mask_zeros": False,
            "description": f"CHARGED {CHARGED_CITIES.get(city, city)}: hourly EV charging volume (kWh) "
                           "per station with duration, prices and city-wide weather",
            "station_ids": ids,
            "weather": "city-wide temp, humidity, precip, windspeed broadcast to every station; "
                       "forward-filled, still-missing hours masked" if "temp" in channels else "absent",
            "graph": dict(graph, distance="distance.csv (km)"),
            "source": _sources(*paths, dist_path, folder / "stations.csv")}
    return STData(values=np.ascontiguousarray(values, dtype=np.float32), mask=mask, adj=adj,
                  coords=coords,
                  timestamps=volume.index.to_numpy().astype("datetime64[s]"), meta=meta)


def _charged_distances(path: Path, ids: list[str]) -> np.ndarray:
    expected = "a square km distance matrix with station ids as header and index"
    table = _read_csv(path, expected, index_col=0)
    table.columns = [str(c) for c in table.columns]
    table.index = [str(i) for i in table.index]
    if not (set(ids) <= set(table.columns) and set(ids) <= set(table.index)):
        raise UserError(f"{path.name} in {path.parent} does not cover every station of stations.csv: "
                        f"expected {expected}")
    try:
        dist = table.loc[ids, ids].to_numpy(dtype=np.float64)
    except (ValueError, TypeError) as err:
        raise _fail(path, expected, err) from err
    if not np.isfinite(dist).all():
        raise UserError(f"{path.name} in {path.parent} has missing distances: expected {expected}")
    return dist
