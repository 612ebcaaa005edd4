"""The decision-size section: the bytes of one stored decision against the city's size,
beside the form written before each pair was kept once."""

from __future__ import annotations

from typing import Any

from bench.report.format import DASH, count, markdown_table, num, number, pct, records
from bench.report.parts import Check, Context, Section, machine_lines


def render(d: dict[str, Any], ctx: Context) -> Section:
    s = Section("decisionsize", "What a decision costs")
    s.lines += machine_lines(d)
    s.lines += ["One real tick per size (the `simulated` state, a real solve, the worker's "
                "`messages.decision` and the codec), its value as etcd stores it "
                "(protobuf's canonical JSON). The baseline is the same decision in the form "
                "written before: each pair repeated in the `assignments` map, and the ETAs "
                "at full double precision (now to the millisecond). Every tick writes one "
                "and etcd keeps every revision until compaction, so these bytes are what a "
                "city costs the etcd database, the relay and the sink's JSON column.", ""]
    rows = records(d.get("sizes"))
    body = [[f"{count(r.get('orders'))} × {count(r.get('couriers'))}",
             str(r.get("solver", DASH)), count(r.get("assigned")), count(r.get("bytes")),
             count(r.get("bytes_before")), pct(r.get("saved_share"), 0),
             count(r.get("fixed_bytes")), number(r.get("bytes_per_assigned"), ".0f"),
             number(r.get("bytes_per_order"), ".0f")] for r in rows]
    if body:
        s.lines += markdown_table(["orders × couriers", "solver", "assigned", "bytes",
                                   "bytes before", "saved", "fixed part",
                                   "bytes per assigned order", "bytes per order"], body)
        s.lines += ["", "The fixed part is the decision without its pairs and unassigned "
                    "orders (ids, token, times, the state reference). What remains is "
                    "linear in the orders: about 85 bytes per assigned order (the unassigned "
                    "orders' ids counted in), most of it the JSON names `orderId`, "
                    "`courierId` and `pickupEtaSeconds`.", ""]
        saved = [x for x in (num(r.get("saved_share")) for r in rows) if x is not None]
        if saved:
            s.checks.append(Check("decisions carry each pair once (trimmed against the "
                                  "earlier form)", f"{min(saved):.0%}–{max(saved):.0%} "
                                  "fewer bytes", None))
    else:
        s.lines += ["No sizes in this file.", ""]
    return s
