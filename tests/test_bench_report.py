"""bench.report renders docs/benchmarks.md from bench/results/*.json: every section,
no junk (None, NaN), and no crash on results that lack keys (no etcd, no benchmark run)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.report import page as report
from bench.report.__main__ import main
from bench.report.parts import Context

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
JUNK = re.compile(r"\b(None|nan|NaN|inf|null)\b")


def render(results: dict[str, dict[str, Any]], tmp_path: Path) -> str:
    ctx = Context(out=tmp_path / "benchmarks.md", images=tmp_path / "img")
    return report.render(results, {}, ctx)


def assert_clean(page: str) -> None:
    assert "could not be rendered" not in page
    junk = [line for line in page.splitlines() if JUNK.search(line)]
    assert not junk, junk[:5]


def test_renders_the_committed_results(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    assert main(["--results", str(RESULTS), "--out", str(out)]) == 0
    page = out.read_text()
    assert_clean(page)
    assert page.startswith("# Benchmarks\n")
    for heading in ("## Reproducing", "## Targets at a glance", "make bench-report",
                    "--quick"):
        assert heading in page
    present = {p.stem for p in RESULTS.glob("*.json")}
    for name, title in report.TITLES.items():
        assert f"\n## {title}\n" in page
        if name in present:
            assert f"No results yet: run `python -m bench.{name}`" not in page
    if "coordination" in present:
        assert "× raw" in page and "round trips per tick" in page
    if "scale" in present:
        assert "99.5 %" in page and "sleeper p99" in page
    if "failover" in present:
        assert "TTL + 0.5 s" in page and "period + 100 ms" in page
    for name in ("scale", "failover", "leaselock"):
        image = ROOT / "docs" / "img" / f"{name}.png"
        assert (f"img/{name}.png)" in page) == image.is_file()


def test_links_plots_relative_to_the_page(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "failover.png").write_bytes(b"")
    page = render({"failover": {"mode": "quick"}}, tmp_path)
    assert "](img/failover.png)" in page
    assert "scale.png" not in page


def test_targets_judged_from_the_figures(tmp_path: Path) -> None:
    results: dict[str, dict[str, Any]] = {
        "coordination": {"throughput": [
            {"what": "raw", "rate_median": 100.0, "ratio_to_raw": 1.0, "target_ratio": None},
            {"what": "fenced", "rate_median": 79.0, "ratio_to_raw": 0.79, "target_ratio": 0.8,
             "target_met": True}]},
        "failover": {"period": 1.0, "kill_summary": {"2": {"ttl": 2, "per_trial_worst": {
            "n": 20, "p99": 2.4}}}, "graceful_summary": {"drain": {"max_gap_s": {"p99": 1.2}}}},
    }
    page = render(results, tmp_path)
    assert_clean(page)
    glance = page.split("## Targets at a glance", 1)[1].split("## Contents", 1)[0]
    fenced = next(line for line in glance.splitlines() if ": fenced |" in line)
    assert "0.79×" in fenced and "**missed**" in fenced  # the figure wins over the flag
    assert re.search(r"TTL 2 s\) \| p99 2\.40 s .*\| met \|", glance)
    assert re.search(r"TTL 5 s\) \| not measured \|", glance)
    assert re.search(r"`dispatchctl drain`\) \| p99 1\.200 s .*\| \*\*missed\*\* \|", glance)


def _stripped(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Copies of ``data`` missing one key each: at the top, and in the first record of
    every list of records or mapping below it (shallow copies: nothing is modified)."""
    out = []
    for key, value in data.items():
        out.append({k: v for k, v in data.items() if k != key})
        if isinstance(value, list) and value and isinstance(value[0], dict):
            out += [{**data, key: [{k: v for k, v in value[0].items() if k != sub},
                                   *value[1:]]} for sub in value[0]]
        elif isinstance(value, dict):
            out += [{**data, key: {k: v for k, v in value.items() if k != sub}}
                    for sub in value]
    return out


@pytest.mark.parametrize("name", sorted(p.stem for p in RESULTS.glob("*.json")))
def test_survives_missing_keys(name: str, tmp_path: Path) -> None:
    found, _ = report.load_results(RESULTS)  # retries a file a benchmark is rewriting
    if name not in found:
        pytest.skip(f"{name}.json is being rewritten")
    data = found[name]
    for variant in [{}, {"machine": None, "mode": "quick"}, *_stripped(data)]:
        assert_clean(render({name: variant}, tmp_path))


def test_odd_shapes_and_unreadable_files(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "RETRY_DELAY", 0.0)
    nan = float("nan")
    odd: dict[str, dict[str, Any]] = {
        "coordination": {"throughput": [{"what": "x", "rate_median": nan, "ratio_to_raw": 0}],
                         "round_trips": [{"round_trips_per_tick": None}], "worker_runs": [],
                         "tick_cpu_breakdown_us": {"a": {"step": nan}}},
        "scale": {"headline": [{"cities": 200, "workers": 4, "period": 1.0,
                                "lateness_p99_ms": nan, "load_average": None}],
                  "city_sweep": "?", "most_cities_with_p99_under_100ms": None,
                  "process_vs_thread": {"x": nan}},
        "failover": {"kill_summary": {"x": {}, "5": {"per_trial_worst": {"p99": nan}}},
                     "graceful_summary": {"joining": {"moved": {"mean": 3}}}},
        "leaselock": {"summary": {"election": {"n": 0, "p99": nan}},
                      "election_pause": [{"stale_accepted": None}], "pause_summary": 3},
        "solvers": {"rows": [{"scenario": None, "models": {"greedy": None}}],
                    "machine": {"load_average_1m": nan, "versions": []}},
        "newbench": {"machine": {"cores": 2}, "value": 1},
    }
    page = render(odd, tmp_path)
    assert_clean(page)
    assert "## Other results: newbench" in page
    assert "not measured" in page  # 200 cities are not the scale target's configuration

    results = tmp_path / "results"
    results.mkdir()
    (results / "failover.json").write_text('{"mode": "quick", "period": ')
    (results / "solvers.json").write_text("[1, 2]")
    out = tmp_path / "out.md"
    assert main(["--results", str(results), "--out", str(out)]) == 0
    page = out.read_text()
    assert "`failover.json` could not be read" in page
    assert "`solvers.json` could not be read" in page
    assert "No results yet: run `python -m bench.scale`" in page


def test_help() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.report", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    assert "--results DIR" in done.stdout and "--out FILE" in done.stdout
