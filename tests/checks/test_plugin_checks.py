"""user-warnings and loss-broadcasting, judged on synthetic measurements; the recorder of
warnings raised inside the user's code."""

import inspect
import warnings

import pytest

from nnrecipe.checks.plugin_checks import loss_broadcasting, user_warnings
from nnrecipe.errors import PluginError
from nnrecipe.plugins import CaughtWarning, user_code
from nnrecipe.plugins import user_warnings as record_user_warnings
from nnrecipe.probes.measurements import BaselineMeasurements
from nnrecipe.probes.model_probes import LossShapes
from nnrecipe.spec_stages import BaselineSpec
from nnrecipe.tasks import REGRESSION
from nnrecipe.verdict import Status

CFG = BaselineSpec()


def _w(message="broadcasting", origin="model.py:12"):
    return CaughtWarning(
        field="model.factory", code="model.py:net: forward", category="UserWarning", message=message, origin=origin
    )


def test_user_warnings_is_no_verdict_without_warnings_and_a_warn_with_them():
    assert user_warnings("baseline", []) is None
    v = user_warnings("overfit", [_w(), _w(), _w("deprecated", "loss.py:3")])
    assert v.status is Status.WARN and v.stage == "overfit" and v.observed["count"] == 2  # exact repeats once
    assert "model.py:12" in v.message and "UserWarning: broadcasting" in v.message and len(v.observed["others"]) == 1


def test_the_recorder_keeps_warnings_from_user_code_and_shows_the_rest():
    with record_user_warnings() as caught:
        with user_code("loss.factory", "loss.py:mse"):
            line = inspect.currentframe().f_lineno + 1
            warnings.warn("inside", stacklevel=1)
        with pytest.warns(UserWarning, match="outside"):  # not user code: shown as Python would
            warnings.warn("outside", stacklevel=1)
    assert [(w.field, w.code, w.message) for w in caught] == [("loss.factory", "loss.py:mse", "inside")]
    assert caught[0].origin == f"{__file__}:{line}"
    with pytest.warns(UserWarning, match="after"):  # the recorder is gone: shown, not kept
        warnings.warn("after", stacklevel=1)
    assert len(caught) == 1


def _shapes(ours, theirs, refused=""):
    return BaselineMeasurements(
        REGRESSION,
        broadcast=LossShapes(
            ours=ours, theirs=theirs, our_shape=(64, 1), their_shape=(64,), outputs_shape=(64, 1), refused=refused
        ),
    )


def test_loss_broadcasting_both_ways_and_its_skips():
    assert loss_broadcasting(_shapes(1.2955, 1.2555), CFG).status is Status.FAIL
    v = loss_broadcasting(_shapes(1.2955, 1.2955 * (1 + 1e-7)), CFG)  # float noise
    assert v.status is Status.PASS and "both ways" in v.message
    refused = loss_broadcasting(_shapes(1.0, None, refused=str(PluginError("loss.factory: shapes differ"))), CFG)
    assert refused.status is Status.PASS and "refuses" in refused.message
    skip = loss_broadcasting(
        BaselineMeasurements(REGRESSION, broadcast_skip="the built-in loss (mse) is nnrecipe's"), CFG
    )
    assert skip.status is Status.SKIP and "built-in" in skip.message
