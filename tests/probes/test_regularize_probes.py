"""Knobs as spec edits; the engine's augmentation and early stopping; downsampling; pretrained weights."""

import pytest
import torch

from conftest import write_spec
from nnrecipe.data import build_data
from nnrecipe.engine import Engine
from nnrecipe.errors import DataError
from nnrecipe.experiments import Logging, TrainPlan
from nnrecipe.loop import EarlyStopping
from nnrecipe.models import prepare_model
from nnrecipe.probes.regularize import build_knobs, combine
from nnrecipe.spec import load_spec
from nnrecipe.stages.regularize import reference_spec
from nnrecipe.tasks import CLASSIFICATION


def _spec(tmp_path, overrides=()):
    return load_spec(write_spec(tmp_path, {"name": "t"}), list(overrides))


def test_each_knob_is_one_edit_and_they_combine(tmp_path):
    spec, base = _spec(
        tmp_path,
        [
            "stages.regularize.knobs.batch_size=16",
            "stages.regularize.knobs.downsample=2",
            "stages.regularize.knobs.smaller_model=0.5",
            "stages.regularize.knobs.larger_model=2",
            "stages.regularize.knobs.pretrained=w.pt",
            "data.augment=[{name: crop}]",
        ],
    )
    ref = reference_spec(spec, steps=100, every=10)
    assert ref.data.augment == [] and ref.train.steps == 100 and ref.train.early_stopping is None
    knobs = {k.name: k for k in build_knobs(ref, original_augment=spec.data.augment, data_kind="image", base=base)}
    assert set(knobs) == {
        "augmentation",
        "dropout",
        "weight-decay",
        "smaller-batch",
        "smaller-input",
        "smaller-model",
        "larger-model",
        "pretrained",
    }
    assert all(not k.skip for k in knobs.values())
    edited = {n: k.edit(ref) for n, k in knobs.items()}
    assert edited["augmentation"].data.augment[0].name == "crop"
    assert edited["dropout"].model.args.dropout == 0.2 and ref.model.args.dropout == 0.0
    assert edited["weight-decay"].optim.weight_decay == 1e-3
    assert edited["smaller-batch"].data.batch_size == 16
    assert edited["smaller-input"].data.downsample == 2
    assert edited["smaller-model"].model.args.hidden == [64, 64]
    assert edited["larger-model"].model.args.hidden == [256, 256] and edited["larger-model"].train.early_stopping == 3
    assert edited["pretrained"].model.pretrained == "w.pt"
    both = combine(ref, [knobs["dropout"], knobs["weight-decay"]])
    assert both.model.args.dropout == 0.2 and both.optim.weight_decay == 1e-3
    assert ref.model.args.dropout == 0.0  # edits never mutate the reference


def test_knobs_that_cannot_apply_say_why(tmp_path):
    spec, base = _spec(
        tmp_path,
        [
            "model.arch=linear",
            "stages.regularize.knobs.downsample=2",
            "stages.regularize.knobs.smaller_model=0.5",
            "optim.weight_decay=0.01",
        ],
    )
    knobs = {k.name: k for k in build_knobs(spec, original_augment=[], data_kind="tabular", base=base)}
    assert "data.augment is empty" in knobs["augmentation"].skip
    assert "no dropout" in knobs["dropout"].skip
    assert "already" in knobs["weight-decay"].skip
    assert "tabular" in knobs["smaller-input"].skip
    assert "no widths" in knobs["smaller-model"].skip


def test_user_model_gets_dropout_only_when_its_factory_takes_it(tmp_path):
    factory = tmp_path / "m.py"
    factory.write_text(
        "import torch\n"
        "def with_dropout(input_shape, num_outputs, dropout=0.0):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(dropout), torch.nn.LazyLinear(num_outputs))\n"
        "def without(input_shape, num_outputs):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(num_outputs))\n"
    )
    for fn, applies in (("with_dropout", True), ("without", False)):
        spec, base = load_spec(
            write_spec(tmp_path, {"name": "t", "model": {"arch": "python", "factory": f"m.py:{fn}"}})
        )
        knob = next(
            k for k in build_knobs(spec, original_augment=[], data_kind="image", base=base) if k.name == "dropout"
        )
        assert (knob.edit is not None) == applies
        if applies:
            assert knob.edit(spec).model.args == {"dropout": 0.2}


def test_engine_augments_training_batches_only_and_early_stopping_keeps_the_best():
    from nnrecipe.data.bundle import TensorSplit

    torch.manual_seed(0)
    x, y = torch.randn(256, 4), torch.randint(0, 2, (256,))
    train, val = TensorSplit("train", x, y), TensorSplit("val", x[:64], y[:64])
    seen = []

    def augment(xb, yb):
        seen.append(len(xb))
        return xb * 0, yb

    model = torch.nn.Linear(4, 2)
    engine = Engine(device=torch.device("cpu"), task=CLASSIFICATION)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # no learning: every evaluation has the same loss
    es = EarlyStopping(2)
    h = engine.train(
        TrainPlan(
            model=model,
            train=train,
            val=val,
            loss_fn=torch.nn.functional.cross_entropy,
            optimizer=opt,
            steps=100,
            batch_size=32,
            seed=0,
            eval_every=10,
            augment=augment,
            early_stopping=es,
            log=Logging(every=10),
        )
    )
    assert seen == [32] * 30  # 3 evaluations (best at 10, no better at 20 and 30): stopped after step 30
    assert h.stopped_early and h.steps_run == 30 and es.best_step == 10 and es.stop_step == 30
    assert es.state is not None and set(es.state) == {"weight", "bias"}


def test_downsample_halves_images_and_signals_and_refuses_features(tmp_path):
    spec, base = _spec(tmp_path, ["data.downsample=2"])
    d = build_data(spec, base=base)
    assert d.input_shape == (1, 4, 4)
    spec, base = _spec(tmp_path, ["data.source=synthetic", "data.downsample=2"])
    with pytest.raises(DataError, match=r"^data.downsample: needs images"):
        build_data(spec, base=base)


def test_pretrained_weights_load_from_a_local_file_and_bad_files_say_which(tmp_path):
    spec, base = _spec(tmp_path)
    data = build_data(spec, base=base)
    donor = prepare_model(spec, data, base=base)
    with torch.no_grad():
        for p in donor.parameters():
            p.fill_(0.5)
    torch.save(donor.state_dict(), tmp_path / "w.pt")
    spec2, _ = _spec(tmp_path, ["model.pretrained=w.pt"])
    model = prepare_model(spec2, data, base=base)
    assert all(torch.all(p == 0.5) for p in model.parameters())
    (tmp_path / "junk.pt").write_text("not a tensor file")
    for path, message in (("missing.pt", "not found"), ("junk.pt", "not a loadable state dict")):
        spec3, _ = _spec(tmp_path, [f"model.pretrained={path}"])
        with pytest.raises(DataError, match=rf"^model.pretrained: .*{message}"):
            prepare_model(spec3, data, base=base)
