"""The plugin contract driven with arbitrary behaviour (hypothesis): whatever the data factory,
the model (its factory and its forward) or the loss returns, raises or exits with, nnrecipe
answers with a verdict (exit 0 or 1) or one line naming the field (exit 2), never an
internal error (exit 3) and never a traceback."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import PLANTED, write_spec

FUZZ = f"{PLANTED}/fuzz.py"
SETTINGS = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TINY = [
    "stages.baseline.steps=10",
    "stages.baseline.eval_every=5",
    "stages.baseline.reproducible_steps=2",
    "stages.baseline.overfit_steps=10",
    "stages.baseline.overfit_examples=4",
    "data.batch_size=8",
]

misbehaves = st.one_of(
    st.just({}),
    st.fixed_dictionaries({"raise": st.sampled_from(["value", "key", "type", "runtime", "index", "zero"])}),
    st.fixed_dictionaries({"exit": st.one_of(st.integers(0, 4), st.just("told to exit"), st.none())}),
)
arrays = st.fixed_dictionaries(
    {
        "shape": st.lists(st.integers(0, 3), max_size=2),
        "dtype": st.sampled_from(["float32", "float64", "float16", "int64", "uint8", "bool", "object", "complex64"]),
    },
    optional={"tensor": st.booleans(), "nan": st.booleans(), "high": st.integers(1, 5), "low": st.integers(-2, 0)},
)
data_behaviour = st.one_of(
    misbehaves.map(lambda m: {**m}),
    st.fixed_dictionaries({"returns": st.sampled_from(["none", "list"])}),
    st.fixed_dictionaries(
        {"returns": st.just("splits"), "x": arrays, "y": arrays},
        optional={
            "n_train": st.integers(0, 30),
            "n_val": st.integers(0, 30),
            "drop": st.lists(st.sampled_from(["train", "val"]), max_size=1),
            "extra_key": st.booleans(),
        },
    ),
    st.fixed_dictionaries(
        {"returns": st.just("dataset")},
        optional={
            "item": st.sampled_from(["pair", "single", "triple", "none", "text"]),
            "len": st.integers(0, 30),
            "item_misbehaves": misbehaves,
            "len_misbehaves": misbehaves,
        },
    ),
)
model_behaviour = st.fixed_dictionaries(
    {},
    optional={
        "factory": misbehaves,
        "returns": st.just("not_a_module"),
        "after": st.integers(0, 6),
        "misbehaves": misbehaves,
        "outputs": st.sampled_from(["logits", "tuple", "none", "int", "wrong_shape", "nan", "long"]),
    },
)
loss_behaviour = st.fixed_dictionaries(
    {},
    optional={
        "factory": misbehaves,
        "returns": st.just("not_callable"),
        "after": st.integers(0, 6),
        "misbehaves": misbehaves,
        "value": st.sampled_from(["scalar", "per_example", "float", "none", "int", "nan", "detached"]),
    },
)


def _answered(result) -> None:
    """A verdict (0, 1) or one line naming what is wrong (2); nothing else."""
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.stderr[-1500:])
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-1500:]
    if result.exit_code == 2:
        lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-1500:]


@SETTINGS
@given(how=data_behaviour)
def test_any_data_factory_gets_a_verdict_or_one_line(cli, in_tmp, how):
    path = write_spec(
        in_tmp,
        {
            "name": "fuzz",
            "data": {"source": "python", "factory": f"{FUZZ}:data", "args": {"how": how}, "num_workers": 0},
        },
    )
    _answered(cli("inspect-data", "--config", path))


@SETTINGS
@given(how=data_behaviour)
def test_any_data_factory_in_a_training_stage_gets_a_verdict_or_one_line(cli, in_tmp, how):
    path = write_spec(
        in_tmp,
        {
            "name": "fuzz",
            "data": {"source": "python", "factory": f"{FUZZ}:data", "args": {"how": how}, "num_workers": 0},
        },
    )
    _answered(cli("baseline", "--config", path, *TINY))


@SETTINGS
@given(how=model_behaviour)
def test_any_model_gets_a_verdict_or_one_line(cli, in_tmp, how):
    path = write_spec(
        in_tmp,
        {
            "name": "fuzz",
            "data": {"source": "synthetic", "args": {"num_train": 40, "num_val": 40}},
            "model": {"arch": "python", "factory": f"{FUZZ}:model", "args": {"how": how}},
        },
    )
    _answered(cli("baseline", "--config", path, *TINY))


@SETTINGS
@given(how=loss_behaviour)
def test_any_loss_gets_a_verdict_or_one_line(cli, in_tmp, how):
    path = write_spec(
        in_tmp,
        {
            "name": "fuzz",
            "data": {"source": "synthetic", "args": {"num_train": 40, "num_val": 40}},
            "loss": {"factory": f"{FUZZ}:loss", "args": {"how": how}},
        },
    )
    _answered(cli("baseline", "--config", path, *TINY))
