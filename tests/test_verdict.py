import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from rich.console import Console

from nnrecipe.verdict import Status, Verdict, exit_code, jsonable, print_verdicts, verdicts_json


def _v(status, check="c"):
    return Verdict("inspect-data", check, status, observed=1.0, expected=0.0, message="m", hint="h")


def test_verdict_is_frozen_and_status_is_a_str_enum():
    v = _v(Status.PASS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.status = Status.FAIL  # type: ignore[misc]
    assert Status.WARN == "warn" and f"{Status.FAIL}" == "fail"


def test_exit_codes():
    assert exit_code([_v(Status.PASS), _v(Status.SKIP)]) == 0
    assert exit_code([_v(Status.PASS), _v(Status.WARN)]) == 0
    assert exit_code([_v(Status.PASS), _v(Status.WARN)], strict=True) == 1
    assert exit_code([_v(Status.FAIL)]) == 1


def test_jsonable_handles_numpy_torch_and_non_finite():
    out = jsonable({"a": np.float32(1.5), "b": torch.tensor([1, 2]), "c": (1, 2), "d": math.nan, "e": np.int64(3)})
    assert out == {"a": 1.5, "b": [1, 2], "c": [1, 2], "d": "nan", "e": 3}
    json.dumps(out, allow_nan=False)


def test_round_trip_through_json():
    v = Verdict(
        "baseline",
        "x",
        Status.WARN,
        observed={"k": [1, 2]},
        expected="<= 3",
        message="msg",
        hint="do",
        artifacts=("a.png",),
    )
    again = Verdict.from_dict(json.loads(verdicts_json([v]))[0])
    assert again == dataclasses.replace(v, observed={"k": [1, 2]})


def test_table_renders_brackets_literally():
    console = Console(record=True, width=80)
    v = Verdict(
        "inspect-data",
        "input-scale",
        Status.WARN,
        observed=[0, 255],
        expected="[dog, cat]",
        message="pixels in [0, 255] [bold]x[/bold]",
        hint="divide by 255",
    )
    print_verdicts(console, [v])
    text = console.export_text()
    assert "[0, 255]" in text and "[bold]x[/bold]" in text and "→ divide by 255" in text
    assert "0 pass  1 warn  0 fail  0 skip" in text
