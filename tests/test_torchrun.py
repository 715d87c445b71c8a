"""torchrun: one experiment on several processes (DistributedDataParallel, gloo on the CPU) gives
the verdicts of one process; rank 0 alone writes; --nproc launches it; ranks that disagree, and
settings that cannot go with it, are one line. Real torchrun, real process groups, no mocks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import PLANTED, write_spec

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SMALL = {"train": {"steps": 400, "eval_every": 100}}
NNRECIPE = [sys.executable, "-m", "nnrecipe.cli"]


def _verdicts(stdout: str):
    return [(v["check"], v["status"], v["observed"]) for v in json.loads(stdout)]


def test_two_processes_train_the_model_of_one_and_rank_0_alone_writes(in_tmp):
    scratch = in_tmp / "tmp"  # the ranks' temporary folders, apart from other tests'
    scratch.mkdir()
    env = {**ENV, "TMPDIR": str(scratch)}
    one = subprocess.run(
        [*NNRECIPE, "overfit", "--config", str(write_spec(in_tmp, {"name": "one", **SMALL}, "one.yaml")), "--json"],
        cwd=in_tmp,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    two = subprocess.run(  # --nproc 2 runs `torchrun --standalone --nproc-per-node=2 -m nnrecipe.cli ...`
        [*NNRECIPE, "overfit", "--config", str(write_spec(in_tmp, {"name": "two", **SMALL}, "two.yaml")), "--json"]
        + ["--nproc", "2"],
        cwd=in_tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # 400 steps do not fit train: a fail, rank 0's exit code (not torchrun's "crash")
    assert one.returncode == two.returncode == 1 and "ChildFailedError" not in two.stderr, two.stderr
    assert "torchrun: 2 processes train each model" in " ".join(two.stderr.split())  # rich wraps lines
    a, b = _verdicts(one.stdout), _verdicts(two.stdout)  # one JSON document: rank 1 prints nothing
    assert [(c, s) for c, s, _ in a] == [(c, s) for c, s, _ in b] and len(a) == 4
    # each rank's half of every batch, gradients averaged: the whole batch's step, up to float sums
    fit_a, fit_b = a[0][2], b[0][2]
    assert abs(fit_a["train_accuracy"] - fit_b["train_accuracy"]) < 0.01, (fit_a, fit_b)
    assert abs(fit_a["train_loss"] - fit_b["train_loss"]) < 0.02 * fit_a["train_loss"]
    runs = sorted(p.name for p in (in_tmp / "runs").iterdir())
    assert runs == ["one", "two"]  # rank 1's run directory was a scratch folder, now gone
    assert not list(scratch.glob("nnrecipe-rank*"))  # and its scratch folder is gone
    assert (in_tmp / "runs" / "two" / "overfit" / "checkpoints" / "last.pt").exists()


_PORT: list[int] = []


def _two_ranks_start(in_tmp, rank: int, argv):
    """One of two processes joined as torchrun would join them (its environment variables)."""
    if rank == 0:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            _PORT[:] = [s.getsockname()[1]]
    env = {**ENV, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_PORT[0]))
    return subprocess.Popen(argv, cwd=in_tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _two_ranks(in_tmp, argv_of_rank):
    """Two processes joined as torchrun would join them; (exit code, stderr) of each."""
    procs = [_two_ranks_start(in_tmp, rank, argv_of_rank(rank)) for rank in range(2)]
    said = [p.communicate(timeout=300) for p in procs]
    return [(p.returncode, err) for p, (_, err) in zip(procs, said)]


def test_what_earlier_commands_left_reaches_every_rank(in_tmp):
    """Rank 0's run directory (best.yaml, summaries, a study) copied into the other ranks' scratch."""
    (in_tmp / "runs" / "x" / "regularize").mkdir(parents=True)
    (in_tmp / "runs" / "x" / "regularize" / "best.yaml").write_text("optim: {lr: 0.01}\n")
    (in_tmp / "runs" / "x" / "tb").mkdir()
    (in_tmp / "runs" / "x" / "tb" / "events").write_text("not copied")
    code = (
        "import sys, pathlib; from nnrecipe import distributed; from nnrecipe.spec import Spec\n"
        "with distributed.session(Spec(name='x'), resume=False) as r:\n"
        "    root = pathlib.Path('runs/x' if r.writes else 'scratch/x')\n"
        "    distributed.share_run_dir(r, root)\n"
        "    print(sorted(p.relative_to(root).as_posix() for p in root.rglob('*') if p.is_file()))\n"
    )
    ranks = []
    for rank in range(2):
        ranks.append(_two_ranks_start(in_tmp, rank, [sys.executable, "-c", code]))
    outs = [p.communicate(timeout=120) for p in ranks]
    assert [p.returncode for p in ranks] == [0, 0], outs
    assert outs[0][0].strip() == "['regularize/best.yaml', 'tb/events']"
    assert outs[1][0].strip() == "['regularize/best.yaml']"  # TensorBoard events stay on rank 0
    assert (in_tmp / "scratch" / "x" / "regularize" / "best.yaml").read_text() == "optim: {lr: 0.01}\n"


def test_ranks_that_disagree_on_the_spec_stop_with_one_line(in_tmp):
    said = _two_ranks(in_tmp, lambda rank: [*NNRECIPE, "overfit", f"optim.lr={0.001 * (rank + 1)}"])
    for code, err in said:
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "torchrun: the 2 processes disagree on the spec (ranks [1] differ from rank 0)" in err


def test_a_model_with_an_unused_layer_is_one_line_under_torchrun(in_tmp):
    model = f"model={{arch: python, factory: {PLANTED / 'models.py'}:unused_layer}}"
    said = _two_ranks(in_tmp, lambda rank: [*NNRECIPE, "overfit", model, "train.steps=50"])
    for code, err in said:
        assert code == 2 and len(err.strip().splitlines()) == 1 and "get no gradient in forward" in err, err


@pytest.mark.parametrize(
    "args, says",
    [
        (["--workers", "2"], "workers: torchrun already trains each model on several processes"),
        (["--resume"], "--resume: not under torchrun"),
        (["data.batch_size=1"], "data.batch_size: 1 examples cannot be shared by 2 processes"),
    ],
)
def test_what_cannot_go_with_torchrun_is_one_line(in_tmp, args, says):
    env = {**ENV, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}  # refused before joining any group
    proc = subprocess.run(
        [*NNRECIPE, "overfit", *args], cwd=in_tmp, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and says in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


_EVALUATE = """
import json, torch
from nnrecipe import distributed
from nnrecipe.data.bundle import TensorSplit
from nnrecipe.engine import Engine
from nnrecipe.spec import Spec
from nnrecipe.tasks import CLASSIFICATION, REGRESSION

class Counting(torch.nn.Module):  # a linear model that counts the examples it evaluates
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin, self.rows = torch.nn.Linear(8, 3), 0
    def forward(self, x):
        self.rows += len(x)
        return self.lin(x)

g = torch.Generator().manual_seed(1)
x = torch.randn(101, 8, generator=g)
cases = [(CLASSIFICATION, torch.randint(0, 3, (101,), generator=g), torch.nn.functional.cross_entropy),
         (REGRESSION, torch.randn(101, 3, generator=g), torch.nn.functional.mse_loss)]
said = {}
with distributed.session(Spec(name="x"), resume=False):  # one process outside torchrun
    for task, y, loss in cases:
        model = Counting()
        r = Engine(device=torch.device("cpu"), task=task).evaluate(
            model, TensorSplit("val", x, y), loss, batch_size=16, keep_outputs=True, keep_scores=True)
        said[task.name] = dict(loss=r.loss, metric=r.metric, n=r.n, rows=model.rows,
                               outputs=r.outputs.tolist(), scores=r.scores.tolist())
print(json.dumps(said))
"""


def test_each_rank_evaluates_its_share_and_every_rank_gets_the_whole_splits_numbers(in_tmp):
    """101 val examples on two ranks: 50 and 51 evaluated each; loss, metric (accuracy; R^2 from
    its sums), outputs and per-example scores of the whole split, in its order, on both ranks."""
    import numpy as np

    one = subprocess.run([sys.executable, "-c", _EVALUATE], env=ENV, capture_output=True, text=True, timeout=120)
    assert one.returncode == 0, one.stderr
    procs = [_two_ranks_start(in_tmp, rank, [sys.executable, "-c", _EVALUATE]) for rank in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    alone, ranks = json.loads(one.stdout), [json.loads(out) for out, _ in outs]
    for task in ("classification", "regression"):
        a, r0, r1 = alone[task], ranks[0][task], ranks[1][task]
        assert (a["rows"], r0["rows"], r1["rows"]) == (101, 50, 51)  # each rank its share, no more
        assert a["n"] == r0["n"] == r1["n"] == 101
        assert r0 == {**r1, "rows": r0["rows"]}  # the ranks agree to the bit
        assert abs(r0["loss"] - a["loss"]) < 1e-6 * abs(a["loss"])  # float32 batch means, other batches
        assert abs(r0["metric"] - a["metric"]) < 1e-12
        assert np.abs(np.array(r0["outputs"]) - np.array(a["outputs"])).max() < 1e-6  # in the split's order
        assert np.abs(np.array(r0["scores"]) - np.array(a["scores"])).max() < 1e-6


_DRAWS = """
import json, torch
from nnrecipe import distributed
from nnrecipe.data.bundle import TensorSplit
from nnrecipe.engine import Engine
from nnrecipe.experiments import TrainPlan
from nnrecipe.spec import Spec
from nnrecipe.tasks import CLASSIFICATION

seen = {"augmented": [], "masks": []}

class Dropped(torch.nn.Module):  # records the dropout mask of its share at every step
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 3)
    def forward(self, x):
        h = torch.nn.functional.dropout(torch.ones(len(x), 16), 0.5, self.training)
        seen["masks"].append((h > 0).int().flatten().tolist())
        return self.lin(x) + 0 * h.sum()

def augment(x, y):  # noise on the whole batch: the rows each rank trains on come from it
    x = x + torch.randn_like(x)
    seen["augmented"].append(float(x.sum()))
    return x, y

torch.manual_seed(0)
g = torch.Generator().manual_seed(1)
train = TensorSplit("train", torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g))
with distributed.session(Spec(name="x"), resume=False):
    model = Dropped()
    plan = TrainPlan(model=model, train=train, loss_fn=torch.nn.functional.cross_entropy, steps=3, batch_size=32,
                     seed=0, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), augment=augment)
    Engine(device=torch.device("cpu"), task=CLASSIFICATION).train(plan)
    after = torch.rand(4).tolist()  # what comes after training draws
print(json.dumps({**seen, "after": after}))
"""


def test_each_rank_trains_its_half_of_every_batch_with_its_own_dropout_masks(in_tmp):
    """Each rank's forward sees its half of every batch (16 of 32 rows); the halves get
    independent dropout masks (one stream would give every rank the same), while augmentation
    draws the same whole batch on every rank, and every rank leaves training with the same RNG."""
    procs = [_two_ranks_start(in_tmp, rank, [sys.executable, "-c", _DRAWS]) for rank in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    r0, r1 = (json.loads(out) for out, _ in outs)
    assert len(r0["masks"]) == 3 and len(r0["masks"][0]) == 16 * 16  # 3 steps, a share of 16 rows each
    assert all(a != b for a, b in zip(r0["masks"], r1["masks"]))
    assert r0["augmented"] == r1["augmented"] and len(set(r0["augmented"])) == 3
    assert r0["after"] == r1["after"]
