import pytest
import yaml

from conftest import CONFIGS, write_spec
from nnrecipe.errors import SpecError
from nnrecipe.spec import Spec, apply_overrides, load_spec, parse_override


def test_defaults_are_the_digits_config():
    """The embedded default spec and configs/digits.yaml are the same experiment."""
    spec, _ = load_spec(CONFIGS / "digits.yaml")
    assert spec == Spec()


def test_every_default_is_in_the_schema_and_round_trips():
    spec = Spec()
    again = Spec.model_validate(yaml.safe_load(spec.to_yaml()))
    assert again == spec


def test_unknown_key_names_its_dotted_path(tmp_path):
    path = write_spec(tmp_path, {"optim": {"lr": 1e-3, "lrr": 2}})
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    assert "optim.lrr: unknown key" in str(exc.value)


def test_all_errors_are_reported_at_once(tmp_path):
    path = write_spec(
        tmp_path,
        {
            "seed": "zero",
            "optim": {"lr": -1},
            "data": {"source": "csv", "args": {"pathx": "a.csv"}},
            "model": {"arch": "mlp", "args": {"hidden": ["wide"]}},
            "stages": {"inspect_data": {"outlier_z": 0}},
        },
    )
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    errors = exc.value.errors
    paths = {e.split(":")[0] for e in errors}
    assert {
        "seed",
        "optim.lr",
        "data.args.path",
        "data.args.target",
        "data.args.pathx",
        "model.args.hidden.0",
        "stages.inspect_data.outlier_z",
    } <= paths
    assert "and" in str(exc.value) and "more" in str(exc.value)  # the one-line form says there are more


def test_wrong_type_and_bad_choice(tmp_path):
    with pytest.raises(SpecError, match=r"train\.steps"):
        load_spec(write_spec(tmp_path, {"train": {"steps": "many"}}))
    with pytest.raises(SpecError, match=r"data\.source: must be one of digits, mnist1d"):
        load_spec(write_spec(tmp_path, {"data": {"source": "parquet"}}))
    with pytest.raises(SpecError, match=r"model\.arch: must be one of"):
        load_spec(write_spec(tmp_path, {"model": {"arch": "transformer-xxl"}}))


def test_overrides_parse_values_as_yaml():
    assert parse_override("optim.lr=1e-3") == (["optim", "lr"], "1e-3")  # pydantic makes it a float
    assert parse_override("model.args.hidden=[32, 16]") == (["model", "args", "hidden"], [32, 16])
    assert parse_override("train.compile=true") == (["train", "compile"], True)
    spec, _ = load_spec(None, ["optim.lr=1e-3", "model.args.hidden=[32, 16]", "seed=7"])
    assert spec.optim.lr == pytest.approx(1e-3) and spec.model.args.hidden == [32, 16] and spec.seed == 7


@pytest.mark.parametrize("bad", ["optim.lr", "=3", "optim..lr=1", "optim.l r=1", "3x=1"])
def test_malformed_overrides_are_spec_errors(bad):
    with pytest.raises(SpecError, match="override"):
        parse_override(bad)


def test_override_into_a_scalar_is_an_error():
    with pytest.raises(SpecError, match="seed is not a mapping"):
        apply_overrides({"seed": 1}, ["seed.x=2"])


def test_loss_shorthand_and_override_into_it():
    spec, _ = load_spec(None, ["task=regression", "data.source=synthetic", "loss=huber"])
    assert spec.loss.name == "huber"
    spec, _ = load_spec(None, ["loss.factory=my_losses.py:focal", "loss.args.gamma=2"])
    assert spec.loss.factory == "my_losses.py:focal" and spec.loss.args == {"gamma": 2}


def test_task_and_loss_must_agree():
    with pytest.raises(SpecError, match="regression loss"):
        load_spec(None, ["loss=mse"])
    with pytest.raises(SpecError, match="has class labels"):
        load_spec(None, ["task=regression"])


def test_factory_only_with_python_source():
    with pytest.raises(SpecError, match="only used with source: python"):
        load_spec(None, ["data.factory=x.py:f"])
    with pytest.raises(SpecError, match=r"data\.factory"):
        load_spec(None, ["data.source=python"])


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\noptim: {lr: 3e-4\n")
    with pytest.raises(SpecError, match=r"bad\.yaml:\d+:\d+: malformed YAML"):
        load_spec(path)


def test_duplicate_keys_are_errors(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("seed: 1\nseed: 2\n")
    with pytest.raises(SpecError, match="duplicate key 'seed'"):
        load_spec(path)


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "nope.yaml")


def test_non_mapping_spec(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(SpecError, match="must be a YAML mapping"):
        load_spec(path)


def test_name_defaults_to_file_stem_and_cannot_escape(tmp_path):
    spec, base = load_spec(write_spec(tmp_path, {}, name="my exp.yaml"))
    assert spec.name == "my-exp" and base == tmp_path.resolve()
    for bad in ["../x", "a/b", ".hidden", ""]:
        with pytest.raises(SpecError, match="name"):
            load_spec(None, [f"name={bad!r}" if bad else "name=''"])


def test_device_pattern():
    assert load_spec(None, ["device=cuda:1"])[0].device == "cuda:1"
    with pytest.raises(SpecError, match="device"):
        load_spec(None, ["device=gpu"])


def test_a_dumped_spec_with_factories_loads_back_unchanged():
    # best.yaml files and tune's trials are dumps of a spec: they must validate to the same spec.
    from nnrecipe.spec import Spec, load_spec

    spec, _ = load_spec(
        None, ["loss.factory=my.py:loss", "optim.schedule.factory=my.py:sched", "optim.schedule.args={k: 1}"]
    )
    assert Spec.model_validate(spec.dump()) == spec
    with pytest.raises(SpecError, match="not both"):
        load_spec(None, ["optim.schedule.name=cosine", "optim.schedule.factory=my.py:sched"])
