"""The papers' datasets from the files their publishers distribute (not the pre-windowed releases).

* **ERA5 / CAMS** (``prepare_weather``): GRIB or NetCDF files as downloaded from the Copernicus data
  stores, read with xarray (see ``gridded.py``). A folder holding ``train.npz``/``val.npz``/``test.npz``
  is still read as the STemDist release.
* **LargeST** (``prepare_largest``, Liu et al., NeurIPS 2023 D&B): ``<area>_his_raw_<year>.h5`` (5-minute
  flow, NaN = missing) or ``<area>_his_<year>.h5`` (LargeST's processed file: 15-minute means with
  missing stored as 0), each a pandas HDF5 DataFrame (key ``t``) indexed by time with one column per
  sensor id; ``<area>_meta.csv`` (``ID``, ``Lat``, ``Lng``, ``District``, ``County``, ``Fwy``, ``Lanes``,
  ``Type``, ``Direction``, ``ID2``: the sensor's row/column in the adjacency) and ``<area>_rn_adj.npy``
  (road-network adjacency). GBA, GLA and SD are cut from the CA files when their own are absent, by
  Caltrans district exactly as LargeST's generation notebooks do (SD: district 11, GBA: district 4,
  GLA: districts 7, 8 and 12), falling back to the counties the paper names when the meta has no
  ``District`` column; the adjacency is cut to the same sensors (by ``ID2``).
* **UrbanEV** (``prepare_urbanev``, IntelligentSystemsLab/UrbanEV ``data/``): hourly zone tables.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from stbench import UserError
from stbench.data.core import STData
from stbench.data.gridded import CAMS_VARIABLES, ERA5_VARIABLES, grid_files, grid_source, parse_bbox
from stbench.data.stream import StreamSource, chunk_steps

FORMATS_EXTRA = 'pip install "stbench[formats]"'


def _parse_freq(text, what: str = "--freq") -> int | None:
    """Minutes in a frequency such as 5min, 15min, 1h (None stays None)."""
    if text is None:
        return None
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        minutes = float(text)
    else:
        try:
            minutes = pd.Timedelta(str(text).strip()).total_seconds() / 60.0
        except ValueError:
            raise UserError(f"{what} {text!r} is not a frequency: use e.g. 5min, 15min, 1h") from None
    if minutes < 1 or not float(minutes).is_integer():
        raise UserError(f"{what} {text!r} must be a whole number of minutes (at least 1), e.g. 5min or 1h")
    return int(minutes)


# ------------------------------------------------------------------------------------- ERA5 / CAMS
WEATHER = {
    "era5": {"variables": ERA5_VARIABLES, "target": "u10", "label": "ERA5",
             "description": "ERA5 single-level reanalysis fields on a lat/lon grid (prepared from GRIB/NetCDF)"},
    "cams": {"variables": CAMS_VARIABLES, "target": "co", "label": "CAMS",
             "description": "CAMS global reanalysis (EAC4) fields on a lat/lon grid (prepared from GRIB/NetCDF)"},
}


def prepare_weather(source: Path, variables=None, target=None, bbox=None, stride=None, graph=None, *,
                    kind: str, release: dict):
    """ERA5/CAMS native files (GRIB/NetCDF, a file or a folder), or the STemDist release folder."""
    from stbench.data.prepare import prepare_release

    source = Path(source)
    if source.is_dir() and (source / "train.npz").is_file():
        given = [f"--{k}" for k, v in (("variables", variables), ("target", target), ("bbox", bbox),
                                        ("stride", stride), ("graph", graph)) if v is not None]
        if given:
            raise UserError(f"{', '.join(given)} apply to native GRIB/NetCDF files, not to the STemDist "
                            f"release in {source} (its windows are fixed)")
        return prepare_release(source, **release)
    info = WEATHER[kind]
    return grid_source(grid_files(source), kind=info["label"], variables=variables,
                       default_variables=info["variables"], target=target, default_target=info["target"],
                       bbox=parse_bbox(bbox), stride=1 if stride is None else _int(stride, "--stride"),
                       graph=graph or "grid", description=info["description"], mask_zeros=False)


def _int(value, what: str) -> int:
    try:
        out = None if isinstance(value, bool) else int(str(value).strip())
    except ValueError:
        out = None
    if out is None or out < 1:
        raise UserError(f"{what} {value!r} must be a positive integer")
    return out


# ------------------------------------------------------------------------------------------ LargeST
LARGEST_DISTRICTS = {"sd": [11], "gba": [4], "gla": [7, 8, 12]}
LARGEST_COUNTIES = {
    "sd": ["San Diego"],
    "gba": ["Alameda", "Contra Costa", "Marin", "Napa", "San Benito", "San Francisco", "San Mateo",
            "Santa Clara", "Santa Cruz", "Solano", "Sonoma"],
    "gla": ["Los Angeles", "Orange", "Riverside", "San Bernardino", "Ventura"],
}
LARGEST_NAMES = {"ca": "California", "gba": "Greater Bay Area", "gla": "Greater Los Angeles", "sd": "San Diego"}
_HIS = re.compile(r"^(?P<area>[a-z]+)_his_(?P<raw>raw_)?(?P<year>\d{4})\.h5$")


def _largest_files(source: Path, area: str) -> tuple[list[Path], str, Path]:
    """The history files to read, the area whose files they are (area or ca), and the folder."""
    if source.is_file():
        match = _HIS.match(source.name)
        if not match or match["area"] not in (area, "ca"):
            raise UserError(f"{source.name} is not a LargeST history file of {area} or ca: expected "
                            f"{area}_his_raw_<year>.h5 or ca_his_raw_<year>.h5")
        return [source], match["area"], source.parent
    for owner in dict.fromkeys([area, "ca"]):
        found = [p for p in source.iterdir() if (m := _HIS.match(p.name)) and m["area"] == owner]
        if found:
            raw = [p for p in found if "_raw_" in p.name]
            chosen = raw or found          # the 5-minute raw files when both kinds are there
            return sorted(chosen, key=lambda p: _HIS.match(p.name)["year"]), owner, source
    raise UserError(f"no LargeST history file in {source}: expected {area}_his_raw_<year>.h5 (or ca_his_raw_"
                    f"<year>.h5 with ca_meta.csv and ca_rn_adj.npy, from which {area} is cut)")


class _H5Frame:
    """A pandas fixed-format HDF5 DataFrame (one float block) read by rows with h5py; pandas otherwise."""

    def __init__(self, path: Path):
        self.path = path
        self.h5 = self.key = None
        try:
            import h5py
        except ImportError:
            h5py = None
        if h5py is not None:
            try:
                self.h5 = h5py.File(path, "r")
            except OSError as err:
                raise UserError(f"cannot read {path.name} in {path.parent} ({type(err).__name__}: "
                                f"{str(err).splitlines()[0]}): expected a pandas HDF5 DataFrame") from None
            groups = [k for k in self.h5.keys() if isinstance(self.h5[k], h5py.Group)]
            group = self.h5[groups[0]] if len(groups) == 1 else None
            if group is not None and {"axis0", "axis1", "block0_values"} <= set(group.keys()) and \
                    "block1_values" not in group:
                self.group = group
                self.columns = [_text(c) for c in group["axis0"][:]]
                kind = _text(group["axis1"].attrs.get("kind", b"datetime64"))
                self.index = _datetimes(group["axis1"][:], path, kind)
                self.values = group["block0_values"]
                if self.values.shape != (len(self.index), len(self.columns)):
                    raise UserError(f"{path.name}: values {self.values.shape} do not match {len(self.index)} "
                                    f"times x {len(self.columns)} sensors: expected a LargeST history file")
                if "block0_items" in group:
                    items = [_text(c) for c in group["block0_items"][:]]
                    if items != self.columns:
                        raise UserError(f"{path.name}: the value columns are not in column order: expected "
                                        "a LargeST history file")
                return
            self.h5.close()
            self.h5 = None
        self._pandas()

    def _pandas(self) -> None:
        try:
            self.store = pd.HDFStore(self.path, mode="r")
        except ImportError:
            raise UserError(f"reading {self.path.name} needs h5py or PyTables: {FORMATS_EXTRA}") from None
        except (OSError, ValueError) as err:
            raise UserError(f"cannot read {self.path.name} ({type(err).__name__}): expected a pandas HDF5 "
                            "DataFrame") from None
        keys = self.store.keys()
        if len(keys) != 1:
            raise UserError(f"{self.path.name} holds {len(keys)} tables ({keys}): expected one DataFrame")
        self.key = keys[0]
        if not self.store.get_storer(self.key).is_table:
            self.store.close()
            raise UserError(f"reading {self.path.name} (a fixed-format pandas HDF5 file) by rows needs h5py: "
                            f"{FORMATS_EXTRA}")
        head = self.store.select(self.key, start=0, stop=1)
        self.columns = [str(c) for c in head.columns]
        self.index = pd.DatetimeIndex(self.store.select_column(self.key, "index")).to_numpy().astype(
            "datetime64[s]")

    def rows(self, start: int, stop: int) -> np.ndarray:
        if self.h5 is not None:
            return np.asarray(self.values[start:stop], dtype=np.float64)
        frame = self.store.select(self.key, start=start, stop=stop)
        return frame.to_numpy(dtype=np.float64)

    def close(self) -> None:
        if self.h5 is not None:
            self.h5.close()
        elif self.key is not None:
            self.store.close()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _datetimes(index: np.ndarray, path: Path, kind: str = "datetime64") -> np.ndarray:
    """pandas stores a DatetimeIndex as int64 with attribute kind ``datetime64`` (ns) or ``datetime64[us]``."""
    if np.issubdtype(index.dtype, np.integer):
        unit = kind[len("datetime64["):-1] if kind.startswith("datetime64[") else "ns"
        if unit not in ("s", "ms", "us", "ns"):
            raise UserError(f"{path.name}: the index has time unit {kind!r}: expected a DatetimeIndex")
        return index.astype(f"datetime64[{unit}]").astype("datetime64[s]")
    try:
        return pd.to_datetime([_text(v) for v in index]).to_numpy().astype("datetime64[s]")
    except (ValueError, TypeError):
        raise UserError(f"{path.name}: the index is not times: expected a DataFrame indexed by time") from None


def _largest_meta(folder: Path, owner: str, area: str) -> tuple[pd.DataFrame, Path]:
    path = folder / f"{owner}_meta.csv"
    if not path.is_file():
        raise UserError(f"{path.name} not found in {folder}: LargeST needs {owner}_meta.csv next to the "
                        "history files")
    try:
        meta = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise UserError(f"cannot read {path.name} ({type(err).__name__}): expected LargeST sensor meta") from None
    missing = [c for c in ("ID", "Lat", "Lng") if c not in meta.columns]
    if missing:
        raise UserError(f"{path.name} has no column(s) {missing} (has {list(meta.columns)[:10]}): expected "
                        "ID, Lat, Lng, District, County, ..., ID2")
    if "ID2" not in meta.columns:
        meta["ID2"] = np.arange(len(meta))
    if owner == "ca" and area != "ca":
        if "District" in meta.columns:
            keep = meta["District"].isin(LARGEST_DISTRICTS[area])
        elif "County" in meta.columns:
            keep = meta["County"].astype(str).str.strip().str.lower().isin(
                [c.lower() for c in LARGEST_COUNTIES[area]])
        else:
            raise UserError(f"{path.name} has neither District nor County: cannot cut {area} from ca")
        meta = meta[keep].reset_index(drop=True)
        if meta.empty:
            raise UserError(f"{path.name} has no sensor of {area} ({LARGEST_NAMES[area]})")
    return meta, path


def prepare_largest(source: Path, freq=None, *, area: str, release: dict):
    """LargeST ``ca``/``gba``/``gla``/``sd`` from its distribution files (or the PatchSTG release)."""
    from stbench.data.prepare import _sources, prepare_release

    source = Path(source)
    if source.is_dir() and (source / "train.npz").is_file():
        if freq is not None:
            raise UserError(f"--freq applies to LargeST's own files, not to the release in {source}")
        return prepare_release(source, **release)
    files, owner, folder = _largest_files(source, area)
    meta_table, meta_path = _largest_meta(folder, owner, area)
    ids = [str(v) for v in meta_table["ID"]]
    frames = [_H5Frame(p) for p in files]
    positions = []
    for frame in frames:
        lookup = {c: i for i, c in enumerate(frame.columns)}
        absent = [i for i in ids if i not in lookup]
        if absent:
            raise UserError(f"{frame.path.name} lacks sensors {absent[:5]} of {meta_path.name}: expected one "
                            "column per sensor ID")
        positions.append(np.array([lookup[i] for i in ids], dtype=np.int64))
    # one time axis over the years: sorted, later duplicates dropped
    spans, notes, seen_until = [], [], None
    for k, frame in enumerate(frames):
        index = frame.index
        if index.size > 1 and (np.diff(index.astype(np.int64)) <= 0).any():
            raise UserError(f"{frame.path.name}: the time index is not increasing: expected a history file")
        keep = np.ones(index.size, bool) if seen_until is None else index > seen_until
        if not keep.all():
            notes.append(f"{frame.path.name}: dropped {int((~keep).sum())} time steps already in an earlier file")
        first = int(np.argmax(keep)) if keep.any() else index.size
        spans.append((k, first, index.size))
        if keep.any():
            seen_until = index[-1]
    stamps = np.concatenate([frames[k].index[a:b] for k, a, b in spans])
    native = int(np.median(np.diff(stamps.astype(np.int64)))) // 60 if stamps.size > 1 else 5
    minutes = _parse_freq(freq) or native
    if minutes % max(native, 1):
        raise UserError(f"--freq {freq} is not a multiple of the files' {native}-minute steps")
    factor = minutes // max(native, 1)
    total = stamps.size - stamps.size % factor
    if total < stamps.size:
        notes.append(f"LargeST: the last {stamps.size - total} step(s) do not fill a {minutes}-minute bin and "
                     "are dropped")
    t_out = total // factor
    n = len(ids)
    adj, graph = _largest_adjacency(folder, owner, meta_table)
    offsets = np.cumsum([0] + [b - a for _, a, b in spans])

    def read(start: int, stop: int) -> np.ndarray:
        lo, hi = start * factor, stop * factor
        out = np.empty((hi - lo, n), dtype=np.float64)
        for (k, a, b), base in zip(spans, offsets):
            s, e = max(lo, base), min(hi, base + (b - a))
            if e > s:
                rows = frames[k].rows(a + s - base, a + e - base)
                out[s - lo:e - lo] = rows[:, positions[k]]
        if factor > 1:
            grouped = out.reshape(stop - start, factor, n)
            with np.errstate(invalid="ignore"):
                count = np.isfinite(grouped).sum(axis=1)
                out = np.where(count > 0, np.nansum(grouped, axis=1) / np.maximum(count, 1), np.nan)
        return out.astype(np.float32)[:, :, None]

    coords = meta_table[["Lat", "Lng"]].to_numpy(dtype=np.float64)
    description = (f"LargeST {area.upper()} ({LARGEST_NAMES[area]}): {n} PeMS sensors, traffic flow, "
                   f"{minutes}-minute " + ("means of the 5-minute readings" if factor > 1 else "readings"))
    info = {"channels": ["flow"], "targets": [0], "freq_minutes": minutes, "mask_zeros": True,
            "description": description, "sensor_ids": ids,
            "area": {"name": area, "cut_from": owner,
                     "rule": ("all sensors" if owner == area else
                              f"District in {LARGEST_DISTRICTS[area]}" if "District" in meta_table.columns
                              else f"County in {LARGEST_COUNTIES[area]}")},
            "aggregation": ({"steps": factor, "how": "mean of the observed 5-minute readings in each bin; "
                             "a bin with none is missing"} if factor > 1 else None),
            "graph": graph, "source": _sources(*files, meta_path)}

    return StreamSource(shape=(t_out, n, 1), meta=info, read=read, adj=adj, coords=coords,
                       timestamps=stamps[:total:factor].astype("datetime64[s]"),
                       chunk_steps=max(1, chunk_steps(max(len(f.columns) for f in frames) * 2, 1) // factor),
                       notes=notes)


def _largest_adjacency(folder: Path, owner: str, meta_table: pd.DataFrame):
    path = folder / f"{owner}_rn_adj.npy"
    if not path.is_file():
        return None, {"kind": "none", "note": f"{path.name} not found next to the history files"}
    try:
        full = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {path.name} ({type(err).__name__}): expected a square adjacency") from None
    idx = meta_table["ID2"].to_numpy(dtype=np.int64)
    if full.ndim != 2 or full.shape[0] != full.shape[1] or (idx.size and idx.max() >= full.shape[0]):
        raise UserError(f"{path.name} has shape {full.shape}: expected a square matrix indexed by the ID2 "
                        "column of the meta")
    adj = np.asarray(full[np.ix_(idx, idx)], dtype=np.float32)
    return adj, {"kind": "as provided (LargeST road network)", "file": path.name,
                 "cut": "rows and columns of the kept sensors (ID2)"}


# ------------------------------------------------------------------------------------------ UrbanEV
URBANEV_TABLES = ("volume", "duration", "occupancy", "e_price", "s_price")
URBANEV_HINT = "the UrbanEV data folder (volume.csv, duration.csv, occupancy.csv, e_price.csv, s_price.csv, adj.csv)"


def _zone_table(path: Path, index=None, zones=None) -> pd.DataFrame:
    from stbench.data.prepare import _fail, _read_csv
    table = _read_csv(path, "a [time x zone] table: a time column, then one column per zone id", index_col=0)
    try:
        table.index = pd.to_datetime(table.index)
    except (ValueError, TypeError) as err:
        raise _fail(path, "timestamps in the first column", err) from err
    table.columns = [str(c).strip() for c in table.columns]
    if zones is not None:
        absent = [z for z in zones if z not in table.columns]
        if absent:
            raise UserError(f"{path.name} in {path.parent} lacks zones {absent[:5]} of volume.csv: expected the "
                            "same zone columns in every table")
        table = table.reindex(index=index, columns=zones)
    return table.apply(pd.to_numeric, errors="coerce")


def _zone_matrix(path: Path, zones: list[str]) -> np.ndarray:
    from stbench.data.prepare import _read_csv
    table = _read_csv(path, "a square matrix with zone ids as header", header=0)
    first = str(table.columns[0]).strip().lower()
    if first in ("", "unnamed: 0", "taz", "tazid", "zone", "id"):
        table = table.set_index(table.columns[0])
        table.index = [str(i).strip() for i in table.index]
    else:
        table.index = [str(c).strip() for c in table.columns][:len(table)]
    table.columns = [str(c).strip() for c in table.columns]
    if not (set(zones) <= set(table.columns) and set(zones) <= set(table.index)):
        raise UserError(f"{path.name} in {path.parent} does not cover the zones of volume.csv: expected a "
                        f"{len(zones)}x{len(zones)} matrix with the zone ids as header")
    mat = table.loc[zones, zones].to_numpy(dtype=np.float64)
    if not np.isfinite(mat).all():
        raise UserError(f"{path.name} in {path.parent} has missing entries: expected a complete matrix")
    return mat


def prepare_urbanev(source: Path) -> STData:
    """UrbanEV zones: volume (kWh, target), with duration, occupancy and prices as features."""
    from stbench.data.prepare import _folder, _require, _sources, _split_missing, gaussian_kernel

    folder = _folder(source)
    if not (folder / "volume.csv").is_file() and (folder / "data" / "volume.csv").is_file():
        folder = folder / "data"
    volume_path = _require(folder, "volume.csv", URBANEV_HINT)
    volume = _zone_table(volume_path)
    zones = list(volume.columns)
    paths, tables, channels = [volume_path], [volume], ["volume"]
    for name in URBANEV_TABLES[1:]:
        path = folder / f"{name}.csv"
        if path.is_file():
            tables.append(_zone_table(path, volume.index, zones))
            paths.append(path)
            channels.append(name)
    values, mask = _split_missing(np.stack([t.to_numpy(dtype=np.float64) for t in tables], axis=-1))
    meta = {"channels": channels, "targets": [0], "freq_minutes": 60, "mask_zeros": False,
            "description": "UrbanEV (Shenzhen): hourly EV charging volume (kWh) per traffic zone, with "
                           "duration, occupancy and prices as features",
            "zone_ids": zones}
    adj_path, dist_path = folder / "adj.csv", folder / "distance.csv"
    if adj_path.is_file():
        adj = _zone_matrix(adj_path, zones).astype(np.float32)
        meta["graph"] = {"kind": "as provided", "file": "adj.csv", "weights": "0/1 zone adjacency"}
        paths.append(adj_path)
    elif dist_path.is_file():
        adj, info = gaussian_kernel(_zone_matrix(dist_path, zones) / 1000.0)
        meta["graph"] = dict(info, distance="distance.csv (metres, used as km / 1000)")
    else:
        raise UserError(f"neither adj.csv nor distance.csv in {folder}: --source must be {URBANEV_HINT}")
    if dist_path.is_file():
        paths.append(dist_path)
    coords = None
    inf_path = folder / "inf.csv"
    if inf_path.is_file():
        coords = _zone_coords(inf_path, zones)
        paths.append(inf_path)
        if coords is not None:
            meta["coordinates"] = ("mean longitude/latitude of each zone's stations in inf.csv (GCJ-02, as "
                                   "published; within about 0.5 km of WGS84)")
    meta["source"] = _sources(*paths)
    return STData(values=values, mask=mask, adj=adj, coords=coords,
                  timestamps=volume.index.to_numpy().astype("datetime64[s]"), meta=meta)


def _zone_coords(path: Path, zones: list[str]) -> np.ndarray | None:
    from stbench import warn
    from stbench.data.prepare import _read_csv
    table = _read_csv(path, "station_id, longitude, latitude, ..., TAZID columns")
    cols = {c.lower(): c for c in table.columns}
    zone_col = cols.get("tazid") or cols.get("taz")
    lat, lon = cols.get("latitude") or cols.get("lat"), cols.get("longitude") or cols.get("lon")
    if zone_col is None or lat is None or lon is None:
        warn(f"{path.name} has no TAZID/latitude/longitude columns: zones get no coordinates")
        return None
    grouped = table.groupby(table[zone_col].astype(str).str.strip())[[lat, lon]].mean()
    absent = [z for z in zones if z not in grouped.index]
    if absent:
        warn(f"{path.name} has no station in zones {absent[:5]}: zones get no coordinates")
        return None
    return grouped.loc[zones, [lat, lon]].to_numpy(dtype=np.float64)
