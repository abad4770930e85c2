#!/usr/bin/env python3
"""Issue 13's ratio: the CPU a message costs on PostgreSQL against SQLite
(a benchmark, not a test; never fails on timing).

Runs bench/outbound.py ROUNDS times on each store, alternated (SQLite, then
PostgreSQL, then SQLite, ...), because this machine's run-to-run noise is
wider than most changes, and a pair run minutes apart compares better than
two sessions. For each round it prints mailbridge's CPU per message on
SQLite, mailbridge's plus PostgreSQL's server CPU per message, and their
ratio; then the median and the spread. The target is 1.5.

usage: bench/store_ratio.py [ROUNDS] [--n N] [--build DIR] [--target sink|postfix]
       [-- extra outbound.py arguments]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run(store, args, extra):
    cmd = [sys.executable, os.path.join(HERE, "outbound.py"), str(args.n), "--clients", str(args.clients),
           "--target", args.target, "--build", args.build, "--store", store] + extra
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    text = out.stdout
    if out.returncode != 0 or "{" not in text:
        sys.exit(f"outbound.py --store {store} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    r = json.loads(text[text.index("{"):])
    if isinstance(r, list):
        r = r[0]
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rounds", type=int, nargs="?", default=3)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--build", default="build")
    ap.add_argument("--target", default="sink", choices=["sink", "postfix"])
    args, extra = ap.parse_known_args()
    extra = [a for a in extra if a != "--"]
    rows = []
    for i in range(args.rounds):
        lite = run("sqlite", args, extra)
        pg = run("postgresql", args, extra)
        s = lite["mailbridge_cpu_ms_per_msg"]
        p_mb = pg["mailbridge_cpu_ms_per_msg"]
        p_srv = pg["postgresql_cpu_ms_per_msg"]
        row = {"round": i + 1, "sqlite_ms": s, "postgresql_mailbridge_ms": p_mb, "postgresql_server_ms": p_srv,
               "ratio": round((p_mb + p_srv) / s, 2) if s else None,
               "sqlite_ack_p99_ms": lite.get("ack_ms_p99"), "postgresql_ack_p99_ms": pg.get("ack_ms_p99"),
               "sqlite_msgs_per_s": lite.get("end_to_end_msgs_per_s"),
               "postgresql_msgs_per_s": pg.get("end_to_end_msgs_per_s")}
        rows.append(row)
        print(json.dumps(row), flush=True)
    ratios = [r["ratio"] for r in rows if r["ratio"]]
    print(json.dumps({"rounds": len(rows), "ratio_median": statistics.median(ratios) if ratios else None,
                      "ratio_min": min(ratios, default=None), "ratio_max": max(ratios, default=None),
                      "target": 1.5}, indent=2))


if __name__ == "__main__":
    main()
