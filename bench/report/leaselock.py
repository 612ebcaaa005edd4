"""The LeaseLock comparison's section: kill -9 failover of client-go's LeaseLock
against our election, and stale writes after a pause past the lease."""

from __future__ import annotations

from typing import Any

from bench.report.format import (
    DASH,
    count,
    dig,
    mapping,
    markdown_table,
    num,
    number,
    number_range,
    numbers,
    ratio,
    records,
)
from bench.report.parts import Check, Context, Section, machine_lines


def render(d: dict[str, Any], ctx: Context) -> Section:
    s = Section("leaselock", "Comparison with client-go's LeaseLock")
    s.lines += machine_lines(d)
    ll, el = mapping(d.get("leaselock")), mapping(d.get("election"))
    setup = []
    if ll:
        setup.append("LeaseLock: LeaseDuration " + number(ll.get("lease_duration_s"), "g")
                     + " s, RenewDeadline " + number(ll.get("renew_deadline_s"), "g")
                     + " s, RetryPeriod " + number(ll.get("retry_period_s"), "g")
                     + " s, jitter " + number(ll.get("jitter_factor"), "g"))
    if el:
        setup.append("our election: lease TTL " + number(el.get("lease_ttl_s"), "g") + " s, "
                     + count(el.get("workers")) + " workers, " + count(el.get("cities"))
                     + " cities")
    if num(d.get("period")) is not None:
        setup.append(f"a decision every {number(d['period'], 'g')} s")
    if setup:
        s.lines += ["Setup: " + "; ".join(setup) + ". The LeaseLock is client-go's "
                    "algorithm reimplemented on etcd; both run in the same invocation against "
                    "the same decision watch.", ""]

    summary = mapping(d.get("summary"))
    ours, theirs = mapping(summary.get("election")), mapping(summary.get("leaselock"))
    ttl = num(el.get("lease_ttl_s"))
    if ttl is None:
        ttl = num(dig(records(d.get("election_kill")), 0, "ttl"))

    def incomplete(key: str) -> str:
        rs = records(d.get(key))
        return count(sum(1 for r in rs if r.get("complete") is False)) if rs else DASH

    body = []
    for name, q, key, over50, over99 in (
            ("etcd election + fencing" + (f" (TTL {ttl:g} s)" if ttl is not None else ""),
             ours, "election_kill", 1.0, 1.0),
            ("client-go LeaseLock", theirs, "leaselock_kill",
             summary.get("leaselock_over_election_p50"),
             summary.get("leaselock_over_election_p99"))):
        if q:
            body.append([name, count(q.get("n")), incomplete(key), number(q.get("p50"), ".2f"),
                         number(q.get("p90"), ".2f"), number(q.get("p99"), ".2f"),
                         number(q.get("max"), ".2f"), number(q.get("mean"), ".2f"),
                         ratio(over50), ratio(over99)])
    if body:
        s.lines += ["### kill -9 of the leader", "",
                    "From the SIGKILL to the first decision by the next leader, seconds; the "
                    "baseline is our election in the same run.", ""]
        s.lines += markdown_table(["mechanism", "kills", "incomplete", "p50 s", "p90 s", "p99 s",
                                   "max s", "mean s", "p50 × ours", "p99 × ours"], body)
    p99 = num(ours.get("p99"))
    if p99 is not None and ttl is not None:
        s.checks.append(Check(f"our election's kill -9 failover p99 ≤ TTL + 0.5 s (TTL {ttl:g} "
                              "s, this run)",
                              f"p99 {p99:.2f} s; LeaseLock p99 "
                              f"{number(theirs.get('p99'), '.2f')} s "
                              f"({ratio(summary.get('leaselock_over_election_p99'))} ours)",
                              p99 <= ttl + 0.5))

    body = []
    totals: dict[str, float] = {}
    for name, key in (("etcd election + fencing", "election_pause"),
                      ("client-go LeaseLock", "leaselock_pause")):
        rs = records(d.get(key))
        if not rs:
            continue
        stale = numbers(r.get("stale_accepted") for r in rs)
        fenced = numbers(r.get("fenced_out_logged") for r in rs)
        down = numbers(r.get("stepped_down_on_lease_loss") for r in rs)
        totals[key] = sum(stale)
        body.append([name, count(len(rs)), number_range((r.get("paused_s") for r in rs), ".1f"),
                     count(sum(stale)) if stale else DASH,
                     count(sum(fenced)) if fenced else DASH,
                     count(sum(down)) if down else DASH])
    if not body:  # older results: only the summary
        for name, q in mapping(d.get("pause_summary")).items():
            body.append([str(name), count(dig(q, "trials")), DASH,
                         count(dig(q, "stale_accepted")), DASH, DASH])
            if "fenc" in str(name) and num(dig(q, "stale_accepted")) is not None:
                totals["election_pause"] = num(dig(q, "stale_accepted")) or 0.0
    if body:
        s.lines += ["### A leader paused past its lease", "",
                    "The leader is stopped (SIGSTOP) for longer than its lease, another takes "
                    "over and decides, the old one is continued (SIGCONT). Counted: the old "
                    "leader's decisions accepted after the new leader's first. The fence "
                    "should reject every one of them.", ""]
        s.lines += markdown_table(["mechanism", "trials", "paused s", "stale decisions accepted",
                                   "rejected by the fence (logged)", "stepped down on lease loss"],
                                  body)
    if "election_pause" in totals:
        ours_stale = totals["election_pause"]
        theirs_stale = totals.get("leaselock_pause")
        s.checks.append(Check("no stale decision accepted after a pause past the lease "
                              "(fenced election; expected 0)",
                              f"{ours_stale:,.0f}" + (f" (LeaseLock: {theirs_stale:,.0f})"
                                                      if theirs_stale is not None else ""),
                              ours_stale == 0))
    s.lines += ctx.image("leaselock", "failover distributions: etcd election against "
                         "LeaseLock")
    return s
