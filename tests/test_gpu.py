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


def test_mtgnn_layout_on_cuda_matches_the_cpu_forward_and_second_gradients():
    from stbench.registry import MODELS

    torch.manual_seed(0)
    cpu = MODELS.get("mtgnn-le")(12, 2, 1, 12, 12, subgraph_size=4).eval()
    cuda = MODELS.get("mtgnn-le")(12, 2, 1, 12, 12, subgraph_size=4).eval().cuda()
    cuda.load_state_dict(cpu.state_dict())
    x = torch.randn(5, 12, 12, 2)
    loc = x.mean(dim=0).transpose(0, 1).contiguous()
    results = []
    for model, device in ((cpu, "cpu"), (cuda, "cuda")):
        params = list(model.parameters())
        out = model(x.to(device), loc.to(device))
        grads = torch.autograd.grad(out.pow(2).mean(), params, create_graph=True)
        second = torch.autograd.grad(sum((g ** 2).sum() for g in grads), params)
        results.append([out.detach().cpu(), *(g.cpu() for g in second)])
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=2e-3, atol=1e-5)


def test_a_training_step_on_cuda_never_waits_for_the_device():
    """No .item()/.cpu()/host copies inside training: torch raises on any synchronising call."""
    import numpy as np

    from stbench.registry import MODELS
    from stbench.sources import SyntheticSource
    from stbench.train import TrainConfig, adam, train_step

    torch.manual_seed(0)
    model = MODELS.get("mtgnn-le")(10, 1, 1, 12, 12).cuda()
    source = SyntheticSource(torch.randn(32, 12, 10, 1, device="cuda"), torch.randn(32, 12, 10, 1, device="cuda"),
                             torch.rand(10, device="cuda"))
    opt = adam(model.parameters(), 1e-3)
    gen = torch.Generator().manual_seed(0)
    for amp in ("off", "bf16"):
        cfg = TrainConfig(location_subsets=4, amp=amp)
        train_step(model, opt, source, np.arange(32), None, cfg, gen)   # warm-up (allocations, kernels)
        torch.cuda.set_sync_debug_mode("error")
        try:
            losses = train_step(model, opt, source, np.arange(32), np.ones(32, dtype=np.float32), cfg, gen)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert torch.isfinite(losses).all()


def test_the_evaluation_memory_probe_counts_cuda_tensors_and_leaves_the_phase_peaks_alone():
    """``LiveBytes`` sees CUDA storages as it sees CPU ones, and never resets the allocator's peak."""
    from stbench.eval_batch import forward_peak_bytes
    from stbench.registry import MODELS

    torch.manual_seed(0)
    model = MODELS.get("mtgnn-le")(20, 1, 1, 12, 12).eval()
    x = torch.randn(4, 12, 20, 1)
    loc = x.mean(dim=0).transpose(0, 1).contiguous()
    on_cpu = forward_peak_bytes(model, x, loc)
    model.cuda()
    torch.cuda.reset_peak_memory_stats()
    held = torch.empty(64 << 20, dtype=torch.uint8, device="cuda")   # a 64 MiB peak before the probe
    del held
    on_cuda = forward_peak_bytes(model, x.cuda(), loc.cuda())
    assert on_cuda == pytest.approx(on_cpu, rel=0.1)
    assert torch.cuda.max_memory_allocated() >= 64 << 20
