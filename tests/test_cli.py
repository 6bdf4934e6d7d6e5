"""End-to-end runs through the command line, bad inputs, and resuming after a kill."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from stbench import UserError
from stbench.cli import main
from stbench.results import ResultStore

SMALL = ["--dataset", "synthetic-traffic", "--size", "locations=12,steps=400", "--epochs", "2", "--quiet"]


def run_cli(*args) -> int:
    return main(list(args))


def test_end_to_end_static_and_dynamic(tmp_path, capsys):
    results = str(tmp_path / "res")
    assert run_cli("run", "--methods", "full,random,soft-random", *SMALL, "--results", results) == 0
    records = {r["method"]: r for r in ResultStore(results).records()}
    assert set(records) == {"full", "random", "soft-random"}
    for r in records.values():
        assert r["status"] == "ok", r.get("error")
        assert math.isfinite(r["metrics"]["test"]["rel_mae"]) and r["metrics"]["test"]["rel_rmse"] > 0
        assert {"prepare", "train", "evaluate"} <= set(r["time_s"]) and r["peak_rss_bytes"]["train"] > 0
        assert r["epochs"] == 2 and len(r["epoch_time_s"]) == 2
    assert "condense" in records["random"]["time_s"]
    n_train = records["full"]["split_windows"]["train"]
    assert records["random"]["reduced_shape"][0] == round(0.005 * n_train)
    assert records["soft-random"]["budget_achieved"] == pytest.approx(0.3, abs=0.01)
    assert records["full"]["budget_achieved"] == 1.0
    table = capsys.readouterr().out
    assert "soft-random" in table and "rel_mae" in table

    lines_before = ResultStore(results).path.read_text().count("\n")
    assert run_cli("run", "--methods", "full,random,soft-random", *SMALL, "--results", results) == 0
    assert ResultStore(results).path.read_text().count("\n") == lines_before  # finished cells are skipped


def test_bidimensional_set_trains_inductive_model_and_refuses_transductive(tmp_path):
    results = str(tmp_path / "res")
    args = ["run", "--methods", "random", "--dataset", "synthetic-traffic", "--size", "locations=20,steps=400",
            "--budgets", "0.05=0.2x0.25", "--epochs", "2", "--quiet", "--results", results]
    assert run_cli(*args) == 0
    assert run_cli(*args, "--model", "mtgnn") == 0
    by_model = {r["model"]: r for r in ResultStore(results).records()}
    inductive = by_model["mtgnn-le"]
    assert inductive["status"] == "ok"
    assert inductive["reduced_shape"][2] == 5                         # trained on 5 of 20 locations
    assert inductive["budget_achieved"] == pytest.approx(inductive["reduced_shape"][0] * 5 / (
        inductive["split_windows"]["train"] * 20))
    assert by_model["mtgnn"]["status"] == "incompatible"
    assert "transductive" in by_model["mtgnn"]["error"]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("stbench: error:")
    return err


@pytest.mark.parametrize("args, needle", [
    (["run", "--methods", "kcentre-nope"], "unknown method"),
    (["run", "--budgets", "1.5"], "not in (0, 1]"),
    (["run", "--retention", "0"], "not in (0, 1]"),
    (["run", "--dataset", "nope"], "unknown dataset"),
    (["run", "--seeds", "a,b"], "integers"),
    (["run", "--preset", "huge"], "unknown preset"),
    (["run", "--set", "random.nope=1", "--methods", "random"], "no parameter"),
    (["run", "--set", "datm.soft_targets=maybe", "--methods", "datm"], "takes bool"),
    (["run", "--bogus-flag"], "unrecognized"),
    (["list", "things"], "invalid choice"),
])
def test_bad_input_gives_one_line_and_exit_2(args, needle, capsys, tmp_path):
    assert run_cli(*args, *(["--results", str(tmp_path)] if args[0] == "run" and "--bogus-flag" not in args
                           else [])) == 2
    assert needle in _one_line_error(capsys)


def test_set_values_take_their_parameters_declared_types():
    """`--set datm.soft_targets=false` once reached DATM as the truthy string "false"."""
    from stbench.cli import _pairs
    from stbench.runner import make_method
    datm = make_method("datm", _pairs(["datm.soft_targets=false,lr_data=1,iterations=3"], "--set")).params
    assert datm.soft_targets is False and datm.lr_data == 1.0 and isinstance(datm.lr_data, float)
    assert datm.iterations == 3 and make_method("datm", {"soft_targets": "True"}).params.soft_targets is True
    assert make_method("infobatch", {"prune_ratio": None}).params.prune_ratio is None
    with pytest.raises(UserError, match="takes int"):
        make_method("datm", {"iterations": 2.5})


def test_unprepared_dataset_says_how_to_prepare(tmp_path, capsys):
    assert run_cli("run", "--dataset", "gba", "--data-dir", str(tmp_path), "--results", str(tmp_path)) == 2
    assert "stbench prepare gba --source" in _one_line_error(capsys)


def test_corrupt_and_nan_datasets_are_rejected_without_losing_results(tmp_path, capsys):
    results = str(tmp_path / "res")
    assert run_cli("run", "--methods", "random", *SMALL, "--results", results) == 0
    before = ResultStore(results).path.read_text()
    capsys.readouterr()   # the first run's summary line
    folder = tmp_path / "data" / "los-loop"
    folder.mkdir(parents=True)
    values = np.ones((300, 4, 1), np.float32)
    values[5, 1, 0] = np.nan
    np.save(folder / "data.npy", values)
    (folder / "meta.json").write_text(json.dumps({"name": "los-loop", "shape": [300, 4, 1], "mask_zeros": True}))
    base = ["run", "--dataset", "los-loop", "--data-dir", str(tmp_path / "data"), "--results", results]
    assert run_cli(*base) == 2
    assert "NaN" in _one_line_error(capsys)
    (folder / "data.npy").write_bytes(b"not a numpy file")
    assert run_cli(*base) == 2
    assert "corrupt" in _one_line_error(capsys)
    assert ResultStore(results).path.read_text() == before


def test_run_killed_and_restarted_finishes_every_cell_once(tmp_path):
    results = tmp_path / "res"
    cmd = [sys.executable, "-m", "stbench.cli", "run", "--methods", "random,full", "--seeds", "0,1,2",
           "--model", "mlp", "--dataset", "synthetic-traffic", "--size", "locations=8,steps=400",
           "--epochs", "3", "--quiet", "--results", str(results)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = results / "runs.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not runs.exists() or runs.read_text().count("\n") < 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = runs.read_text().count("\n")
    assert 2 <= done_before < 6, "the kill should land mid-grid"
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ids = [json.loads(line)["run_id"] for line in runs.read_text().splitlines() if line.strip()]
    assert len(ids) == 6 and len(set(ids)) == 6
    assert all(r["status"] == "ok" for r in ResultStore(results).records())


def test_list_methods_json(capsys):
    assert run_cli("list", "methods", "--json") == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["random"]["kind"] == "static" and rows["soft-random"]["kind"] == "dynamic"
    assert rows["random"]["params"] == {"bidimensional": False}


def test_show_on_empty_store_is_a_user_error(tmp_path, capsys):
    assert run_cli("show", "--results", str(tmp_path)) == 2
    assert "stbench run" in _one_line_error(capsys)


def test_real_dataset_end_to_end(shared_data, tmp_path):
    data_dir, results = str(tmp_path / "data"), str(tmp_path / "res")
    assert run_cli("prepare", "los-loop", "--source", str(shared_data / "LOS-LOOP"), "--data-dir", data_dir) == 0
    assert run_cli("run", "--methods", "full,random,soft-random", "--dataset", "los-loop", "--model", "mlp",
                   "--epochs", "1", "--data-dir", data_dir, "--results", results, "--quiet") == 0
    records = ResultStore(results).records()
    assert [r["status"] for r in records] == ["ok"] * 3
    assert records[0]["dataset_shape"] == [2016, 207, 1]


def test_a_failing_cell_is_recorded_and_the_grid_goes_on(tmp_path, monkeypatch):
    from stbench.plugins import load_builtin
    from stbench.protocols import Condenser
    from stbench.registry import METHODS, Entry

    class Broken(Condenser):
        def condense(self, train, budget, ctx):
            raise RuntimeError("deliberately broken")

    load_builtin()
    monkeypatch.setitem(METHODS._entries, "test-broken", Entry("test-broken", Broken, "test"))

    results = str(tmp_path / "res")
    assert run_cli("run", "--methods", "test-broken,random", *SMALL, "--model", "mlp", "--results", results) == 1   # a failed cell makes the run exit 1
    status = {r["method"]: (r["status"], r["error"]) for r in ResultStore(results).records()}
    assert status["test-broken"] == ("failed", "RuntimeError: deliberately broken")
    assert status["random"][0] == "ok"


def test_a_reused_setup_stage_is_charged_to_the_condensation_time(tmp_path, monkeypatch):
    from stbench.plugins import load_builtin
    from stbench.protocols import Condenser, CondensedSet
    from stbench.registry import METHODS, Entry

    class CachedSetup(Condenser):                    # as MTT when its expert buffers come from the cache
        def condense(self, train, budget, ctx):
            return CondensedSet(indices=np.arange(2), info={"reused_setup_s": 1000.0})

    load_builtin()
    monkeypatch.setitem(METHODS._entries, "test-cached", Entry("test-cached", CachedSetup, "test"))
    results = str(tmp_path / "res")
    assert run_cli("run", "--methods", "test-cached", *SMALL, "--model", "mlp", "--results", results) == 0
    (record,) = ResultStore(results).records()
    assert record["status"] == "ok", record.get("error")
    assert 1000.0 <= record["time_s"]["condense"] < 1010.0


def test_records_carry_the_source_commit():
    import stbench
    from stbench.cell import source_commit, versions
    root = os.path.dirname(stbench.__file__)
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True)
    commit = versions(torch.device("cpu"))["commit"]
    if head.returncode != 0:
        assert commit is None
    else:
        assert commit == source_commit() and commit.split("+")[0] == head.stdout.strip()
