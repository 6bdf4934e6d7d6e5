"""Graph WaveNet backbone and the ``stprune`` training preset."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stbench.cli import main
from stbench.models.gwnet import GWNet, transition
from stbench.presets import train_config
from stbench.registry import MODELS
from stbench.results import ResultStore


def make(n=6, c_in=2, c_out=1, l_in=12, l_out=12, **hp):
    torch.manual_seed(0)
    return MODELS.get("gwnet")(n, c_in, c_out, l_in, l_out, **hp)


@pytest.mark.parametrize("c_in, c_out, l_in, l_out", [(2, 1, 12, 12), (1, 2, 6, 3), (3, 1, 24, 12)])
@pytest.mark.parametrize("with_adjacency", [False, True])
def test_output_shape(c_in, c_out, l_in, l_out, with_adjacency):
    adjacency = torch.rand(6, 6) if with_adjacency else None
    model = make(6, c_in, c_out, l_in, l_out, adjacency=adjacency)
    assert model(torch.randn(3, l_in, 6, c_in)).shape == (3, l_out, 6, c_out)


def test_registry_and_receptive_field():
    entry = MODELS.entry("gwnet")
    assert entry.family == "stgnn" and not entry.obj.inductive and entry.obj.uses_adjacency
    assert make().receptive_field == 13          # 4 blocks x dilations (1, 2), kernel 2


def test_gradient_reaches_every_parameter():
    model = make(adjacency=torch.rand(6, 6)).train()
    model(torch.randn(4, 12, 6, 2)).pow(2).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def _original_forward(model, x):
    """Graph WaveNet as first written: every skip convolution over all time steps, cropped when summed."""
    supports = model.supports()
    h = model.start_conv(F.pad(x.permute(0, 3, 2, 1), (model.seq_len - x.shape[1], 0)))
    skip = None
    for layer in model.layers:
        gated = torch.tanh(layer.filter(h)) * torch.sigmoid(layer.gate(h))
        s = layer.skip(gated)
        skip = s if skip is None else s + skip[..., -s.size(3):]
        if layer.gconv is not None:
            h = layer.norm(layer.gconv(gated, supports) + h[..., -gated.size(3):])
    out = model.end_conv_2(F.relu(model.end_conv_1(F.relu(skip))))
    b, n = x.shape[0], x.shape[2]
    return out.reshape(b, model.output_len, model.out_channels, n).transpose(2, 3)


@pytest.mark.parametrize("l_in", [12, 16])
def test_skip_on_the_read_steps_only_equals_convolving_all_and_cropping(l_in):
    model = make(l_in=l_in, adjacency=torch.rand(6, 6)).eval()
    x = torch.randn(3, l_in, 6, 2)
    torch.testing.assert_close(model(x), _original_forward(model, x))


def test_refuses_another_location_count():
    model = make(6)
    with pytest.raises(ValueError, match="transductive"):
        model(torch.randn(2, 12, 5, 2))
    with pytest.raises(ValueError, match="adjacency"):
        make(6, adjacency=torch.rand(5, 5))


def test_transition_matrices_are_row_stochastic_and_keep_isolated_nodes_at_zero():
    adj = torch.tensor([[0.0, 2.0, 2.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    p = transition(adj)
    assert p[0].tolist() == [0.0, 0.5, 0.5] and p[1].tolist() == [1.0, 0.0, 0.0] and p[2].tolist() == [0.0] * 3
    model = make(3, adjacency=adj).eval()
    torch.testing.assert_close(model.transitions[1], transition(adj.T))
    assert torch.isfinite(model(torch.randn(2, 12, 3, 2))).all()


def test_adaptive_adjacency_is_a_row_softmax():
    supports = make(6).supports()
    assert len(supports) == 1 and (supports[0] >= 0).all()
    torch.testing.assert_close(supports[0].sum(dim=1), torch.ones(6))


def test_stprune_preset_is_the_papers_training_setup():
    cfg = train_config("stprune", {})
    assert (cfg.optimizer, cfg.momentum, cfg.weight_decay, cfg.lr, cfg.lr_min) == ("sgd", 0.9, 1e-4, 1e-3, 1e-4)
    assert (cfg.lr_schedule, cfg.batch_size, cfg.loss, cfg.epochs, cfg.select) == ("cosine", 256, "mae", 100, "last")


def test_stprune_with_gwnet_end_to_end_uses_the_adjacency_and_the_last_epoch(tmp_path):
    results = str(tmp_path / "res")
    assert main(["run", "--methods", "stprune", "--preset", "stprune", "--model", "gwnet", "--epochs", "2",
                 "--dataset", "synthetic-traffic", "--size", "locations=8,steps=300", "--retention", "0.5",
                 "--quiet", "--results", results]) == 0
    (record,) = ResultStore(results).records()
    assert record["status"] == "ok", record.get("error")
    with_adjacency = GWNet(8, 1, 1, adjacency=torch.eye(8))
    assert record["model_parameters"] == sum(p.numel() for p in with_adjacency.parameters())
    assert record["best_epoch"] == 1 and record["train_config"]["select"] == "last"
    assert record["pruned_epochs"] == 1 and record["retention_nominal"] == 0.5
