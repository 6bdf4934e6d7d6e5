"""Data integrity: checksums of prepared folders, degenerate targets, explicit mask_zeros, one-line errors."""
import json
import os
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_data
from stbench import UserError
from stbench.cli import main
from stbench.data import STData, load_dataset, prepare_dataset
from stbench.data.catalog import size_knobs
from stbench.data.core import VERIFIED_CACHE
from stbench.data.windows import Scaler, Series, WindowSpec
from stbench.registry import DATASETS


def _one_error_line(capsys, argv) -> str:
    """Run the CLI; it must exit 2 with exactly one ``stbench: error:`` line on stderr."""
    rc = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("stbench: error:"), err
    return lines[0]


def _prepare_pems08(tmp_path: Path, rng_seed: int = 0) -> Path:
    """A prepared pems08 folder (as `stbench prepare pems08` writes it) under tmp_path/data."""
    raw = np.random.default_rng(rng_seed).uniform(1, 300, size=(150, 5, 3))
    raw[4, 1, 2] = np.nan                         # gives the folder a mask.npy too
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    np.savez(src / "PEMS08.npz", data=raw)
    return prepare_dataset("pems08", src, data_root=tmp_path / "data")


def _count_hashes(monkeypatch) -> list:
    import stbench.data.core as core

    calls = []
    real = core.file_sha256

    def counting(path, *args, **kwargs):
        calls.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(core, "file_sha256", counting)
    return calls


# ------------------------------------------------------------------------------ 1. checksums on load
def test_changed_values_with_the_old_meta_are_refused(tmp_path):
    folder = _prepare_pems08(tmp_path)
    values = np.load(folder / "data.npy")
    values[10, 2, 0] += 1.0                       # same shape, same meta.json: different data
    np.save(folder / "data.npy", values)
    with pytest.raises(UserError, match=r"data.npy .* does not match the checksum") as info:
        load_dataset("pems08", data_root=tmp_path / "data")
    message = str(info.value)
    assert "\n" not in message and "re-run `stbench prepare pems08 --source" in message


def test_changed_values_are_refused_through_the_cli(tmp_path, capsys):
    folder = _prepare_pems08(tmp_path)
    capsys.readouterr()
    values = np.load(folder / "data.npy")
    np.save(folder / "data.npy", values[::-1].copy())
    line = _one_error_line(capsys, ["run", "--methods", "full", "--dataset", "pems08", "--quiet",
                                    "--data-dir", str(tmp_path / "data"), "--results", str(tmp_path / "r")])
    assert "does not match the checksum" in line and "stbench prepare pems08 --source" in line


def test_changed_or_stray_optional_arrays_are_refused(tmp_path):
    folder = _prepare_pems08(tmp_path)
    meta = json.loads((folder / "meta.json").read_text())
    assert set(meta["optional_sha256"]) == {"mask", "timestamps"}     # no edge list: no adj.npy
    mask = np.load(folder / "mask.npy")
    mask[0, 0, 0] = not mask[0, 0, 0]
    np.save(folder / "mask.npy", mask)
    with pytest.raises(UserError, match="mask.npy .* does not match the checksum"):
        STData.load(folder)
    _prepare_pems08(tmp_path)                      # prepared again: consistent
    STData.load(folder)
    np.save(folder / "coords.npy", np.zeros((5, 2)))   # an array stbench prepare did not write
    with pytest.raises(UserError, match="coords.npy was not written by `stbench prepare`"):
        STData.load(folder)


def test_unchanged_data_loads_and_is_hashed_once(tmp_path, monkeypatch):
    folder = _prepare_pems08(tmp_path)
    (folder / VERIFIED_CACHE).unlink()             # as if prepared by an older stbench
    calls = _count_hashes(monkeypatch)
    first = load_dataset("pems08", data_root=tmp_path / "data")
    assert sorted(calls) == sorted(["data.npy", "mask.npy", "timestamps.npy"])
    calls.clear()
    second = load_dataset("pems08", data_root=tmp_path / "data")
    assert calls == []                             # verified before: size and mtime unchanged
    assert np.array_equal(np.asarray(first.values), np.asarray(second.values))
    stat = (folder / "data.npy").stat()
    os.utime(folder / "data.npy", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    load_dataset("pems08", data_root=tmp_path / "data")
    assert calls == ["data.npy"]                   # a changed mtime means hashing again


def test_prepare_writes_the_cache_so_the_first_load_does_not_hash(tmp_path, monkeypatch):
    _prepare_pems08(tmp_path)
    calls = _count_hashes(monkeypatch)
    load_dataset("pems08", data_root=tmp_path / "data")
    assert calls == []


def test_an_unwritable_cache_only_means_hashing_again(tmp_path, monkeypatch):
    folder = _prepare_pems08(tmp_path)
    (folder / VERIFIED_CACHE).unlink()
    (folder / VERIFIED_CACHE).mkdir()              # cannot be read or replaced, even by root
    calls = _count_hashes(monkeypatch)
    STData.load(folder)
    STData.load(folder)
    assert calls.count("data.npy") == 2
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_a_folder_without_checksums_still_loads(tmp_path):
    folder = tiny_data().save(tmp_path / "tiny")
    meta = json.loads((folder / "meta.json").read_text())
    del meta["data_sha256"], meta["optional_sha256"]
    (folder / "meta.json").write_text(json.dumps(meta))
    assert STData.load(folder).shape == (240, 8, 2)


def test_resaving_without_a_mask_removes_the_stale_mask(tmp_path):
    folder = tiny_data().save(tmp_path / "tiny")
    data = tiny_data(missing=0.0)
    STData(values=data.values, meta=dict(data.meta)).save(folder)
    assert not (folder / "mask.npy").exists() and STData.load(folder).mask is None


# ----------------------------------------------------------------------------- 2. degenerate targets
def _with_constant_channel(channel: int) -> STData:
    data = tiny_data(missing=0.1)
    values = np.array(data.values)
    values[..., channel] = np.where(data.mask[..., channel], 7.5, 0.0)   # constant where observed
    return STData(values=values, mask=data.mask, meta={"name": "flat", "channels": ["a", "b"],
                                                       "targets": [0], "mask_zeros": False})


def test_a_constant_target_channel_is_refused():
    with pytest.raises(UserError, match=r"target channel 0 \(a\) is constant \(7.5\)") as info:
        Series(_with_constant_channel(0), WindowSpec(12, 12))
    assert "\n" not in str(info.value)


def test_a_target_constant_only_over_the_training_steps_is_refused():
    data = tiny_data(missing=0.0)
    values = np.array(data.values)
    values[:144, :, 0] = 3.0                       # training steps: 0.6 * 240
    data = STData(values=values, meta=dict(data.meta, name="flat-train"))
    with pytest.raises(UserError, match="target channel 0 .* over the 144 training steps"):
        Scaler.fit(data, 144)


def test_a_constant_input_channel_is_fine():
    series = Series(_with_constant_channel(1), WindowSpec(12, 12))
    assert series.scaler.std[1] == 1.0
    assert torch.isfinite(series.split("train").batch([0, 1]).x).all()


# ------------------------------------------------------------------------------ 3. explicit mask_zeros
def test_meta_without_mask_zeros_is_refused():
    values = np.ones((10, 2, 1), np.float32)
    with pytest.raises(UserError, match=r"dataset counts: meta has no 'mask_zeros'; state it: true when a 0 "
                                        r"reading means \"missing\""):
        STData(values=values, meta={"name": "counts"})
    with pytest.raises(UserError, match="'mask_zeros' must be true or false, got 'yes'"):
        STData(values=values, meta={"name": "counts", "mask_zeros": "yes"})


def test_every_registered_dataset_states_mask_zeros():
    for entry in DATASETS.entries():
        spec = entry.obj
        if spec.builtin:
            knobs = size_knobs(spec)
            small = {k: v for k, v in {"locations": 4, "n_lat": 2, "n_lon": 2}.items() if k in knobs}
            assert isinstance(spec.generate(steps=50, **small).meta["mask_zeros"], bool), spec.name
        elif isinstance(spec.prepare, partial) and spec.prepare.func.__name__ == "prepare_release":
            assert isinstance(spec.prepare.keywords.get("mask_zeros"), bool), spec.name
        elif isinstance(spec.prepare, partial) and "release" in spec.prepare.keywords:   # native files or release
            assert isinstance(spec.prepare.keywords["release"].get("mask_zeros"), bool), spec.name


def _counts(mask_zeros: bool) -> STData:
    counts = np.random.default_rng(0).poisson(0.4, size=(200, 6, 1)).astype(np.float32)
    return STData(values=counts, meta={"name": "counts", "channels": ["arrivals"], "mask_zeros": mask_zeros})


def test_zero_counts_stay_targets_when_mask_zeros_is_false():
    data = _counts(mask_zeros=False)
    assert (data.values == 0).mean() > 0.6         # zeros are the majority
    series = Series(data, WindowSpec(12, 12))
    batch = series.split("train").batch(list(range(10)))
    assert (batch.y == 0).any() and batch.mask.all()
    assert series.masked_target_share == 0.0
    masked = Series(_counts(mask_zeros=True), WindowSpec(12, 12))
    batch = masked.split("train").batch(list(range(10)))
    assert not batch.mask[batch.y == 0].any()
    assert masked.masked_target_share == pytest.approx(float((data.values == 0).mean()))


def test_masked_target_share_counts_missing_and_masked_zeros_of_the_targets():
    values = np.full((4, 2, 3), 5.0, np.float32)   # 4 steps x 2 locations x targets 0 and 2 = 16 readings
    mask = np.ones(values.shape, bool)
    mask[0, 0, 0] = mask[1, 1, 2] = False          # 2 missing targets
    values[~mask] = 0.0
    values[2, 0, 0] = values[3, 1, 2] = 0.0        # 2 observed zeros in targets
    values[0, 1, 1] = 0.0                          # an input channel: never counted
    mask[1, 0, 1] = False
    meta = {"name": "share", "channels": ["a", "b", "c"], "targets": [0, 2]}
    masking = STData(values=values, mask=mask, meta=dict(meta, mask_zeros=True))
    keeping = STData(values=values, mask=mask, meta=dict(meta, mask_zeros=False))
    assert masking.masked_target_share() == 4 / 16 and keeping.masked_target_share() == 2 / 16
    assert masking.masked_target_share(chunk_bytes=1) == 4 / 16    # one step per chunk: same answer
    series = Series(STData(values=np.tile(values, (20, 1, 1)), mask=np.tile(mask, (20, 1, 1)),
                           meta=dict(meta, mask_zeros=True)), WindowSpec(2, 2))
    assert series.masked_target_share == 4 / 16
    assert series.with_inputs([1]).masked_target_share == 4 / 16


def test_prepare_reports_the_masked_share(tmp_path, capsys):
    raw = np.random.default_rng(0).uniform(1, 300, size=(40, 5, 3))
    raw[:10, :, 0] = 0.0                           # 10 of 40 steps read 0: masked (PEMS masks zeros)
    src = tmp_path / "src"
    src.mkdir()
    np.savez(src / "PEMS08.npz", data=raw)
    prepare_dataset("pems08", src, data_root=tmp_path / "data")
    err = capsys.readouterr().err
    assert "pems08: 25.00% of target readings are masked" in err and "mask_zeros is true" in err


# ---------------------------------------------------------------------------- 4. one-line user errors
def _run_argv(tmp_path, *extra):
    return ["run", "--methods", "full", "--quiet", "--results", str(tmp_path / "results"), *extra]


@pytest.mark.parametrize("dataset,size,expected", [
    ("synthetic-traffic", "n_lat=5", "has no size option(s) n_lat: its knobs (with defaults) are seed=0, locations"),
    ("synthetic-weather", "locations=5", "has no size option(s) locations: its knobs (with defaults) are "
                                         "seed=0, n_lat=12, n_lon=12"),
    ("synthetic-traffic", "steps=abc", "size option steps='abc' must be an integer (default 2016)"),
    ("synthetic-traffic", "missing=high", "size option missing='high' must be a number (default 0.02)"),
    ("synthetic-weather", "steps=1e3", "size option steps=1000.0 must be an integer"),
    ("synthetic-weather", "seed=-1", "seed=-1 is invalid: use an integer >= 0"),
])
def test_bad_size_knobs_are_one_line(tmp_path, capsys, dataset, size, expected):
    line = _one_error_line(capsys, _run_argv(tmp_path, "--dataset", dataset, "--size", size))
    assert expected in line


@pytest.mark.parametrize("content,expected", [
    ("[1, 2, 3]", "meta must be a JSON object (a dict), got list"),
    ('"meta"', "meta must be a JSON object (a dict), got str"),
    ("{not json", "cannot read meta.json (JSONDecodeError"),
    ({"targets": "0"}, "'targets' must be a non-empty list of channel indices (integers), got '0'"),
    ({"targets": [0.5]}, "'targets' must be a non-empty list"),
    ({"targets": [7]}, "target channels [7] out of range 0..2"),
    ({"channels": [1, 2, 3]}, "'channels' must be a list of channel names (strings)"),
    ({"channels": ["a"]}, "1 channel names for 3 channels"),
    ({"shape": "80,5,3"}, "'shape' must be a list of three non-negative integers"),
    ({"shape": [80, 5]}, "'shape' must be a list of three non-negative integers"),
    ({"mask_zeros": "true"}, "'mask_zeros' must be true or false, got 'true'"),
    ({"mask_zeros": None}, "'mask_zeros' must be true or false, got None"),
    ({"format_version": "1"}, "'format_version' must be an integer"),
])
def test_a_malformed_meta_json_is_one_line(tmp_path, capsys, content, expected):
    folder = _prepare_pems08(tmp_path)
    capsys.readouterr()
    if isinstance(content, dict):
        meta = json.loads((folder / "meta.json").read_text())
        meta.update(content)
        content = json.dumps(meta)
    (folder / "meta.json").write_text(content)
    line = _one_error_line(capsys, _run_argv(tmp_path, "--dataset", "pems08", "--data-dir",
                                             str(tmp_path / "data")))
    assert expected in line and "re-run `stbench prepare pems08 --source" in line


def test_a_dataset_too_large_for_memory_is_one_line(tmp_path, capsys):
    line = _one_error_line(capsys, _run_argv(tmp_path, "--dataset", "synthetic-weather",
                                             "--size", "n_lat=100000,n_lon=100000"))
    assert "of memory" in line and "reduce the size knobs (n_lat, n_lon, steps, features)" in line


def test_a_memory_error_while_generating_is_one_line(tmp_path, capsys, monkeypatch):
    def no_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 80.0 TiB")

    monkeypatch.setattr("stbench.data.synthetic._WeatherField", no_memory)
    line = _one_error_line(capsys, _run_argv(tmp_path, "--dataset", "synthetic-weather", "--size", "n_lat=20"))
    assert "does not fit in memory: reduce the size knobs (n_lat, n_lon, steps" in line
