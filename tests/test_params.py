"""Methods validate their own parameters: a bad ``--set`` is one error line and exit 2, before any compute.

Ranges that do not depend on the data live in each method's ``Params.__post_init__``; limits that do
(more location subsets than locations) in ``Method.check``. Either way nothing is written to the store.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from baselines.coreset.herding import Herding
from methods.location_clustering import kmeans
from methods.stemdist import STemDist
from stbench.cli import main
from stbench.plugins import load_builtin
from stbench.registry import METHODS

load_builtin()

SMALL = ["--dataset", "synthetic-traffic", "--size", "locations=8,steps=200", "--epochs", "1", "--quiet"]


def _refused(capsys, tmp_path: Path, methods: str, setting: str, *extra: str) -> str:
    """Run the CLI with one bad --set; check exit 2, one stderr line, an empty store; return the line."""
    results = tmp_path / "res"
    capsys.readouterr()
    code = main(["run", "--methods", methods, *SMALL, *extra, "--set", setting, "--results", str(results)])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "\n" not in err and err.startswith("stbench: error: "), err
    assert not (results / "runs.jsonl").exists() and not (results / "artifacts").exists()
    return err


def test_negative_feature_cap_is_refused_with_one_line(capsys, tmp_path):
    err = _refused(capsys, tmp_path, "herding", "herding.feature_gib=-1")
    assert err == "stbench: error: method herding: feature_gib must be > 0 (got -1.0)"


def test_more_location_subsets_than_locations_is_refused_before_any_compute(capsys, tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("STemDist condensed although its parameters cannot be honoured")

    monkeypatch.setattr(STemDist, "condense", never)
    err = _refused(capsys, tmp_path, "stemdist", "stemdist.subsets=1000")
    assert err.startswith("stbench: error: method stemdist: subsets=1000")
    assert "8 locations" in err and "subsets <= 8" in err


@pytest.mark.parametrize("methods, setting, needle", [
    ("kcenter", "kcenter.feature_gib=0", "feature_gib must be > 0"),
    ("stemdist-kcenter", "stemdist-kcenter.feature_gib=0", "feature_gib must be > 0"),
    ("craig", "craig.grad_batch=0", "grad_batch must be >= 1"),
    ("craig", "craig.warmup_epochs=-1", "warmup_epochs must be >= 0"),
    ("craig", "craig.similarity=manhattan", "similarity must be one of euclidean, cosine"),
    ("infobatch", "infobatch.delta=0", "delta must be in (0, 1]"),
    ("infobatch", "infobatch.prune_ratio=1", "prune_ratio must be in [0, 1)"),
    ("epsilon-greedy", "epsilon-greedy.epsilon=1.5", "epsilon must be in [0, 1]"),
    ("ucb", "ucb.decay=1", "decay must be in [0, 1)"),
    ("ucb", "ucb.c=-0.5", "c must be >= 0"),
    ("stemdist", "stemdist.lr_data=0", "lr_data must be > 0"),
    ("stemdist", "stemdist.outer_iterations=-1", "outer_iterations must be >= 0"),
    ("stemdist-wo-g", "stemdist-wo-g.kmeans_iterations=0", "kmeans_iterations must be >= 1"),   # inherited
    ("stemdist-1feat", "stemdist-1feat.subsets=9", "subsets <= 8"),
])
def test_out_of_range_parameters_are_refused(capsys, tmp_path, methods, setting, needle):
    err = _refused(capsys, tmp_path, methods, setting)
    assert err.startswith(f"stbench: error: method {methods}: ") and needle in err


def test_every_method_accepts_its_defaults_and_the_edges_of_its_ranges():
    for name in METHODS.names():
        METHODS.get(name).make({})          # no default trips its own validation
    assert Herding.make({"feature_gib": 1e-3}).params.feature_gib == 1e-3
    METHODS.get("infobatch").make({"delta": 1.0, "prune_ratio": 0.0})
    METHODS.get("epsilon-greedy").make({"epsilon": 0.0, "decay": 0.0})
    METHODS.get("ucb").make({"c": 0.0})
    METHODS.get("craig").make({"warmup_epochs": 0, "reselect_every": 0})
    stemdist = STemDist.make({"subsets": 8})
    stemdist.check(100, 8)                  # as many subsets as locations is fine
    with pytest.raises(ValueError, match="subsets <= 7"):
        stemdist.check(100, 7)


def test_kmeans_refuses_an_impossible_clustering():
    import torch

    points = torch.randn(5, 3)
    gen = torch.Generator().manual_seed(0)
    for k, iterations in ((0, 10), (6, 10), (2, 0)):
        with pytest.raises(ValueError):
            kmeans(points, k, iterations, gen)
