"""Real data as users hold it: ERA5/CAMS GRIB and NetCDF, LargeST HDF5, UrbanEV CSV, any array via
``--from``, discovery of prepared folders, plugin datasets, and streamed (bounded-memory) preparation.

Every fixture is written by the test itself in the publisher's layout (nothing binary is committed).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stbench import UserError
from stbench.cli import main
from stbench.data import STData, load_dataset, prepare_dataset
from stbench.data.catalog import discover_datasets, prepare_from
from stbench.registry import DATASETS

try:
    import xarray as xr
except ImportError:         # the formats extra is missing: its readers' tests are skipped
    xr = None
needs_xarray = pytest.mark.skipif(xr is None, reason='needs the formats extra: pip install "stbench[formats]"')


@pytest.fixture(autouse=True)
def _isolated_registry(monkeypatch, tmp_path):
    """Discovered and plugin datasets registered by one test do not leak into the next."""
    monkeypatch.setattr(DATASETS, "_entries", dict(DATASETS._entries))
    monkeypatch.delenv("STBENCH_DATA_DIRS", raising=False)
    monkeypatch.setenv("STBENCH_DATA", str(tmp_path / "default-data"))


def _one_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("stbench: error:")]
    assert len(errors) == 1, err
    return errors[0]


# ------------------------------------------------------------------------------------ ERA5 / CAMS
def _write_grib(path: Path, fields) -> None:
    """GRIB1 messages (shortName, yyyymmdd, hour, lat, lon, values) written with ecCodes."""
    eccodes = pytest.importorskip("eccodes")
    with open(path, "wb") as fh:
        for short, date, hour, lat, lon, vals in fields:
            h = eccodes.codes_grib_new_from_samples("regular_ll_sfc_grib1")
            for key, value in (("Ni", len(lon)), ("Nj", len(lat)),
                               ("latitudeOfFirstGridPointInDegrees", float(lat[0])),
                               ("latitudeOfLastGridPointInDegrees", float(lat[-1])),
                               ("longitudeOfFirstGridPointInDegrees", float(lon[0])),
                               ("longitudeOfLastGridPointInDegrees", float(lon[-1])),
                               ("iDirectionIncrementInDegrees", float(lon[1] - lon[0])),
                               ("jDirectionIncrementInDegrees", float(lat[0] - lat[1])),
                               ("centre", "ecmf"), ("shortName", short), ("dataDate", date),
                               ("dataTime", hour * 100)):
                eccodes.codes_set(h, key, value)
            eccodes.codes_set_values(h, np.asarray(vals, dtype=float).ravel())
            eccodes.codes_write(h, fh)
            eccodes.codes_release(h)


@needs_xarray
def test_era5_grib_months_are_concatenated_and_any_variable_is_the_target(tmp_path, capsys):
    lat, lon = np.array([52.0, 51.75, 51.5]), np.array([0.0, 0.25, 0.5, 0.75])
    rng = np.random.default_rng(0)
    src = tmp_path / "era5"
    src.mkdir()
    fields = {f: [] for f in ("jan", "feb")}
    for name, date in (("jan", 20200131), ("feb", 20200201)):
        for hour in (21, 22, 23) if name == "jan" else (0, 1, 2):
            for short in ("10u", "2t"):
                fields[name].append((short, date, hour, lat, lon, rng.uniform(270, 290, (3, 4))))
    _write_grib(src / "era5-2020-01.grib", fields["jan"])
    _write_grib(src / "era5-2020-02.grib", fields["feb"])
    folder = prepare_dataset("era5", src, data_root=tmp_path / "data", target="2t")
    data = STData.load(folder)
    assert data.shape == (6, 12, 2) and data.meta["channels"] == ["u10", "t2m"]
    assert data.targets == [1] and data.meta["mask_zeros"] is False
    assert str(data.timestamps[0]) == "2020-01-31T21:00:00" and data.meta["freq_minutes"] == 60
    with xr.open_dataset(src / "era5-2020-02.grib", engine="cfgrib", backend_kwargs={"indexpath": ""}) as ds:
        assert np.array_equal(np.asarray(data.values[3:, :, 1]), ds.t2m.values.reshape(3, 12))
    assert data.coords[5].tolist() == [51.75, 0.25]
    assert np.asarray(data.adj).sum() == 2 * (3 * 3 + 2 * 4)       # 4-neighbour grid, both directions
    assert "v10, msl, sp, tp are not in" in capsys.readouterr().err  # the absent paper defaults are named
    # the default target (u10 = 10U, the paper's) and a box of the grid with a stride
    folder = prepare_dataset("era5", src, data_root=tmp_path / "data", bbox="51.5,52,0.25,0.75", stride=2)
    data = STData.load(folder)
    assert data.targets == [0] and data.meta["channels"][0] == "u10"
    assert data.coords.tolist() == [[52.0, 0.25], [52.0, 0.75], [51.5, 0.25], [51.5, 0.75]]


def _netcdf(path: Path, times, variables: dict, lat, lon, level=None) -> None:
    coords = {"valid_time": pd.DatetimeIndex(times), "latitude": lat, "longitude": lon}
    dims = ("valid_time", "latitude", "longitude")
    if level is not None:
        coords["pressure_level"] = level
        dims = ("valid_time", "pressure_level", "latitude", "longitude")
    ds = xr.Dataset({k: (dims, v) for k, v in variables.items()}, coords=coords)
    ds.to_netcdf(path)


@needs_xarray
def test_cams_netcdf_duplicates_levels_and_wrapped_longitudes(tmp_path, capsys):
    lat = np.array([10.0, 5.0, 0.0])
    lon = np.array([0.0, 90.0, 180.0, 270.0])                      # a global 0..360 grid
    rng = np.random.default_rng(1)
    times = pd.date_range("2021-01-01", periods=6, freq="3h")
    co = rng.uniform(1e-7, 2e-7, (6, 3, 4))
    go3 = rng.uniform(1e-8, 2e-8, (6, 2, 3, 4))
    _netcdf(tmp_path / "cams_a.nc", times[:4], {"co": co[:4]}, lat, lon)
    _netcdf(tmp_path / "cams_b.nc", times[3:], {"co": co[3:] * 0 + 1.0}, lat, lon)   # step 3 twice
    _netcdf(tmp_path / "cams_o3.nc", times, {"go3": go3}, lat, lon, level=[500, 850])
    folder = prepare_dataset("cams", tmp_path, data_root=tmp_path / "data", bbox="0,10,-100,5")
    data = STData.load(folder)
    assert data.meta["channels"] == ["co", "go3_500", "go3_850"] and data.targets == [0]
    assert "dropped 1 duplicate time steps" in capsys.readouterr().err
    values = np.asarray(data.values)
    assert np.allclose(values[3, :, 0], co[3][:, [3, 0]].ravel().astype(np.float32))   # first file wins
    assert np.allclose(values[4, :, 0], 1.0)
    assert data.coords[:2].tolist() == [[10.0, -90.0], [10.0, 0.0]]     # 270 -> -90, box across 0
    assert np.allclose(values[:, 0, 2], go3[:, 1, 0, 3])
    assert data.meta["freq_minutes"] == 180


@needs_xarray
def test_weather_options_are_checked(tmp_path, capsys):
    lat, lon = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    _netcdf(tmp_path / "x.nc", pd.date_range("2021-01-01", periods=3, freq="h"),
            {"t2m": np.ones((3, 2, 2))}, lat, lon)
    base = ["prepare", "era5", "--source", str(tmp_path / "x.nc"), "--data-dir", str(tmp_path / "d")]
    assert "default target u10 is not in x.nc (it has t2m)" in _one_error(capsys, base)
    assert "'nope' is not in x.nc" in _one_error(capsys, base + ["--target", "nope"])
    assert "--bbox" in _one_error(capsys, base + ["--target", "t2m", "--bbox", "1,2,3"])
    assert "holds no grid point" in _one_error(capsys, base + ["--target", "t2m", "--bbox", "40,50,3,4"])
    assert "--stride" in _one_error(capsys, base + ["--target", "t2m", "--stride", "0"])
    assert "--freq do(es) not apply to dataset era5" in _one_error(capsys, base + ["--freq", "15min"])


def test_a_missing_formats_extra_names_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "xarray", None)            # as if not installed
    (tmp_path / "x.grib").write_bytes(b"GRIB")
    line = _one_error(capsys, ["prepare", "era5", "--source", str(tmp_path / "x.grib"),
                               "--data-dir", str(tmp_path / "d")])
    assert 'pip install "stbench[formats]"' in line
    monkeypatch.setitem(sys.modules, "h5py", None)
    monkeypatch.setitem(sys.modules, "tables", None)
    (tmp_path / "ca_his_raw_2019.h5").write_bytes(b"\x89HDF")
    pd.DataFrame({"ID": [1], "Lat": [34.0], "Lng": [-118.0]}).to_csv(tmp_path / "ca_meta.csv", index=False)
    line = _one_error(capsys, ["prepare", "ca", "--source", str(tmp_path), "--data-dir", str(tmp_path / "d")])
    assert 'pip install "stbench[formats]"' in line


def test_era5_release_format_still_works(tmp_path):
    from tests.test_data_sources import _write_release
    series = np.random.default_rng(0).normal(size=(40, 4, 2)).astype(np.float32)
    _write_release(tmp_path / "rel", series)
    prepare_dataset("era5", tmp_path / "rel", data_root=tmp_path)
    data = load_dataset("era5", data_root=tmp_path)
    assert np.array_equal(np.asarray(data.values), series) and data.meta["channels"][0] == "wind_speed"
    with pytest.raises(UserError, match="apply to native GRIB/NetCDF files"):
        prepare_dataset("era5", tmp_path / "rel", data_root=tmp_path, target="u10")


@needs_xarray
def test_shared_era5_grib_equals_the_derived_npz(shared_data, tmp_path):
    from stbench.data.prepare import prepare_era5_uk
    grib = shared_data / "ERA5-UK-T2M" / "era5-2mt-2019-03-uk.grib"
    folder = prepare_dataset("era5", grib, data_root=tmp_path, variables="2t")
    native = STData.load(folder)
    derived = prepare_era5_uk(shared_data / "ERA5-UK-T2M")
    assert native.shape == derived.shape == (744, 1617, 1)
    assert np.array_equal(np.asarray(native.values), derived.values)
    assert np.array_equal(native.coords, derived.coords) and np.array_equal(native.adj, derived.adj)
    assert np.array_equal(native.timestamps, derived.timestamps)
    assert native.meta["freq_minutes"] == derived.meta["freq_minutes"] == 60


# ---------------------------------------------------------------------------------------- LargeST
def _largest_files(folder: Path, steps: int = 24) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """ca_his_raw_2019.h5 (pandas to_hdf, key t), ca_meta.csv and ca_rn_adj.npy, LargeST's layout."""
    pytest.importorskip("tables")
    rng = np.random.default_rng(2)
    districts = [4, 4, 11, 7, 12, 4, 8, 3]
    counties = ["Alameda", "Marin", "San Diego", "Los Angeles", "Orange", "Santa Clara", "Riverside", "Yolo"]
    ids = [400001 + 17 * i for i in range(len(districts))]
    meta = pd.DataFrame({"ID": ids, "Lat": 33 + rng.random(8), "Lng": -118 - rng.random(8),
                         "District": districts, "County": counties, "Fwy": "I-5", "Lanes": 3,
                         "Type": "Mainline", "Direction": "N", "ID2": range(8)})
    order = rng.permutation(8)                        # the h5 columns need not follow the meta order
    values = rng.uniform(0, 400, (steps, 8))
    values[5, 2] = np.nan
    values[6:9, 1] = np.nan                           # a whole 15-minute bin missing for sensor 1
    frame = pd.DataFrame(values[:, order], columns=[str(ids[i]) for i in order],
                         index=pd.date_range("2019-01-01", periods=steps, freq="5min"))
    frame.to_hdf(folder / "ca_his_raw_2019.h5", key="t", mode="w")
    meta.to_csv(folder / "ca_meta.csv", index=False)
    adj = rng.random((8, 8)).astype(np.float32)
    np.save(folder / "ca_rn_adj.npy", adj)
    return pd.DataFrame(values, columns=ids, index=frame.index), meta, adj


def test_largest_ca_and_district_cuts_with_15_minute_means(tmp_path):
    src = tmp_path / "largest"
    src.mkdir()
    values, meta, adj = _largest_files(src)
    ca = STData.load(prepare_dataset("ca", src, data_root=tmp_path / "d"))
    assert ca.shape == (24, 8, 1) and ca.meta["freq_minutes"] == 5 and ca.meta["mask_zeros"] is True
    expected = np.nan_to_num(values.to_numpy(), nan=0.0).astype(np.float32)
    assert np.array_equal(np.asarray(ca.values)[..., 0], expected)
    assert not ca.mask[5, 2, 0] and ca.mask.sum() == ca.mask.size - 4
    assert np.array_equal(np.asarray(ca.adj), adj) and ca.coords[3, 0] == meta.Lat[3]
    gba = STData.load(prepare_dataset("gba", src, data_root=tmp_path / "d", freq="15min"))
    keep = [0, 1, 5]                                   # district 4
    assert gba.shape == (8, 3, 1) and gba.meta["sensor_ids"] == [str(meta.ID[i]) for i in keep]
    assert gba.meta["freq_minutes"] == 15 and str(gba.timestamps[1]) == "2019-01-01T00:15:00"
    means = values.to_numpy()[:, keep].reshape(8, 3, 3)
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning, match="Mean of empty slice"):
        want = np.nanmean(means, axis=1)
    assert np.allclose(np.asarray(gba.values)[..., 0][np.isfinite(want)], want[np.isfinite(want)], rtol=1e-6)
    assert not gba.mask[2, 1, 0] and gba.mask[1, 1, 0]  # bin 6..8 of sensor 1 had no reading
    assert np.array_equal(np.asarray(gba.adj), adj[np.ix_(keep, keep)])
    sd = STData.load(prepare_dataset("sd", src, data_root=tmp_path / "d"))
    gla = STData.load(prepare_dataset("gla", src / "ca_his_raw_2019.h5", data_root=tmp_path / "d"))
    assert sd.shape[1] == 1 and gla.shape[1] == 3 and gla.meta["area"]["rule"] == "District in [7, 8, 12]"


def test_largest_errors_are_one_line(tmp_path, capsys):
    src = tmp_path / "largest"
    src.mkdir()
    base = ["prepare", "gba", "--source", str(src), "--data-dir", str(tmp_path / "d")]
    assert "no LargeST history file" in _one_error(capsys, base)
    _largest_files(src)
    assert "not a multiple of the files' 5-minute steps" in _one_error(capsys, base + ["--freq", "7min"])
    pd.read_csv(src / "ca_meta.csv").drop(columns=["Lat"]).to_csv(src / "ca_meta.csv", index=False)
    assert "has no column(s) ['Lat']" in _one_error(capsys, base)


# ---------------------------------------------------------------------------------------- UrbanEV
def test_urbanev_tables(tmp_path):
    rng = np.random.default_rng(3)
    zones = ["102", "104", "105"]
    index = pd.date_range("2022-09-01", periods=30, freq="h").strftime("%Y-%m-%d %H:%M:%S")
    tables = {}
    for name in ("volume", "duration", "occupancy", "e_price", "s_price"):
        table = pd.DataFrame(rng.uniform(0, 50, (30, 3)), columns=zones, index=index)
        table.index.name = "time"
        if name == "volume":
            table.iloc[0, 0] = 0.0
        tables[name] = table
        table.to_csv(tmp_path / f"{name}.csv")
    pd.DataFrame([[1, 1, 0], [1, 1, 1], [0, 1, 1]], columns=zones).to_csv(tmp_path / "adj.csv", index=False)
    pd.DataFrame([[0, 900, 2000], [900, 0, 1500], [2000, 1500, 0]], columns=zones).to_csv(
        tmp_path / "distance.csv", index=False)
    pd.DataFrame({"station_id": [1, 2, 3, 4], "longitude": [113.8, 113.9, 114.0, 114.1],
                  "latitude": [22.7, 22.6, 22.5, 22.4], "charge_count": [5, 6, 7, 8],
                  "TAZID": [102, 102, 104, 105], "area": 1.0, "perimeter": 1.0}).to_csv(
        tmp_path / "inf.csv", index=False)
    data = STData.load(prepare_dataset("urbanev", tmp_path, data_root=tmp_path / "d"))
    assert data.shape == (30, 3, 5) and data.meta["channels"][0] == "volume" and data.targets == [0]
    assert data.meta["mask_zeros"] is False and data.values[0, 0, 0] == 0
    assert np.allclose(np.asarray(data.values)[:, :, 2], tables["occupancy"].to_numpy())
    assert np.array_equal(np.asarray(data.adj), [[1, 1, 0], [1, 1, 1], [0, 1, 1]])
    assert np.allclose(data.coords[0], [22.65, 113.85]) and data.meta["freq_minutes"] == 60


# ----------------------------------------------------------------------------------- --from files
def _values(steps=60, n=5, c=1, seed=4):
    return np.random.default_rng(seed).uniform(1, 9, (steps, n, c)).astype(np.float32)


def _write_csv(path: Path, values2d: np.ndarray, header=True, times=True, start="2024-01-01"):
    stamps = pd.date_range(start, periods=len(values2d), freq="5min")
    with open(path, "w") as fh:
        if header:
            fh.write(",".join((["time"] if times else []) + [f"s{i}" for i in range(values2d.shape[1])]) + "\n")
        for stamp, row in zip(stamps, values2d):
            cells = ["" if np.isnan(v) else repr(float(v)) for v in row]
            fh.write(",".join(([str(stamp)] if times else []) + cells) + "\n")


@pytest.mark.parametrize("kind", ["npy", "npz", "csv", "nc"])
def test_from_round_trip(tmp_path, capsys, kind):
    values = _values()
    src = tmp_path / f"values.{kind}"
    extra = []
    if kind == "npy":
        np.save(src, values)
        extra = ["--freq", "5min"]
    elif kind == "npz":
        np.savez_compressed(src, data=values, timestamps=np.arange(60) * 300 + 1_700_000_000)
    elif kind == "csv":
        values[7, 2, 0] = np.nan
        _write_csv(src, values[..., 0])
    else:
        if xr is None:
            pytest.skip('needs the formats extra: pip install "stbench[formats]"')
        grid = values.reshape(60, 1, 5)
        _netcdf(src, pd.date_range("2024-01-01", periods=60, freq="5min"), {"speed": grid},
                np.array([45.0]), np.arange(5.0))
    np.save(tmp_path / "adj.npy", np.eye(5))
    argv = ["prepare", "mydata", "--from", str(src), "--data-dir", str(tmp_path / "d"), "--mask-zeros", "no"]
    if kind != "nc":
        argv += ["--adj", str(tmp_path / "adj.npy")]
    assert main(argv + extra) == 0
    data = load_dataset("mydata", data_root=tmp_path / "d")
    assert data.shape == (60, 5, 1) and data.meta["mask_zeros"] is False and data.meta["freq_minutes"] == 5
    if kind == "csv":
        assert not data.mask[7, 2, 0] and data.values[7, 2, 0] == 0
        assert data.meta["location_ids"] == [f"s{i}" for i in range(5)]
        values[7, 2, 0] = 0
    assert np.allclose(np.asarray(data.values), values)
    assert data.adj is not None and data.adj.shape == (5, 5)
    if kind == "nc":
        assert data.coords[:, 1].tolist() == [0, 1, 2, 3, 4] and data.meta["channels"] == ["speed"]
    if kind in ("npz", "csv", "nc"):
        assert data.timestamps is not None and len(data.timestamps) == 60
    assert "mydata --from" in data.meta["prepare_command"]


def test_from_csv_written_by_pandas_with_numeric_zone_ids(tmp_path):
    table = pd.DataFrame(_values(n=3)[..., 0], columns=["102", "104", "105"],
                         index=pd.date_range("2022-09-01", periods=60, freq="h"))
    table.to_csv(tmp_path / "volume.csv")                    # header ",102,104,105"
    prepare_from("zones", tmp_path / "volume.csv", tmp_path / "d", mask_zeros="no")
    data = load_dataset("zones", data_root=tmp_path / "d")
    assert data.meta["location_ids"] == ["102", "104", "105"] and data.meta["freq_minutes"] == 60
    assert np.allclose(np.asarray(data.values)[..., 0], table.to_numpy())
    assert str(data.timestamps[0]) == "2022-09-01T00:00:00"


def test_from_stacks_files_as_channels_and_picks_targets(tmp_path):
    a, b = _values(seed=1)[..., 0], _values(seed=2)[..., 0]
    np.save(tmp_path / "flow.npy", a)
    np.save(tmp_path / "speed.npy", b)
    files = f"{tmp_path / 'flow.npy'},{tmp_path / 'speed.npy'}"
    prepare_from("stacked", files, tmp_path / "d", target="speed", mask_zeros="no",
                 timestamps=None, coords=None)
    data = load_dataset("stacked", data_root=tmp_path / "d")
    assert data.meta["channels"] == ["flow", "speed"] and data.targets == [1]
    assert np.array_equal(np.asarray(data.values)[..., 1], b)


@pytest.mark.parametrize("case,expected", [
    ("ragged", "line 4 has 4 fields but line 1 has 6"),
    ("nan_column", "have no reading at any step (first: location 's3' channel 'values')"),
    ("adj_size", "adjacency of shape (4, 4) for 5 locations: expected (5, 5)"),
    ("not_increasing", "timestamps are not increasing at step 3"),
    ("zeros", "25.00% of the target readings of bad are 0: say what a 0 means with --mask-zeros yes"),
    ("bad_cell", "has a value that is not a number"),
    ("timestamps_count", "59 timestamps for 60 steps"),
    ("bad_name", "dataset name 'Bad Name' must be lower-case"),
    ("registered", "pems08 is a registered dataset"),
    ("coords_range", "coordinates must be finite latitude"),
    ("unknown_type", "unknown file type '.xlsx'"),
    ("target", "--target 'nope' is not a channel"),
])
def test_malformed_from_input_is_one_line_exit_2(tmp_path, capsys, case, expected):
    values = _values()[..., 0]
    src = tmp_path / "values.csv"
    name, extra = "bad", ["--mask-zeros", "no"]
    if case == "ragged":
        _write_csv(src, values)
        lines = src.read_text().splitlines()
        lines[3] = ",".join(lines[3].split(",")[:4])
        src.write_text("\n".join(lines) + "\n")
    elif case == "nan_column":
        values[:, 3] = np.nan
        _write_csv(src, values)
    elif case == "adj_size":
        _write_csv(src, values)
        np.savetxt(tmp_path / "adj.csv", np.eye(4), delimiter=",")
        extra += ["--adj", str(tmp_path / "adj.csv")]
    elif case == "not_increasing":
        _write_csv(src, values)
        lines = src.read_text().splitlines()
        lines[3], lines[4] = lines[4], lines[3]
        src.write_text("\n".join(lines) + "\n")
    elif case == "zeros":
        values[:15] = 0
        _write_csv(src, values)
        extra = []
    elif case == "bad_cell":
        _write_csv(src, values)
        lines = src.read_text().splitlines()
        lines[9] = lines[9].rsplit(",", 1)[0] + ",abc"
        src.write_text("\n".join(lines) + "\n")
    elif case == "timestamps_count":
        _write_csv(src, values, times=False)
        (tmp_path / "t.txt").write_text("\n".join(str(1_700_000_000 + 300 * i) for i in range(59)))
        extra += ["--timestamps", str(tmp_path / "t.txt")]
    elif case == "bad_name":
        _write_csv(src, values)
        name = "Bad Name"
    elif case == "registered":
        _write_csv(src, values)
        name = "pems08"
    elif case == "coords_range":
        _write_csv(src, values)
        pd.DataFrame({"lat": [10, 20, 95, 0, 1], "lon": [1, 2, 3, 4, 5]}).to_csv(tmp_path / "c.csv", index=False)
        extra += ["--coords", str(tmp_path / "c.csv")]
    elif case == "unknown_type":
        src = tmp_path / "values.xlsx"
        src.write_text("x")
    elif case == "target":
        _write_csv(src, values)
        extra += ["--target", "nope"]
    line = _one_error(capsys, ["prepare", name, "--from", str(src), "--data-dir", str(tmp_path / "d"), *extra])
    assert expected in line, line
    assert not (tmp_path / "d" / name).exists()                      # nothing half-written is left
    assert not [p for p in (tmp_path / "d").glob(".*")] if (tmp_path / "d").exists() else True


def test_a_refused_preparation_keeps_the_earlier_one(tmp_path, capsys):
    values = _values()[..., 0]
    np.save(tmp_path / "v.npy", values)
    assert main(["prepare", "keep", "--from", str(tmp_path / "v.npy"), "--data-dir", str(tmp_path / "d")]) == 0
    before = (tmp_path / "d" / "keep" / "meta.json").read_text()
    values[:10] = 0
    np.save(tmp_path / "v.npy", values)
    assert "of the target readings of keep are 0" in _one_error(
        capsys, ["prepare", "keep", "--from", str(tmp_path / "v.npy"), "--data-dir", str(tmp_path / "d")])
    assert (tmp_path / "d" / "keep" / "meta.json").read_text() == before


# -------------------------------------------------------------------------------------- discovery
def test_prepared_folders_are_discovered_listed_and_run(tmp_path, capsys, monkeypatch):
    steps = 400
    t = np.arange(steps)[:, None]
    values = 50 + 10 * np.sin(2 * np.pi * t / 24 + np.arange(4)) + np.random.default_rng(0).normal(0, 1, (steps, 4))
    np.save(tmp_path / "v.npy", values.astype(np.float32))
    data_dir = tmp_path / "mine"
    assert main(["prepare", "found-me", "--from", str(tmp_path / "v.npy"), "--data-dir", str(data_dir),
                 "--freq", "1h"]) == 0
    monkeypatch.setattr(DATASETS, "_entries", {k: v for k, v in DATASETS._entries.items() if k != "found-me"})
    capsys.readouterr()
    assert main(["list", "datasets", "--json", "--data-dir", str(data_dir)]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["found-me"]["kind"] == "prepared folder" and rows["found-me"]["family"] == "prepared"
    monkeypatch.setattr(DATASETS, "_entries", {k: v for k, v in DATASETS._entries.items() if k != "found-me"})
    code = main(["run", "--dataset", "found-me", "--methods", "full", "--preset", "smoke", "--quiet",
                 "--data-dir", str(data_dir), "--results", str(tmp_path / "results"), "--epochs", "1",
                 "--model", "mlp"])
    assert code == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (tmp_path / "results" / "runs.jsonl").read_text().splitlines()]
    assert records[0]["dataset"] == "found-me" and records[0]["status"] == "ok"


def test_unknown_dataset_points_to_both_ways_of_adding_data(tmp_path, capsys):
    line = _one_error(capsys, ["prepare", "nothing-here", "--source", str(tmp_path)])
    assert "--from" in line and "plugin" in line
    discover_datasets(tmp_path)                      # an empty or missing folder finds nothing
    assert discover_datasets(tmp_path / "absent") == []


# ---------------------------------------------------------------------------------------- plugins
PLUGIN = '''
"""A minimal stbench dataset plugin (the README's example)."""
from pathlib import Path

import numpy as np

from stbench.data.catalog import DatasetSpec, register_dataset
from stbench.data.core import STData


def prepare_my_sensors(source: Path) -> STData:
    values = np.loadtxt(Path(source) / "readings.csv", delimiter=",", dtype=np.float32)   # (T, N)
    coords = np.loadtxt(Path(source) / "sensors.csv", delimiter=",")                       # (N, 2) lat, lon
    meta = {"channels": ["flow"], "targets": [0], "freq_minutes": 5, "mask_zeros": True,
            "description": "my loop detectors, 5-minute flow"}
    return STData(values=values[:, :, None], coords=coords, meta=meta)


register_dataset(DatasetSpec("my-sensors", "my loop detectors (plugin)", prepare=prepare_my_sensors,
                             source_hint="a folder with readings.csv and sensors.csv",
                             defaults={"batch_size": 32, "split": [0.7, 0.1, 0.2]}), family="traffic")
'''


def test_plugin_dataset_loads_through_its_entry_point(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "my_stbench_plugin").mkdir(parents=True)
    (site / "my_stbench_plugin" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    dist = site / "my_stbench_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-stbench-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[stbench.datasets]\nmy-sensors = my_stbench_plugin\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(DATASETS, "_plugins_loaded", False)
    assert "my-sensors" in DATASETS.names()          # the registry imported the entry point
    src = tmp_path / "raw"
    src.mkdir()
    np.savetxt(src / "readings.csv", _values(n=3)[..., 0], delimiter=",")
    np.savetxt(src / "sensors.csv", [[34.0, -118.2], [34.1, -118.3], [34.2, -118.1]], delimiter=",")
    assert main(["prepare", "my-sensors", "--source", str(src), "--data-dir", str(tmp_path / "d")]) == 0
    data = load_dataset("my-sensors", data_root=tmp_path / "d")
    assert data.shape == (60, 3, 1) and data.meta["mask_zeros"] and data.coords[0].tolist() == [34.0, -118.2]
    sys.modules.pop("my_stbench_plugin", None)


def test_every_registered_dataset_states_mask_zeros_in_its_release_options():
    for entry in DATASETS.entries():
        prepare = entry.obj.prepare
        if isinstance(prepare, partial) and "release" in prepare.keywords:
            assert isinstance(prepare.keywords["release"]["mask_zeros"], bool), entry.name


# ------------------------------------------------------------------------------ synthetic to disk
def test_synthetic_written_to_disk_equals_the_generator(tmp_path):
    from stbench.data.synthetic import write_synthetic
    knobs = dict(locations=12, steps=600, features=4, missing=0.05)
    folder = write_synthetic("synthetic-traffic", "traffic-disk", tmp_path, **knobs)
    disk = STData.load(folder)
    memory = load_dataset("synthetic-traffic", **knobs)
    assert np.array_equal(np.asarray(disk.values), memory.values)
    assert np.array_equal(np.asarray(disk.mask), memory.mask) and disk.meta["mask_zeros"] is True
    assert main(["prepare", "w", "--synthetic", "synthetic-weather", "--size", "n_lat=3,n_lon=4,steps=50",
                 "--data-dir", str(tmp_path)]) == 0
    assert load_dataset("w", data_root=tmp_path).shape == (50, 12, 3)


# --------------------------------------------------------------------------------- bounded memory
_PEAK = textwrap.dedent('''
    import json, sys
    from stbench.data.catalog import prepare_from
    from stbench.data.stream import peak_rss_bytes
    import stbench.data.formats, stbench.data.gridded  # noqa: F401 (imports before the baseline)
    base = peak_rss_bytes()
    prepare_from("big", sys.argv[1], sys.argv[2], mask_zeros="no", freq="5min")
    print(json.dumps({"base": base, "peak": peak_rss_bytes()}))
''')


def _peak_of_streamed_prepare(tmp_path, steps: int, n: int) -> tuple[int, int, int]:
    src = tmp_path / "big.npy"
    out = np.lib.format.open_memmap(src, mode="w+", dtype=np.float32, shape=(steps, n))
    rng = np.random.default_rng(0)
    for start in range(0, steps, 2048):
        out[start:start + 2048] = rng.uniform(1, 2, (min(2048, steps - start), n))
    out.flush()
    del out
    result = subprocess.run([sys.executable, "-c", _PEAK, str(src), str(tmp_path / "d")], capture_output=True,
                            text=True, timeout=600, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert result.returncode == 0, result.stderr
    numbers = json.loads(result.stdout.strip().splitlines()[-1])
    return numbers["base"], numbers["peak"], steps * n * 4


def test_streamed_prepare_peak_memory_is_within_twice_the_output(tmp_path):
    base, peak, output = _peak_of_streamed_prepare(tmp_path, steps=25_000, n=1_000)    # 100 MB out
    assert peak - base <= 2 * output, (base, peak, output)
    assert STData.load(tmp_path / "d" / "big").shape == (25_000, 1_000, 1)


@pytest.mark.slow
def test_streamed_prepare_memory_does_not_grow_with_the_output(tmp_path):
    base, peak, output = _peak_of_streamed_prepare(tmp_path, steps=200_000, n=2_000)   # 1.6 GB out
    assert peak - base <= output / 4, (base, peak, output)
