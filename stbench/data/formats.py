"""Any array or table as a dataset, no Python: ``stbench prepare NAME --from values.{npy,npz,csv,nc}``.

Values (one file, or several comma-separated files stacked as channels, all with the same steps and
locations):

* ``.npy``: a numeric array (T, N) or (T, N, C), read in blocks of rows (never whole).
* ``.npz``: the array under key ``data`` (or ``values``, or the only array), read in blocks from the
  archive; keys ``adj`` (N, N), ``coords`` (N, 2) and ``timestamps`` (T,) are used when present.
* ``.csv``: rows = time steps, columns = locations; an optional header row (location ids) and an
  optional first column of timestamps; an empty cell is a missing reading. One channel per file.
* ``.nc``: a NetCDF file read with xarray; gridded variables (latitude x longitude) become grid
  points with coordinates and a 4-neighbour graph, as for ERA5.

``--adj`` (N, N) as .npy or a numeric .csv (a header row of location ids is allowed and reorders it
to the values' columns); ``--coords`` (N, 2) latitude, longitude in degrees as .npy or a .csv with
lat/latitude and lon/lng/longitude columns (or two numeric columns in that order); ``--timestamps``
one per step (.npy of datetime64 or unix seconds, or a .csv/.txt with one time per line), strictly
increasing; or ``--freq 5min`` to state the step length without timestamps. ``--target`` names the
target channels (names or indices, default the first). ``--mask-zeros yes|no`` has no default: when a
target reads 0 and it is not given, the command stops and prints the share of zeros.
"""
from __future__ import annotations

import csv
import io
import shlex
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from stbench import UserError
from stbench.data.core import file_sha256
from stbench.data.stream import StreamSource, chunk_steps

VALUE_TYPES = (".npy", ".npz", ".csv", ".nc")
_BLOCK = 1 << 25


@dataclass
class _Piece:
    """One values file: shape, channel names, a row reader, and what else it carries."""
    path: Path
    shape: tuple[int, int, int]
    channels: list[str]
    read: Callable[[int, int], np.ndarray]
    timestamps: np.ndarray | None = None
    location_ids: list[str] | None = None
    adj: np.ndarray | None = None
    coords: np.ndarray | None = None
    meta: dict | None = None
    chunk: int | None = None


def _bad(path: Path, what: str) -> UserError:
    return UserError(f"{path.name}: {what}")


def _numeric_dtype(path: Path, dtype: np.dtype, shape) -> None:
    if not (np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)):
        raise _bad(path, f"dtype {dtype} is not numeric: expected numbers (T, N) or (T, N, C)")
    if len(shape) not in (2, 3) or min(shape, default=0) < 1:
        raise _bad(path, f"shape {tuple(shape)}: expected (T steps, N locations) or (T, N, C channels)")


# ----------------------------------------------------------------------------------------- npy / npz
class _RowStream:
    """Sequential blocks of rows from an .npy stream (a file or an archive member)."""

    def __init__(self, path: Path, opener: Callable[[], io.BufferedIOBase]):
        self.path, self.opener = path, opener
        self.fh = None
        self._open()

    def _open(self) -> None:
        if self.fh is not None:
            self.fh.close()
        self.fh = self.opener()
        try:
            version = np.lib.format.read_magic(self.fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(self.fh)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(self.fh)
        except (ValueError, OSError, EOFError) as err:
            raise _bad(self.path, f"not a numpy array ({type(err).__name__}): expected an .npy array") from None
        _numeric_dtype(self.path, dtype, shape)
        if dtype.hasobject:
            raise _bad(self.path, "holds Python objects: expected a numeric array")
        self.shape, self.fortran, self.dtype = tuple(shape), fortran, dtype
        self.row = int(np.prod(shape[1:])) * dtype.itemsize
        self.at = 0

    def rows(self, start: int, stop: int) -> np.ndarray:
        if start < self.at:
            self._open()
        if start > self.at:
            self._skip(start - self.at)
        count = stop - start
        raw = self.fh.read(count * self.row)
        if len(raw) != count * self.row:
            raise _bad(self.path, "is truncated: re-create or re-download it")
        self.at = stop
        return np.frombuffer(raw, dtype=self.dtype).reshape((count,) + self.shape[1:])

    def _skip(self, rows: int) -> None:
        left = rows * self.row
        while left:
            got = len(self.fh.read(min(left, _BLOCK)))
            if not got:
                raise _bad(self.path, "is truncated: re-create or re-download it")
            left -= got
        self.at += rows


def _as3(block: np.ndarray) -> np.ndarray:
    return block[:, :, None] if block.ndim == 2 else block


def _npy_piece(path: Path) -> _Piece:
    stream = _RowStream(path, lambda: open(path, "rb"))
    if stream.fortran:   # column-major: a memory map read by rows
        arr = np.load(path, mmap_mode="r")
        reader = lambda a, b: _as3(np.asarray(arr[a:b], dtype=np.float32))   # noqa: E731
    else:
        reader = lambda a, b: _as3(stream.rows(a, b).astype(np.float32, copy=False))   # noqa: E731
    shape = stream.shape if len(stream.shape) == 3 else stream.shape + (1,)
    return _Piece(path, shape, _channel_names(path, shape[2]), reader)


def _npz_piece(path: Path) -> _Piece:
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as err:
        raise _bad(path, f"not an npz archive ({type(err).__name__}): expected numpy.savez output") from None
    names = {n.removesuffix(".npy"): n for n in archive.namelist()}
    extras = {"adj", "coords", "timestamps"}
    key = next((k for k in ("data", "values") if k in names), None)
    if key is None:
        rest = [k for k in names if k not in extras]
        if len(rest) != 1:
            raise _bad(path, f"has arrays {sorted(names)}: name the values 'data' (or keep only one array)")
        key = rest[0]
    stream = _RowStream(path, lambda: archive.open(names[key]))
    if stream.fortran:
        raise _bad(path, f"'{key}' is stored column-major: save it with np.ascontiguousarray first")
    shape = stream.shape if len(stream.shape) == 3 else stream.shape + (1,)
    piece = _Piece(path, shape, _channel_names(path, shape[2]),
                   lambda a, b: _as3(stream.rows(a, b).astype(np.float32, copy=False)))
    small = {}
    for extra in extras & set(names):
        try:
            with archive.open(names[extra]) as fh:
                small[extra] = np.lib.format.read_array(fh, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise _bad(path, f"cannot read '{extra}' ({type(err).__name__})") from None
    piece.adj = small.get("adj")
    piece.coords = small.get("coords")
    if "timestamps" in small:
        piece.timestamps = _as_times(small["timestamps"], path)
    return piece


def _channel_names(path: Path, c: int) -> list[str]:
    return [path.stem] if c == 1 else [f"{path.stem}{i}" for i in range(c)]


# ------------------------------------------------------------------------------------------------ csv
def _is_number(text: str) -> bool:
    text = text.strip()
    if text == "" or text.lower() in ("nan", "na", "null", "none", "-"):
        return True
    try:
        float(text)
        return True
    except ValueError:
        return False


def _csv_piece(path: Path) -> _Piece:
    """Check the table's shape in one pass (ragged rows are refused), then read rows with pandas."""
    try:
        fh = open(path, newline="", encoding="utf-8-sig")
    except OSError as err:
        raise _bad(path, f"cannot be opened ({type(err).__name__})") from None
    with fh:
        try:
            sample = fh.read(1 << 16)
            fh.seek(0)
            dialect = csv.Sniffer().sniff(sample, delimiters=",;\t") if sample.strip() else csv.excel
        except csv.Error:
            dialect = csv.excel
        head = [r for r in csv.reader(io.StringIO(sample), dialect) if r and any(c.strip() for c in r)][:2]
        reader = csv.reader(fh, dialect)
        header = None
        width = None
        rows = 0
        first_col: list[str] = []
        has_time = None
        try:
            for line_no, row in enumerate(reader, start=1):
                if not row or all(not cell.strip() for cell in row):
                    continue                       # blank lines
                if width is None:
                    width = len(row)
                    if _is_header(row, head[1] if len(head) > 1 else None):
                        header = row
                        continue
                if len(row) != width:
                    raise _bad(path, f"line {line_no} has {len(row)} fields but line 1 has {width}: every row "
                                     "needs one value per column (leave a cell empty for a missing reading)")
                if has_time is None:
                    has_time = not _is_number(row[0])
                if has_time:
                    first_col.append(row[0])
                rows += 1
        except csv.Error as err:
            raise _bad(path, f"is not a valid CSV table ({err})") from None
    if width is None or rows == 0:
        raise _bad(path, "holds no data rows: expected one row per time step, one column per location")
    n = width - (1 if has_time else 0)
    if n < 1:
        raise _bad(path, "has a time column but no value columns")
    stamps = None
    if has_time:
        try:
            stamps = pd.to_datetime(pd.Series(first_col)).to_numpy().astype("datetime64[s]")
        except (ValueError, TypeError):
            bad = next((v for v in first_col[:50] if not _parses(v)), first_col[0])
            raise _bad(path, f"the first column holds {bad!r}, neither a number nor a time: expected "
                             "timestamps (or numbers only)") from None
    ids = None
    if header is not None:
        ids = [c.strip() for c in (header[1:] if has_time else header)]
    usecols = list(range(1, width)) if has_time else list(range(width))
    sep = dialect.delimiter
    state = {"iter": None, "at": 0}

    def _iterator():
        return pd.read_csv(path, sep=sep, header=None, skiprows=1 if header is not None else 0,
                           usecols=usecols, dtype=np.float64, chunksize=65536, skip_blank_lines=True,
                           encoding="utf-8-sig", na_values=["", "nan", "NaN", "NA", "null", "None", "-"])

    def read(start: int, stop: int) -> np.ndarray:
        if state["iter"] is None or start < state["at"]:
            state["iter"], state["at"], state["buf"] = _iterator(), 0, np.empty((0, n))
        buf = state["buf"]
        while state["at"] + len(buf) < stop:
            try:
                frame = next(state["iter"])
            except StopIteration:
                break
            except ValueError as err:
                raise _bad(path, f"has a value that is not a number ({str(err).splitlines()[0]}): "
                                 "expected numbers, or empty cells for missing readings") from None
            buf = np.concatenate([buf, frame.to_numpy(dtype=np.float64)])
        lo = start - state["at"]
        out = buf[lo:lo + (stop - start)]
        state["buf"], state["at"] = buf[lo + (stop - start):], stop
        return out[:, :, None]

    return _Piece(path, (rows, n, 1), [path.stem], read, timestamps=stamps, location_ids=ids,
                  chunk=max(1, chunk_steps(n, 1) // 4))


def _is_header(row: list[str], following: list[str] | None) -> bool:
    """A header names columns: a non-numeric cell after the first, a first cell that is neither a number
    nor a time (``time``, ``date``), or an empty first cell above a row that starts with a time."""
    if not all(_is_number(c) for c in row[1:]):
        return True
    first = row[0].strip()
    if first and not _is_number(first):
        return not _parses(first)
    return not first and following is not None and not _is_number(following[0])


def _parses(text: str) -> bool:
    try:
        pd.Timestamp(text.strip())
        return True
    except (ValueError, TypeError):
        return False


# ------------------------------------------------------------------------------------------------- nc
def _nc_piece(path: Path, variables) -> _Piece:
    from stbench.data.gridded import grid_source
    src = grid_source([path], kind=path.name, variables=variables, mask_zeros=None)
    return _Piece(path, src.shape, src.meta["channels"], src.read, timestamps=src.timestamps,
                  adj=src.adj, coords=src.coords, chunk=src.chunk_steps,
                  meta={k: src.meta[k] for k in ("grid", "graph", "variables") if k in src.meta})


# ------------------------------------------------------------------------------------- side files
def _as_times(arr: np.ndarray, path: Path) -> np.ndarray:
    arr = np.asarray(arr).ravel()
    if np.issubdtype(arr.dtype, np.datetime64):
        return arr.astype("datetime64[s]")
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64).astype("datetime64[s]")
    if np.issubdtype(arr.dtype, np.floating) and np.isfinite(arr).all() and (arr == np.round(arr)).all():
        return arr.astype(np.int64).astype("datetime64[s]")
    try:
        return pd.to_datetime(pd.Series(arr.astype(str))).to_numpy().astype("datetime64[s]")
    except (ValueError, TypeError):
        raise _bad(path, "timestamps must be datetimes, unix seconds, or times like 2024-01-01 00:05") from None


def read_timestamps(path: Path) -> np.ndarray:
    path = Path(path)
    if path.suffix.lower() == ".npy":
        return _as_times(_load_npy(path), path)
    try:
        table = pd.read_csv(path, header=None, dtype=str, skip_blank_lines=True)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise _bad(path, f"cannot be read ({type(err).__name__}): expected one time per line") from None
    col = table.iloc[:, 0].str.strip()
    if len(col) and not _parses(col.iloc[0]) and not col.iloc[0].lstrip("-").isdigit():
        col = col.iloc[1:]                 # a header line
    if col.str.fullmatch(r"-?\d+").all():
        return col.astype(np.int64).to_numpy().astype("datetime64[s]")
    return _as_times(col.to_numpy(), path)


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise _bad(path, f"cannot be read ({type(err).__name__}): expected a numpy .npy array") from None


def _matrix_csv(path: Path) -> tuple[np.ndarray, list[str] | None]:
    try:
        table = pd.read_csv(path, header=None, dtype=str, skip_blank_lines=True)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise _bad(path, f"cannot be read ({type(err).__name__}): expected a numeric matrix") from None
    ids = None
    if len(table) and not all(_is_number(str(v)) for v in table.iloc[0].fillna("")):
        ids = [str(v).strip() for v in table.iloc[0]]
        table = table.iloc[1:]
        if ids and (ids[0] in ("", "nan") or len(ids) == table.shape[1] and not _is_number(str(table.iloc[0, 0]))):
            table = table.set_index(table.columns[0])   # an index column of ids as well
            ids = ids[1:]
    try:
        mat = table.apply(pd.to_numeric, errors="raise").to_numpy(dtype=np.float64)
    except (ValueError, TypeError):
        raise _bad(path, "has entries that are not numbers: expected a numeric matrix") from None
    return mat, ids


def read_adjacency(path: Path, n: int, location_ids: list[str] | None) -> np.ndarray:
    path = Path(path)
    if path.suffix.lower() == ".npy":
        mat, ids = np.asarray(_load_npy(path), dtype=np.float64), None
    else:
        mat, ids = _matrix_csv(path)
    if mat.ndim != 2 or mat.shape != (n, n):
        raise _bad(path, f"adjacency of shape {mat.shape} for {n} locations: expected ({n}, {n})")
    if not np.isfinite(mat).all():
        raise _bad(path, "adjacency has NaN/inf entries: expected finite weights (0 = no edge)")
    if ids is not None and location_ids is not None and ids != location_ids:
        if sorted(ids) != sorted(location_ids):
            raise _bad(path, "adjacency header names locations that are not the values' columns")
        order = [ids.index(i) for i in location_ids]
        mat = mat[np.ix_(order, order)]
    return mat.astype(np.float32)


def read_coords(path: Path, n: int, location_ids: list[str] | None) -> np.ndarray:
    path = Path(path)
    if path.suffix.lower() == ".npy":
        coords = np.asarray(_load_npy(path), dtype=np.float64)
    else:
        try:
            table = pd.read_csv(path)
        except (OSError, ValueError, pd.errors.ParserError) as err:
            raise _bad(path, f"cannot be read ({type(err).__name__}): expected lat, lon columns") from None
        cols = {str(c).strip().lower(): c for c in table.columns}
        lat = next((cols[c] for c in ("lat", "latitude") if c in cols), None)
        lon = next((cols[c] for c in ("lon", "lng", "long", "longitude") if c in cols), None)
        if lat is not None and lon is not None:
            idc = next((cols[c] for c in ("id", "location", "sensor_id", "station_id", "node") if c in cols), None)
            if idc is not None and location_ids is not None:
                table.index = table[idc].astype(str).str.strip()
                absent = [i for i in location_ids if i not in table.index]
                if absent:
                    raise _bad(path, f"has no coordinates for locations {absent[:5]}")
                table = table.loc[location_ids]
            coords = table[[lat, lon]].to_numpy(dtype=np.float64)
        else:
            table = pd.read_csv(path, header=None)
            try:
                coords = table.to_numpy(dtype=np.float64)
            except (ValueError, TypeError):
                raise _bad(path, "needs lat/latitude and lon/lng/longitude columns (or two numeric columns)") \
                    from None
    if coords.shape != (n, 2):
        raise _bad(path, f"coordinates of shape {coords.shape} for {n} locations: expected ({n}, 2) "
                         "latitude, longitude in degrees")
    if not np.isfinite(coords).all() or np.abs(coords[:, 0]).max() > 90 or np.abs(coords[:, 1]).max() > 360:
        raise _bad(path, "coordinates must be finite latitude (-90..90) and longitude (-180..360) in degrees")
    return coords


def check_increasing(stamps: np.ndarray, what: str) -> None:
    steps = np.diff(stamps.astype(np.int64))
    if (steps <= 0).any():
        i = int(np.argmax(steps <= 0))
        raise UserError(f"{what}: timestamps are not increasing at step {i + 1} ({stamps[i]} then "
                        f"{stamps[i + 1]}): sort the rows by time and remove repeated times")


# ---------------------------------------------------------------------------------------- assemble
def _targets(spec, channels: list[str]) -> list[int]:
    if spec is None:
        return [0]
    out = []
    for part in (p.strip() for p in str(spec).split(",")):
        if not part:
            continue
        if part.lstrip("-").isdigit():
            k = int(part)
            if not 0 <= k < len(channels):
                raise UserError(f"--target {part} is out of range: the channels are 0..{len(channels) - 1} "
                                f"({', '.join(channels)})")
        elif part in channels:
            k = channels.index(part)
        else:
            raise UserError(f"--target {part!r} is not a channel: they are {', '.join(channels)} "
                            "(names or indices)")
        if k not in out:
            out.append(k)
    if not out:
        raise UserError("--target is empty: give channel names or indices, e.g. --target 0")
    return out


def parse_mask_zeros(text) -> bool | None:
    if text is None or isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("yes", "true", "y", "1"):
        return True
    if value in ("no", "false", "n", "0"):
        return False
    raise UserError(f"--mask-zeros {text!r} must be yes (0 = missing) or no (0 is a real value)")


def from_files(files: str | list, *, adj=None, coords=None, timestamps=None, freq=None, target=None,
               variables=None, command: str = "") -> StreamSource:
    """A StreamSource over values files (see the module docstring); nothing is read whole."""
    from stbench.data.native import _parse_freq

    if isinstance(files, Path):
        paths = [files]
    elif isinstance(files, str):
        paths = [Path(p.strip()) for p in files.split(",") if p.strip()]
    else:
        paths = [Path(p) for p in files]
    if not paths:
        raise UserError("--from needs a values file: .npy, .npz, .csv or .nc")
    pieces = []
    for path in paths:
        if not path.is_file():
            raise UserError(f"--from {path}: no such file")
        ext = path.suffix.lower()
        if ext == ".npy":
            pieces.append(_npy_piece(path))
        elif ext == ".npz":
            pieces.append(_npz_piece(path))
        elif ext in (".csv", ".tsv", ".txt"):
            pieces.append(_csv_piece(path))
        elif ext in (".nc", ".nc4", ".netcdf", ".cdf"):
            pieces.append(_nc_piece(path, variables))
        else:
            raise UserError(f"--from {path.name}: unknown file type {ext!r}: use .npy, .npz, .csv or .nc")
    if variables is not None and not any(p.path.suffix.lower().startswith(".nc") for p in pieces):
        raise UserError("--variables applies to NetCDF (.nc) values only")
    t, n = pieces[0].shape[:2]
    for piece in pieces[1:]:
        if piece.shape[:2] != (t, n):
            raise UserError(f"{piece.path.name} has {piece.shape[0]} steps x {piece.shape[1]} locations but "
                            f"{pieces[0].path.name} has {t} x {n}: stacked files must match")
    if t < 2:
        raise UserError(f"{pieces[0].path.name} has {t} time step(s): expected at least 2")
    channels = [c for p in pieces for c in p.channels]
    if len(set(channels)) != len(channels):
        channels = [f"{c}_{i}" for i, c in enumerate(channels)]
    ids = next((p.location_ids for p in pieces if p.location_ids), None)
    files_used = list(paths)
    # timestamps
    stamps, freq_minutes = None, _parse_freq(freq)
    if timestamps is not None and freq is not None:
        raise UserError("give --timestamps or --freq, not both (the timestamps fix the step length)")
    if timestamps is not None:
        stamps = read_timestamps(Path(timestamps))
        files_used.append(Path(timestamps))
        what = Path(timestamps).name
    else:
        carried = [(p.path.name, p.timestamps) for p in pieces if p.timestamps is not None]
        if carried:
            what, stamps = carried[0]
            for other, more in carried[1:]:
                if len(more) != len(stamps) or (more != stamps).any():
                    raise UserError(f"{other} and {what} have different timestamps: stacked files must match")
    if stamps is not None:
        if len(stamps) != t:
            raise UserError(f"{what}: {len(stamps)} timestamps for {t} steps: expected one per step")
        if np.isnat(stamps).any():
            raise UserError(f"{what}: timestamp {int(np.argmax(np.isnat(stamps)))} is empty or not a time")
        check_increasing(stamps, what)
        diffs = np.diff(stamps.astype(np.int64))
        common = int(pd.Series(diffs).mode().iloc[0])
        if common % 60 == 0 and common >= 60:
            freq_minutes = freq_minutes or common // 60
    # graph and coordinates
    adj_arr = read_adjacency(Path(adj), n, ids) if adj is not None else next(
        (p.adj for p in pieces if p.adj is not None), None)
    if adj is not None:
        files_used.append(Path(adj))
    elif adj_arr is not None and np.shape(adj_arr) != (n, n):
        raise UserError(f"{pieces[0].path.name}: 'adj' of shape {np.shape(adj_arr)} for {n} locations: "
                        f"expected ({n}, {n})")
    coord_arr = read_coords(Path(coords), n, ids) if coords is not None else next(
        (p.coords for p in pieces if p.coords is not None), None)
    if coords is not None:
        files_used.append(Path(coords))
    elif coord_arr is not None and np.shape(coord_arr) != (n, 2):
        raise UserError(f"{pieces[0].path.name}: 'coords' of shape {np.shape(coord_arr)} for {n} locations: "
                        f"expected ({n}, 2)")
    meta = {"channels": channels, "targets": _targets(target, channels),
            "description": f"prepared from {', '.join(p.name for p in paths)}",
            "source": {"files": {p.name: file_sha256(p) for p in files_used}}}
    if command:
        meta["prepare_command"] = command
    if freq_minutes:
        meta["freq_minutes"] = int(freq_minutes)
    if ids is not None:
        meta["location_ids"] = ids
    for piece in pieces:
        if piece.meta:
            meta.update(piece.meta)
    if adj is not None:
        meta["graph"] = {"kind": "as provided", "file": Path(adj).name}
    offsets = np.cumsum([0] + [p.shape[2] for p in pieces])

    def read(start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, n, len(channels)), dtype=np.float32)
        for piece, lo, hi in zip(pieces, offsets[:-1], offsets[1:]):
            block = piece.read(start, stop)
            if block.shape[0] != stop - start:
                raise _bad(piece.path, f"ended after {start + block.shape[0]} of {t} rows while being read")
            out[:, :, lo:hi] = block
        return out

    step = min([p.chunk for p in pieces if p.chunk] + [chunk_steps(n, len(channels))])
    return StreamSource(shape=(t, n, len(channels)), meta=meta, read=read, adj=adj_arr, coords=coord_arr,
                        timestamps=stamps, empty_locations="error", chunk_steps=step)


def command_line(name: str, files, **options) -> str:
    """The ``stbench prepare`` line that rebuilds a --from dataset (recorded in meta.json)."""
    listed = str(files) if isinstance(files, (str, Path)) else ",".join(map(str, files))
    parts = ["stbench", "prepare", name, "--from", listed]
    for key, value in options.items():
        if value is not None:
            parts += ["--" + key.replace("_", "-"), str(value)]
    return " ".join(shlex.quote(p) for p in parts)
