"""The diagnoses' measurements (probes/diagnosis.py) on small models built to show them."""

import torch
from torch import nn

from nnrecipe.probes.diagnosis import collapse, final_stretch, first_constant_module, mode_gap, same_for_every_row

torch.manual_seed(0)
X = torch.randn(16, 10)
Y = torch.arange(16) % 4


def _head_behind_relu(dead: bool) -> nn.Module:
    torch.manual_seed(1)  # the same weights whatever ran before in this process
    net = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 4), nn.ReLU())
    with torch.no_grad():  # dead: every logit below zero, the last ReLU outputs 0 for every example;
        net[2].bias.fill_(-100.0 if dead else 5.0)  # alive: every logit above zero for these inputs
    return net


def test_rows_alike_and_the_final_stretch():
    assert same_for_every_row(torch.ones(5, 3)) and not same_for_every_row(torch.randn(5, 3))
    assert not same_for_every_row(torch.ones(1, 3))  # one example: nothing to compare
    # SqueezeNet 1.1 at Adam 1e-3 (issue 27): 1.62 at step 25, 0.86 at 100, then ln 10 from 175
    curve = [(25, 1.62), (100, 0.86), (150, 1.9), (175, 2.30259), (200, 2.30259), (500, 2.30259)]
    assert final_stretch(curve) == (175, (100, 0.86))
    assert final_stretch([(25, 2.3), (50, 2.3026)]) == (25, None)  # never lower: no "after reaching"


def test_a_dead_relu_on_the_logits_is_named():
    c = collapse([(25, 0.9), (50, 1.3863)], constant=1.3863, model=_head_behind_relu(dead=True), x=X)
    assert c is not None and c.layer == "3" and c.dead_activation and c.lowest == (25, 0.9)
    assert "every example gets the same output" in c.words() and "activation on the logits" in c.hint()
    assert collapse([(25, 0.9), (50, 1.3863)], constant=1.3863, model=_head_behind_relu(dead=False), x=X) is None


class _CutOff(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(10, 8)
        self.gate = nn.Dropout(0.0)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.gate(self.embed(x)) * 0.0)  # the input never reaches the head


def test_an_input_cut_off_inside_the_model_is_not_called_a_dead_activation():
    c = collapse([(25, 1.39), (50, 1.39)], constant=1.386, model=_CutOff(), x=X)
    assert c is not None and c.layer == "head" and not c.dead_activation and c.lowest is None
    assert "does not depend on the input from head on" in c.hint()
    assert first_constant_module(_head_behind_relu(dead=False), X) == ("", "")
    assert collapse([(25, 1.39)], constant=1.386, model=_CutOff(), x=torch.ones(4, 10)) is None  # identical inputs


def test_mode_gap_names_stale_batchnorm_and_leaves_the_model_as_it_was():
    net = nn.Sequential(nn.Linear(10, 8), nn.BatchNorm1d(8, momentum=0.001), nn.ReLU(), nn.Linear(8, 4))
    x = X * 10 + 30  # features far from the running statistics' init (0, 1)
    before = net[1].running_mean.clone()
    g = mode_gap(net, x, Y, lambda out, y: nn.functional.cross_entropy(out, y, reduction="none"), constant=1.386)
    assert torch.equal(net[1].running_mean, before) and net.training  # a copy took the train-mode forward
    assert g.norms[0].layer == "1" and g.norms[0].drift > 1 and g.norms[0].momentum == 0.001
    assert g.eval_mode.shape == g.train_mode.shape == (16,) and not g.dropouts
    drop = nn.Sequential(nn.Linear(10, 4), nn.Dropout(0.5))
    assert mode_gap(
        drop, X, Y, lambda out, y: nn.functional.cross_entropy(out, y, reduction="none"), constant=1.386
    ).dropouts == ["1"]


def test_some_examples_behind_a_dead_relu_are_a_partial_collapse():
    # SqueezeNet 1.1 on digits (bench/architectures.py): 5 of 8 overfit examples end with all
    # logits at 0 behind its last ReLU, the loss at 5/8 ln 10 = 1.44
    net = nn.Sequential(nn.Linear(10, 4), nn.ReLU())
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].weight[:, 0] = torch.tensor([1.0, 2.0, 3.0, 4.0])  # logits = relu(c * x0): dead where x0 < 0
        net[0].bias.zero_()
    c = collapse([(25, 0.9), (50, 1.1), (75, 1.1)], constant=1.386, model=net, x=X)
    dead = int((X[:, 0] < 0).sum())
    assert c is not None and c.partial and c.alike == (dead, 16) and c.layer == "1" and c.dead_activation
    assert c.words().startswith(f"{dead} of 16 examples get one and the same output; they are already alike at 1 (ReLU")
