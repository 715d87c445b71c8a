"""Property-based tests (hypothesis) of the spec loader and the key=value override parser:
arbitrary input never crashes with anything but a clean spec error (exit 2, one line)."""

from __future__ import annotations

import string

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnrecipe.errors import NNRecipeError, SpecError
from nnrecipe.spec import apply_overrides, build_spec, load_spec, parse_override

FIELDS = [
    "seed",
    "name",
    "device",
    "task",
    "data.source",
    "data.batch_size",
    "data.args.scale",
    "data.augment",
    "model.arch",
    "model.args.hidden",
    "model.args.dropout",
    "optim.lr",
    "optim.name",
    "optim.schedule",
    "train.steps",
    "train.early_stopping",
    "stages.overfit.steps",
    "stages.regularize.knobs.dropout",
    "stages.squeeze.members",
    "loss",
    "nonsense",
    "data.args",
    "stages",
]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8,
)


def _one_line(exc: NNRecipeError) -> bool:
    return "\n" not in str(exc) and str(exc).strip() != ""


@SETTINGS
@given(text=st.text(alphabet=string.printable, max_size=80))
def test_any_override_text_parses_or_is_a_spec_error(text):
    try:
        path, _ = parse_override(text)
    except SpecError as exc:
        assert _one_line(exc)
    else:
        assert path and all(isinstance(p, str) for p in path)


@SETTINGS
@given(key=st.sampled_from(FIELDS), value=values)
def test_any_override_value_builds_a_spec_or_is_a_spec_error(key, value):
    text = f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
    try:
        build_spec(apply_overrides({}, [text]))
    except SpecError as exc:
        assert _one_line(exc)


@SETTINGS
@given(
    raw=st.dictionaries(
        st.sampled_from(["seed", "name", "data", "model", "optim", "train", "stages", "task", "x"]), values, max_size=4
    )
)
def test_any_mapping_builds_a_spec_or_is_a_spec_error(raw):
    try:
        build_spec(raw)
    except SpecError as exc:
        assert _one_line(exc) and exc.errors


@SETTINGS
@given(text=st.text(max_size=200))
def test_any_file_content_loads_or_is_a_spec_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("spec") / "exp.yaml"
    path.write_text(text)
    try:
        load_spec(path)
    except NNRecipeError as exc:
        assert _one_line(exc) and exc.exit_code == 2
