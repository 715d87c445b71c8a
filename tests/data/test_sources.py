"""Each data source loads the right splits, and bad data gets one clear line."""

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CONFIGS, PLANTED
from nnrecipe.data import build_data
from nnrecipe.data.bundle import LazySplit, TensorSplit
from nnrecipe.errors import DataError, PluginError
from nnrecipe.spec import load_spec


def _load(*overrides, config=None):
    spec, base = load_spec(config, list(overrides))
    return build_data(spec, base=base)


def test_digits_is_1x8x8_in_unit_range_with_a_stratified_split():
    d = _load()
    assert d.input_shape == (1, 8, 8) and d.num_classes == 10 and d.kind == "image"
    assert len(d.train) + len(d.val) == 1797 and len(d.val) == pytest.approx(0.2 * 1797, abs=6)
    assert d.train.x.min() >= 0 and d.train.x.max() <= 1
    train_priors = torch.bincount(d.train.y, minlength=10) / len(d.train)
    val_priors = torch.bincount(d.val.y, minlength=10) / len(d.val)
    assert (train_priors - val_priors).abs().max() < 0.01


def test_split_does_not_move_with_the_training_seed():
    a, b = _load("seed=0"), _load("seed=5")
    assert torch.equal(a.val.x, b.val.x)
    c = _load("data.split_seed=1")
    assert not torch.equal(a.val.x, c.val.x)


def test_digits_standardize():
    d = _load("data.args.scale=standardize")
    assert d.train.x.mean().abs() < 1e-4 and (d.train.x.std() - 1).abs() < 0.01


def test_mnist1d_is_generated_locally_with_its_test_split():
    d = _load("data.source=mnist1d", "data.args.num_samples=600")
    assert d.input_shape == (1, 40) and d.kind == "signal" and d.num_classes == 10
    assert len(d.test) == 120 and len(d.train) + len(d.val) == 480
    again = _load("data.source=mnist1d", "data.args.num_samples=600")  # from the cache now
    assert torch.equal(d.train.x, again.train.x)


def test_synthetic_has_its_stated_properties():
    d = _load("data.source=synthetic", "data.args.imbalance=20", "data.args.num_classes=3")
    counts = torch.bincount(d.train.y)
    assert counts.max() / counts.min() == pytest.approx(20, rel=0.1)
    r = _load("data.source=synthetic", "task=regression", "data.args.noise_std=0.5")
    assert r.train.y.shape == (2000, 1) and r.target_dim == 1
    assert r.train.y.var().item() == pytest.approx(1.25, rel=0.2)  # |w|^2/d + noise^2


def test_csv_with_class_names_and_standardize():
    d = _load(config=CONFIGS / "breast-cancer-csv.yaml")
    assert d.class_names == ["benign", "malignant"] and d.input_shape == (30,) and d.kind == "tabular"
    assert d.train.x.mean(0).abs().max() < 1e-4


def _csv(tmp_path, text, *extra):
    (tmp_path / "t.csv").write_text(text)
    return _load("data.source=csv", f"data.args.path={tmp_path / 't.csv'}", "data.args.target=y", *extra)


def test_csv_string_columns_are_codes_numbered_on_the_training_file(tmp_path):
    """Levels sorted, 1..K per column (blue 1, green 2, red 3); a value only val_path has reads 0;
    standardize scales the numbers and leaves the codes; the model gets (codes, numbers)."""
    (tmp_path / "v.csv").write_text("num,colour,y\n2,red,0\n3,violet,1\n")
    rows = "".join(f"{i},{c},{i % 2}\n" for i, c in enumerate(["red", "blue", "green", "red"] * 5))
    d = _csv(
        tmp_path, "num,colour,y\n" + rows, f"data.args.val_path={tmp_path / 'v.csv'}", "data.args.standardize=true"
    )
    codes, numbers = d.train.x
    assert codes.dtype == torch.int64 and codes.shape[1:] == (1,) and numbers.shape[1:] == (1,)
    assert sorted(set(codes[:, 0].tolist())) == [1, 2, 3] and d.val.x[0][:, 0].tolist() == [3, 0]
    assert numbers.mean().abs() < 1e-5 and (numbers.std() - 1).abs() < 1e-3
    assert d.kind == "structured" and "1 categorical as codes 1..K, 0 unseen (colour 3 levels)" in d.description


def test_csv_columns_declared_categorical_are_codes_even_when_numeric(tmp_path):
    d = _csv(tmp_path, "zip,y\n" + "10115,0\n20095,1\n10115,1\n80331,0\n" * 5, "data.args.categorical=[zip]")
    assert d.train.x.dtype == torch.int64 and d.train.x.shape[1:] == (1,)  # codes alone: no numeric column
    assert sorted(set(d.train.x[:, 0].tolist())) == [1, 2, 3]


def test_csv_errors_name_the_file_and_column(tmp_path):
    with pytest.raises(DataError, match=r"data\.args\.target: column 'y' not in .*t\.csv \(columns: a, b\)"):
        _csv(tmp_path, "a,b\n1,2\n")
    with pytest.raises(
        DataError, match=r"column 'a' is not numeric \(line 3: 'x'\); list it in data\.args\.categorical"
    ):
        _csv(tmp_path, "a,y\n1,0\nx,1\n", "data.args.categorical=[]")
    with pytest.raises(DataError, match=r"data\.args\.categorical: 'b' not among the features"):
        _csv(tmp_path, "a,y\n1,0\nx,1\n", "data.args.categorical=[b]")
    with pytest.raises(DataError, match=r"line 2 has 3 fields"):
        _csv(tmp_path, "a,y\n1,0,5\n")
    with pytest.raises(DataError, match=r"data\.args\.path: .*missing\.csv does not exist"):
        _load("data.source=csv", f"data.args.path={tmp_path / 'missing.csv'}", "data.args.target=y")


def test_npz_with_and_without_val_arrays(tmp_path):
    x = np.random.default_rng(0).normal(size=(300, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    np.savez(tmp_path / "a.npz", x=x, y=y)
    d = _load("data.source=npz", f"data.args.path={tmp_path / 'a.npz'}")
    assert len(d.train) == 240 and d.num_classes == 2
    np.savez(tmp_path / "b.npz", x=x, y=y, x_val=x[:50], y_val=y[:50])
    d = _load("data.source=npz", f"data.args.path={tmp_path / 'b.npz'}")
    assert len(d.train) == 300 and len(d.val) == 50
    with pytest.raises(DataError, match=r"data\.args\.y_key: array 'label' not in .*a\.npz \(arrays: x, y\)"):
        _load("data.source=npz", f"data.args.path={tmp_path / 'a.npz'}", "data.args.y_key=label")
    (tmp_path / "c.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        _load("data.source=npz", f"data.args.path={tmp_path / 'c.npz'}")


def _image_folder(root, sizes=((8, 8),), per_class=12):
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            size = sizes[i % len(sizes)]
            Image.fromarray(np.full(size, 40 * i % 255, dtype=np.uint8)).save(root / c / f"{i}.png")


def test_image_folder_lazy_and_in_memory(tmp_path):
    _image_folder(tmp_path / "imgs")
    lazy = _load(
        "data.source=image-folder",
        f"data.args.root={tmp_path / 'imgs'}",
        "data.args.grayscale=true",
        "data.in_memory=never",
        "data.num_workers=0",
    )
    assert isinstance(lazy.train, LazySplit) and lazy.class_names == ["cat", "dog"] and lazy.input_shape == (1, 8, 8)
    mem = _load("data.source=image-folder", f"data.args.root={tmp_path / 'imgs'}", "data.args.grayscale=true")
    assert isinstance(mem.train, TensorSplit)
    xs = torch.cat([x for x, _ in lazy.train.iterate(5)])
    assert torch.equal(xs, mem.train.x)


def test_image_folder_with_mixed_sizes_is_a_data_error(tmp_path):
    _image_folder(tmp_path / "imgs", sizes=((8, 8), (10, 12)))
    with pytest.raises(DataError, match="differ in shape; give data.args.image_size"):
        _load("data.source=image-folder", f"data.args.root={tmp_path / 'imgs'}", "data.num_workers=0")
    ok = _load("data.source=image-folder", f"data.args.root={tmp_path / 'imgs'}", "data.args.image_size=[8, 8]")
    assert ok.input_shape == (3, 8, 8)


@pytest.mark.parametrize("workers", [0, 2])
def test_truncated_or_non_image_file_is_named(tmp_path, workers):
    _image_folder(tmp_path / "imgs")
    bad = tmp_path / "imgs" / "dog" / "5.png"
    bad.write_bytes(bad.read_bytes()[:30])  # truncated
    with pytest.raises(DataError, match=r"5\.png: not a readable image"):
        _load(
            "data.source=image-folder",
            f"data.args.root={tmp_path / 'imgs'}",
            "data.in_memory=never",
            f"data.num_workers={workers}",
        ).train.materialize()


def test_image_folder_missing_root(tmp_path):
    with pytest.raises(DataError, match=r"data\.args\.root: .*nothing does not exist"):
        _load("data.source=image-folder", f"data.args.root={tmp_path / 'nothing'}")


def test_torchvision_fakedata_and_unknown_names():
    d = _load(
        "data.source=torchvision", "data.args.name=FakeData", "data.args.kwargs={size: 100, image_size: [3, 8, 8]}"
    )
    assert d.input_shape == (3, 8, 8) and len(d.train) + len(d.val) == 100 and abs(len(d.val) - 20) <= 5
    with pytest.raises(DataError, match="torchvision.datasets has no dataset 'NotADataset'"):
        _load("data.source=torchvision", "data.args.name=NotADataset")
    with pytest.raises(DataError, match=r"data\.args\.kwargs: FakeData"):
        _load("data.source=torchvision", "data.args.name=FakeData", "data.args.kwargs={colour: red}")


def _plugin(name, **extra):
    return _load(
        "data.source=python", f"data.factory={PLANTED}/data_bugs.py:{name}", *[f"{k}={v}" for k, v in extra.items()]
    )


def test_python_plugin_pairs_and_lazy_datasets():
    d = _plugin("clean")
    assert isinstance(d.train, TensorSplit) and d.num_classes == 4
    lazy = _plugin("lazy_clean", **{"data.num_workers": 0})
    assert isinstance(lazy.train, LazySplit) and lazy.num_classes == 4 and lazy.input_shape == (1, 8, 8)


@pytest.mark.parametrize(
    "name, message",
    [
        ("raises", r"data\.factory: .*data_bugs\.py:raises raised RuntimeError: cannot open /data/missing\.h5"),
        ("returns_list", r"returned list; expected a mapping"),
        ("missing_val", r"missing val"),
        ("nonexistent", r"has no function 'nonexistent'"),
    ],
)
def test_python_plugin_errors(name, message):
    with pytest.raises(PluginError, match=message):
        _plugin(name)


def _grouped(groups):
    return _load("data.source=python", f"data.factory={PLANTED}/grouped.py:crops", f"data.args.groups={groups}")


def test_declared_val_groups_reach_the_task_and_its_standard_errors():
    d = _grouped("val")
    blocks = d.task.blocks(len(d.val))
    assert len(blocks) == 400 and len(set(blocks.tolist())) == 40 and d.task.name == "classification"
    assert _grouped("none").task.blocks(400) is None  # undeclared: rows are independent
    # Ten crops per photo: an accuracy difference that is 10 rows deep per photo is far less
    # certain than 400 independent rows would make it.
    rng = np.random.default_rng(0)
    photo_right = rng.random(40) < 0.8
    a = np.repeat(photo_right, 10).astype(float)
    b = np.repeat(photo_right & (rng.random(40) < 0.85), 10).astype(float)
    assert d.task.better_z(a, b) < _grouped("none").task.better_z(a, b) / 2


@pytest.mark.parametrize(
    "groups, message",
    [
        ("short", r"groups\['val'\] of shape \(399,\) .*expected 400 group ids"),
        ("list", r"returned groups of type list; expected a mapping"),
    ],
)
def test_malformed_groups_are_one_line_errors(groups, message):
    with pytest.raises(PluginError, match=message):
        _grouped(groups)


def test_empty_split_is_a_data_error(tmp_path):
    (tmp_path / "e.csv").write_text("a,y\n1,0\n")
    with pytest.raises(DataError, match="the val split is empty"):
        _load("data.source=csv", f"data.args.path={tmp_path / 'e.csv'}", "data.args.target=y")
