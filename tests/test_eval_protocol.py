"""The evaluation protocol: eval seeds apart from condensation seeds, a validation-only learning-rate
search, hard targets and the relabelling control, and the protocol facts every record carries."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import stbench.cell as cell
from stbench.budgets import Compression, Retention
from stbench.cli import main
from stbench.plugins import load_builtin
from stbench.protocols import CondensedSet, Condenser
from stbench.registry import METHODS, MODELS, Entry
from stbench.results import ResultStore, run_id
from stbench.runner import Grid, Runner, make_method
from stbench.safe_io import load_plain

load_builtin()

SIZE = {"locations": 8, "steps": 300}
SMALL = ["--dataset", "synthetic-traffic", "--size", "locations=8,steps=300", "--epochs", "2", "--model", "mlp",
         "--budgets", "0.05", "--quiet"]
NEW_KEYS = ("eval_seed", "eval_lr_grid", "targets")


def run(results, *args) -> int:
    return main(["run", *SMALL, "--results", str(results), *args])


def records(results) -> list[dict]:
    return ResultStore(results).records()


def grid(results, **kw) -> Grid:
    kw.setdefault("train_overrides", {"epochs": 2})
    return Grid(dataset="synthetic-traffic", dataset_options=SIZE, budgets=[Compression(0.05)],
                retentions=[Retention(0.3)], model="mlp", device="cpu", results=str(results), **kw)


@pytest.fixture(autouse=True)
def expert_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STBENCH_CACHE", str(tmp_path / "cache"))


# -- eval seeds -------------------------------------------------------------------------------------

def test_eval_seeds_reuse_one_condensation_and_vary_the_evaluation(tmp_path, monkeypatch):
    calls = []
    real = METHODS.get("random").condense

    def counted(self, train, budget, ctx):
        calls.append(ctx.seed)
        return real(self, train, budget, ctx)

    monkeypatch.setattr(METHODS.get("random"), "condense", counted)
    res = tmp_path / "res"
    assert run(res, "--methods", "random,full", "--seeds", "0", "--eval-seeds", "0,1,2") == 0
    rand = [r for r in records(res) if r["method"] == "random"]
    full = [r for r in records(res) if r["method"] == "full"]
    assert calls == [0]                                            # condensed once, for seed 0
    assert [(r["seed"], r["eval_seed"]) for r in rand] == [(0, 0), (0, 1), (0, 2)]
    assert [r["condense_cached"] for r in rand] == [False, True, True]
    assert len({r["artifact"] for r in rand}) == 1                 # the key holds the seed, not the eval seed
    assert len({r["time_s"]["condense"] for r in rand}) == 1       # its cost charged to every record
    assert len({r["metrics"]["test"]["rel_mae"] for r in rand}) == 3   # the evaluation follows the eval seed
    assert all(r["condense_info"] == rand[0]["condense_info"] for r in rand)
    assert sorted((r["seed"], r["eval_seed"]) for r in full) == [(0, 0), (1, 1), (2, 2)]   # one run per eval seed
    assert len({r["metrics"]["test"]["rel_mae"] for r in full}) == 3

    # the (0, 0) cell is the run of today's --seeds 0 (same id, so it is not run again)
    plain = Runner(grid(tmp_path / "plain", methods="random", seeds=[0])).plan()
    assert plain[0].run_id == rand[0]["run_id"]
    specs = Runner(grid(tmp_path / "x", methods="random", seeds=[0], eval_seeds=[0, 1, 2])).plan()
    assert [s.run_id for s in specs] == [r["run_id"] for r in rand]


def test_the_evaluation_is_seeded_by_the_eval_seed(tmp_path, monkeypatch):
    seeded = []
    real = cell.seed_evaluation
    monkeypatch.setattr(cell, "seed_evaluation", lambda ctx, seed: (seeded.append((ctx is None, seed)),
                                                                    real(ctx, seed))[1])
    specs = Runner(grid(tmp_path / "res", methods="random", seeds=[3], eval_seeds=[5])).plan()
    record = cell.run_cell(specs[0])
    assert record["status"] == "ok" and (record["seed"], record["eval_seed"]) == (3, 5)
    assert seeded[0] == (True, 3)                                  # the condensation context
    assert seeded[1:] == [(False, 5)]                              # the evaluation model


# -- run ids ----------------------------------------------------------------------------------------

# planned before the eval-seed, learning-rate-grid and hard-target options existed
GOLDEN = {"full-0": "5f0180ee44b61b6b", "full-1": "fd82aa62a28047a7", "random-0": "2b890fe4a141fd6e",
          "random-1": "c92606ddcd729a6e", "soft-random-0": "4a875d5152573371", "soft-random-1": "79e2bd96ccbdcf28"}


def test_run_ids_without_the_new_options_are_unchanged(tmp_path):
    g = Grid(methods="full,random,soft-random", dataset="synthetic-traffic", dataset_options=SIZE, seeds=[0, 1],
             budgets=[Compression(0.05)], retentions=[Retention(0.3)], train_overrides={"epochs": 2},
             results=str(tmp_path / "r"), device="cpu")
    specs = Runner(g).plan()
    assert {f"{s.config['method']}-{s.config['seed']}": s.run_id for s in specs} == GOLDEN
    for spec in specs:
        assert not set(NEW_KEYS) & set(spec.config)
        assert spec.run_id == run_id({k: v for k, v in spec.config.items() if k not in NEW_KEYS})
    with_options = Runner(Grid(**{**g.__dict__, "eval_seeds": [0, 1], "eval_lr_grid": [1e-3], "targets": "hard"})).plan()
    assert not {s.run_id for s in with_options} & set(GOLDEN.values())
    assert all(s.config["eval_lr_grid"] == [1e-3] and s.config["targets"] == "hard" for s in with_options)


# -- learning-rate search ---------------------------------------------------------------------------

FAKE_VAL = {1e-2: 0.9, 3e-4: 0.1, 1e-4: 0.5}   # validation scores that favour 3e-4, the middle rate


def test_the_lr_search_chooses_on_validation_and_tests_only_the_choice(tmp_path, monkeypatch):
    fits, tested = [], []
    real_fit, real_test = cell.fit, cell.score_test

    def fit(model, source, schedule, cfg, val, test, *args, **kwargs):
        assert test is None, "a grid run was handed the test split"
        fits.append(cfg.lr)
        result = real_fit(model, source, schedule, cfg, val, test, *args, **kwargs)
        assert result.test == {}
        result.val = dict(result.val, rel_rmse=FAKE_VAL[cfg.lr])
        return result

    def score_test(model, test, loc, cfg, ctx, result):
        tested.append(cfg.lr)
        return real_test(model, test, loc, cfg, ctx, result)

    monkeypatch.setattr(cell, "fit", fit)
    monkeypatch.setattr(cell, "score_test", score_test)
    res = tmp_path / "res"
    assert run(res, "--methods", "random,full", "--eval-lr-grid", "1e-2,1e-4,3e-4") == 0
    searched = {r["method"]: r for r in records(res)}
    assert fits == [1e-2, 3e-4, 1e-4] * 2 and tested == [3e-4, 3e-4]
    for r in searched.values():
        assert r["lr_search"]["grid"] == [1e-2, 3e-4, 1e-4]
        assert r["lr_search"]["val"] == {"0.01": 0.9, "0.0003": 0.1, "0.0001": 0.5}
        assert r["lr_search"]["chosen"] == 3e-4 and r["train_config"]["lr"] == 3e-4
        assert r["time_s"]["train"] >= sum(r["lr_search"]["train_s"].values()) > sum(r["epoch_time_s"])

    monkeypatch.undo()
    plain = tmp_path / "plain"   # the chosen rate trained alone: the record holds exactly its test metrics
    Runner(grid(plain, methods="random,full", train_overrides={"epochs": 2, "lr": 3e-4})).run()
    for r in records(plain):
        assert searched[r["method"]]["metrics"]["test"] == r["metrics"]["test"]
        assert searched[r["method"]]["run_id"] != r["run_id"]


# -- hard targets and the relabelling control ---------------------------------------------------------

class LearnedSet(Condenser):
    labels = "learned"

    def condense(self, train, budget, ctx):
        m, _ = budget.sizes(len(train), train.series.num_locations, bidimensional=False)
        n, c, out = train.series.num_locations, train.series.num_channels, train.series.spec.output_len
        return CondensedSet(x=torch.randn(m, train.series.spec.input_len, n, c, generator=ctx.torch_generator),
                            y=torch.randn(m, out, n, len(train.series.data.targets), generator=ctx.torch_generator))


def test_hard_targets_are_the_identity_on_a_coreset_and_undefined_on_learned_inputs(tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS._entries, "test-learned", Entry("test-learned", LearnedSet, "test"))
    res = tmp_path / "res"
    assert run(res, "--methods", "random,test-learned") == 0
    assert run(res, "--methods", "random,test-learned", "--targets", "hard") == 0
    by = {(r["method"], r["targets"]): r for r in records(res)}
    soft, hard = by[("random", "as-condensed")], by[("random", "hard")]
    assert hard["hard_targets"] == "identity" and hard["run_id"] != soft["run_id"]
    assert hard["metrics"]["test"] == soft["metrics"]["test"]
    learned = by[("test-learned", "hard")]
    assert learned["status"] == "incompatible" and learned["error"] == "hard targets not defined for learned inputs"
    assert by[("test-learned", "as-condensed")]["status"] == "ok"


CONDTSF = {"condtsf.iterations": 12, "condtsf.period": 3, "condtsf.beta": 0.1, "condtsf.num_experts": 2,
           "condtsf.expert_train_epochs": 2}


def test_the_relabelling_control_mixes_the_experts_forecast_into_random_windows(tmp_path):
    res = tmp_path / "res"
    g = grid(res, methods="random,relabelled-random,condtsf", seeds=[0], params=dict(CONDTSF))
    by = {r["method"]: r for r in Runner(g).run()}
    assert all(r["status"] == "ok" for r in by.values()), [r.get("error") for r in by.values()]
    control, condtsf = by["relabelled-random"], by["condtsf"]
    assert control["control_of"] == "condtsf" and control["label_source"] == "expert-relabelled"
    assert control["method_params"]["of_params"]["beta"] == 0.1        # condtsf's parameters as the grid set them
    info = control["condense_info"]
    k = 12 // 3
    assert info["plugin_steps"] == k == condtsf["condense_info"]["plugin_steps"]
    s = 1 - (1 - 0.1) ** k
    assert info["strength"] == pytest.approx(s)
    assert info["experts_path"] == condtsf["condense_info"]["experts_path"]   # one cache entry, shared
    assert condtsf["condense_info"]["experts_reused"] and condtsf["condense_info"]["reused_setup_s"] > 0

    window = cell.WindowSpec(**cell._window(Runner(g).plan()[0].config["window"]))
    ws = cell.Workspace("synthetic-traffic", SIZE, None, window, torch.device("cpu"))
    train = ws.train
    ids = np.sort(np.random.default_rng(0).choice(len(train), size=round(0.05 * len(train)), replace=False))
    coreset = ResultStore(res).load_artifact(_key(by["random"]))["set"]
    assert np.array_equal(coreset["indices"], ids)                   # random's windows
    batch = train.batch(ids)
    y_real = train.series.scale_target(batch.y).masked_fill(~batch.mask, 0.0)
    expert = MODELS.get("dlinear")(8, train.series.num_channels, 1, 12, 12)
    expert.eval()
    forecasts = []
    for trajectory in load_plain(info["experts_path"])["trajectories"]:
        torch.nn.utils.vector_to_parameters(trajectory[-1], expert.parameters())
        with torch.no_grad():
            forecasts.append(expert(batch.x, None))
    f = torch.stack(forecasts).mean(dim=0)
    saved = ResultStore(res).load_artifact(_key(control))["set"]
    assert torch.equal(saved["x"], batch.x)
    assert torch.allclose(saved["y"], (1 - s) * y_real + s * f, atol=1e-5)
    assert not torch.allclose(saved["y"], y_real, atol=1e-3)         # the relabelling did something

    # hard targets put the real targets back: the control becomes random's set exactly
    hard = {r["method"]: r for r in Runner(Grid(**{**g.__dict__, "methods": "relabelled-random",
                                                     "targets": "hard"})).run()}["relabelled-random"]
    assert hard["status"] == "ok" and hard["hard_targets"] == "replaced" and hard["label_source"] == "real"
    assert hard["metrics"]["test"] == by["random"]["metrics"]["test"]


def _key(record) -> str:
    return record["artifact"].rsplit("/", 1)[-1].removesuffix(".pt")


def test_the_controls_default_strength_follows_the_named_method():
    datm = make_method("relabelled-random", {"expert_of": "datm"})
    assert datm.total_relabelling(datm.named(), None) == (1.0, None)
    datm.bind({"soft_targets": False})
    assert datm.total_relabelling(datm.named(), None) == (0.0, None)
    fixed = make_method("relabelled-random", {"strength": 0.25})
    assert fixed.total_relabelling(make_method("condtsf", {"iterations": 30}), _Ctx())[0] == 0.25
    default = make_method("relabelled-random", {})
    assert default.total_relabelling(make_method("condtsf", {"iterations": 30, "beta": 0.2}), _Ctx()) == \
        pytest.approx((1 - 0.8 ** 10, 10))


class _Ctx:
    preset, dataset_defaults = "smoke", {}


# -- protocol facts ---------------------------------------------------------------------------------

def test_protocol_facts_count_what_the_test_loop_saw(tmp_path, monkeypatch):
    overrides = {"epochs": 1, "eval_batch_size": 10}    # 37 test windows: 4 batches, the last one partial
    (record,) = Runner(grid(tmp_path / "a", methods="full", seeds=[0], train_overrides=overrides)).run()
    assert record["protocol"] == {"select_split": "val", "scaler_fit": "train", "test_batches_dropped": 0,
                                  "test_windows": record["split_windows"]["test"], "eval_batch": 10}
    assert record["split_windows"]["test"] % 10

    from stbench.data.windows import WindowSet
    real = WindowSet.iter_batches

    def drop_last(self, batch_size, ids=None, locations=None):   # evaluation batches: drop the partial one
        for batch in real(self, batch_size, ids, locations):
            if batch_size != 10 or batch.x.shape[0] == batch_size:
                yield batch

    monkeypatch.setattr(WindowSet, "iter_batches", drop_last)
    (dropped,) = Runner(grid(tmp_path / "b", methods="full", seeds=[0], train_overrides=overrides)).run()
    assert dropped["status"] == "ok", dropped.get("error")
    n = record["split_windows"]["test"]
    assert dropped["protocol"]["test_windows"] == n - n % 10 and dropped["protocol"]["test_batches_dropped"] == 1


def test_a_scaler_fit_beyond_the_training_steps_is_reported(tmp_path):
    ws = cell.Workspace("synthetic-traffic", SIZE, None, cell.WindowSpec(), torch.device("cpu"))
    assert ws.scaler_fit == "train"
    import dataclasses
    ws.series.scaler = dataclasses.replace(ws.series.scaler, mean=ws.series.scaler.mean + 0.5 * ws.series.scaler.std)
    assert ws._scaler_fit() == "not train"


# -- refusals ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, says", [
    (["--eval-seeds", ""], "no seeds given; pass --eval-seeds"),
    (["--eval-seeds=-1"], "seeds must be integers >= 0"),
    (["--eval-lr-grid", "1e-3,0"], "learning rates must be positive"),
    (["--eval-lr-grid", "fast"], "comma-separated numbers"),
    (["--targets", "soft"], "invalid choice"),
    (["--methods", "relabelled-random", "--set", "relabelled-random.expert_of=mtt"], "expert_of must be one of"),
    (["--methods", "relabelled-random", "--set", "relabelled-random.strength=1.5"], "strength must be in [0, 1]"),
])
def test_bad_protocol_options_are_refused_before_any_work(tmp_path, capsys, args, says):
    res = tmp_path / "res"
    assert run(res, "--methods", "random", *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0]
    assert not (res / "runs.jsonl").exists()
