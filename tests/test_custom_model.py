"""The attack on a model the package did not build: any nn.Module whose attacked layer is
an nn.Linear followed by a ReLU, driven through the public client and attack APIs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import spear
from spear.fl import ClientConfig, attackable_layer, client_update, layer_input, layer_payload
from gradients import matched_relative_errors


class TwoTower(nn.Module):
    """Not a Sequential: a stem, a ReLU module, and a head with a skip connection."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.stem = nn.Linear(40, 120)
        self.act = nn.ReLU()
        self.mid = nn.Linear(120, 60)
        self.act2 = nn.ReLU()
        self.head = nn.Linear(60 + 120, 5)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)

    def forward(self, x):
        h = self.act(self.stem(x))
        return self.head(torch.cat([self.act2(self.mid(h)), h], dim=1))


@pytest.mark.parametrize("index", [0, 1])
def test_attack_custom_module(index):
    model = TwoTower().double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 40, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (6,), generator=g)
    attackable_layer(model, index, example_input=x)
    update = client_update(model, x, y, ClientConfig())
    p = layer_payload(model, update, index)
    rec = spear.reconstruct(p.grad_weight, p.grad_bias, weight=p.weight, bias=p.bias)
    truth = layer_input(model, x, index).detach().numpy()
    assert rec.batch_size == 6 and rec.complete and rec.certified
    assert matched_relative_errors(rec.inputs, truth).max() < 1e-8


def test_layer_without_relu_is_refused():
    model = TwoTower()
    with pytest.raises(ValueError, match="ReLU"):
        attackable_layer(model, 2, example_input=torch.randn(2, 40))
