"""The Prometheus alert rules (cluster/alerts/): promtool accepts them and their unit tests pass (a
firing and a quiet case per alert), those tests fail when an alert is broken, every metric a rule
reads is one Ray 2.60 or rayfolio exports, and the PrometheusRule holds the same groups."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import ray
import yaml

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "cluster" / "alerts"
RULES = ALERTS / "rayfolio-rules.yml"
RULE_TESTS = ALERTS / "rayfolio-rules.test.yml"


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed: it comes with Debian's prometheus package "
                    "(apt-get install --no-install-recommends prometheus; .ci/run installs it)")  # fmt: skip
    return path


def run_promtool(promtool: str, *args: str, cwd: Path = ALERTS) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_promtool_accepts_the_rules(promtool):
    done = run_promtool(promtool, "check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


def test_the_rules_unit_tests_pass(promtool):
    done = run_promtool(promtool, "test", "rules", RULE_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr


def without_condition(expr: str) -> str:
    """What ``expr`` compares, without the comparison: the left side of its first comparison outside any
    parentheses, braces or quotes (``max by (feature) (x) >= 2`` -> ``max by (feature) (x)``)."""
    depth, quote = 0, None
    for i, char in enumerate(expr):
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "({[":
            depth += 1
        elif char in ")}]":
            depth -= 1
        elif depth == 0 and char in "<>=!" and expr[i : i + 2] not in ("=~", "!~"):
            return expr[:i].strip()
    raise AssertionError(f"no comparison in {expr!r}")


def test_without_condition():
    assert without_condition('max by (f) (x{a=~"5..", b!="1"}) >= 2') == 'max by (f) (x{a=~"5..", b!="1"})'
    assert without_condition("sum by (a) (x) < max by (a) (y)") == "sum by (a) (x)"
    assert without_condition("max by (a) (s) > 0 < 3") == "max by (a) (s)"


@pytest.mark.parametrize("breakage", ["never fires", "fires without its condition", "fires at once"])
def test_each_alerts_tests_catch_a_broken_alert(promtool, tmp_path, breakage):
    """Break one alert at a time: never firing misses the firing series; dropping its condition makes
    the quiet series fire (so they are quiet because of the condition, not a typo); no `for` fires early."""
    for rule in alert_rules():
        doc = yaml.safe_load(RULES.read_text())
        (broken,) = [r for g in doc["groups"] for r in g["rules"] if r["alert"] == rule["alert"]]
        if breakage == "never fires":
            broken["expr"] = "vector(0) > 1"
        elif breakage == "fires without its condition":
            broken["expr"] = without_condition(rule["expr"])
        else:
            broken["for"] = "0m"
        (tmp_path / RULES.name).write_text(yaml.safe_dump(doc, sort_keys=False))
        shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
        done = run_promtool(promtool, "test", "rules", RULE_TESTS.name, cwd=tmp_path)
        assert done.returncode != 0, f"{rule['alert']} {breakage}: its tests still pass"
        assert f"alertname: {rule['alert']}" in done.stdout + done.stderr, done.stdout + done.stderr


def test_every_alert_has_a_severity_annotations_and_both_kinds_of_test():
    rules = alert_rules()
    assert len({r["alert"] for r in rules}) == len(rules) == 6
    tests = [t for case in yaml.safe_load(RULE_TESTS.read_text())["tests"] for t in case["alert_rule_test"]]
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"].strip() and rule["annotations"]["description"].strip(), rule["alert"]
        assert "for" in rule, f"{rule['alert']}: a single scrape must not page anyone"
        own = [t for t in tests if t["alertname"] == rule["alert"]]
        assert any(t["exp_alerts"] for t in own) and any(not t["exp_alerts"] for t in own), rule["alert"]


def _serve_metric_names() -> set[str]:
    """The metric names Ray Serve registers, read from the installed package's source (the HTTP ones are
    f-strings over the protocol: ``serve_num_{protocol_name}_requests``)."""
    names = set()
    for source in (Path(ray.__file__).parent / "serve" / "_private").glob("*.py"):
        for name in re.findall(r"""f?["'](serve_[a-z_{}]+)["']""", source.read_text()):
            names.add(name.replace("{protocol_name}", "http"))
    return names


def _rayfolio_gauge_names() -> set[str]:
    """The metric names rayfolio's own code passes to ray.util.metrics (directly, or through the monitor
    gauges' holder, serving/held_gauges.py)."""
    packages = [p for p in REPO.iterdir() if (p / "__init__.py").is_file() and p.name not in ("tests", "bench")]
    pattern = re.compile(r"""(?:\.(?:Gauge|Counter|Histogram)|hold_gauge)\(\s*(?:name=)?["'](rayfolio_[a-z_]+)["']""")
    return {name for package in packages for source in package.rglob("*.py")
            for name in pattern.findall(source.read_text())}  # fmt: skip


def test_every_metric_a_rule_reads_is_exported_by_ray_or_rayfolio():
    """Ray prefixes every metric with ``ray_``; Prometheus names a counter's series ``_total`` and a
    histogram's buckets ``_bucket``."""
    serve, ours = _serve_metric_names(), _rayfolio_gauge_names()
    assert {"serve_num_http_requests", "serve_deployment_replica_healthy"} <= serve  # the reading works
    used = {m for rule in alert_rules() for m in re.findall(r"\bray_[a-z_]+", rule["expr"])}
    assert len(used) == 8, used
    for metric in used:
        name = re.sub(r"_(total|bucket)$", "", metric.removeprefix("ray_"))
        assert name in (ours if name.startswith("rayfolio_") else serve), f"{metric}: nothing exports {name}"


def test_the_thresholds_are_the_monitors_own():
    """Critical drift is level code 2 (data/drift.py's LEVELS), and the Rank IC floor is
    `monitor performance`'s default --ic-floor."""
    from rayfolio.cluster.cli import build_parser
    from rayfolio.data.drift import LEVELS

    rules = {r["alert"]: r for r in alert_rules()}
    assert rules["RayfolioCriticalDrift"]["expr"].endswith(f">= {LEVELS.index('critical')}")
    floor = build_parser().parse_args(["monitor", "performance"]).ic_floor
    assert rules["RayfolioLiveRankICBelowFloor"]["expr"].endswith(f"< {floor:g}")
    assert f"floor of {floor:g}" in rules["RayfolioLiveRankICBelowFloor"]["annotations"]["description"]


def test_the_prometheusrule_holds_the_same_groups():
    rule = yaml.safe_load((REPO / "cluster" / "k8s" / "prometheusrule.yaml").read_text())
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["metadata"]["name"] == "rayfolio"
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"], (
        "cluster/k8s/prometheusrule.yaml's spec.groups differ from cluster/alerts/rayfolio-rules.yml: edit both"
    )
