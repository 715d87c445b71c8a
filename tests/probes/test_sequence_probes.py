"""The language-model probes on tiny models: what a causal model, a model that looks ahead,
a mask shifted by one and a batch-mixing model measure."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nnrecipe.losses import make_loss
from nnrecipe.models.sequence import GRU
from nnrecipe.probes.sequence_probes import (
    NoEmbedding,
    _other_tokens,
    batch_dependency_perturbation,
    batch_dependency_tokens,
    causal_gradients,
    causal_perturbation,
    padding_change,
    target_leak,
)
from nnrecipe.spec import build_spec
from planted import sequence as planted

L, V = 16, len(planted.VOCAB)
POSITIONS = [0, 5, 10, 14]


@pytest.fixture
def windows():
    torch.manual_seed(0)
    s = planted.streams(context=L)
    t = s["train"][: 8 * (L + 1)].reshape(8, L + 1)
    return t[:, :-1].contiguous(), t[:, 1:].contiguous()


def test_a_causal_gpt_and_a_gru_get_no_gradient_from_later_inputs(windows):
    x, _ = windows
    for model in (planted.gpt((L,), V), GRU(V, n_embd=8, hidden=16, layers=1, dropout=0.0)):
        c = causal_gradients(model, x[:4], POSITIONS)
        assert c.future == [0.0] * len(POSITIONS) and all(p > 0 for p in c.past)
        assert c.reach == [0] * len(POSITIONS) and c.matrix.shape == (len(POSITIONS), L)


def test_a_gpt_without_its_mask_sees_every_later_position(windows):
    x, _ = windows
    c = causal_gradients(planted.gpt_without_mask((L,), V), x[:4], POSITIONS)
    assert all(f > 1e-3 * p for f, p in zip(c.future, c.past))
    assert c.reach == [L - 1 - t for t in POSITIONS]  # all the way to the end of the window


def test_a_mask_shifted_by_one_leaks_exactly_one_position_ahead(windows):
    x, _ = windows
    c = causal_gradients(planted.gpt_mask_shifted_by_one((L,), V), x[:4], POSITIONS)
    assert c.reach == [1] * len(POSITIONS) and c.first_future == [t + 1 for t in POSITIONS]


def test_a_model_without_an_embedding_cannot_be_differentiated():
    class OneHot(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(V, V)

        def forward(self, idx):
            return self.lin(F.one_hot(idx, V).float())

    with pytest.raises(NoEmbedding):
        causal_gradients(OneHot(), torch.zeros(2, L, dtype=torch.long), [0])


def test_batch_dependency_through_the_embeddings(windows):
    x, _ = windows
    rows = [0, 3, 7]
    own = batch_dependency_tokens(planted.gpt((L,), V), x, rows)
    off = own.copy()
    off[range(3), rows] = 0
    assert (own[range(3), rows] > 0).all() and (off == 0).all()
    mixed = batch_dependency_tokens(planted.batch_mixing((L,), V), x, rows)
    others = torch.ones(3, len(x), dtype=torch.bool)
    others[range(3), rows] = False
    assert (mixed[others.numpy()] > 0).all()


def test_target_leak_is_near_chance_on_shifted_text_and_one_on_a_copy(windows):
    s = planted.streams(context=L)
    t = s["train"][: 250 * (L + 1)].reshape(250, L + 1)
    x, y = t[:, :-1], t[:, 1:]
    ok = target_leak(x, y)
    assert max(ok.rates) < 0.3 and 0 < ok.chance < 0.3
    assert all(abs(r - n) < 0.05 for r, n in zip(ok.rates, ok.natural))  # shifted: targets repeat as the inputs do
    runs = torch.repeat_interleave(torch.randint(0, V, (400,), generator=torch.Generator().manual_seed(0)), 6)
    w = runs[: 100 * (L + 1)].reshape(100, L + 1)
    rep = target_leak(w[:, :-1], w[:, 1:])
    assert rep.rates[0] > 0.7 and abs(rep.rates[0] - rep.natural[0]) < 0.05  # repetitive, still correctly shifted
    assert target_leak(x, x.clone()).rates[0] == 1.0  # y = x: the target is the input
    late = torch.cat([x[:, :1], x[:, :-1]], dim=1)  # y[t] = x[t-1]: shifted the wrong way
    assert target_leak(x, late).rates[1] == 1.0


def test_padding_changes_nothing_for_a_causal_model_with_the_builtin_loss(windows):
    x, y = windows
    spec = build_spec({"task": "language-model", "data": {"source": "text"}, "model": {"arch": "gpt"}})
    loss = make_loss(spec, base=None)
    ok = padding_change(planted.gpt((L,), V), x, y, loss, pad=4)
    assert ok.loss_plain == pytest.approx(ok.loss_padded, rel=1e-6) and ok.length == L - 4
    counted = padding_change(planted.gpt((L,), V), x, y, planted.counts_padding(), pad=4)
    assert abs(counted.loss_padded - counted.loss_plain) > 10 * 1e-4 * counted.loss_plain  # 10x the default rtol
    looks_ahead = padding_change(planted.gpt_without_mask((L,), V), x, y, loss, pad=4)
    assert looks_ahead.loss_padded != pytest.approx(looks_ahead.loss_plain, rel=1e-5)


def test_a_second_read_of_the_ids_is_traced_too(windows):
    """head(tok(x) + tok(x).mean(1)): the second call looks ahead; both calls are tapped."""

    class ReadsTwice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = torch.nn.Embedding(V, 8)
            self.head = torch.nn.Linear(8, V)

        def forward(self, idx):
            return self.head(self.tok(idx) + self.tok(idx).mean(dim=1, keepdim=True))

    x, _ = windows
    c = causal_gradients(ReadsTwice(), x[:4], POSITIONS)
    assert all(f > 0 for f in c.future[:-1])


# ---- changing tokens: any model, with or without an nn.Embedding

RTOL = 1e-5


def test_changing_later_tokens_moves_no_earlier_output_of_a_causal_model(windows):
    x, _ = windows
    for model, reach, positional in (
        (planted.gpt((L,), V), L, True),
        (planted.causal_conv((L,), V), 3, False),
        (planted.onehot_gru((L,), V), L, True),
    ):
        p = causal_perturbation(model, x[:4], POSITIONS, V, rtol=RTOL)
        assert p.moved == [0.0] * len(POSITIONS) and p.first_moved == [None] * len(POSITIONS), model
        assert p.receptive == reach and p.positional is positional, (model, p.receptive, p.positional)
        below = np.triu(np.ones((L, L)), k=1)[POSITIONS].astype(bool)  # inputs after each tested output
        assert np.nan_to_num(p.matrix)[below].max() == 0 and np.isfinite(p.matrix).all()


def test_changing_later_tokens_moves_earlier_outputs_of_models_that_look_ahead(windows):
    x, _ = windows
    for model in (planted.onehot_bidirectional_gru((L,), V), planted.gpt_without_mask((L,), V)):
        p = causal_perturbation(model, x[:4], POSITIONS, V, rtol=RTOL)
        assert all(first is not None for first in p.first_moved) and min(p.moved) > 1e-3, model
    shifted = causal_perturbation(planted.gpt_mask_shifted_by_one((L,), V), x[:4], POSITIONS, V, rtol=RTOL)
    assert shifted.first_moved == POSITIONS  # output t itself reads t + 1


def test_a_model_that_reads_no_token_reads_zero_tokens(windows):
    x, _ = windows
    p = causal_perturbation(planted.ignores_input((L,), V), x[:4], POSITIONS, V, rtol=RTOL)
    assert p.receptive == 0 and p.moved == [0.0] * len(POSITIONS)


def test_batch_dependency_by_changing_each_window(windows):
    x, _ = windows
    rows = [0, 3, 7]
    own = batch_dependency_perturbation(planted.onehot_gru((L,), V), x, rows, V, rtol=RTOL)
    off = own.copy()
    off[range(3), rows] = 0
    assert (own[range(3), rows] > 0).all() and (off == 0).all()
    mixed = batch_dependency_perturbation(planted.onehot_batch_mixing((L,), V), x, rows, V, rtol=RTOL)
    others = np.ones((3, len(x)), dtype=bool)
    others[range(3), rows] = False
    assert (mixed[others] > 0).all()


def test_other_tokens_always_differ():
    g = torch.Generator().manual_seed(0)
    t = torch.randint(V, (64, L), generator=g)
    assert (_other_tokens(t, V, g) != t).all() and (_other_tokens(t, V, g) < V).all()
