"""Built-in augmentations: per-example randomness, shapes, labels untouched; clear errors."""

import pytest
import torch

from conftest import PLANTED
from nnrecipe.augment import BUILTIN, build_augment
from nnrecipe.errors import PluginError, SpecError
from nnrecipe.spec_sections import AugmentSpec

IMAGES = torch.rand(64, 3, 8, 8)
SIGNALS = torch.rand(64, 1, 40)
LABELS = torch.arange(64)


def _build(kind, *augments):
    return build_augment([AugmentSpec(**a) for a in augments], kind=kind, base=PLANTED)


@pytest.mark.parametrize(
    "name, args, kind",
    [
        ("hflip", {}, "image"),
        ("vflip", {}, "image"),
        ("crop", {"padding": 2}, "image"),
        ("rotate", {"degrees": 20}, "image"),
        ("translate", {"fraction": 0.2}, "image"),
        ("noise", {"std": 0.1}, "image"),
        ("scale", {}, "image"),
        ("cutout", {"size": 3}, "image"),
        ("hflip", {}, "signal"),
        ("crop", {"padding": 3}, "signal"),
        ("shift", {"max_shift": 3}, "signal"),
        ("noise", {}, "signal"),
        ("cutout", {"size": 5}, "signal"),
        ("noise", {}, "tabular"),
    ],
)
def test_builtins_keep_shapes_and_labels_and_draw_per_example(name, args, kind):
    x = {"image": IMAGES, "signal": SIGNALS, "tabular": torch.rand(64, 10)}[kind]
    torch.manual_seed(0)
    xa, ya = _build(kind, {"name": name, "args": args})(x, LABELS)
    assert xa.shape == x.shape and xa.dtype == x.dtype and torch.equal(ya, LABELS)
    changed = (xa != x).reshape(len(x), -1).any(dim=1)
    assert 0 < changed.sum() <= len(x)
    if name in ("hflip", "vflip"):  # p = 0.5 per example, not all-or-nothing for the whole batch
        assert 10 < changed.sum() < 54


def test_hflip_mirrors_and_crop_shifts_with_zero_fill():
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(32, 1, 1, 1)
    flipped, _ = _build("image", {"name": "hflip", "args": {"p": 1.0}})(x, LABELS[:32])
    assert torch.equal(flipped, x.flip(-1))
    torch.manual_seed(1)
    shifted, _ = _build("image", {"name": "crop", "args": {"padding": 1}})(x + 1, LABELS[:32])
    for img in shifted[:, 0]:  # every output is the input moved by at most one pixel, zeros where it came from outside
        nz = img[img > 0]
        assert len(nz) >= 9 and set(nz.tolist()) <= set((x[0, 0] + 1).reshape(-1).tolist())


def test_augmentations_compose_in_order():
    aug = _build("image", {"name": "hflip", "args": {"p": 1.0}}, {"name": "vflip", "args": {"p": 1.0}})
    assert torch.equal(aug(IMAGES, LABELS)[0], IMAGES.flip(-1).flip(-2))
    assert build_augment([], kind="image", base=PLANTED) is None


def test_bad_augment_settings_name_the_field():
    with pytest.raises(SpecError, match=r"^data.augment.0.args: crop takes padding; unknown size$"):
        _build("image", {"name": "crop", "args": {"size": 3}})
    with pytest.raises(SpecError, match=r"^data.augment.1: rotate needs image data; these inputs are signal$"):
        _build("signal", {"name": "noise"}, {"name": "rotate"})
    with pytest.raises(ValueError):
        AugmentSpec(name="flip")  # not a built-in: the schema rejects it


def test_user_augmentation_is_checked():
    ok = _build("image", {"factory": f"{PLANTED}/regularize_data.py:flip_labels", "args": {"p": 1.0}})
    x, y = ok(IMAGES, torch.zeros(64, dtype=torch.long))
    assert torch.equal(x, IMAGES.flip(-1)) and (y == 1).all()
    with pytest.raises(PluginError, match=r"^data.augment.0.factory: .*clean returned dict; expected callable"):
        _build("image", {"factory": f"{PLANTED}/data_bugs.py:clean"})  # returns data, not a callable(x, y)
    shrinks = _build("image", {"factory": f"{PLANTED}/regularize_data.py:crop_to_half"})
    with pytest.raises(PluginError, match=r"^data.augment.0.factory: .*crop_to_half changed the batch shape"):
        shrinks(IMAGES, LABELS)


def test_every_builtin_is_in_the_schema():
    from nnrecipe.spec_sections import AUGMENT_NAMES

    assert set(AUGMENT_NAMES) == set(BUILTIN)
