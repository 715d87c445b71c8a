"""The stage's timeline (nnrecipe/ledger.py) on synthetic records: each group counted once, each
process named as the picture names it. Which process really trained what is tested end to end
in tests/test_workers.py (local workers) and tests/test_ray.py (Ray nodes)."""

from __future__ import annotations

import csv
import io
import os
import socket

from nnrecipe.ledger import Ledger, Ran, since

HOST = socket.gethostname()


def test_each_process_is_named_as_the_timeline_names_it():
    assert Ran(HOST, os.getpid(), "cpu", 0, 1).where() == "here"
    assert Ran(HOST, os.getpid() + 1, "cpu", 0, 1).where() == f"worker pid {os.getpid() + 1}"
    assert Ran("gpu-node-7", os.getpid(), "cuda:0", 0, 1).where() == f"gpu-node-7 pid {os.getpid()}"
    assert Ran(HOST, 42, "cpu", 0, 1, node="0123abcd").where() == "ray 0123abcd pid 42"
    # a GPU task may get a process of its own each time: its row is the node's GPU
    assert Ran(HOST, 43, "cuda (GPU 3)", 0, 1, node="0123abcd").where() == "ray 0123abcd cuda (GPU 3)"


def test_a_group_counts_once_and_the_span_is_first_start_to_last_end():
    ledger = Ledger(started=100.0)
    pair = Ran(HOST, 7, "cpu", 101.0, 104.0, together=2)  # two experiments trained as one
    ledger.add("reference", pair, seed=0, steps=100)
    ledger.add("weight-decay", pair, seed=0, steps=100)
    ledger.add("dropout", Ran(HOST, 8, "cpu", 101.5, 103.5), seed=1, steps=100)
    ledger.add("data-50pct", Ran(HOST, 8, "cpu", 103.5, 106.0), seed=0, steps=100)
    assert ledger.summary() == {
        "experiments": 4,
        "processes": 2,
        "training_seconds": 3.0 + 2.0 + 2.5,  # the pair's 3 s once
        "span_seconds": 5.0,
    }
    rows = list(csv.DictReader(io.StringIO(ledger.csv())))
    assert [r["experiment"] for r in rows] == ["reference", "weight-decay", "dropout", "data-50pct"]
    assert rows[0] | {"experiment": ""} == rows[1] | {"experiment": ""}  # one group, one row each
    assert (rows[0]["together"], rows[0]["start_s"], rows[0]["seconds"]) == ("2", "1.0", "3.0")
    assert (rows[2]["seed"], rows[2]["process"], rows[3]["start_s"]) == ("1", "worker pid 8", "3.5")


def test_since_is_this_process_until_now():
    ran = since(0.0, "cpu", together=3)
    assert (ran.host, ran.pid, ran.device, ran.together, ran.where()) == (HOST, os.getpid(), "cpu", 3, "here")
    assert ran.end > 1e9  # time.time(), s


def test_a_tune_round_timed_per_trial_is_one_stretch_of_its_process():
    """Optuna times each trial of a round (asked and told one by one): overlapping times of one
    process are one stretch of training, not the sum of the trials' seconds."""
    ledger = Ledger(started=0.0)
    for k in range(16):  # a round of 16 trials trained as one, from 1.0 s to about 9 s
        ledger.add(f"trial-{k:03d}", Ran(HOST, 7, "", 1.0 + 0.001 * k, 9.0 - 0.002 * k, together=16), seed=0, steps=200)
    ledger.add("trial-016", Ran(HOST, 7, "", 9.5, 10.0), seed=0, steps=200)  # the next round, after a pause
    ledger.add("trial-017", Ran(HOST, 8, "", 1.2, 8.0, together=1), seed=0, steps=200)  # another process, meanwhile
    spans = ledger.spans()
    assert [(w, s, e, len(names)) for w, s, e, names in spans] == [
        ("worker pid 7", 1.0, 9.0, 16),
        ("worker pid 8", 1.2, 8.0, 1),
        ("worker pid 7", 9.5, 10.0, 1),
    ]
    assert ledger.summary() == {
        "experiments": 18,
        "processes": 2,
        "training_seconds": 8.0 + 6.8 + 0.5,
        "span_seconds": 9.0,
    }


def test_zero_length_records_at_one_instant_are_one_stretch_and_an_empty_ledger_has_no_summary():
    ledger = Ledger(started=0.0)
    assert ledger.summary() is None
    ledger.add("a", Ran(HOST, 7, "cpu", 2.0, 2.0, together=2), seed=0, steps=0)
    ledger.add("b", Ran(HOST, 7, "cpu", 2.0, 2.0, together=2), seed=1, steps=0)
    assert [(s, e, names) for _, s, e, names in ledger.spans()] == [(2.0, 2.0, ["a", "b"])]
