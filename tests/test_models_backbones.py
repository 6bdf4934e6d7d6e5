"""The evaluation backbones of the STemDist and ST-Prune papers: STGCN, AGCRN, FourierGNN, ST-Norm,
STID, STAEformer, and the location-encoder (``-le``) forms of those with per-location parameters."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import stbench.models  # noqa: F401  (registers the models)
from stbench.cli import main
from stbench.models.graph import (chebyshev_sum, chebyshev_terms, gaussian_kernel, learned_adjacency,
                                  predefined_graph, scaled_laplacian)
from stbench.models.stnorm import SpatialNorm, TemporalNorm
from stbench.registry import MODELS
from stbench.results import ResultStore

HERE = Path(__file__).parent
ROOT = HERE.parent
TRANSDUCTIVE = ["stgcn", "stgcn-adj", "agcrn", "stid", "staeformer"]
INDUCTIVE = ["stgcn-le", "agcrn-le", "fouriergnn", "stnorm", "stid-le", "staeformer-le"]
NEW = TRANSDUCTIVE + INDUCTIVE
# parameters at 1 input and 1 target channel, 12 in / 12 out, N locations (see each module's docstring)
PARAMETERS = {
    "stgcn": lambda n: 77_548 + 404 * n, "stgcn-adj": lambda n: 77_548 + 384 * n, "stgcn-le": lambda n: 88_000,
    "agcrn": lambda n: 745_740 + 10 * n, "agcrn-le": lambda n: 750_774, "fouriergnn": lambda n: 184_620,
    "stnorm": lambda n: 15_084, "stid": lambda n: 26_156 + 32 * n, "stid-le": lambda n: 31_916,
    "staeformer": lambda n: 601_260 + 960 * n, "staeformer-le": lambda n: 637_644,
}


def ring(n: int) -> torch.Tensor:
    i = torch.arange(n)
    adj = torch.zeros(n, n)
    adj[i, (i + 1) % n] = adj[(i + 1) % n, i] = 1.0
    return adj


def make(name, n, c_in=1, c_out=1, l_in=12, l_out=12, **hp):
    torch.manual_seed(0)
    cls = MODELS.get(name)
    if getattr(cls, "uses_adjacency", False):
        hp.setdefault("adjacency", ring(n))
    return cls(n, c_in, c_out, l_in, l_out, **hp)


def batch(b, l_in, n, c):
    """Random normalised input and its encoder input, the per-location mean over windows (eq. 3)."""
    x = torch.randn(b, l_in, n, c)
    return x, x.mean(dim=0).transpose(0, 1)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# --- shapes, registry, parameter counts --------------------------------------------------------------

@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("c_in, c_out, l_in, l_out", [(1, 1, 12, 12), (3, 2, 12, 3), (2, 1, 16, 6)])
def test_output_shape(name, c_in, c_out, l_in, l_out):
    model = make(name, 7, c_in, c_out, l_in, l_out)
    out = model(*batch(2, l_in, 7, c_in))
    assert out.shape == (2, l_out, 7, c_out) and torch.isfinite(out).all()


def test_registry_declares_which_forms_are_inductive():
    for name in TRANSDUCTIVE:
        assert not MODELS.get(name).inductive, name
    for name in INDUCTIVE:
        assert MODELS.get(name).inductive, name
    # every transductive model with per-location vectors has a location-encoder form
    for name in ("stgcn", "agcrn", "stid", "staeformer"):
        assert MODELS.get(f"{name}-le").inductive
    assert MODELS.get("stgcn-adj").uses_adjacency and not getattr(MODELS.get("stgcn"), "uses_adjacency", False)
    assert {MODELS.entry(n).family for n in NEW} == {"stgnn", "tcn", "mlp", "transformer"}


@pytest.mark.parametrize("name", NEW)
def test_parameter_counts(name):
    for n in (5, 307):
        assert n_params(make(name, n)) == PARAMETERS[name](n), (name, n)


def test_parameter_counts_equal_the_originals_where_the_architecture_is_the_same():
    assert n_params(make("agcrn", 307)) == 748_810         # AGCRN on PEMSD4 (307 locations)
    assert n_params(make("fouriergnn", 307)) == 184_620    # FGN(embed 128, hidden 256, 12 -> 12)
    assert n_params(make("fouriergnn", 5, diagonal=True)) == 87_084


# --- inductive and transductive forms ---------------------------------------------------------------

@pytest.mark.parametrize("name", INDUCTIVE)
def test_inductive_forms_train_on_fewer_locations_and_predict_on_all(name):
    model = make(name, 20)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, loc = batch(4, 12, 6, 1)
    y = torch.randn(4, 12, 6, 1)
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(2):
        opt.zero_grad()
        (model(x, loc) - y).pow(2).mean().backward()
        opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    if name.endswith("-le"):   # the per-location vectors are learned through the encoder
        assert any(p.grad is not None and p.grad.abs().sum() > 0
                   for n, p in model.named_parameters() if ".encoder." in n)
    model.eval()
    x_big, loc_big = batch(3, 12, 20, 1)
    with torch.no_grad():
        out = model(x_big, loc_big)
    assert out.shape == (3, 12, 20, 1) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["stgcn", "agcrn", "stid", "staeformer"])
def test_transductive_forms_refuse_another_location_count_and_name_their_le_form(name):
    model = make(name, 6)
    with pytest.raises(ValueError, match=f"transductive.*{name}-le"):
        model(*batch(2, 12, 5, 1))
    with pytest.raises(ValueError, match="loc_input"):
        make(f"{name}-le", 6)(batch(2, 12, 6, 1)[0])


def test_stgcn_adj_refuses_another_location_count():
    with pytest.raises(ValueError, match="transductive"):
        make("stgcn-adj", 6)(*batch(2, 12, 5, 1))


SIZE = ["--dataset", "synthetic-traffic", "--size", "locations=20,steps=400", "--budgets", "0.05=0.2x0.25",
        "--epochs", "1", "--quiet"]


@pytest.mark.parametrize("name", TRANSDUCTIVE)
def test_runner_records_a_transductive_model_on_fewer_locations_as_incompatible(tmp_path, name):
    results = str(tmp_path / "res")
    assert main(["run", "--methods", "random", *SIZE, "--model", name, "--results", results]) == 0
    (record,) = ResultStore(results).records()
    assert record["status"] == "incompatible" and "transductive" in record["error"]
    assert record["reduced_shape"][2] == 5 and record["model"] == name
    suggested = f"{name}-le" if f"{name}-le" in MODELS.names() else "mtgnn-le"   # stgcn-adj: no -le form
    assert f"such as {suggested}" in record["error"]


# --- through the runner at smoke size ---------------------------------------------------------------

@pytest.mark.parametrize("name", NEW)
def test_every_backbone_runs_through_the_runner(tmp_path, name):
    """Full data for every model; a bi-dimensional random set (3 of 12 locations) for the inductive ones."""
    results = str(tmp_path / "res")
    inductive = MODELS.get(name).inductive
    assert main(["run", "--methods", "full,random" if inductive else "full", "--dataset", "synthetic-traffic",
                 "--size", "locations=12,steps=400", "--budgets", "0.05=0.2x0.25", "--epochs", "1",
                 "--preset", "smoke", "--quiet", "--model", name, "--results", results]) == 0
    records = {r["method"]: r for r in ResultStore(results).records()}
    assert set(records) == ({"full", "random"} if inductive else {"full"})
    for record in records.values():
        assert record["status"] == "ok", record.get("error")
        assert record["model"] == name and np.isfinite(record["metrics"]["test"]["rel_rmse"])
    # stgcn-adj receives synthetic-traffic's road graph (no graph embeddings), stgcn learns its graph
    assert records["full"]["model_parameters"] == PARAMETERS[name](12)
    if inductive:
        assert records["random"]["reduced_shape"][2] == 3


# --- the models' definitions ------------------------------------------------------------------------

def test_stgcn_learns_its_graph_with_stemdist_eq2_and_needs_no_adjacency():
    cls = MODELS.get("stgcn")
    with pytest.raises(TypeError):
        cls(6, 1, 1, adjacency=ring(6))
    model = make("stgcn", 6)
    adj = model.adjacency(None, 6)
    e1, e2 = model.emb1.table, model.emb2.table
    torch.testing.assert_close(adj, torch.softmax(torch.relu(e1 @ e2.T), dim=1))
    torch.testing.assert_close(adj.sum(dim=1), torch.ones(6))
    model(*batch(2, 12, 6, 1)).pow(2).mean().backward()
    assert e1.grad.abs().sum() > 0 and e2.grad.abs().sum() > 0
    le = make("stgcn-le", 6)
    x, loc = batch(2, 12, 6, 1)
    torch.testing.assert_close(le.adjacency(loc, 6), learned_adjacency(le.emb1(loc, 6), le.emb2(loc, 6)))
    assert make("stgcn-adj", 6, adjacency=None).laplacian is None     # no adjacency: the learned graph


def test_stgcn_adj_uses_the_scaled_laplacian_of_the_adjacency():
    adj = ring(8)
    model = make("stgcn-adj", 8, adjacency=adj)
    d = adj.sum(dim=1)
    expected = -adj / torch.sqrt(d[:, None] * d[None, :])          # 2 (I - D^-1/2 W D^-1/2) / 2 - I
    torch.testing.assert_close(model.laplacian, expected)
    eig = torch.linalg.eigvalsh(scaled_laplacian(torch.rand(10, 10)).double())
    assert eig.min() >= -1 - 1e-6 and eig.max() <= 1 + 1e-6
    isolated = scaled_laplacian(torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    assert isolated[2].tolist() == [0.0, 0.0, -1.0]


def test_chebyshev_helpers_equal_the_explicit_polynomials():
    torch.manual_seed(0)
    s = torch.randn(6, 6) / 3
    x, ys = torch.randn(2, 6, 4), [torch.randn(2, 6, 4) for _ in range(4)]
    t = [torch.eye(6), s]
    for _ in range(2):
        t.append(2 * s @ t[-1] - t[-2])
    for term, tk in zip(chebyshev_terms(x, lambda h: s @ h, 4), t):
        torch.testing.assert_close(term, tk @ x)
    torch.testing.assert_close(chebyshev_sum(ys, lambda h: s @ h), sum(tk @ y for tk, y in zip(t, ys)))
    torch.testing.assert_close(chebyshev_sum(ys[:1], lambda h: s @ h), ys[0])


def test_agcrn_graph_convolution_is_the_papers_eq6():
    """out_n = sum_k (T_k(A) x)_n E_n W_pool[:, k] + E_n b_pool, with [T_0, T_1] = [I, A] (cheb_k = 2)."""
    model = make("agcrn", 7, rnn_units=4)
    conv = model.cells[0].gate
    e, x = torch.randn(7, 10), torch.randn(3, 7, 5)
    adj = learned_adjacency(e, e)
    supports = torch.stack([torch.eye(7), adj])
    weights = torch.einsum("nd,dkio->nkio", e, conv.weights_pool)
    xg = torch.einsum("knm,bmc->bnkc", supports, x)
    expected = torch.einsum("bnki,nkio->bno", xg, weights) + e @ conv.bias_pool
    torch.testing.assert_close(conv(x, adj, conv.location_weights(e)), expected)
    torch.testing.assert_close(adj, torch.softmax(torch.relu(e @ e.T), dim=1))


def test_gaussian_kernel_of_coordinates():
    coords = np.array([[0.0, 0.0], [0.0, 0.01], [0.0, 0.02], [10.0, 10.0]])
    w = gaussian_kernel(coords)
    assert np.allclose(w, w.T) and np.all(np.diag(w) == 0) and np.all((w >= 0) & (w <= 1))
    assert w[0, 1] > w[0, 2] > 0 and w[0, 3] == 0      # far apart: under the threshold


def test_predefined_graph_is_the_adjacency_else_the_kernel_of_the_coordinates_else_none():
    adj = np.ones((4, 4), dtype=np.float32)
    coords = np.array([[0.0, 0.0], [0.0, 0.01], [0.0, 0.02], [10.0, 10.0]])
    assert predefined_graph(adj, coords)[1] == "dataset" and predefined_graph(adj, coords)[0] is adj
    graph, source = predefined_graph(None, coords)
    assert source == "gaussian-kernel" and np.array_equal(graph, gaussian_kernel(coords))
    assert predefined_graph(None, None) == (None, "learned")


def test_runner_gives_stgcn_adj_the_coordinate_kernel_when_a_dataset_has_no_adjacency(tmp_path):
    from stbench.cell import Workspace
    from stbench.data.windows import WindowSpec
    ws = Workspace("synthetic-traffic", {"locations": 6, "steps": 300}, None, WindowSpec(), torch.device("cpu"))
    assert ws.graph_source("stgcn-adj") == "dataset" and ws.graph_source("stgcn") is None
    ws.series.data.adj = None
    del ws.__dict__["graph"]                        # the cached graph of the dataset as loaded
    built = ws._model_factory("stgcn-adj")(6)
    expected = MODELS.get("stgcn-adj")(6, ws.series.num_channels, 1, adjacency=gaussian_kernel(ws.series.data.coords))
    assert ws.graph_source("stgcn-adj") == "gaussian-kernel"
    assert torch.equal(built.laplacian, expected.laplacian)


def test_stnorm_normalisations_are_the_papers():
    """SN standardises every time step over the locations, TN every location's series over time."""
    b, c, n, t = 2, 3, 5, 8
    torch.manual_seed(0)
    u, v = torch.randn(t), torch.randn(n)
    u, v = (u - u.mean()) / u.std(), (v - v.mean()) / v.std()             # mean 0, unbiased std 1
    gamma, beta = torch.tensor([1.0, 2.0, 0.5]).view(1, c, 1, 1), torch.tensor([0.0, 0.5, -1.0]).view(1, c, 1, 1)
    # temporal: location l's series has mean mu_l and std sd_l over time
    mu, sd = 3 * torch.randn(n), torch.rand(n) + 0.5
    h = (mu[:, None] + sd[:, None] * u[None, :]).expand(b, c, n, t)
    tn = TemporalNorm(c)
    with torch.no_grad():
        tn.gamma.copy_(gamma), tn.beta.copy_(beta)
    expected = u.view(1, 1, 1, t) * (sd / torch.sqrt(sd ** 2 + 1e-5)).view(1, 1, n, 1) * gamma + beta
    torch.testing.assert_close(tn(h), expected.expand(b, c, n, t))
    # spatial: time step k has mean m_k and std s_k over the locations
    m, s = 3 * torch.randn(t), torch.rand(t) + 0.5
    h = (m[None, :] + s[None, :] * v[:, None]).expand(b, c, n, t)
    sn = SpatialNorm(c)
    with torch.no_grad():
        sn.gamma.copy_(gamma), sn.beta.copy_(beta)
    expected = v.view(1, 1, n, 1) * (s / torch.sqrt(s ** 2 + 1e-5)).view(1, 1, 1, t) * gamma + beta
    torch.testing.assert_close(sn(h), expected.expand(b, c, n, t))
    # the model feeds [h, TN(h), SN(h)] to every layer
    model = make("stnorm", 5)
    assert len(model.tn) == len(model.sn) == 4 and model.filter_convs[0].in_channels == 3 * 16


def test_stnorm_stemdist_statistics_pool_batch_locations_and_time_and_run_in_evaluation():
    torch.manual_seed(0)
    tn = TemporalNorm(2, stats="stemdist")
    h = torch.randn(3, 2, 4, 5) * 2 + 1
    out = tn(h)
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(dim=(0, 2, 3), correction=0), torch.ones(2), atol=1e-4, rtol=0)
    running = tn.running_mean.clone()
    tn.eval()
    torch.testing.assert_close(tn(h), (h - running) / (tn.running_var + 1e-5).sqrt())
    with pytest.raises(ValueError, match="temporal_stats"):
        TemporalNorm(2, stats="batch")


def test_fourier_graph_operator_is_a_complex_matrix_product():
    model = make("fouriergnn", 4, embed_size=8, hidden_size=16)
    z = torch.randn(2, 5, 8, dtype=torch.complex64)
    re, im = model.fourier_graph(z.real, z.imag)
    h, total = z, 0
    for w, b in zip(model.weights, model.biases):
        pre = h @ torch.complex(w[0], w[1]) + torch.complex(b[0], b[1])
        h = torch.complex(F.relu(pre.real), F.relu(pre.imag))
        total = total + torch.complex(F.softshrink(h.real, 0.01), F.softshrink(h.imag, 0.01))
    torch.testing.assert_close(torch.complex(re, im), total)
    diag = make("fouriergnn", 4, embed_size=8, hidden_size=16, diagonal=True)
    assert diag.weights[0].shape == (2, 8)


def test_staeformer_fused_attention_equals_the_explicit_product():
    model = make("staeformer", 9, input_embedding_dim=8, adaptive_embedding_dim=8, feed_forward_dim=16).eval()
    x = torch.randn(2, 12, 9, 1)
    fused = model(x)
    explicit = model.twice_differentiable()
    torch.testing.assert_close(explicit(x), fused, rtol=1e-4, atol=1e-5)
    grads = torch.autograd.grad(explicit(x).pow(2).mean(), list(explicit.parameters()), create_graph=True)
    sum((g ** 2).sum() for g in grads).backward()          # the double backward gradient matching needs
    assert explicit.output_proj.weight.grad.abs().sum() > 0


# --- memory at 2,000 locations ----------------------------------------------------------------------

class PerSampleSquare(TorchDispatchMode):
    """Records every tensor an operation returns that has two axes of length n and more than n^2 entries."""

    def __init__(self, n: int):
        super().__init__()
        self.n, self.found = n, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and sum(s == self.n for s in t.shape) >= 2 and t.numel() > self.n ** 2:
                self.found.append((str(func), tuple(t.shape)))
        return out


# narrow widths keep the check cheap; which tensors carry the location axis does not depend on them
NARROW = {"stgcn": dict(channels=(8, 4, 8)), "stgcn-adj": dict(channels=(8, 4, 8)),
          "stgcn-le": dict(channels=(8, 4, 8)),
          "agcrn": dict(rnn_units=8), "agcrn-le": dict(rnn_units=8), "fouriergnn": dict(embed_size=8, hidden_size=16),
          "stnorm": {}, "stid": {}, "stid-le": {},
          "staeformer": dict(input_embedding_dim=4, adaptive_embedding_dim=4, feed_forward_dim=8, num_heads=2,
                             num_layers=1),
          "staeformer-le": dict(input_embedding_dim=4, adaptive_embedding_dim=4, feed_forward_dim=8, num_heads=2,
                                num_layers=1)}


def _no_per_sample_square(name, n, hp):
    model = make(name, n, **hp).train()
    x, loc = batch(2, 12, n, 1)
    mode = PerSampleSquare(n)
    with mode:
        out = model(x, loc)
    assert out.shape == (2, 12, n, 1)
    assert not mode.found, f"{name}: per-sample N x N tensors {mode.found[:3]}"


@pytest.mark.parametrize("name", NEW)
def test_2000_locations_forward_has_no_per_sample_n_by_n_tensor(name):
    _no_per_sample_square(name, 2000, NARROW[name])


def test_the_check_finds_a_per_sample_n_by_n_tensor():
    mode = PerSampleSquare(50)
    with mode:
        h = torch.randn(2, 50, 8)
        torch.softmax(h @ h.transpose(1, 2), dim=-1)
    assert mode.found


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW)
def test_2000_locations_forward_at_the_default_sizes(name):
    _no_per_sample_square(name, 2000, {})


# --- report -----------------------------------------------------------------------------------------

def test_cross_model_table_and_published_numbers_fill_from_a_store_with_several_models(tmp_path):
    lines = (HERE / "fixtures" / "report_store" / "runs.jsonl").read_text().splitlines()
    fixture = [json.loads(line) for line in lines]
    base = [r for r in fixture if r["dataset"] == "gba" and r["model"].startswith("mtgnn")
            and r["budget_label"] in ("full", "0.5%")]
    records = list(fixture)
    for name in ("stgcn", "agcrn", "fouriergnn", "stnorm", "stid", "staeformer"):
        inductive = MODELS.get(name).inductive
        for r in base:
            clone = copy.deepcopy(r)
            clone["model"] = name if inductive or r["model"] == "mtgnn" else f"{name}-le"
            clone["run_id"] = f"{r['run_id']}-{clone['model']}"
            records.append(clone)
            if clone["model"].endswith("-le"):   # the transductive form refused the same cell first
                refused = copy.deepcopy(clone)
                refused.update(model=name, run_id=f"{r['run_id']}-{name}", status="incompatible",
                               error=f"model {name} is transductive", metrics=None)
                records.append(refused)
    store = tmp_path / "store"
    store.mkdir()
    (store / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out"
    assert main(["report", "--results", str(store), "--out", str(out), "--tables", "cross-model,reference",
                 "--plots", "none"]) == 0
    table = (out / "tables" / "cross-model_0p5pct.md").read_text()
    for label in ("*agcrn / agcrn-le*", "*fouriergnn*", "*staeformer / staeformer-le*", "*stgcn / stgcn-le*",
                  "*stid / stid-le*", "*stnorm*", "*gwnet / gwnet-le*", "*mtgnn / mtgnn-le*"):
        assert label in table, label
    block = table[table.index("*agcrn / agcrn-le*"):table.index("*fouriergnn*")]
    stemdist = next(line for line in block.splitlines() if line.startswith("| STemDist "))
    assert "†" not in stemdist and "incompatible" not in block      # superseded by the -le run of the cell
    assert block.count("| Original data") == 1
    reference = (out / "tables" / "reference_comparison.md").read_text()
    rows = [line for line in reference.splitlines() if line.startswith("| STemDist")]
    for table_name, model in (("IV", "stgcn"), ("IV", "fouriergnn"), ("VI (appendix)", "agcrn"),
                              ("VI (appendix)", "stnorm")):
        assert any(f"| {table_name} " in line and f"| {model} " in line and "| stemdist " in line
                   for line in rows), model


# --- benchmark script -------------------------------------------------------------------------------

def test_backbones_benchmark_prints_parameters_time_and_memory_per_model():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "backbones.py"), "--dataset", "synthetic-traffic",
                           "--size", "locations=6,steps=200", "--models", "stid", "--batch-size", "8",
                           "--max-batches", "2", "--threads", "1", "--json"],
                          capture_output=True, text=True, check=True, timeout=300)
    (row,) = [json.loads(line) for line in done.stdout.strip().splitlines()]
    assert row["model"] == "stid" and row["parameters"] == PARAMETERS["stid"](6)
    assert row["epoch_s"] > 0 and row["peak_rss_bytes"] > 0 and row["batch_size"] == 8 and row["extrapolated"]
    assert row["timed_batches"] == 2 < row["batches_per_epoch"]


def test_backbones_benchmark_trains_on_a_stored_condensed_set(tmp_path):
    results = tmp_path / "res"
    assert main(["run", "--methods", "random", *SIZE, "--model", "stid-le", "--epochs", "1",
                 "--results", str(results)]) == 0
    (artifact,) = (results / "artifacts").glob("*.pt")
    size = SIZE[SIZE.index("--size") + 1]
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "backbones.py"), "--dataset", "synthetic-traffic",
                           "--size", size, "--models", "stid-le", "--threads", "1", "--artifact", str(artifact), "--json"],
                          capture_output=True, text=True, check=True, timeout=300)
    (row,) = [json.loads(line) for line in done.stdout.strip().splitlines()]
    (record,) = ResultStore(str(results)).records()
    assert row["training_set"] == str(artifact) and row["locations"] == record["reduced_shape"][2] < 12
    assert row["batches_per_epoch"] * row["batch_size"] >= record["reduced_shape"][0] and row["epoch_s"] > 0
