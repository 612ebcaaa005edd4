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


#: the shape ``python -m bench.relay`` writes, with made-up figures
RELAY: dict[str, Any] = {
    "mode": "quick", "relay": "dispatch-relay subprocess", "decisions": 3000, "cities": 500,
    "repeats": 2, "batch_max": 500, "decision_bytes": 2900, "assignments_per_decision": 20,
    "throughput": {"relay_rate_median": 1500.0, "relay_rate_min": 1400.0,
                   "relay_rate_max": 1600.0, "raw_rate_median": 2000.0, "raw_rate_min": 1900.0,
                   "raw_rate_max": 2100.0, "ratio_to_raw": 0.75, "target_ratio": 0.8,
                   "target_met": True, "rows_match": True, "relay_mean_batch": 480.0,
                   "relay_cpu_us_per_decision": 400.0,
                   "relay_postgres_cpu_us_per_decision": 300.0,
                   "raw_client_cpu_us_per_decision": 60.0,
                   "raw_postgres_cpu_us_per_decision": 290.0,
                   "relay_runs": [{"rate": 1500.0}], "raw_runs": [{"rate": 2000.0}]},
    "latency": [
        {"rate_asked": 1000.0, "rate_achieved": 998.0, "cities": 500, "samples": 10000,
         "p50_ms": 3.0, "p90_ms": 6.0, "p99_ms": 12.0, "max_ms": 40.0, "behind_at_end_s": 0.01,
         "target_p99_ms": 50.0, "target_met": True, "decisions_per_transaction": 2.5,
         "put_rtt_p50_ms": 0.4, "relay_cpu_us_per_decision": 500.0, "relay_cores": 0.5,
         "postgres_cpu_us_per_decision": 350.0, "etcd_cpu_us_per_decision": 150.0,
         "watch": {"notifications_per_second": 400.0, "client_cpu_us_per_notification": 40.0,
                   "backend_cpu_us_per_notification": 30.0, "cores": 0.028}},
        {"rate_asked": 250.0, "rate_achieved": 250.0, "p99_ms": 9.0,
         "relay_cpu_us_per_decision": 700.0}],
}


def test_relay_section(tmp_path: Path) -> None:
    page = render({"relay": RELAY}, tmp_path)
    assert_clean(page)
    glance = page.split("## Targets at a glance", 1)[1].split("## Contents", 1)[0]
    drain = next(line for line in glance.splitlines() if "raw psycopg" in line)
    assert "0.75×" in drain and "**missed**" in drain  # the figure wins over the flag
    assert re.search(r"row visible p99 ≤ 50 ms .*\| p99 12\.0 ms at 998/s \| met \|", glance)
    section = page.split("\n## Decisions out: the relay\n", 1)[1]
    assert "| raw psycopg (baseline) |" in section and "µs CPU per decision" in section

    assert "500 µs at 998/s, 700 µs at 250/s" in page

    slow = {**RELAY, "latency": [{**RELAY["latency"][0], "rate_achieved": 700.0}]}
    glance = render({"relay": slow}, tmp_path).split("## Contents", 1)[0]
    assert re.search(r"p99 12\.0 ms at 700/s \| not at 1,000/s \|", glance)
    one_run = {**RELAY, "latency": RELAY["latency"][0]}  # a single run, not in a list
    for variant in [{}, {"machine": None, "mode": "quick"}, one_run, *_stripped(RELAY),
                    *({**RELAY, "latency": [run]} for run in _stripped(RELAY["latency"][0]))]:
        assert_clean(render({"relay": variant}, tmp_path))


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


#: the shape ``python -m bench.fleet`` writes, with made-up figures
FLEET: dict[str, Any] = {
    "mode": "quick", "period": 2.0, "workers": 4, "isolation": "thread",
    "steady_pace": ["capital"],
    "mix": [{"class": "capital", "cities": 2, "orders": 600, "couriers": 400,
             "solvers": ["hungarian", "bundle"]},
            {"class": "village", "cities": 60, "orders": 30, "couriers": 20,
             "solvers": ["greedy"]}],
    "runs": [
        {"placement": "cost", "busiest_over_mean": 1.08, "cpu_mean": 0.2,
         "on_time_by_class": {"capital": {"on_time_share": 1.0},
                              "village": {"on_time_share": 0.999}},
         "moves_per_hour": 0.0, "etcd_bytes_per_s": 9000.0, "etcd_bytes_per_decision": 300.0,
         "settle_s": 90.0, "converged_after_s": 140.0, "moves_to_converge": 12,
         "join_leave": {"join": {"moves": 9, "last_move_after_s": 31.0,
                                 "worst_handover_gap_s": 2.04,
                                 "on_time_by_class": {"capital": {"on_time_share": 1.0}}},
                        "leave": {"moves": 20, "last_move_after_s": 6.0,
                                  "worst_handover_gap_s": 2.08, "on_time_by_class": {}}}},
        {"placement": "count", "busiest_over_mean": 1.9, "cpu_mean": 0.2,
         "on_time_by_class": {"capital": {"on_time_share": 0.98}},
         "moves_per_hour": 0.0, "etcd_bytes_per_s": 8800.0, "etcd_bytes_per_decision": 290.0}],
}


def test_fleet_section(tmp_path: Path) -> None:
    page = render({"fleet": FLEET}, tmp_path)
    assert_clean(page)
    glance = page.split("## Targets at a glance", 1)[1].split("## Contents", 1)[0]
    assert re.search(r"≤ 1\.10 \| 1\.080 \(by count: 1\.90×\) \| met \|", glance), glance
    assert re.search(r"99\.5 % \| worst class 99\.9% \| met \|", glance), glance
    assert "| cost | 1.08× |" in page and "capital on time" in page
    assert "| cost: a worker joins | 9 | 31 | 2.04 | 100.0 % |" in page, page
    assert "Steady pace" in page and "no city changed writer for 90 s" in page
    for variant in [{}, {"runs": [{}]}, *_stripped(FLEET)]:
        assert_clean(render({"fleet": variant}, tmp_path))


def _sample(minute: float, on_time: float) -> dict[str, Any]:
    return {"minute": minute, "on_time_share": on_time, "delivered_share": 1.0,
            "worst_gap_s": 1.0, "etcd_cpu_cores": 0.3, "gaps": 100, "on_time": 100}


#: the shape ``python -m bench.steady --stall-etcd 2:12`` writes, with made-up figures
STALL: dict[str, Any] = {
    "mode": "full", "cities": 1000, "workers": 4, "period": 1.0, "minutes": 5,
    "sample_seconds": 10,
    "stall": {"minute": 2.0, "seconds": 12.0, "recovered_after_s": 28.0,
              "on_time_before": 0.999, "on_time_after_recovery": 0.998,
              "worst_sample_after_recovery": 0.99},
    "samples": [_sample(m / 6, 0.999 if not 12 <= m <= 15 else 0.6) for m in range(1, 31)],
    "summary": {"on_time_min": 0.6},
}


def test_stall_section(tmp_path: Path) -> None:
    page = render({"steady-stall": STALL}, tmp_path)
    assert_clean(page)
    assert "## Recovery from an etcd stall" in page
    assert "etcd stopped (SIGSTOP) at minute 2 for 12 s" in page
    assert "from the recovery to the end: 99.80 % (worst sample 99.00 %)" in page
    glance = page.split("## Targets at a glance", 1)[1].split("## Contents", 1)[0]
    assert re.search(r"within a minute of etcd going on .*\| 28 s, .* 99\.5 % \| met \|", glance), \
        glance
    late = {**STALL, "stall": {**STALL["stall"], "recovered_after_s": None}}
    assert "not by the end of the run" in render({"steady-stall": late}, tmp_path)
    for variant in [{}, *_stripped(STALL)]:
        assert_clean(render({"steady-stall": variant}, tmp_path))
    survivor = {**STALL, "stall": {**STALL["stall"], "stopped": "workers"}}
    page = render({"steady-survivor": survivor}, tmp_path)
    assert_clean(page)
    assert "## Recovery from a lease loss of most of the fleet" in page
    assert "every worker but w1 stopped (SIGSTOP) at minute 2 for 12 s" in page
