"""The segmentation task (nnrecipe/tasks/segmentation.py) end to end: masks (N, H, W) with -100
ignored, logits (N, C, H, W). Its measures agree with scikit-learn, a correct setup passes
inspect-data, baseline and overfit with no warn, and each bug of its kind is caught.
Data and models: tests/planted/segmentation.py; the shipped config:
configs/segmentation-shapes.yaml (torchvision's LR-ASPP, in tests/test_configs.py)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import run_planted
from nnrecipe.checks.segmentation_checks import mask_class_balance
from nnrecipe.errors import SpecError
from nnrecipe.probes.mispredictions import pixel_confusion
from nnrecipe.spec_stages import InspectDataSpec
from nnrecipe.tasks import SEGMENTATION
from nnrecipe.tasks.segmentation import dense_loss, pixel_accuracy
from planted import segmentation

FAST = {
    "task": "segmentation",
    "optim.lr": 3e-3,
    "data.batch_size": 32,
    "stages.baseline.steps": 150,
    "stages.baseline.eval_every": 50,
    "stages.baseline.overfit_steps": 200,
    "train.steps": 300,
    "train.eval_every": 100,
}


def _run(tmp_path, stages, *, data="clean", model=segmentation.fcn, **kw):
    return run_planted(tmp_path, segmentation, stages, data=data, model=model, overrides={**FAST, **kw})


# ----------------------------------------------------------------------------- the measures


def test_pixel_accuracy_and_the_loss_leave_ignored_pixels_out():
    out = torch.randn(3, 4, 5, 6)
    y = out.argmax(dim=1)
    y[0, :2] = (y[0, :2] + 1) % 4  # 12 of 30 pixels wrong
    y[1, :, :3] = -100  # half ignored, the rest right
    y[2] = -100  # nothing to get wrong
    assert pixel_accuracy(out, y).tolist() == pytest.approx([18 / 30, 1.0, 1.0])
    real = y != -100
    per_pixel = torch.nn.functional.cross_entropy(out, y.clamp_min(0), reduction="none")
    expected = [float(per_pixel[i][real[i]].mean()) if real[i].any() else 0.0 for i in range(3)]
    assert dense_loss("cross_entropy", out, y, reduction="none").tolist() == pytest.approx(expected, abs=1e-5)
    assert float(dense_loss("cross_entropy", out, y)) == pytest.approx(float(per_pixel[real].mean()), abs=1e-5)


def test_the_pixel_confusion_and_iou_agree_with_sklearn():
    from sklearn.metrics import confusion_matrix, jaccard_score

    g = torch.Generator().manual_seed(0)
    out = torch.randn(20, 3, 8, 8, generator=g)
    y = torch.randint(0, 3, (20, 8, 8), generator=g)
    y[:, 0] = -100
    wrong = pixel_confusion(out, y, num_classes=3, loss="cross_entropy", class_name=str)
    real = y != -100
    truth, pred = y[real].numpy(), out.argmax(dim=1)[real].numpy()
    assert (wrong.confusion == confusion_matrix(truth, pred, labels=[0, 1, 2])).all()
    iou = jaccard_score(truth, pred, average=None, labels=[0, 1, 2])
    assert [r["iou"] for r in wrong.per_class] == pytest.approx(list(iou), abs=1e-4)
    assert wrong.overall["mean_iou"] == pytest.approx(float(iou.mean()), abs=1e-4)
    assert wrong.overall["pixel_accuracy"] == pytest.approx(float((truth == pred).mean()), abs=1e-4)
    assert wrong.top[0]["pixel_accuracy"] == min(r["pixel_accuracy"] for r in wrong.top)


def test_the_loss_floor_of_identical_images_is_the_entropy_of_their_masks():
    x = torch.zeros(2, 3, 4, 4)
    y = torch.zeros(2, 4, 4, dtype=torch.long)
    y[1, :2] = 1  # the two masks differ on 8 of their 16 positions, 16 of 32 real pixels
    floor = SEGMENTATION.loss_floor(x, y, "cross_entropy")
    assert floor.value == pytest.approx(16 * math.log(2) / 32) and "1 group" in floor.why
    assert SEGMENTATION.loss_floor(torch.randn(2, 3, 4, 4), y, "cross_entropy").value == 0.0


def test_built_in_flips_crops_and_translations_move_the_mask_with_the_image():
    """The image is its own mask (a ramp, pixel value = its id): after a flip or a crop they are
    equal wherever the mask is covered; a translation samples the image bilinear and the mask
    nearest, so they agree within one pixel's step (16.5 ids; an unmoved mask: up to 200)."""
    from nnrecipe.augment import make_crop, make_hflip, make_translate

    torch.manual_seed(0)
    y = torch.arange(32 * 32).reshape(1, 32, 32).repeat(16, 1, 1)
    x = y[:, None].float().repeat(1, 3, 1, 1)
    for augment in (make_hflip("image", p=0.5), make_crop("image", padding=2)):
        xa, ya = augment(x, y)
        covered = ya != -100
        assert covered.any() and (ya != y).any(), augment
        assert torch.equal(xa[:, 0][covered].round().long(), ya[covered]), augment
        assert (xa[:, 0][~covered] == 0).all()  # uncovered: zero in the image, ignored in the mask
    xa, ya = make_translate("image", 0.2)(x, y)
    # pixels whose neighbours are all covered, off the border (bilinear reads no zero fill there)
    inner = ~torch.nn.functional.max_pool2d((ya == -100).float()[:, None], 3, 1, 1)[:, 0].bool()
    inner[:, [0, -1]], inner[:, :, [0, -1]] = False, False
    assert inner.float().mean() > 0.3
    assert (xa[:, 0] - ya.float())[inner].abs().max() <= 16.5
    assert (xa[:, 0] - y.float())[inner].abs().max() > 32  # the image did move


# ----------------------------------------------------------------------------- the rules


def _scan(splits: dict[str, torch.Tensor], C: int = 3):
    made = {
        k: SimpleNamespace(targets=v.double().numpy(), y_shape=tuple(v.shape[1:]), y_dtype="int64")
        for k, v in splits.items()
    }
    return SimpleNamespace(scan=SimpleNamespace(num_classes=C, train=made["train"], splits=made))


def _masks(n: int, seed: int, *, disks: float = 0.5) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        _, m = segmentation.plugin._scene(rng, 12)
        if rng.random() > disks:  # re-label disks as squares: fewer disks overall
            m[m == 2] = 1
        out.append(m)
    return torch.as_tensor(np.stack(out))


def test_class_balance_compares_images_not_pixels_and_rarely_cries_wolf():
    """Train and val drawn alike: over 100 simulated datasets (150 train, 80 val images of
    12x12) no more than one warning at p < 1e-4; val with a tenth of train's disks: a warning."""
    cfg = InspectDataSpec()
    alarms = sum(
        mask_class_balance(_scan({"train": _masks(150, 2 * s), "val": _masks(80, 2 * s + 1)}), cfg).status.value
        != "pass"
        for s in range(100)
    )
    assert alarms <= 1
    shifted = mask_class_balance(_scan({"train": _masks(300, 1, disks=0.6), "val": _masks(300, 2, disks=0.06)}), cfg)
    assert shifted.status.value == "warn" and "val's share of class 2 per image" in shifted.message


# ----------------------------------------------------------------------------- end to end


def test_a_correct_setup_passes_inspect_data_baseline_and_overfit(tmp_path):
    result = _run(tmp_path, ["inspect-data", "baseline", "overfit"])
    alarms = [(v.stage, v.check, v.message) for v in result.verdicts if v.status.value in ("warn", "fail")]
    assert not alarms, alarms
    assert result.verdict("fits-train").observed["train_pixel_accuracy"] > 0.95
    run = tmp_path / "runs" / "clean"
    pictures = ("inspect-data/masks_train.png", "baseline/masks_val.png", "baseline/masks_overfit_batch.png")
    for picture in (*pictures, "overfit/confusion.png"):
        assert (run / picture).stat().st_size > 5000, picture
    summary = (run / "overfit" / "summary.json").read_text()
    assert '"mean_iou"' in summary


@pytest.mark.parametrize(
    "data, words",
    [
        ("bilinear_masks", "not whole numbers"),
        ("void_255", "255 is a void label"),
        ("one_label", "one label per example"),
    ],
)
def test_bad_masks_fail_label_range(tmp_path, data, words):
    v = _run(tmp_path, ["inspect-data"], data=data).verdict("label-range")
    assert v.status.value == "fail" and words in v.message and v.hint, v
    if data == "bilinear_masks":
        assert "nearest" in v.hint
    if data == "void_255":
        assert "-100" in v.hint


def test_a_flip_of_the_image_alone_fails_augment_preserves_labels_and_the_built_in_flip_passes(tmp_path):
    over = {
        "stages.regularize.seeds": 1,
        "stages.regularize.knobs": {"dropout": None, "weight_decay": None, "early_stopping": False, "augment": True},
        "stages.regularize.data_scaling.enabled": False,
        "stages.regularize.label_errors.enabled": False,
    }
    planted = f"{segmentation.__file__}:flip_image_only"
    for augment, status in (({"factory": planted}, "fail"), ({"name": "hflip"}, "pass")):
        result = _run(tmp_path, ["regularize"], **over, **{"data.augment": [augment]})
        v = result.verdict("augment-preserves-labels")
        assert v.status.value == status, v


def test_specs_that_cannot_segment_are_refused_in_one_line(tmp_path):
    with pytest.raises(SpecError, match="loss: bce does not fit task segmentation"):
        _run(tmp_path, ["baseline"], loss="bce")
    with pytest.raises(Exception, match="segmentation trains on a mask") as err:
        _run(tmp_path, ["baseline"], data="one_label")
    assert "\n" not in str(err.value)


def test_the_task_objects_answers():
    y = torch.tensor([[[0, 1], [-100, 1]]])
    data = SimpleNamespace(num_outputs=3, class_name=lambda c: ["bg", "sq", "disk"][c])
    assert SEGMENTATION.label_text(data, y[0]) == "sq 67%, bg 33%"
    assert SEGMENTATION.output_shape(torch.zeros(5, 3, 7, 9), 4) == (5, 4, 7, 9)
    assert SEGMENTATION.output_rows(torch.zeros(5, 4, 7, 9)).shape == (5 * 63, 4)
    prior = SEGMENTATION.constant_output(np.log([0.5, 0.25, 0.25]), torch.zeros(2, 3, 4, 4))
    assert torch.allclose(prior[1, :, 2, 3], torch.log(torch.tensor([0.5, 0.25, 0.25])))


def test_the_dumb_baseline_is_the_majority_class_at_every_pixel():
    d = segmentation.clean(n_train=50, n_val=40)
    (_, y_train), (_, y) = d["train"], d["val"]
    priors = np.bincount(y_train[y_train >= 0].numpy(), minlength=3) / int((y_train >= 0).sum())
    data = SimpleNamespace(priors=lambda split="train": priors, targets=lambda split: y, num_outputs=3)
    guess = torch.full((len(y), 3, *y.shape[1:]), -1.0)
    guess[:, int(np.argmax(priors))] = 1.0  # logits that pick the majority class everywhere
    assert SEGMENTATION.dumb_scores(data) == pytest.approx(pixel_accuracy(guess, y).numpy())


def test_class_shares_per_mask_leave_ignored_pixels_out():
    from nnrecipe.tasks.segmentation import class_shares

    y = torch.tensor([[[0, 1], [1, -100]], [[-100, -100], [-100, -100]], [[2, 2], [2, 0]]])
    expected = np.array([[1 / 3, 2 / 3, 0], [0, 0, 0], [0.25, 0, 0.75]])
    assert np.allclose(class_shares(y, 3), expected)
