"""Every registered backbone's gradients agree with the same model evaluated in float64.

Backend kernels can be wrong: torch 2.13's oneDNN CPU convolution gave MTGNN's input skip (1 channel,
kernel 1 x 19) a weight gradient off by about 100% until ``TimeCollapse`` replaced it. A new model
registered in ``MODELS`` is checked here without any extra test code.
"""
import pytest
import torch

import stbench.models  # noqa: F401  (registers the models)
from stbench.registry import MODELS

N, C_IN = 30, 1


def build(name, dtype):
    torch.manual_seed(0)
    cls = MODELS.get(name)
    extra = {"adjacency": torch.rand(N, N)} if getattr(cls, "uses_adjacency", False) else {}
    return cls(N, C_IN, 1, 12, 12, **extra).to(dtype).eval()


def input_gradients(model, x, loc):
    x = x.clone().requires_grad_(True)
    out = model(x, loc)
    loss = (out ** 2).mean() + out.mean()
    return torch.autograd.grad(loss, [x, *model.parameters()])


@pytest.mark.parametrize("name", MODELS.names())
def test_every_gradient_matches_a_float64_evaluation(name):
    model = build(name, torch.float32)
    model64 = build(name, torch.float64)
    model64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 12, N, C_IN, generator=g)
    loc = x.mean(dim=0).transpose(0, 1)
    grads = input_gradients(model, x, loc)
    grads64 = input_gradients(model64, x.double(), loc.double())
    names = ["input"] + [n for n, _ in model.named_parameters()]
    # A gradient that is zero in exact arithmetic (the key bias of softmax attention shifts every score
    # of a query equally) is float32 rounding noise against float64's: measure it against the model's
    # largest gradient instead of its own.
    floor = 1e-6 * max(float(g.abs().max()) for g in grads64)
    for param, grad, grad64 in zip(names, grads, grads64, strict=True):
        error = (grad.double() - grad64).abs().max() / grad64.abs().max().clamp_min(max(floor, 1e-12))
        assert error < 1e-3, f"{name}.{param}: relative gradient error {error:.1e}"
