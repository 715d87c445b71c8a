import pytest

from conftest import PLANTED
from nnrecipe.errors import PluginError
from nnrecipe.plugins import call_factory, load_factory


def test_file_reference_resolves_against_the_base_folder():
    fn = load_factory("data_bugs.py:clean", base=PLANTED, field="data.factory")
    assert callable(fn) and fn.__name__ == "clean"


def test_module_reference():
    fn = load_factory("json:dumps", base=PLANTED, field="loss.factory")
    assert fn({"a": 1}) == '{"a": 1}'


@pytest.mark.parametrize(
    "ref, message",
    [
        ("nothere.py:f", r"model\.factory: .*nothere\.py not found"),
        ("data_bugs.py:nope", r"model\.factory: .*data_bugs\.py has no function 'nope'"),
        ("no_such_pkg.mod:f", r"model\.factory: module 'no_such_pkg.mod' not found"),
        ("broken_import.py:make_data", r"model\.factory: importing .*broken_import\.py failed: ModuleNotFoundError"),
    ],
)
def test_load_errors_name_field_and_target(ref, message):
    with pytest.raises(PluginError, match=message):
        load_factory(ref, base=PLANTED, field="model.factory")


def test_call_errors_become_one_line():
    def boom(**kw):
        raise ValueError("bad\nthing")

    with pytest.raises(PluginError) as exc:
        call_factory(boom, field="data.factory", ref="x.py:boom", a=1)
    assert str(exc.value) == "data.factory: x.py:boom raised ValueError: bad thing"
