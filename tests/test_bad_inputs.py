"""The bad-input catalogue (docs/reliability.md): each wrong input gets exit code 2 and one line
naming the field or file, never a traceback; or, where it is a finding about the data, a fail
verdict. Every row of the table in docs/reliability.md is one case here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import PLANTED, write_spec

PY = f"{PLANTED}/data_bugs.py"
MODELS = f"{PLANTED}/models.py"


def _png(path, size, value=128):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(path)


def _images(folder, *, sizes=(8, 8), junk=None):
    for c in ("a", "b"):
        for i, size in enumerate(sizes * 3):
            _png(folder / "imgs" / c / f"{i}.png", size, value=(30 * i + (100 if c == "b" else 0)) % 256)
    if junk is not None:
        (folder / "imgs" / "a" / junk[0]).write_bytes(junk[1])


def _csv(folder, text):
    (folder / "d.csv").write_text(text)


def _npz(folder, **arrays):
    np.savez(folder / "d.npz", **arrays)


ROWS = 40
GOOD_CSV = "f1,f2,y\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(ROWS))

# (id, setup(folder) or None, spec (dict) or raw YAML text, command and arguments, expected text in the one line)
CASES = [
    ("malformed-yaml", None, "data: {source: digits\nmodel: [", ("inspect-data",), "exp.yaml:2:6: malformed YAML"),
    ("not-a-mapping", None, "- just\n- a list\n", ("inspect-data",), "the spec must be a YAML mapping, got list"),
    ("duplicate-key", None, "seed: 1\nseed: 2\n", ("inspect-data",), "duplicate key 'seed'"),
    ("unknown-key", None, {"optim": {"lrr": 1}}, ("inspect-data",), "optim.lrr: unknown key"),
    (
        "wrong-type",
        None,
        {"train": {"steps": "many"}},
        ("inspect-data",),
        "train.steps: Input should be a valid integer",
    ),
    ("unknown-source", None, {"data": {"source": "parquet"}}, ("inspect-data",), "data.source: "),
    ("regression-on-class-labels", None, {"task": "regression"}, ("inspect-data",), "does not fit data.source: digits"),
    ("malformed-override", None, {}, ("inspect-data", "optim.lr"), "expected key=value"),
    ("override-unknown-key", None, {}, ("inspect-data", "optim.nope=1"), "optim.nope: unknown key"),
    ("missing-config", None, None, ("inspect-data", "--config", "nope.yaml"), "nope.yaml: spec file not found"),
    (
        "missing-data-path",
        None,
        {"data": {"source": "csv", "args": {"path": "none.csv", "target": "y"}}},
        ("inspect-data",),
        "data.args.path: ",
    ),
    (
        "csv-missing-target",
        lambda f: _csv(f, GOOD_CSV),
        {"data": {"source": "csv", "args": {"path": "d.csv", "target": "label"}}},
        ("inspect-data",),
        "label",
    ),
    (
        "csv-non-numeric",
        lambda f: _csv(f, GOOD_CSV.replace("1,1,1\n", "1,abc,1\n")),
        {"data": {"source": "csv", "args": {"path": "d.csv", "target": "y"}}},
        ("inspect-data",),
        "f2",
    ),
    (
        "csv-empty",
        lambda f: _csv(f, "f1,f2,y\n"),
        {"data": {"source": "csv", "args": {"path": "d.csv", "target": "y"}}},
        ("inspect-data",),
        "the train split is empty",
    ),
    (
        "npz-missing-arrays",
        lambda f: _npz(f, a=np.zeros((10, 2))),
        {"data": {"source": "npz", "args": {"path": "d.npz"}}},
        ("inspect-data",),
        "'x'",
    ),
    (
        "npz-not-npz",
        lambda f: (f / "d.npz").write_text("hello"),
        {"data": {"source": "npz", "args": {"path": "d.npz"}}},
        ("inspect-data",),
        "d.npz",
    ),
    (
        "image-folder-mixed-sizes",
        lambda f: _images(f, sizes=(8, 10)),
        {"data": {"source": "image-folder", "args": {"root": "imgs"}}},
        ("inspect-data",),
        "image_size",
    ),
    (
        "image-folder-truncated-file",
        lambda f: _images(f, junk=("bad.png", b"\x89PNG\r\n\x1a\n garbage")),
        {"data": {"source": "image-folder", "args": {"root": "imgs"}}},
        ("inspect-data",),
        "bad.png",
    ),
    (
        "image-folder-missing",
        None,
        {"data": {"source": "image-folder", "args": {"root": "nothing"}}},
        ("inspect-data",),
        "data.args.root",
    ),
    (
        "factory-module-missing",
        None,
        {"data": {"source": "python", "factory": "no_such_pkg.data:make"}},
        ("inspect-data",),
        "data.factory: module 'no_such_pkg.data' not found",
    ),
    (
        "factory-function-missing",
        None,
        {"data": {"source": "python", "factory": f"{PY}:nope"}},
        ("inspect-data",),
        "has no function 'nope'",
    ),
    (
        "factory-raises",
        None,
        {"data": {"source": "python", "factory": f"{PY}:raises"}},
        ("inspect-data",),
        "raised RuntimeError",
    ),
    (
        "factory-wrong-type",
        None,
        {"data": {"source": "python", "factory": f"{PY}:returns_list"}},
        ("inspect-data",),
        "data.factory",
    ),
    (
        "factory-missing-val",
        None,
        {"data": {"source": "python", "factory": f"{PY}:missing_val"}},
        ("inspect-data",),
        "val",
    ),
    (
        "factory-bad-pairs",
        None,
        {"data": {"source": "python", "factory": f"{PY}:lazy_mixed_shapes"}},
        ("inspect-data",),
        "data.factory",
    ),
    (
        "factory-import-fails",
        None,
        {"data": {"source": "python", "factory": f"{PLANTED}/broken_import.py:make_data"}},
        ("inspect-data",),
        "ModuleNotFoundError",
    ),
    (
        "model-wrong-output-shape",
        None,
        {"model": {"arch": "python", "factory": f"{MODELS}:wrong_outputs"}},
        ("baseline",),
        "model.factory: the model returns",
    ),
    (
        "model-not-a-module",
        None,
        {"model": {"arch": "python", "factory": f"{MODELS}:not_a_module"}},
        ("baseline",),
        "expected a torch.nn.Module",
    ),
    (
        "model-raises",
        None,
        {"model": {"arch": "python", "factory": f"{MODELS}:raises"}},
        ("baseline",),
        "model.factory",
    ),
    (
        "builtin-model-wrong-rank",
        None,
        {"model": {"arch": "cnn2d"}, "data": {"source": "synthetic"}},
        ("baseline",),
        "model.arch: cnn2d needs inputs of shape",
    ),
    (
        "single-class",
        None,
        {"data": {"source": "python", "factory": f"{PLANTED}/regularize_data.py:single_class"}},
        ("inspect-data",),
        "every train label is 0: classification needs at least two classes",
    ),
    ("loss-factory-missing", None, {"loss": {"factory": f"{PY}:nope"}}, ("baseline",), "loss.factory"),
    (
        "augment-unknown-argument",
        None,
        {"data": {"augment": [{"name": "crop", "args": {"size": 2}}]}},
        ("regularize",),
        "data.augment.0.args: crop takes padding",
    ),
    (
        "augment-wrong-kind",
        None,
        {"data": {"source": "synthetic", "augment": [{"name": "rotate"}]}},
        ("regularize",),
        "data.augment.0: rotate needs image data",
    ),
    ("pretrained-missing", None, {"model": {"pretrained": "nowhere.pt"}}, ("baseline",), "model.pretrained: "),
    (
        "downsample-tabular",
        None,
        {"data": {"source": "synthetic", "downsample": 2}},
        ("inspect-data",),
        "data.downsample: needs images",
    ),
    (
        "cuda-without-cuda",
        None,
        {"device": "cuda"},
        ("inspect-data",),
        "device: 'cuda' requested but CUDA is not available",
    ),
    (
        "unwritable-output-dir",
        lambda f: (f / "taken").write_text("a file, not a folder"),
        {"output_dir": "taken/runs"},
        ("inspect-data",),
        "output_dir: cannot write the run directory",
    ),
    ("name-escapes-output-dir", None, {"name": "../outside"}, ("inspect-data",), "name: String should match pattern"),
    # user code that ends the process, returns what cannot be used, or data a stage cannot train on
    (
        "factory-sys-exit",
        None,
        {"data": {"source": "python", "factory": f"{PY}:exits"}},
        ("inspect-data",),
        "data.factory: ",
    ),
    (
        "factory-object-arrays",
        None,
        {"data": {"source": "python", "factory": f"{PY}:object_arrays"}},
        ("inspect-data",),
        "'train' inputs of dtype object; expected numbers",
    ),
    (
        "dataset-sys-exit",
        None,
        {"data": {"source": "python", "factory": f"{PY}:exits_in_getitem"}},
        ("inspect-data",),
        "data.factory: reading the train split failed",
    ),
    (
        "forward-sys-exit",
        None,
        {"model": {"arch": "python", "factory": f"{MODELS}:exits_in_forward"}},
        ("baseline",),
        "model.factory: ",
    ),
    (
        "model-frozen",
        None,
        {"model": {"arch": "python", "factory": f"{MODELS}:frozen"}},
        ("baseline",),
        "model.factory: the model has no trainable parameters",
    ),
    ("loss-per-example", None, {"loss": {"factory": f"{PY}:per_example_loss"}}, ("baseline",), "loss.factory: "),
    (
        "loss-detached",
        None,
        {"loss": {"factory": f"{PY}:detached_loss"}},
        ("baseline",),
        "does not depend on the model's outputs",
    ),
    (
        "float-labels-in-training",
        None,
        {"data": {"source": "python", "factory": f"{PY}:float_labels"}},
        ("baseline",),
        "labels are not whole numbers",
    ),
    (
        "labels-out-of-range-in-training",
        None,
        {"data": {"source": "python", "factory": f"{PY}:labels_out_of_range"}},
        ("overfit",),
        "lie outside [0,",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(cli, in_tmp, case):
    name, setup, spec, command, expected = case
    if setup is not None:
        setup(in_tmp)
    args = list(command[:1])
    if spec is not None:
        path = in_tmp / "exp.yaml"
        if isinstance(spec, str):
            path.write_text(spec)
        else:
            write_spec(in_tmp, {"name": "bad", **spec})
        args += ["--config", str(path)]
    args += list(command[1:])
    result = cli(*args)
    assert result.exit_code == 2, (result.exit_code, result.stdout[-500:], result.stderr[-1500:])
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout


FINDINGS = [  # wrong data that is a finding about the data: a fail verdict, exit 1
    ("float-labels", "float_labels", "label-range"),
    ("labels-out-of-range", "labels_out_of_range", "label-range"),
    ("nan-inputs", "nan_inputs", "non-finite"),
    ("leakage", "leakage", "split-leakage"),
]


@pytest.mark.parametrize("case", FINDINGS, ids=[c[0] for c in FINDINGS])
def test_wrong_data_is_a_fail_verdict(cli, in_tmp, case):
    _, factory, check = case
    path = write_spec(in_tmp, {"name": "finding", "data": {"source": "python", "factory": f"{PY}:{factory}"}})
    result = cli("inspect-data", "--config", path, "--json")
    assert result.exit_code == 1
    verdicts = {v["check"]: v for v in json.loads(result.stdout)}
    assert verdicts[check]["status"] == "fail"


def test_the_catalogue_in_the_docs_lists_every_case():
    from conftest import REPO

    doc = (REPO / "docs" / "reliability.md").read_text()
    missing = [c[0] for c in CASES + FINDINGS if f"`{c[0]}`" not in doc]
    assert not missing and len(CASES) >= 30
