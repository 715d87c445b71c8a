"""Each inspect-data rule on synthetic measurements: it passes on clean data and catches its bug."""

import numpy as np
import pytest
import torch

from nnrecipe.checks import data_distribution as dist
from nnrecipe.checks import data_integrity as integ
from nnrecipe.data.bundle import TensorSplit
from nnrecipe.probes.data_groups import measure
from nnrecipe.probes.data_scan import DataScan, scan_split
from nnrecipe.spec_stages import InspectDataSpec
from nnrecipe.tasks import CLASSIFICATION, REGRESSION
from nnrecipe.verdict import Status

CFG = InspectDataSpec()


def _data(n=600, d=(1, 8, 8), classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.rand(n, *d, generator=g) * 0.3
    x.view(n, -1)[torch.arange(n), y] += 0.7  # class-dependent pixel
    return x, y


def meas(train, val, *, task=CLASSIFICATION, num_classes=4, kind="image", test=None):
    splits = {"train": TensorSplit("train", *train), "val": TensorSplit("val", *val)}
    if test is not None:
        splits["test"] = TensorSplit("test", *test)
    scan = DataScan(
        task=task,
        kind=kind,
        num_classes=num_classes,
        class_names=None,
        splits={k: scan_split(s) for k, s in splits.items()},
    )
    return measure(scan)


@pytest.fixture
def clean():
    x, y = _data(800)
    return meas((x[:600], y[:600]), (x[600:], y[600:]))


ALL = [
    dist.split_sizes,
    dist.shapes_dtypes,
    integ.label_range,
    integ.non_finite,
    integ.duplicates,
    integ.split_leakage,
    integ.conflicting_labels,
    dist.class_balance,
    dist.input_scale,
    dist.outliers,
]


@pytest.mark.parametrize("check", ALL, ids=lambda c: c.__name__)
def test_every_check_passes_on_clean_data(check, clean):
    v = check(clean, CFG)
    assert v.status is Status.PASS, v
    assert v.stage == "inspect-data" and v.check == check.__name__.replace("_", "-") and v.message
    assert v.observed is not None and v.expected is not None


def test_non_finite_inputs_fail_with_indices():
    x, y = _data()
    x[[3, 7]] = float("nan")
    x[11, 0, 0, 0] = float("inf")
    v = integ.non_finite(meas((x, y), _data(200, seed=1)), CFG)
    assert v.status is Status.FAIL and v.observed["train"] == 3
    assert v.observed["examples"] == ["train[3]", "train[7]", "train[11]"]


def test_non_finite_targets_fail_too():
    x, y = _data(200, d=(5,))
    t = torch.randn(200)
    t[4] = float("nan")
    v = integ.non_finite(meas((x, t), (x, torch.randn(200)), task=REGRESSION, kind="tabular"), CFG)
    assert v.status is Status.FAIL and "train[4]" in v.observed["examples"]


def test_labels_out_of_range_fail():
    x, y = _data()
    v = integ.label_range(meas((x, y + 1), (x, y)), CFG)  # C = 4 declared, labels 1..4
    assert v.status is Status.FAIL and "outside [0, 4)" in v.message


def test_negative_labels_fail():
    x, y = _data()
    y = y.clone()
    y[0] = -1
    assert integ.label_range(meas((x, y), (x, y)), CFG).status is Status.FAIL


def test_one_based_labels_without_declared_c_warn_with_the_hint():
    x, y = _data()
    v = integ.label_range(meas((x, y + 1), (x, y + 1), num_classes=5), CFG)
    assert v.status is Status.WARN and "1-based" in v.hint and v.observed["empty_classes"] == [0]


def test_float_labels():
    x, y = _data()
    assert integ.label_range(meas((x, y.float() + 0.5), (x, y)), CFG).status is Status.FAIL
    v = integ.label_range(meas((x, y.float()), (x, y.float())), CFG)
    assert v.status is Status.WARN and "float" in v.message


def test_one_hot_targets_fail():
    x, y = _data()
    onehot = torch.nn.functional.one_hot(y, 4)
    v = integ.label_range(meas((x, onehot), (x, onehot)), CFG)
    assert v.status is Status.FAIL and "one-hot" in v.hint


def test_duplicates_warn_with_counts():
    x, y = _data()
    x[500:530], y[500:530] = x[:30], y[:30]
    v = integ.duplicates(meas((x, y), _data(200, seed=1)), CFG)
    assert v.status is Status.WARN and v.observed["extra_copies"] == 30 and v.observed["groups"] == 30


def test_leakage_fails_and_counts_per_split():
    x, y = _data(800)
    val_x = x[600:].clone()
    val_x[:5] = x[:5]
    v = integ.split_leakage(meas((x[:600], y[:600]), (val_x, y[600:]), test=(x[:2].clone(), y[:2])), CFG)
    assert v.status is Status.FAIL and v.observed["val"] == 5 and v.observed["test"] == 2


def test_leakage_threshold_is_respected():
    x, y = _data(800)
    val_x = x[600:].clone()
    val_x[:1] = x[:1]
    m = meas((x[:600], y[:600]), (val_x, y[600:]))
    assert integ.split_leakage(m, CFG).status is Status.FAIL
    assert integ.split_leakage(m, InspectDataSpec(max_leak_fraction=0.01)).status is Status.PASS


def test_conflicting_labels_warn_then_fail_by_fraction():
    x, y = _data()
    x[590:], y[590:] = x[:10], (y[:10] + 1) % 4  # 10 groups, 20 examples of 600+200
    m = meas((x, y), _data(200, seed=1))
    v = integ.conflicting_labels(m, CFG)
    assert v.status is Status.FAIL and v.observed["groups"] == 10  # 20/800 = 2.5% > 1%
    assert integ.conflicting_labels(m, InspectDataSpec(conflict_fail_fraction=0.05)).status is Status.WARN


def test_extreme_imbalance_warns_and_reports_log_priors():
    x, y = _data(4000)
    keep = (y == 0) | (torch.rand(4000, generator=torch.Generator().manual_seed(0)) < 1 / 40)
    v = dist.class_balance(meas((x[keep], y[keep]), _data(400, seed=1)), CFG)
    assert v.status is Status.WARN and v.observed["imbalance_ratio"] > 10
    assert v.observed["log_priors"][0] > -0.2


def test_prior_shift_between_train_and_val_warns():
    x, y = _data(2000)
    xv, yv = _data(800, seed=1)
    keep = (yv == 0) | (torch.arange(800) % 3 == 0)
    v = dist.class_balance(meas((x, y), (xv[keep], yv[keep])), CFG)
    assert v.status is Status.WARN and v.observed["val_prior_shift_p"] < 1e-4


def test_sampling_noise_is_not_a_prior_shift():
    # A random (unstratified) val of 200 from balanced classes: the priors wobble by chance only.
    x, y = _data(1000)
    perm = torch.randperm(1000, generator=torch.Generator().manual_seed(3))
    xv, yv = x[perm[:200]], y[perm[:200]]
    assert dist.class_balance(meas((x, y), (xv, yv)), CFG).status is Status.PASS


def test_pixels_in_0_255_warn():
    x, y = _data()
    v = dist.input_scale(meas((x * 255, y), (x * 255, y)), CFG)
    assert v.status is Status.WARN and v.observed["mean"][0] > 30


def test_constant_features_warn():
    x = torch.randn(500, 6)
    x[:, 2] = 1.0
    v = dist.input_scale(meas((x, torch.arange(500) % 4), (x, torch.arange(500) % 4), kind="tabular"), CFG)
    assert v.status is Status.WARN and "nearly constant" in v.message and v.observed["worst"]["flat"] == [2]


def test_outliers_at_the_wrong_scale_or_blank_warn():
    x, y = _data()
    x[:2] *= 255
    v = dist.outliers(meas((x, y), _data(200, seed=1)), CFG)
    assert v.status is Status.WARN and v.observed["flagged"] >= 2
    x, y = _data()
    x[5] = 0.0
    v = dist.outliers(meas((x, y), _data(200, seed=1)), CFG)
    assert v.status is Status.WARN and "train[5]" in v.observed["most_extreme"]


def test_heavy_tailed_but_clean_tabular_data_does_not_alarm():
    g = torch.Generator().manual_seed(0)
    x = torch.exp(torch.randn(2000, 10, generator=g))  # log-normal features, standardized
    x = (x - x.mean(0)) / x.std(0)
    y = torch.arange(2000) % 2
    assert dist.outliers(meas((x, y), (x[:300], y[:300]), num_classes=2, kind="tabular"), CFG).status is Status.PASS


def test_small_val_warns_with_the_confidence_interval():
    x, y = _data(700)
    v = dist.split_sizes(meas((x[:650], y[:650]), (x[650:], y[650:])), CFG)
    assert v.status is Status.WARN and v.observed["val_accuracy_ci95"] == pytest.approx(
        1.96 * np.sqrt(0.25 / 50), abs=1e-4
    )


def test_shape_mismatch_between_splits_fails():
    x, y = _data()
    xv, yv = _data(200, d=(1, 6, 6))
    v = dist.shapes_dtypes(meas((x, y), (xv, yv)), CFG)
    assert v.status is Status.FAIL and "2 shapes" in v.message


def test_integer_inputs_fail():
    x, y = _data()
    v = dist.shapes_dtypes(meas(((x * 255).to(torch.uint8), y), ((x * 255).to(torch.uint8), y)), CFG)
    assert v.status is Status.FAIL and "uint8" in v.message


def test_regression_skips_label_checks():
    x = torch.randn(300, 4)
    t = torch.randn(300, 1)
    m = meas((x, t), (x[:150], t[:150]), task=REGRESSION, num_classes=None, kind="tabular")
    for check in (integ.label_range, integ.conflicting_labels, dist.class_balance):
        v = check(m, CFG)
        assert v.status is Status.SKIP and v.message


def test_unstandardized_regression_targets_warn():
    x = torch.randn(400, 4)
    t = 150 + 75 * torch.randn(400, 1)  # e.g. diabetes progression, 25..346
    v = dist.input_scale(meas((x, t), (x[:200], t[:200]), task=REGRESSION, num_classes=None, kind="tabular"), CFG)
    assert v.status is Status.WARN and "targets far from standardized" in v.message
    ok = dist.input_scale(
        meas((x, (t - 150) / 75), (x[:200], t[:200]), task=REGRESSION, num_classes=None, kind="tabular"), CFG
    )
    assert ok.status is Status.PASS


# ----------------------------------------------------------------------------- multi-label prevalence


def _label_scan(train_y: np.ndarray, val_y: np.ndarray):
    """Just what label_prevalence reads: each split's multi-hot targets."""
    from types import SimpleNamespace

    from nnrecipe.tasks import MULTI_LABEL

    split = lambda y: SimpleNamespace(targets=y.astype(np.float64), n=len(y))  # noqa: E731
    scan = SimpleNamespace(
        task=MULTI_LABEL,
        num_classes=train_y.shape[1],
        class_names=None,
        splits={"train": split(train_y), "val": split(val_y)},
        train=split(train_y),
    )
    return SimpleNamespace(scan=scan)


def test_label_prevalence_false_alarm_rate_on_random_splits_and_a_real_shift():
    """Null: train and val are one random split of the same multi-hot rows. Each label's 2 x 2
    test at prior_shift_p / K (Bonferroni): simulated family-wise false alarms at alpha 0.01,
    500 random 80/20 splits of 1,000 rows with 6 labels of prevalence 0.05-0.5."""
    rng = np.random.default_rng(0)
    cfg = InspectDataSpec(prior_shift_p=0.01, imbalance_warn_ratio=100)
    prevalence = np.array([0.05, 0.1, 0.2, 0.3, 0.4, 0.5])
    alarms = 0
    for _ in range(500):
        y = (rng.random((1000, 6)) < prevalence).astype(np.float64)
        order = rng.permutation(1000)
        alarms += dist.label_prevalence(_label_scan(y[order[:800]], y[order[800:]]), cfg).status is Status.WARN
    assert alarms / 500 <= 0.02, alarms  # measured: 1.2 % (nominal 1 %, +-0.45 % at 500 splits)
    y = (rng.random((1000, 6)) < prevalence).astype(np.float64)
    val = (rng.random((300, 6)) < np.where(np.arange(6) == 3, 0.55, prevalence)).astype(
        np.float64
    )  # label 3: 0.3 -> 0.55
    v = dist.label_prevalence(_label_scan(y, val), cfg)
    assert v.status is Status.WARN and "val prevalence of 1 label(s) differs" in v.message and "e.g. 3:" in v.message


def test_label_prevalence_names_labels_never_on_and_rare_ones():
    y = np.zeros((500, 3))
    y[:250, 0], y[:5, 1] = 1, 1  # label 2 never on, label 1 on 1 in 100
    v = dist.label_prevalence(_label_scan(y, y[:100]), InspectDataSpec())
    assert (
        v.status is Status.WARN
        and "label 2 is never on in train" in v.message
        and "e.g. 1: prevalence 0.01" in v.message
    )
