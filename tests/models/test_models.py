import pytest
import torch

from conftest import PLANTED
from nnrecipe.errors import PluginError, SpecError
from nnrecipe.models import build_model, check_output_shape
from nnrecipe.spec import load_spec


def _build(shape, *overrides, outputs=10):
    spec, base = load_spec(None, list(overrides))
    return build_model(spec, input_shape=shape, num_outputs=outputs, base=base)


@pytest.mark.parametrize(
    "arch, shape",
    [
        ("linear", (1, 8, 8)),
        ("mlp", (16,)),
        ("cnn1d", (1, 40)),
        ("cnn1d", (40,)),
        ("cnn2d", (1, 8, 8)),
        ("cnn2d", (3, 32, 32)),
        ("resnet18", (3, 32, 32)),
        ("resnet18", (1, 8, 8)),
    ],
)
def test_builtin_models_map_a_batch_to_n_by_outputs(arch, shape):
    model = _build(shape, f"model.arch={arch}")
    check_output_shape(model, torch.randn(2, *shape), (2, 10))


def test_resnet50_builds():
    model = _build((3, 32, 32), "model.arch=resnet50")
    check_output_shape(model, torch.randn(2, 3, 32, 32), (2, 10))


def test_dropout_is_used_when_asked():
    model = _build((16,), "model.args.dropout=0.3")
    assert any(isinstance(m, torch.nn.Dropout) for m in model.modules())


def test_wrong_input_rank_names_the_arch():
    with pytest.raises(
        SpecError, match=r"model\.arch: cnn2d needs inputs of shape \(C, H, W\); the data gives \(16,\)"
    ):
        _build((16,), "model.arch=cnn2d")


def test_resnet_local_weights(tmp_path):
    source = _build((3, 32, 32), "model.arch=resnet18")
    torch.save(source.state_dict(), tmp_path / "w.pt")
    model = _build((3, 32, 32), "model.arch=resnet18", f"model.args.weights_path={tmp_path / 'w.pt'}")
    assert torch.equal(model.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    from nnrecipe.errors import DataError

    with pytest.raises(DataError, match=r"model\.args\.weights_path: .*missing\.pt not found"):
        _build((3, 32, 32), "model.arch=resnet18", f"model.args.weights_path={tmp_path / 'missing.pt'}")


def test_python_model_factory():
    model = _build((1, 8, 8), "model.arch=python", f"model.factory={PLANTED}/models.py:good", "model.args.width=8")
    check_output_shape(model, torch.randn(3, 1, 8, 8), (3, 10), field="model.factory")


@pytest.mark.parametrize(
    "name, message",
    [
        ("not_a_module", "returned str; expected a torch.nn.Module"),
        ("raises", "raised ValueError: unsupported input shape"),
    ],
)
def test_python_model_factory_errors(name, message):
    with pytest.raises(PluginError, match=message):
        _build((1, 8, 8), "model.arch=python", f"model.factory={PLANTED}/models.py:{name}")


def test_wrong_output_shape_is_a_plugin_error():
    model = _build((1, 8, 8), "model.arch=python", f"model.factory={PLANTED}/models.py:wrong_outputs")
    with pytest.raises(PluginError, match=r"returns \(2, 11\) for a batch of 2; expected \(2, 10\)"):
        check_output_shape(model, torch.randn(2, 1, 8, 8), (2, 10), field="model.factory")
