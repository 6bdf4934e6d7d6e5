"""The store and runner guarantees: safe artifacts, honest cache reuse, failing safely, clear refusals."""
from __future__ import annotations

import errno
import json
import math
import pickle

import numpy as np
import pytest

from stbench.cli import main
from stbench.registry import METHODS
from stbench.results import ResultStore
from stbench.safe_io import save_plain

SMALL = ["--dataset", "synthetic-traffic", "--size", "locations=12,steps=400", "--epochs", "2", "--quiet"]


def run(results, *args) -> int:
    return main(["run", *SMALL, "--results", str(results), *args])


def records(results) -> list[dict]:
    return ResultStore(results).records()


class _Marker:
    """Unpickling this creates a file: the proof that a load executed code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


# -- artifacts --------------------------------------------------------------------------------------

def test_a_crafted_pickle_artifact_never_executes_and_is_recomputed(tmp_path, capsys):
    res = tmp_path / "res"
    assert run(res, "--methods", "random") == 0
    (artifact,) = (res / "artifacts").glob("*.pt")
    marker = tmp_path / "pwned"
    artifact.write_bytes(pickle.dumps({"set": _Marker(marker), "time_s": 1.0}))
    capsys.readouterr()
    assert run(res, "--methods", "random", "--model", "mlp") == 0   # another model reuses the set
    assert not marker.exists()
    assert "ignoring unreadable cache file" in capsys.readouterr().err
    mlp = next(r for r in records(res) if r["model"] == "mlp")
    assert mlp["status"] == "ok" and mlp["condense_cached"] is False


def test_a_damaged_but_loadable_artifact_is_recomputed(tmp_path, capsys):
    res = tmp_path / "res"
    assert run(res, "--methods", "random") == 0
    (artifact,) = (res / "artifacts").glob("*.pt")
    save_plain(artifact, {"set": {"indices": np.array([10 ** 9])}, "time_s": 1.0, "rss_peak": 1, "cuda_peak": 0})
    assert run(res, "--methods", "random", "--model", "mlp") == 0
    assert "ignoring malformed artifact" in capsys.readouterr().err
    mlp = next(r for r in records(res) if r["model"] == "mlp")
    assert mlp["status"] == "ok" and mlp["condense_cached"] is False


def test_a_cache_hit_gives_the_same_evaluation_as_a_miss(tmp_path):
    hit, miss = tmp_path / "hit", tmp_path / "miss"
    assert run(hit, "--methods", "random") == 0                       # condenses, evaluates mtgnn
    assert run(hit, "--methods", "random", "--model", "mlp") == 0      # reuses the set
    assert run(miss, "--methods", "random", "--model", "mlp") == 0     # condenses afresh
    cached = next(r for r in records(hit) if r["model"] == "mlp")
    fresh = records(miss)[0]
    assert cached["condense_cached"] is True and fresh["condense_cached"] is False
    assert cached["metrics"]["test"] == fresh["metrics"]["test"]


def test_a_method_that_condenses_with_the_evaluation_model_is_cached_per_model(tmp_path):
    res = tmp_path / "res"
    assert METHODS.get("craig").uses_eval_model and not METHODS.get("random").uses_eval_model
    for model in ("mlp", "mtgnn"):
        assert run(res, "--methods", "craig,random", "--model", model, "--set", "craig.reselect_every=0") == 0
    by_cell = {(r["method"], r["model"]): r for r in records(res)}
    assert by_cell[("craig", "mtgnn")]["condense_cached"] is False      # its own selection and cost
    assert by_cell[("random", "mtgnn")]["condense_cached"] is True


# -- the store ------------------------------------------------------------------------------------

def test_a_short_write_leaves_no_partial_line_and_exits_non_zero(tmp_path, monkeypatch, capsys):
    res = tmp_path / "res"
    assert run(res, "--methods", "full") == 0
    import stbench.results as results_module
    real_write = results_module.os.write
    calls = []

    def full_disk(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:len(data) // 2]))   # half the line fits
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results_module.os, "write", full_disk)
    assert run(res, "--methods", "random") == 1
    assert "could not write a record" in capsys.readouterr().err
    lines = ResultStore(res).path.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["method"] == "full"


def test_invalid_records_are_skipped_with_one_warning_and_never_hide_real_ones(tmp_path, capsys):
    res = tmp_path / "res"
    assert run(res, "--methods", "full") == 0
    store = ResultStore(res)
    (real,) = store.records()
    with open(store.path, "a") as fh:
        fh.write(json.dumps({"run_id": "x", "status": "ok", "method": "m"}) + "\n")   # keys missing
        fh.write(json.dumps({"run_id": real["run_id"], "status": "ok"}) + "\n")     # would hide the real one
        fh.write("[1, 2]\n")
    capsys.readouterr()
    assert store.records() == [real]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "skipped 3 invalid line(s)" in err[0]
    assert main(["show", "--results", str(res)]) == 0
    assert run(res, "--methods", "full") == 0                       # and a later run still works


@pytest.mark.parametrize("flag_args", [
    ["run", "--methods", "full", "--results", "{file}"],
    ["report", "--results", "{res}", "--out", "{file}"],
    ["prepare", "los-loop", "--source", "{res}", "--data-dir", "{file}"],
    ["run", "--methods", "full", "--results", "{file}/below"],
])
def test_unwritable_outputs_are_refused_before_any_work(tmp_path, capsys, flag_args):
    res = tmp_path / "res"
    res.mkdir()
    file = tmp_path / "a-file"
    file.write_text("x")
    args = [a.format(file=file, res=res) for a in flag_args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("stbench: error:") and "a-file" in err[0]
    assert file.read_text() == "x"


# -- refusing bad input before compute ------------------------------------------------------------

@pytest.mark.parametrize("args, says", [
    (["--methods", "random", "--set", "nosuch=1"], "no selected method has a parameter 'nosuch'"),
    (["--methods", "random", "--set", "nosuchmethod.x=1"], "unknown method 'nosuchmethod'"),
    (["--methods", "random", "--set", "herding.feature_gib=2"], "method herding is not selected"),
    (["--methods", "random", "--seeds", ""], "no seeds given"),
    (["--methods", "random", "--seeds=-1"], "seeds must be integers >= 0"),
    (["--methods", "random", "--retry", "failed"], "only finished statuses"),
])
def test_silently_ignored_input_is_refused(tmp_path, capsys, args, says):
    res = tmp_path / "res"
    assert run(res, *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0]
    assert not (res / "runs.jsonl").exists()


def test_a_budget_that_keeps_almost_nothing_warns_before_running(tmp_path, capsys):
    assert run(tmp_path / "res", "--methods", "random", "--budgets", "0.005") == 0
    err = capsys.readouterr().err
    assert "budget 0.5% keeps 1 window(s)" in err


# -- exit status and statuses ---------------------------------------------------------------------

def _make_condense_raise(monkeypatch, error):
    def condense(self, train, budget, ctx):
        raise error
    monkeypatch.setattr(METHODS.get("random"), "condense", condense)


def test_a_run_whose_cells_failed_exits_one_with_a_summary(tmp_path, monkeypatch, capsys):
    _make_condense_raise(monkeypatch, RuntimeError("boom"))
    assert run(tmp_path / "res", "--methods", "random", "--seeds", "0,1") == 1
    err = capsys.readouterr().err
    assert "stbench: 0 ok, 2 failed, 0 oom, 0 incompatible; 0 done before, skipped" in err


def test_oom_cells_are_skipped_unless_retried(tmp_path, monkeypatch, capsys):
    res = tmp_path / "res"
    _make_condense_raise(monkeypatch, MemoryError("too big"))
    assert run(res, "--methods", "random") == 0
    assert records(res)[0]["status"] == "oom"
    monkeypatch.undo()
    capsys.readouterr()
    assert run(res, "--methods", "random") == 0
    assert "1 oom: run again with --retry oom" in capsys.readouterr().err
    assert records(res)[0]["status"] == "oom"
    assert run(res, "--methods", "random", "--retry", "oom") == 0
    assert records(res)[0]["status"] == "ok"


def test_non_finite_test_metrics_are_never_recorded_ok(tmp_path, monkeypatch):
    import stbench.cell as runner_module
    real_fit = runner_module.fit

    def diverging_fit(*args, **kwargs):
        result = real_fit(*args, **kwargs)
        result.test = dict(result.test, rel_rmse=math.nan)
        return result

    monkeypatch.setattr(runner_module, "fit", diverging_fit)
    assert run(tmp_path / "res", "--methods", "full") == 1
    (record,) = records(tmp_path / "res")
    assert record["status"] == "failed" and "non-finite test rel_rmse" in record["error"]


def test_a_nan_first_validation_score_is_replaced_by_a_finite_one(tmp_path, monkeypatch):
    import stbench.train as train_module
    scores = iter([math.nan, 0.5, 0.7])
    real_evaluate = train_module.evaluate

    def evaluate(model, windows, loc_input, batch_size, y_mean=None):   # validation passes get y_mean
        out = real_evaluate(model, windows, loc_input, batch_size, y_mean)
        return out if y_mean is None else dict(out, rel_rmse=next(scores))

    monkeypatch.setattr(train_module, "evaluate", evaluate)
    assert run(tmp_path / "res", "--methods", "full", "--epochs", "3") == 0
    assert records(tmp_path / "res")[0]["best_epoch"] == 1
