"""MTGNN backbones (transductive ``mtgnn``, inductive ``mtgnn-le``) and the ``mlp`` backbone."""
import pytest
import torch
import torch.nn.functional as F

import stbench.models  # noqa: F401  (registers the models)
from stbench.models.mtgnn import (
    DilatedInception,
    GraphLearner,
    gated_inception,
    normalise_adjacency,
    receptive_field,
)
from stbench.registry import MODELS

# reference gtnet plus its two location encoders, in_dim 1 (reference-stemdist-cpu-timings.md)
REFERENCE_PARAMS = 114_620


def make(name, n, c_in=1, c_out=1, l_in=12, l_out=12, **hp):
    torch.manual_seed(0)
    return MODELS.get(name)(n, c_in, c_out, l_in, l_out, **hp)


def batch(b, l_in, n, c):
    """Random normalised input and its encoder input: the per-location mean over windows (eq. 3)."""
    x = torch.randn(b, l_in, n, c)
    return x, x.mean(dim=0).transpose(0, 1)  # (N, L_in, C)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["mtgnn", "mtgnn-le", "mlp"])
@pytest.mark.parametrize("c_in,l_in,l_out", [(1, 12, 12), (3, 12, 12), (1, 6, 3), (3, 6, 3)])
def test_output_shape(name, c_in, l_in, l_out):
    model = make(name, 7, c_in, 1, l_in, l_out)
    x, loc = batch(2, l_in, 7, c_in)
    assert model(x, loc).shape == (2, l_out, 7, 1)


def test_registry_metadata():
    assert MODELS.entry("mtgnn").family == "stgnn"
    assert MODELS.entry("mtgnn-le").family == "stgnn"
    assert MODELS.entry("mlp").family == "mlp"
    assert not MODELS.get("mtgnn").inductive
    assert MODELS.get("mtgnn-le").inductive and MODELS.get("mlp").inductive


def test_receptive_field():
    assert receptive_field(3, 7, 1) == 19
    assert receptive_field(3, 7, 2) == 1 + 6 * 7
    assert make("mtgnn", 4, layers=2).seq_len == 13


@pytest.mark.parametrize("dilation", [1, 2])
def test_dilated_inception_is_its_four_convolutions_cropped_and_concatenated(dilation):
    """MTGNN's definition: each kernel's output cropped to the shortest, concatenated over channels."""
    torch.manual_seed(0)
    filter_, gate = DilatedInception(4, 8, dilation), DilatedInception(4, 8, dilation)
    x = torch.randn(2, 4, 5, 19, requires_grad=True)

    def separate(inception):
        outs = [conv(x) for conv in inception.convs]
        return torch.cat([o[..., -outs[-1].size(3):] for o in outs], dim=1)

    expected = torch.tanh(separate(filter_)) * torch.sigmoid(separate(gate))
    assert expected.shape[-1] == 19 - 6 * dilation
    torch.testing.assert_close(filter_(x), separate(filter_))
    # gated_inception takes and returns the backbone's (N, B, L, C) layout
    merged = gated_inception(x.permute(2, 0, 3, 1), filter_, gate).permute(1, 3, 0, 2)
    torch.testing.assert_close(merged, expected)
    params = [x, *filter_.parameters(), *gate.parameters()]
    for g_merged, g_expected in zip(torch.autograd.grad(merged.sum(), params),
                                    torch.autograd.grad(expected.sum(), params)):
        torch.testing.assert_close(g_merged, g_expected)


@pytest.mark.parametrize("training", [False, True])
def test_graph_learner_keeps_top_k_per_row(training):
    torch.manual_seed(0)
    learner = GraphLearner(node_dim=10, subgraph_size=3, alpha=3.0).train(training)
    adj = learner(torch.randn(12, 10), torch.randn(12, 10))
    assert adj.shape == (12, 12)
    assert (adj >= 0).all()
    assert ((adj > 0).sum(dim=1) <= 3).all()


def test_inductive_train_small_predict_large():
    model = make("mtgnn-le", 6)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, loc = batch(4, 12, 6, 1)
    y = torch.randn(4, 12, 6, 1)
    for _ in range(3):
        opt.zero_grad()
        loss = (model(x, loc) - y).pow(2).mean()
        loss.backward()
        opt.step()
    model.eval()
    x_big, loc_big = batch(3, 12, 20, 1)
    with torch.no_grad():
        out = model(x_big, loc_big)
    assert out.shape == (3, 12, 20, 1)
    assert torch.isfinite(out).all()


def test_transductive_refuses_other_location_count():
    model = make("mtgnn", 6)
    x, loc = batch(2, 12, 5, 1)
    with pytest.raises(ValueError, match="transductive"):
        model(x, loc)


def test_inductive_needs_loc_input():
    model = make("mtgnn-le", 6)
    x, loc = batch(2, 12, 6, 1)
    with pytest.raises(ValueError, match="loc_input"):
        model(x)
    with pytest.raises(ValueError, match="loc_input"):
        model(x, loc[:5])


@pytest.mark.parametrize("name", ["mtgnn", "mtgnn-le"])
def test_eval_is_deterministic(name):
    model = make(name, 8).eval()
    x, loc = batch(2, 12, 8, 1)
    with torch.no_grad():
        assert torch.equal(model(x, loc), model(x, loc))


@pytest.mark.parametrize("encoder_relu", [False, True])
def test_gradient_reaches_loc_input(encoder_relu):
    model = make("mtgnn-le", 6, encoder_relu=encoder_relu)
    x, loc = batch(2, 12, 6, 1)
    loc.requires_grad_(True)
    model(x, loc).sum().backward()
    assert loc.grad is not None and loc.grad.abs().sum() > 0


def test_location_permutation_equivariance():
    n = 9
    model = make("mtgnn-le", n, c_in=2, subgraph_size=n).eval()
    x, loc = batch(2, 12, n, 2)
    perm = torch.randperm(n)
    with torch.no_grad():
        out = model(x, loc)
        out_perm = model(x[:, :, perm], loc[perm])
    torch.testing.assert_close(out_perm, out[:, :, perm], rtol=1e-4, atol=1e-5)


def test_parameter_count_matches_reference():
    model = make("mtgnn-le", 207)
    assert n_params(model) == REFERENCE_PARAMS
    assert len(list(model.parameters())) == 106
    # the inductive model's size does not depend on the number of locations
    assert n_params(make("mtgnn-le", 5)) == REFERENCE_PARAMS


def _loss_and_grads(model, x, loc):
    out = model(x, loc)
    loss = (out ** 2).mean() + out.mean()
    return out.detach(), torch.autograd.grad(loss, [x, *model.parameters()])


@pytest.mark.parametrize("name", ["mtgnn", "mtgnn-le"])
def test_sparse_propagation_equals_dense_in_output_and_every_gradient(name):
    dense = make(name, 30, 2, subgraph_size=4, propagation="dense").eval()
    sparse = make(name, 30, 2, subgraph_size=4, propagation="sparse").eval()
    sparse.load_state_dict(dense.state_dict())
    x, loc = batch(3, 12, 30, 2)
    x.requires_grad_(True)
    out_d, grads_d = _loss_and_grads(dense, x, loc)
    out_s, grads_s = _loss_and_grads(sparse, x, loc)
    torch.testing.assert_close(out_s, out_d, rtol=1e-5, atol=1e-6)
    assert len(grads_s) == len(grads_d)
    for g_s, g_d in zip(grads_s, grads_d):
        torch.testing.assert_close(g_s, g_d, rtol=1e-4, atol=1e-6)
    # the graph learner is reached only through the sampled gradient of the adjacency's values
    learner = next(i for i, p in enumerate(sparse.parameters()) if p is sparse.graph.lin1.weight)
    assert grads_s[1 + learner].abs().sum() > 0


def test_auto_propagation_is_sparse_only_on_many_locations():
    model = make("mtgnn-le", 5, propagation="auto")
    assert not model.sparse_propagation(511) and model.sparse_propagation(512)
    assert make("mtgnn-le", 5, propagation="sparse").sparse_propagation(5)
    assert not make("mtgnn-le", 5, propagation="dense").sparse_propagation(10_000)
    with pytest.raises(ValueError, match="propagation"):
        make("mtgnn", 5, propagation="csr")


def test_twice_differentiable_gives_a_double_backward_the_sparse_product_lacks():
    """Gradient matching differentiates through a gradient; the sparse product refuses that."""
    x, loc = batch(2, 12, 20, 1)
    for model, works in [(make("mtgnn-le", 20, subgraph_size=4, propagation="sparse"), False),
                         (make("mtgnn-le", 20, subgraph_size=4, propagation="sparse").twice_differentiable(), True)]:
        params = list(model.parameters())
        grads = torch.autograd.grad(model.eval()(x, loc).pow(2).mean(), params, create_graph=True)
        second = sum((g ** 2).sum() for g in grads)
        if works:
            second.backward()
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
        else:
            with pytest.raises(RuntimeError, match="once_differentiable|twice"):
                second.backward()



# --- the (N, B, L, C) layout computes MTGNN's (B, C, N, L) forward -------------------------------

def bcnl_forward(model, x, loc):
    """MTGNN's forward in its own (B, C, N, L) layout (einsum propagation, 1x1 and (1, L)
    convolutions, dropout on (B, C, N, L) tensors), written from ``model``'s parameters: the
    computation before the layout change of issue 34."""
    b, length, n, _ = x.shape
    adj = model.graph(*model.node_embeddings(loc, n))
    a_out, a_in = normalise_adjacency(adj), normalise_adjacency(adj.T)

    def drop(t, module):
        return F.dropout(t, module.p, module.training)

    def collapse(t, conv):   # kernel (1, L) on length-L inputs
        return F.conv2d(t, conv.weight, conv.bias)

    def mixprop(t, layer, a_hat):
        h, hops = t, [t]
        for _ in range(layer.depth):
            h = layer.alpha * t + (1 - layer.alpha) * torch.einsum("bcwl,vw->bcvl", h, a_hat)
            hops.append(h)
        return F.conv2d(torch.cat(hops, dim=1), layer.mlp.weight, layer.mlp.bias)

    x = F.pad(x.permute(0, 3, 2, 1), (model.seq_len - length, 0))
    skip = collapse(drop(x, model.input_dropout), model.skip0)
    h = F.conv2d(x, model.start_conv.weight, model.start_conv.bias)
    for block in model.blocks:
        residual = h
        dilation = (1, block.filter.dilation)
        filtered = F.conv2d(h, *block.filter.kernel(), dilation=dilation)
        gated = F.conv2d(h, *block.gate.kernel(), dilation=dilation)
        h = drop(torch.tanh(filtered) * torch.sigmoid(gated), block.dropout)
        skip = skip + collapse(h, block.skip)
        h = mixprop(h, block.gconv1, a_out) + mixprop(h, block.gconv2, a_in)
        h = h + residual[..., -h.size(3):]
        h = block.norm(h.transpose(1, 2)).transpose(1, 2)
    skip = skip + collapse(h, model.skipE)
    out = model.end_conv_2(F.relu(model.end_conv_1(F.relu(skip))))
    return out.reshape(b, model.output_len, model.out_channels, n).transpose(2, 3)


def _second_order_grads(forward, model, x, loc):
    """Output, first gradients (x and parameters) and the gradient of their squared norm: the double
    backward that gradient matching takes."""
    params = list(model.parameters())
    out = forward(model, x, loc)
    first = torch.autograd.grad((out ** 2).mean() + out.mean(), [x, *params], create_graph=True)
    second = torch.autograd.grad(sum((g ** 2).sum() for g in first), params)
    return out.detach(), [g.detach() for g in first], second


@pytest.mark.parametrize("name", ["mtgnn", "mtgnn-le"])
def test_layout_computes_mtgnn_forward_and_its_first_and_second_gradients(name):
    model = make(name, 9, 2, subgraph_size=4, dilation_exponential=1).double().eval()
    x, loc = batch(3, 12, 9, 2)
    x, loc = x.double().requires_grad_(True), loc.double()
    new = _second_order_grads(lambda m, a, b: m(a, b), model, x, loc)
    old = _second_order_grads(bcnl_forward, model, x, loc)
    torch.testing.assert_close(new[0], old[0])
    for part_new, part_old in zip(new[1:], old[1:]):
        assert len(part_new) == len(part_old)
        for g_new, g_old in zip(part_new, part_old):
            torch.testing.assert_close(g_new, g_old)


def test_layout_draws_mtgnns_dropout_masks_for_a_seed():
    """Training mode (dropout 0.3, top-k noise): one seed gives the (B, C, N, L) forward's output."""
    model = make("mtgnn-le", 9, 2, subgraph_size=4).train()
    x, loc = batch(4, 12, 9, 2)
    outs = []
    for forward in (lambda: model(x, loc), lambda: bcnl_forward(model, x, loc)):
        torch.manual_seed(7)
        outs.append(forward())
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    torch.manual_seed(8)
    assert not torch.allclose(model(x, loc), outs[0])   # the masks do depend on the seed
