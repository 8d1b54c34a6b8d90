"""The graph layer: one policy for networks torch.fx cannot trace, in-place writes seen as such."""
import operator

import pytest
import torch
import torch.nn as nn

import groupsnn as gs
from groupsnn.fold import fuse_batchnorm
from groupsnn.graph import static_nodes, trace, writes_into
from groupsnn.stats import layer_stats


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.act, self.fc = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Linear(36, 3)

    def forward(self, x):
        h = self.act(self.bn(self.conv(x)))
        if h.sum() > 0:  # control flow on a tensor's value: torch.fx cannot trace it
            h = h * 1.0
        return self.fc(h.flatten(1))


def test_every_part_follows_the_one_policy_for_an_untraceable_network():
    x = torch.rand(4, 1, 5, 5)
    with pytest.warns(UserWarning, match=r"prepare\(\): torch.fx cannot trace Untraceable .*; swapped"):
        ann = gs.prepare(Untraceable(), levels=4, threshold=1.0).eval()
    with pytest.warns(UserWarning, match=r"fuse_batchnorm\(\): torch.fx cannot trace .*; BatchNorm left unfolded"):
        fuse_batchnorm(ann)
    with pytest.warns(UserWarning, match=r"convert\(\): torch.fx cannot trace"):
        snn = gs.convert(ann, "gn", tau=4)
    with pytest.warns(UserWarning, match=r"simulate\(\): torch.fx cannot trace .*; running the whole model"):
        gs.simulate(snn, x, 2)
    with pytest.warns(UserWarning, match=r"correct\(\): torch.fx cannot trace .*; each layer is corrected"):
        gs.correct(snn, ann, [x], timesteps=2, batches=1)
    with pytest.raises(ValueError, match=r"layer_stats\(\): torch.fx cannot trace Untraceable .*make forward\(\) "
                                         r"traceable"):
        layer_stats(snn, [x], 2)


def test_an_augmented_assignment_is_traced_as_the_in_place_write_it_is():
    class Sum(nn.Module):
        def forward(self, x, y):
            z = x
            z += y
            return x

    graph = trace(Sum())
    (node,) = [n for n in graph.nodes if n.op == "call_function"]
    assert node.target is operator.iadd and writes_into(Sum(), node) == [node.args[0]]


def test_a_random_draw_is_never_static():
    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.act = nn.Linear(3, 3), nn.ReLU()

        def forward(self, x):
            return self.act(self.fc(x + torch.randn_like(x)))

    snn = gs.convert(gs.prepare(Noisy(), levels=4, threshold=1.0), "gn", tau=2)
    static = {n.name for n in static_nodes(snn, trace(snn))}
    assert static == {"x"}  # only the input: the draw, and all that follows it, run at every step


def test_a_static_write_after_a_per_step_read_runs_at_every_step():
    class ReadThenWrite(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.act = nn.Conv2d(1, 1, 1), gs.GroupNeuron(1.0, tau=4)

        def forward(self, x):
            h = self.conv(x)
            s = self.act(h)
            h += 100.0  # depends on nothing per step, yet must come after the neuron read h
            return s + h

    net, x = ReadThenWrite().eval(), torch.rand(2, 1, 2, 2)
    with torch.no_grad():
        stepped = torch.stack([net(x) for _ in range(3)])
    gs.reset(net)
    for fold in (True, False):
        assert torch.equal(gs.simulate(net, x, 3, fold=fold), stepped)
