"""inspect-data --model RUN_DIR: the data seen through a model trained in RUN_DIR."""

import json

from conftest import PLANTED, write_spec


def _spec(folder, name, factory):
    return write_spec(
        folder,
        {
            "name": name,
            "data": {"source": "python", "factory": f"{PLANTED}/label_data.py:{factory}"},
            "train": {"steps": 400, "eval_every": 100},
            "stages": {"overfit": {"ladder": []}},
        },
        name=f"{name}.yaml",
    )


def test_a_model_on_its_own_data_passes_and_on_unnormalised_data_fails(cli, in_tmp):
    trained = _spec(in_tmp, "trained", "clean_digits")
    assert cli("overfit", "--config", trained).exit_code in (0, 1)
    run_dir = in_tmp / "runs" / "trained"

    r = cli("inspect-data", "--config", trained, "--model", run_dir, "--json")
    v = {x["check"]: x for x in json.loads(r.stdout)}["model-on-data"]
    assert v["status"] == "pass" and v["observed"]["drop_z"] == 0.0, v  # the same val split, the same weights
    out = run_dir / "inspect-data"
    assert (
        (out / "confusion.png").exists() and (out / "per_class.csv").exists() and (out / "mispredictions.png").exists()
    )
    assert any(a.endswith("confusion.png") for a in v["artifacts"])

    # the same model fed transposed images: the pipeline changed between training and now
    r = cli("inspect-data", "--config", _spec(in_tmp, "later", "transposed_digits"), "--model", run_dir, "--json")
    assert r.exit_code == 1
    v = {x["check"]: x for x in json.loads(r.stdout)}["model-on-data"]
    assert v["status"] == "fail" and v["observed"]["drop_z"] > 10 and "not what it learned from" in v["message"]


def test_a_run_directory_without_a_model_is_one_line_exit_2(cli, in_tmp):
    spec = _spec(in_tmp, "empty", "clean_digits")
    (in_tmp / "nothing").mkdir()
    r = cli("inspect-data", "--config", spec, "--model", in_tmp / "nothing")
    assert r.exit_code == 2 and "--model:" in r.stderr and "holds no trained model" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
