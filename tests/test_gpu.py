"""CUDA paths (run on a GPU machine with ``python -m pytest -m gpu``; skipped without CUDA)."""
import pytest
import torch

from stbench.cli import main
from stbench.results import ResultStore

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_grid_runs_on_cuda_and_records_cuda_peaks(tmp_path):
    results = str(tmp_path / "res")
    args = ["run", "--methods", "full,random,soft-random,stemdist", "--dataset", "synthetic-traffic",
            "--size", "locations=40,steps=400", "--budgets", "0.05", "--epochs", "2", "--device", "cuda",
            "--quiet", "--results", results]
    assert main(args) == 0
    for record in ResultStore(results).records():
        assert record["status"] == "ok", record.get("error")
        assert record["device"].startswith("cuda") and record["versions"]["gpu"]
        assert record["peak_cuda_bytes"]["train"] > 0 and record["peak_cuda_bytes"]["evaluate"] > 0
