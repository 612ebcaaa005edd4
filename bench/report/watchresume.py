"""The watch-resume section: what opening quiet watches costs etcd's writes when they
replay from their last event, against reading their prefix again, against the present."""

from __future__ import annotations

from typing import Any

from bench.report.format import count, mapping, markdown_table, num, number
from bench.report.parts import Check, Context, Section, machine_lines

#: the ways of opening, in the order of the table
WAYS = ("present", "read again", "replayed")


def render(d: dict[str, Any], ctx: Context) -> Section:
    s = Section("watchresume", "Resuming a quiet watch")
    s.lines += machine_lines(d)
    s.lines += [f"{count(d.get('watches'))} watches on a quiet prefix of "
                f"{count(d.get('quiet_keys'))} keys, opened together "
                f"{count(d.get('revisions_behind'))} revisions after its last change (each a "
                f"transaction of {count(d.get('per_revision'))} decision-like values of "
                f"{count(d.get('decision_bytes'))} B), while a probe puts a key every 10 ms. "
                "*Replayed*: from the prefix's last revision + 1, as a resumed watch asked "
                "before; *read again*: the prefix read, then watched from there, as "
                "`PrefixWatch` does beyond `REPLAY_LIMIT`; *present* (the baseline, same "
                f"run): watched from the current revision + 1. Median of "
                f"{count(d.get('trials'))} trials.", ""]
    summary = mapping(d.get("summary"))
    body = []
    for way in WAYS:
        f = mapping(summary.get(way))
        if f:
            body.append([way, number(f.get("longest_put_ms"), ".0f"),
                         number(f.get("longest_put_over_baseline"), ".1f"),
                         number(f.get("median_put_ms"), ".1f"),
                         number(f.get("synced_s"), ".2f")])
    if not body:
        s.lines += ["No figures in this file.", ""]
        return s
    s.lines += markdown_table(["opened", "longest put (ms)", "× baseline", "median put (ms)",
                               "all delivering after (s)"], body)
    s.lines += [""]
    replayed = num(mapping(summary.get("replayed")).get("longest_put_ms"))
    read = num(mapping(summary.get("read again")).get("longest_put_ms"))
    if replayed is not None and read is not None and replayed > 0:
        s.checks.append(Check("resuming a quiet watch by a read holds etcd's writes a tenth "
                              "of a replay's time or less",
                              f"longest put {read:.0f} ms read again, {replayed:.0f} ms "
                              f"replayed ({read / replayed:.1%})", read <= replayed / 10))
    return s
