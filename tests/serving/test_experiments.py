"""Experiment config and arm assignment: the share of candidates, stability across processes, and
monotonicity in the percent."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rayfolio.serving.experiments import ExperimentConfig, arm_of, client_id, experiment_from_user_config

IDS = [f"client-{i}" for i in range(100_000)]
FIELDS = {"name": "canary", "model": "ppo-allocator", "control": "v0001", "candidate": "v0002", "candidate_percent": 10}


def arms(percent: float, salt: str = "canary") -> list[str]:
    return [arm_of(salt, i, percent) for i in IDS]


def test_ten_percent_of_100_000_ids_are_candidates_within_three_tenths_of_a_point():
    share = arms(10.0).count("candidate") / len(IDS)
    assert abs(share - 0.10) <= 0.003, share
    assert arms(0.0).count("candidate") == 0 and arms(100.0).count("control") == 0


def test_raising_the_percent_moves_no_candidate_back_to_control():
    before, after = arms(10.0), arms(20.0)
    assert not [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a == "candidate" and b == "control"]
    moved = sum(a == "control" and b == "candidate" for a, b in zip(before, after, strict=True)) / len(IDS)
    assert abs(moved - 0.10) <= 0.003  # the new 10 points come from control


def test_another_salt_is_another_split():
    same = sum(a == b == "candidate" for a, b in zip(arms(10.0), arms(10.0, salt="other"), strict=True)) / len(IDS)
    assert abs(same - 0.01) <= 0.002  # independent: 10% of 10%


def test_the_hash_is_the_documented_one():
    # u = first 8 bytes of sha256("canary" \x1f "client-42") / 2**64 = 0.18999420...: pinned, so a
    # change of the hash (which would move clients between arms on upgrade) fails here.
    assert arm_of("canary", "client-42", 18.99) == "control"
    assert arm_of("canary", "client-42", 19.0) == "candidate"


ARMS_IN_A_FRESH_PROCESS = """
import json, sys
from rayfolio.serving.experiments import arm_of
print(json.dumps([arm_of("canary", f"client-{i}", 10.0) for i in range(2000)]))
"""


def test_the_same_id_gets_the_same_arm_after_a_restart_and_on_another_replica():
    # Two fresh interpreters (a restart, another replica) with different string-hash seeds: the arm
    # depends on nothing but (salt, id, percent).
    expected = arms(10.0)[:2000]
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", ARMS_IN_A_FRESH_PROCESS], capture_output=True, text=True,
                              env=env, timeout=60, check=True)  # fmt: skip
        assert json.loads(done.stdout) == expected


def test_the_client_id_is_the_header_when_given_else_the_key_id():
    assert client_id("key123", "end-user-7") == "end-user-7"
    assert client_id("key123", None) == "key123"


def test_a_valid_config_defaults_its_salt_to_the_name():
    assert experiment_from_user_config({"max_position": 0.3}) is None
    config = experiment_from_user_config({"max_position": 0.3, "experiment": FIELDS})
    assert config == ExperimentConfig(**FIELDS) and config.salt == "canary"
    assert ExperimentConfig(**FIELDS, salt="2024-q1").salt == "2024-q1"


@pytest.mark.parametrize(
    ("change", "message"),
    [({"candidate": "v0001"}, r"^experiment: .*candidate equals control \(v0001\): nothing to compare"),
     ({"candidate_percent": 101}, r"^experiment\.candidate_percent: .*less than or equal to 100"),
     ({"candidate_percent": -1}, r"^experiment\.candidate_percent: .*greater than or equal to 0"),
     ({"name": "no spaces"}, r"^experiment\.name: .*pattern"),
     ({"colour": "red"}, r"^experiment\.colour: Extra inputs are not permitted")],
)  # fmt: skip
def test_a_bad_experiment_is_refused_with_one_line_naming_the_field(change, message):
    with pytest.raises(ValueError, match=message) as refused:
        experiment_from_user_config({"experiment": FIELDS | change})
    assert "\n" not in str(refused.value)
