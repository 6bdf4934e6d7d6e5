from stbench.results import ResultStore


def rec(run_id: str, status: str, **extra) -> dict:
    """A minimal valid run record."""
    out = {"run_id": run_id, "status": status, "dataset": "d", "method": "m", "seed": 0, "model": "mlp",
           "budget_label": "full", "time_s": {"total": 1.0}}
    if status == "ok":
        out["metrics"] = {"test": {"rel_mae": 0.5, "rel_rmse": 0.6}}
    return dict(out, **extra)


def test_partial_last_line_is_skipped_and_next_append_is_clean(tmp_path):
    store = ResultStore(tmp_path)
    store.append(rec("a", "ok"))
    with open(store.path, "a") as fh:             # a writer killed mid-line
        fh.write('{"run_id": "b", "sta')
    assert [r["run_id"] for r in store.records()] == ["a"]
    store.append(rec("c", "failed"))
    assert [r["run_id"] for r in store.records()] == ["a", "c"]
    assert [r["status"] for r in store.records()] == ["ok", "failed"]


def test_latest_record_wins(tmp_path):
    store = ResultStore(tmp_path)
    store.append(rec("a", "failed"))
    store.append(rec("a", "ok", x=float("nan")))
    (record,) = store.records()
    assert record["status"] == "ok" and record["x"] is None
