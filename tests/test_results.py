from stbench.results import ResultStore


def test_partial_last_line_is_skipped_and_next_append_is_clean(tmp_path):
    store = ResultStore(tmp_path)
    store.append({"run_id": "a", "status": "ok"})
    with open(store.path, "a") as fh:             # a writer killed mid-line
        fh.write('{"run_id": "b", "sta')
    assert [r["run_id"] for r in store.records()] == ["a"]
    store.append({"run_id": "c", "status": "failed"})
    assert [r["run_id"] for r in store.records()] == ["a", "c"]
    assert [r["status"] for r in store.records()] == ["ok", "failed"]


def test_latest_record_wins(tmp_path):
    store = ResultStore(tmp_path)
    store.append({"run_id": "a", "status": "failed"})
    store.append({"run_id": "a", "status": "ok", "x": float("nan")})
    (record,) = store.records()
    assert record["status"] == "ok" and record["x"] is None
