"""Executors give the same records; concurrent drivers share a store; dead and slow cells cost only themselves."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from stbench.budgets import Compression, Retention
from stbench.cell import CellSpec, run_cell
from stbench.executors import ProcessExecutor, RayExecutor, SerialExecutor
from stbench.measure import setup_process
from stbench.results import ResultStore
from stbench.runner import Grid, Runner

SIZE = {"locations": 10, "steps": 300}


def grid(results, methods="full,random,soft-random", seeds=(0, 1), **kw) -> Grid:
    return Grid(methods=methods, dataset="synthetic-traffic", dataset_options=SIZE, seeds=list(seeds),
                budgets=[Compression(0.05)], retentions=[Retention(0.3)], train_overrides={"epochs": 2},
                results=str(results), device="cpu", **kw)


def metrics(records) -> dict:
    return {r["run_id"]: (r["status"], r["metrics"]["test"]) for r in records}


def test_a_cell_spec_round_trips_through_json(tmp_path):
    (spec, *_) = Runner(grid(tmp_path / "r")).plan()
    again = CellSpec.from_json(spec.to_json())
    assert again == spec and again.run_id == spec.run_id
    assert run_cell(again)["metrics"]["test"] == run_cell(spec)["metrics"]["test"]


def serial_records(results) -> list[dict]:
    """The serial run with one torch thread, as each of two workers on two cores has (same float sums)."""
    runner = Runner(grid(results))
    torch.set_num_threads(1)
    try:
        return runner.run(SerialExecutor())
    finally:
        setup_process()


def test_serial_and_process_executors_give_the_same_records(tmp_path):
    serial = serial_records(tmp_path / "serial")
    pool = Runner(grid(tmp_path / "pool")).run(ProcessExecutor(workers=2))
    assert len(serial) == 6 and all(r["status"] == "ok" for r in serial)
    assert metrics(pool) == metrics(serial)


def test_the_ray_executor_gives_the_same_records(tmp_path):
    ray = pytest.importorskip("ray")
    serial = serial_records(tmp_path / "serial")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        records = Runner(grid(tmp_path / "ray")).run(RayExecutor(cpus_per_cell=1))
    finally:
        ray.shutdown()
    assert metrics(records) == metrics(serial)


def killed_or_slow_cell(spec: CellSpec) -> dict:
    """Seed 1 of ``full`` dies (SIGKILL), seed 1 of ``random`` hangs; everything else runs normally."""
    if spec.config["seed"] == 1 and spec.config["method"] == "full":
        os.kill(os.getpid(), signal.SIGKILL)
    if spec.config["seed"] == 1 and spec.config["method"] == "random":
        time.sleep(600)
    return run_cell(spec)


def test_a_killed_worker_and_a_cell_past_its_timeout_cost_only_their_cells(tmp_path):
    runner = Runner(grid(tmp_path / "res", methods="full,random"))
    records = runner.run(ProcessExecutor(workers=2, cell_timeout=15, cell_fn=killed_or_slow_cell))
    status = {(r["method"], r["seed"]): r["status"] for r in records}
    assert status == {("full", 0): "ok", ("full", 1): "crashed", ("random", 0): "ok", ("random", 1): "timeout"}
    crashed = next(r for r in records if r["status"] == "crashed")
    assert "SIGKILL" in crashed["error"]
    assert runner.counts["crashed"] == 1 and runner.counts["timeout"] == 1
    again = Runner(grid(tmp_path / "res", methods="full,random"))
    again.run(SerialExecutor())       # crashed cells are retried, timed-out ones are finished
    assert again.counts["ok"] == 1 and again.counts["skipped"] == 3


def test_two_concurrent_runs_on_one_store_run_every_cell_once(tmp_path):
    results = tmp_path / "res"
    common = [sys.executable, "-m", "stbench.cli", "run", "--dataset", "synthetic-traffic", "--size",
              "locations=10,steps=300", "--epochs", "2", "--budgets", "0.05", "--quiet", "--results", str(results)]
    first = subprocess.Popen([*common, "--methods", "full,random,soft-random", "--seeds", "0,1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen([*common, "--methods", "soft-random,random,full", "--seeds", "1,0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    errs = [p.communicate(timeout=300)[1] for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, errs
    lines = ResultStore(results).path.read_text().splitlines()
    ids = [json.loads(line)["run_id"] for line in lines]             # every line parses
    assert len(ids) == 6 and len(set(ids)) == 6                      # every cell exactly once
    assert not list((results / "claims").iterdir())                  # every claim released


def test_a_claim_left_by_a_killed_driver_expires(tmp_path, monkeypatch):
    store = ResultStore(tmp_path)
    assert store.claim("cell") and not store.claim("cell")           # held by a live process
    monkeypatch.setenv("STBENCH_CLAIM_TTL", "0.2")
    time.sleep(0.4)                                                  # its owner stopped refreshing it
    assert store.claim("cell")


def test_one_command_expands_datasets_and_models(tmp_path):
    g = grid(tmp_path / "res", methods="full,random", seeds=(0,))
    g.dataset, g.model = "synthetic-traffic,synthetic-weather", "mlp,mtgnn"
    g.dataset_options = {"synthetic-traffic.locations": 10, "synthetic-traffic.steps": 300,
                         "synthetic-weather.n_lat": 3, "synthetic-weather.n_lon": 4, "synthetic-weather.steps": 300}
    specs = Runner(g).plan()
    cells = [(s.config["dataset"], s.config["method"], s.config["model"]) for s in specs]
    assert len(cells) == len(set(cells)) == 2 * 2 * 2
    assert {s.config["dataset_options"]["steps"] for s in specs} == {300}
    weather = next(s for s in specs if s.config["dataset"] == "synthetic-weather")
    assert weather.config["dataset_options"] == {"n_lat": 3, "n_lon": 4, "steps": 300}
