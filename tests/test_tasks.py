"""Tasks are objects: nothing outside nnrecipe/tasks/ compares task names, and each task's
measures point the right way (a better model scores better, by the task's own rule)."""

import ast
import math
import typing
from pathlib import Path

import numpy as np
import pytest
import torch

from nnrecipe.spec import Spec
from nnrecipe.spec_stages import OverfitSpec
from nnrecipe.tasks import CLASSIFICATION, LANGUAGE_MODEL, REGRESSION, TASKS, Task, get_task

PACKAGE = Path(__file__).resolve().parents[1] / "nnrecipe"
NAMES = set(TASKS) | {"multi-label", "segmentation"}  # and the next issue's names, before they exist


def _literals(node) -> list:
    """String constants of a node that is a constant or a literal tuple/list/set of them."""
    if isinstance(node, ast.Constant):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant)]
    return []


def task_name_uses(path: Path) -> list[str]:
    """Comparisons with a task name (==, !=, in, not in) and dicts keyed by task names."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            consts = [v for n in [node.left, *node.comparators] for v in _literals(n)]
            if NAMES & {c for c in consts if isinstance(c, str)}:
                found.append(f"{path.name}:{node.lineno} compares with a task name")
        if isinstance(node, ast.Dict) and NAMES & {k.value for k in node.keys if isinstance(k, ast.Constant)}:
            found.append(f"{path.name}:{node.lineno} a dict keyed by task names")
    return found


def test_no_task_name_is_compared_outside_the_tasks_package():
    """Stages, probes, checks, the engine and the pictures ask the task; only the task objects
    themselves and the spec's validation (which names are allowed with which source) know names."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "tasks" or rel.name.startswith("spec"):
            continue
        offenders += task_name_uses(path)
    assert not offenders, offenders


def test_the_scan_finds_what_it_exists_to_find(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text(
        'if task == "classification":\n    pass\nx = task in ("regression", "x")\n'
        'y = {"language-model": 1}.get(task)\nz = task != "multi-label"\n'
    )
    assert len(task_name_uses(planted)) == 4
    clean = tmp_path / "clean.py"
    clean.write_text('if data.task.higher_is_better:\n    pass\nname = "classification"\n')
    assert task_name_uses(clean) == []


def test_the_spec_admits_exactly_the_registered_tasks():
    assert set(typing.get_args(Spec.model_fields["task"].annotation)) == set(TASKS)
    assert all(get_task(name).name == name for name in TASKS)


def _scores(task: Task, good: bool, n: int = 400) -> np.ndarray:
    """Per-example scores of a good or a poor model, in the task's own unit."""
    rng = np.random.default_rng(0 if good else 1)
    if task.higher_is_better:  # correct (1) or not (0)
        return (rng.random(n) < (0.9 if good else 0.6)).astype(float)
    return rng.gamma(2.0, 0.1 if good else 0.3, n)  # squared errors, nats


@pytest.mark.parametrize("task", list(TASKS.values()), ids=lambda t: t.name)
def test_a_better_model_scores_better_by_the_tasks_own_rule(task):
    good, poor = _scores(task, True), _scores(task, False)
    assert task.better_z(good, poor) > 3 and task.better_z(poor, good) < -3
    assert task.errors(good).mean() < task.errors(poor).mean()
    assert task.rank(float(good.mean())) > task.rank(float(poor.mean()))
    assert math.isfinite(task.objective(float("nan"))) and task.objective(0.5) == pytest.approx(0.5)
    assert 0 < task.metric_se(0.7, 500) < 0.1


@pytest.mark.parametrize(
    "task,out,y,expected",
    [
        (CLASSIFICATION, torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]]), torch.tensor([0, 0, 0]), [1.0, 0.0, 1.0]),
        (REGRESSION, torch.tensor([[1.0], [3.0]]), torch.tensor([[1.0], [1.0]]), [0.0, 4.0]),
    ],
)
def test_example_scores_and_meter_agree(task, out, y, expected):
    assert task.example_scores(out, y).tolist() == expected
    meter = task.meter(torch.device("cpu"))
    meter.update(out, y)
    if task is CLASSIFICATION:
        assert meter.value(len(y)) == pytest.approx(float(np.mean(expected)))
    else:  # R^2 with zero target variance is clamped: 1 - SSE / 1e-12
        assert meter.value(len(y)) < 0


def test_a_language_model_scores_windows_without_their_padding():
    out = torch.zeros(1, 3, 4)
    out[0, :, 1] = 5.0  # confident in token 1 everywhere
    y = torch.tensor([[1, 2, -100]])
    scores = LANGUAGE_MODEL.example_scores(out, y)
    meter = LANGUAGE_MODEL.meter(torch.device("cpu"))
    meter.update(out, y)
    assert meter.value(1) == pytest.approx(0.5)  # one of the two real targets
    logp = torch.log_softmax(out[0], dim=-1)
    assert scores.item() == pytest.approx(float(-(logp[0, 1] + logp[1, 2]) / 2), rel=1e-6)


@pytest.mark.parametrize("task", list(TASKS.values()), ids=lambda t: t.name)
def test_fits_train_goal_points_the_right_way(task):
    goal = task.train_goal(OverfitSpec())
    assert goal.met(goal.target) and not goal.met(goal.target - 0.5 if goal.higher_is_better else goal.target + 0.5)
    assert goal.name in goal.expected


def test_checks_a_task_does_not_have_skip_with_its_reason():
    assert REGRESSION.skip_reason("label-range") and REGRESSION.skip_reason("class-balance")
    assert CLASSIFICATION.skip_reason("label-range") == "" and CLASSIFICATION.skip_reason("causal-dependency")
    assert LANGUAGE_MODEL.skip_reason("causal-dependency") == "" and LANGUAGE_MODEL.skip_reason("distillation")
    assert LANGUAGE_MODEL.supports == {"causal-dependency", "padding-invariance"}


def test_a_new_task_answers_nothing_it_was_not_told():
    """A task that forgets a method raises instead of silently behaving like another task."""

    class Bare(Task):
        name = "bare"

    bare = Bare()
    with pytest.raises(NotImplementedError):
        bare.example_scores(torch.zeros(2, 3), torch.zeros(2))
    with pytest.raises(NotImplementedError):
        bare.meter(torch.device("cpu"))
    for ask in (
        lambda: bare.dumb_scores(None),
        lambda: bare.metric_se(0.5, 10),
        lambda: bare.objective(0.5),
        lambda: bare.num_outputs(None),
        lambda: bare.metric_of(np.ones(3)),
    ):
        with pytest.raises(NotImplementedError):
            ask()
    assert bare.mispredictions(torch.zeros(2, 3), torch.zeros(2), num_classes=3, loss="mse") is None
    # the checks whose rule is a task's own skip until the task opts in, saying so
    for check in (
        "human-baseline",
        "class-balance",
        "conflicting-labels",
        "suspected-label-errors",
        "augment-preserves-labels",
        "distillation",
    ):
        assert bare.skip_reason(check) == f"task bare has no rule for {check}"
    assert bare.skip_reason("causal-dependency") and bare.skip_reason("loss-at-init") == ""


def test_bce_takes_class_indices_and_multi_hot_targets_alike():
    """The loss reads targets as the task gives them: one-hot rows from class indices, or
    multi-hot rows of the outputs' shape as they are (a multi-label task's)."""
    import torch.nn.functional as F

    from nnrecipe.losses import BUILTIN, per_example_loss

    out = torch.tensor([[2.0, -1.0, 0.5], [-0.5, 1.5, 0.0]])
    indices, hot = torch.tensor([0, 1]), torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    one_hot = F.one_hot(indices, 3).float()
    assert BUILTIN["bce"](out, indices).item() == pytest.approx(F.binary_cross_entropy_with_logits(out, one_hot).item())
    assert BUILTIN["bce"](out, hot).item() == pytest.approx(F.binary_cross_entropy_with_logits(out, hot).item())
    by_row = F.binary_cross_entropy_with_logits(out, hot, reduction="none").mean(dim=1)
    assert torch.allclose(per_example_loss("bce", out, hot), by_row)
    assert not torch.allclose(per_example_loss("bce", out, indices), by_row)  # indices 0, 1 are not rows 0/1


def test_loss_floor_is_the_batch_s_conditional_entropy_of_identical_inputs():
    x = torch.tensor([[0.0, 1.0], [0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    f = CLASSIFICATION.loss_floor(x, torch.tensor([0, 1, 2, 2]), "cross_entropy")
    assert f.value == pytest.approx(2 / 4 * math.log(2)) and f.why.startswith("1 group ")
    assert CLASSIFICATION.loss_floor(x, torch.tensor([0, 1, 2, 3]), "bce").value == 0.0  # no rule for bce
    assert CLASSIFICATION.loss_floor(x[2:], torch.tensor([0, 1]), "cross_entropy").value == 0.0  # distinct inputs
    r = REGRESSION.loss_floor(x, torch.tensor([[1.0], [3.0], [0.0], [0.0]]), "mse")
    assert r.value == pytest.approx((1 + 1) / 4)  # each of the pair is 1 from their mean
    assert REGRESSION.loss_floor(x, torch.tensor([[1.0], [3.0], [0.0], [0.0]]), "l1").value == 0.0


def test_a_language_model_s_floor_counts_the_context_it_reads():
    # "a b a c": after "a" comes b once and c once; with two tokens of context every context is unique
    x = torch.tensor([[0, 1, 0, 2]])
    y = torch.tensor([[1, 0, 2, -100]])
    assert LANGUAGE_MODEL.loss_floor(x, y, "cross_entropy", receptive=1, positional=False).value == pytest.approx(
        2 / 3 * math.log(2)
    )
    assert LANGUAGE_MODEL.loss_floor(x, y, "cross_entropy", receptive=2, positional=False).value == 0.0
    # absolute positions tell the two "a"s apart; a model that reads nothing gets no lower floor than the prefix
    assert LANGUAGE_MODEL.loss_floor(x, y, "cross_entropy", receptive=1, positional=True).value == 0.0
    assert LANGUAGE_MODEL.loss_floor(x, y, "cross_entropy", receptive=0).value == 0.0
    assert (
        "the 1 token the model reads"
        in LANGUAGE_MODEL.loss_floor(x, y, "cross_entropy", receptive=1, positional=False).why
    )


@pytest.mark.parametrize("planted, status", [("two_outputs", "pass"), ("two_outputs_misaligned", "warn")])
def test_each_of_several_regression_outputs_is_judged(tmp_path, planted, status):
    """Two real targets: the overall R^2 hides an output the inputs do not predict (its column
    shuffled on its own); beats-baselines judges each output against its own train mean."""
    import nnrecipe
    from planted import regression

    result = nnrecipe.run(
        data=getattr(regression, planted)(),
        stages=["baseline", "overfit"],
        task="regression",
        overrides={
            "model.arch": "mlp",
            "optim.lr": 1e-3,
            "train.steps": 600,
            "train.eval_every": 200,
            "stages.baseline.steps": 300,
            "stages.baseline.eval_every": 100,
        },
        output_dir=tmp_path / "runs",
        name=planted.replace("_", "-"),
        quiet=True,
        keep_going=True,
    )
    v = result.verdict("beats-baselines")
    assert v.status.value == status and len(v.observed["per_output"]["z"]) == 2, v
    if status == "warn":
        assert "not on 1 of 2 outputs (output 1" in v.message and v.observed["per_output"]["r2"][0] > 0.5
