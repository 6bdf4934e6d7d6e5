"""Data sources: built-in generators, release/PEMS converters and the shared real datasets."""
import os
from pathlib import Path

import numpy as np
import pytest

from stbench import UserError
from stbench.data import STData, load_dataset, prepare_dataset
from stbench.data.prepare import prepare_charged, prepare_era5_uk, prepare_pems, prepare_release
from stbench.data.synthetic import synthetic_traffic, synthetic_weather

SHARED = os.environ.get("STBENCH_SHARED_DATA")
needs_shared = pytest.mark.skipif(not SHARED, reason="set STBENCH_SHARED_DATA=../shared/data to run")


# ------------------------------------------------------------------------------------------ generators
def _autocorr(x: np.ndarray, lag: int) -> float:
    x = x - x.mean(axis=0)
    return float((x[lag:] * x[:-lag]).sum() / (x * x).sum())


def test_weather_shapes_and_determinism():
    a = synthetic_weather(seed=3, n_lat=5, n_lon=7, steps=100, features=4)
    b = synthetic_weather(seed=3, n_lat=5, n_lon=7, steps=100, features=4)
    c = synthetic_weather(seed=4, n_lat=5, n_lon=7, steps=100, features=4)
    assert a.shape == (100, 35, 4) and a.values.dtype == np.float32
    assert np.isfinite(a.values).all() and a.values[..., 0].min() > 200
    assert np.array_equal(a.values, b.values) and not np.array_equal(a.values, c.values)
    assert a.meta["data_sha256"] == b.meta["data_sha256"] != c.meta["data_sha256"]
    assert a.adj.shape == (35, 35) and a.coords.shape == (35, 2) and len(a.timestamps) == 100
    assert a.adj.sum() == 2 * (5 * 6 + 4 * 7)        # 4-neighbour grid edges, both directions
    assert a.meta["channels"][0] == "temperature" and a.meta["source"]["generator"] == "synthetic_weather"


def test_weather_all_features_and_diurnal_cycle():
    data = synthetic_weather(seed=0, steps=24 * 20, features=8)
    assert data.shape[-1] == 8 and np.isfinite(data.values).all()
    target = data.values[..., 0]
    assert _autocorr(target, 24) > _autocorr(target, 12)


def test_weather_many_locations():
    data = synthetic_weather(seed=1, n_lat=50, n_lon=50, steps=30)
    assert data.shape == (30, 2500, 3) and np.isfinite(data.values).all()


def test_traffic_shapes_mask_and_determinism():
    a = synthetic_traffic(seed=5, locations=80, steps=2016, features=5, missing=0.05)
    b = synthetic_traffic(seed=5, locations=80, steps=2016, features=5, missing=0.05)
    c = synthetic_traffic(seed=6, locations=80, steps=2016, features=5, missing=0.05)
    assert a.shape == (2016, 80, 5) and a.values.dtype == np.float32 and np.isfinite(a.values).all()
    assert np.array_equal(a.values, b.values) and np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.values, c.values)
    lost = 1.0 - a.mask[..., 0].mean()
    assert abs(lost - 0.05) < 0.01
    assert (a.values[~a.mask] == 0).all() and a.mask[..., 3:].all()   # calendar features always seen
    observed = a.values[..., 0][a.mask[..., 0]]
    assert observed.min() >= 3.0 and 50 < observed.mean() < 70
    assert np.array_equal(a.adj, a.adj.T) and (a.adj.sum(axis=1) > 0).all()


def test_traffic_missing_comes_in_bursts():
    data = synthetic_traffic(seed=0, locations=40, steps=2016, missing=0.03)
    lost = ~data.mask[..., 0]
    starts = lost[1:] & ~lost[:-1]
    mean_run = lost.sum() / max(1, starts.sum() + lost[0].sum())
    assert mean_run > 2.0


def test_traffic_rush_hour_is_slower_on_weekdays():
    data = synthetic_traffic(seed=2, locations=50, steps=2016, missing=0.0)
    assert data.mask is None
    speed = data.values[..., 0].reshape(7, 288, 50)            # 2020-01-01 is a Wednesday
    weekday_peak = speed[0, 17 * 12:18 * 12].mean()
    weekday_night = speed[0, 2 * 12:3 * 12].mean()
    saturday_peak = speed[3, 17 * 12:18 * 12].mean()
    assert weekday_peak < weekday_night - 3 and weekday_peak < saturday_peak


def test_generator_bad_knobs():
    with pytest.raises(UserError):
        synthetic_traffic(features=9)
    with pytest.raises(UserError):
        synthetic_traffic(missing=1.5)
    with pytest.raises(UserError):
        synthetic_weather(steps=1)


def test_builtins_through_the_registry():
    data = load_dataset("synthetic-traffic", locations=10, steps=100)
    assert data.name == "synthetic-traffic" and data.shape == (100, 10, 1)


# --------------------------------------------------------------------------------- release format
def _write_release(folder: Path, series: np.ndarray, seq_len=4, horizon=3, fy=None, compressed=True):
    """Windows first (stride 1), then a chronological split with DCRNN-style rounding."""
    fy = series.shape[-1] if fy is None else fy
    m = series.shape[0] - seq_len - horizon + 1
    x = np.stack([series[i:i + seq_len] for i in range(m)])
    y = np.stack([series[i + seq_len:i + seq_len + horizon, :, :fy] for i in range(m)])
    n_test, n_train = round(m * 0.2), round(m * 0.6)
    bounds = {"train": (0, n_train), "val": (n_train, m - n_test), "test": (m - n_test, m)}
    save = np.savez_compressed if compressed else np.savez
    folder.mkdir(parents=True, exist_ok=True)
    for name, (lo, hi) in bounds.items():
        save(folder / f"{name}.npz", x=x[lo:hi], y=y[lo:hi])
    return bounds


@pytest.mark.parametrize("compressed", [True, False])
def test_release_round_trip(tmp_path, compressed):
    series = np.random.default_rng(0).normal(size=(61, 5, 2)).astype(np.float32)
    bounds = _write_release(tmp_path, series, compressed=compressed)
    data = prepare_release(tmp_path, target_name="flow", mask_zeros=True)
    assert data.values.shape == series.shape and data.mask is None
    assert np.array_equal(data.values, series)
    assert data.meta["source_split_windows"] == {k: hi - lo for k, (lo, hi) in bounds.items()}
    assert set(data.meta["source"]["files"]) == {"train.npz", "val.npz", "test.npz"}
    assert data.meta["channels"][0] == "flow"


def test_release_streams_in_small_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr("stbench.data.prepare._CHUNK_BYTES", 200)   # a window or two per block
    series = np.random.default_rng(6).normal(size=(70, 4, 2)).astype(np.float32)
    _write_release(tmp_path, series, seq_len=3, horizon=5)
    assert np.array_equal(prepare_release(tmp_path, mask_zeros=False).values, series)


def test_release_target_only_in_y_masks_the_unknown_tail(tmp_path):
    series = np.random.default_rng(1).normal(size=(40, 3, 2)).astype(np.float32)
    _write_release(tmp_path, series, seq_len=5, horizon=4, fy=1)
    data = prepare_release(tmp_path, mask_zeros=False)
    assert np.array_equal(data.values[..., 0], series[..., 0])
    assert np.array_equal(data.values[:-4, :, 1], series[:-4, :, 1])
    assert not data.mask[-4:, :, 1].any() and data.mask[:-4].all() and data.mask[..., 0].all()


def test_release_nan_becomes_missing(tmp_path):
    series = np.random.default_rng(2).normal(size=(30, 3, 1)).astype(np.float32)
    series[7, 1, 0] = np.nan
    _write_release(tmp_path, series)
    data = prepare_release(tmp_path, mask_zeros=False)
    assert not data.mask[7, 1, 0] and data.values[7, 1, 0] == 0 and data.mask.sum() == data.mask.size - 1


def test_release_rejects_shuffled_windows(tmp_path):
    series = np.random.default_rng(3).normal(size=(80, 3, 1)).astype(np.float32)
    _write_release(tmp_path, series)
    with np.load(tmp_path / "train.npz") as npz:
        x, y = npz["x"], npz["y"]
    order = np.random.default_rng(0).permutation(len(x))
    np.savez(tmp_path / "train.npz", x=x[order], y=y[order])
    with pytest.raises(UserError, match="stride-1"):
        prepare_release(tmp_path, mask_zeros=False)


def test_release_rejects_a_gap_between_splits(tmp_path):
    series = np.random.default_rng(4).normal(size=(80, 3, 1)).astype(np.float32)
    _write_release(tmp_path, series)
    with np.load(tmp_path / "val.npz") as npz:
        np.savez(tmp_path / "val.npz", x=npz["x"][1:], y=npz["y"][1:])
    with pytest.raises(UserError, match="does not continue train.npz"):
        prepare_release(tmp_path, mask_zeros=False)


def test_release_rejects_a_target_that_is_not_channel_zero(tmp_path):
    series = np.random.default_rng(5).normal(size=(50, 3, 2)).astype(np.float32)
    _write_release(tmp_path, series)
    for split in ("train", "val", "test"):
        with np.load(tmp_path / f"{split}.npz") as npz:
            np.savez(tmp_path / f"{split}.npz", x=npz["x"], y=npz["y"][..., ::-1])
    with pytest.raises(UserError, match="channel 0"):
        prepare_release(tmp_path, mask_zeros=False)


def test_release_missing_or_corrupt_files(tmp_path):
    with pytest.raises(UserError, match="train.npz not found"):
        prepare_release(tmp_path, mask_zeros=False)
    _write_release(tmp_path, np.zeros((30, 2, 1), np.float32))
    (tmp_path / "val.npz").write_bytes(b"not a zip file")
    with pytest.raises(UserError, match="val.npz") as info:
        prepare_release(tmp_path, mask_zeros=False)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------ PEMS npz
def test_pems_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.uniform(0, 300, size=(50, 6, 3))
    raw[3, 2, 0] = 0.0
    raw[4, 1, 2] = np.nan
    src = tmp_path / "src"
    src.mkdir()
    np.savez(src / "PEMS08.npz", data=raw)
    (src / "PEMS08.csv").write_text("from,to,cost\n0,1,10.5\n1,2,3.0\n4,5,7.7\n")
    folder = prepare_dataset("pems08", src, data_root=tmp_path / "data")
    data = load_dataset("pems08", data_root=tmp_path / "data")
    assert folder.name == "pems08" and data.shape == (50, 6, 3)
    assert data.meta["channels"] == ["flow", "occupancy", "speed"] and data.meta["mask_zeros"]
    assert data.values[3, 2, 0] == 0 and data.mask[3, 2, 0] and not data.mask[4, 1, 2]
    expected = np.where(np.isnan(raw), 0, raw).astype(np.float32)
    assert np.array_equal(np.asarray(data.values), expected)
    assert np.asarray(data.adj).sum() == 3 and data.adj[0, 1] == 1 and data.adj[1, 0] == 0
    assert str(data.timestamps[0]) == "2016-07-01T00:00:00"


def test_pems_folder_needs_exactly_one_npz(tmp_path):
    np.savez(tmp_path / "a.npz", data=np.ones((5, 2, 1)))
    np.savez(tmp_path / "b.npz", data=np.ones((5, 2, 1)))
    with pytest.raises(UserError, match="2 .npz files"):
        prepare_pems(tmp_path)
    with pytest.raises(UserError, match="'data'"):
        np.savez(tmp_path / "a.npz", values=np.ones((5, 2, 1)))
        prepare_pems(tmp_path / "a.npz")


def test_unprepared_paper_dataset_says_how_to_prepare(tmp_path):
    with pytest.raises(UserError, match="stbench prepare gba"):
        load_dataset("gba", data_root=tmp_path)


# ------------------------------------------------------------------------------ shared real datasets
SHARED_CASES = [
    ("los-loop", "LOS-LOOP", (2016, 207, 1)),
    ("sz-taxi", "SZ-TAXI", (2976, 156, 1)),
    ("era5-uk-t2m", "ERA5-UK-T2M", (744, 1617, 1)),
    ("beijing-pm25", "BEIJING-PM25", (8759, 36, 1)),
    ("charged-spo", "CHARGED/SPO", (4392, 47, 8)),
    ("charged-mel", "CHARGED", (4392, 63, 8)),
]


@needs_shared
@pytest.mark.parametrize("name,folder,shape", SHARED_CASES)
def test_shared_dataset_prepares_and_round_trips(tmp_path, name, folder, shape):
    prepare_dataset(name, Path(SHARED) / folder, data_root=tmp_path)
    data = load_dataset(name, data_root=tmp_path)
    assert data.shape == shape and data.name == name
    assert np.isfinite(np.asarray(data.values)).all()
    assert data.adj is not None and data.adj.shape == (shape[1], shape[1])
    assert len(data.timestamps) == shape[0]
    assert data.meta["source"]["files"] and data.meta["freq_minutes"] in (5, 15, 60)
    again = STData.load(tmp_path / name)
    assert np.array_equal(np.asarray(again.values), np.asarray(data.values))


@needs_shared
def test_shared_beijing_missing_fraction(tmp_path):
    prepare_dataset("beijing-pm25", Path(SHARED) / "BEIJING-PM25", data_root=tmp_path)
    data = load_dataset("beijing-pm25", data_root=tmp_path)
    lost = 1.0 - np.asarray(data.mask).mean()
    assert 0.12 < lost < 0.14 and not data.meta["mask_zeros"]
    assert (np.asarray(data.values)[~np.asarray(data.mask)] == 0).all()


@needs_shared
def test_shared_era5_grid_layout():
    data = prepare_era5_uk(Path(SHARED) / "ERA5-UK-T2M")
    with np.load(Path(SHARED) / "ERA5-UK-T2M" / "era5-2mt-2019-03-uk.t2m.derived.npz") as npz:
        grid = npz["t2m"]
    assert np.array_equal(data.values[:, 49 * 3 + 5, 0], grid[:, 3, 5])
    assert data.coords[49 * 3 + 5].tolist() == [57.25, -8.75] and not data.meta["mask_zeros"]


@needs_shared
def test_shared_charged_city_mismatch():
    with pytest.raises(UserError, match="not MEL"):
        prepare_charged(Path(SHARED) / "CHARGED" / "SPO", city="MEL")
