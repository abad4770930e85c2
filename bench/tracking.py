#!/usr/bin/env python3
"""Tracking endpoints benchmark (not a test; never fails on timing).

One mailbridge with a location that tracks opens and clicks, and the fake
HighLevel (v3 on). Valid tokens are made the way mailbridge makes them,
with the store's key read from its database, for M messages; then P
client processes, each on one keep-alive connection, send GET /o/... and
GET /c/... at a paced total rate R for S seconds (open loop: each request
at its slot, the lateness of a slot reported apart). Prints the rate
reached, latency p50/p99/max (send to full response), the daemon's CPU per
request, the harness's own CPU, and how many events reached HighLevel
(each message's open and click once, however often hit).

usage: bench/tracking.py [--rate 2000] [--seconds 10] [--procs 4] [--messages 200] [--build DIR]
"""
import argparse
import base64
import hashlib
import hmac
import http.client
import multiprocessing
import os
import sqlite3
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from harness.daemon import Daemon, location_conf  # noqa: E402
from harness.fakeghl import FakeGHL  # noqa: E402
from benchutil import pct  # noqa: E402

UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120 Safari/537.36"


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def token(key, payload):
    mac = hmac.new(key, b"track\n" + payload.encode(), hashlib.sha256).digest()[:16]
    return b64url(payload.encode()) + "." + b64url(mac)


def cpu_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client(port, paths, rate, seconds, start_at, out):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    lat, late, errors = [], [], 0
    period = 1.0 / rate
    i = 0
    while time.time() < start_at:
        time.sleep(0.001)
    t0 = time.perf_counter()
    n = int(rate * seconds)
    while i < n:
        slot = t0 + i * period
        now = time.perf_counter()
        if now < slot:
            time.sleep(slot - now)
        late.append(max(0.0, time.perf_counter() - slot))
        path = paths[i % len(paths)]
        s = time.perf_counter()
        try:
            conn.request("GET", path, headers={"User-Agent": UA})
            r = conn.getresponse()
            r.read()
            if r.status not in (200, 302):
                errors += 1
        except (OSError, http.client.HTTPException):
            errors += 1
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        lat.append(time.perf_counter() - s)
        i += 1
    out.put((lat, late, errors, time.process_time()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--port", type=int, default=24100)
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    args = ap.parse_args()
    os.environ["MAILBRIDGE_BIN"] = os.path.join(os.path.abspath(args.build), "mailbridge")

    ghl = FakeGHL()
    ghl.static_tokens.add("tok")
    ghl.v3 = True
    loc = location_conf("LTrack", **{"from": "T <t@mail.test>", "smtp_host": "127.0.0.1", "smtp_port": 9,
                                     "smtp_tls": "none", "token": "tok", "reply_domain": "mail.test",
                                     "track_opens": "yes", "track_clicks": "yes", "track_min_delay": 0})
    d = Daemon(args.port, ghl.url, [loc], log_level="info")
    try:
        d.start()
        with sqlite3.connect(f"{d.dir}/data/mailbridge.db") as db:
            key = bytes.fromhex(db.execute("SELECT value FROM secrets WHERE name='address-token'").fetchone()[0])
        sent = int(time.time()) - 60
        paths = []
        for m in range(args.messages):
            prefix = f"LTrack\nbench{m}\n{sent}"
            paths.append("/o/" + token(key, "o\n" + prefix) + ".gif")
            paths.append("/c/" + token(key, f"c\n{prefix}\n0\nhttps://shop.example/item/{m}?utm=x"))
        cpu0 = cpu_of(d.proc.pid)
        out = multiprocessing.Queue()
        start_at = time.time() + 1.0
        procs = [multiprocessing.Process(target=client, args=(args.port, paths[i::args.procs] or paths,
                                                              args.rate / args.procs, args.seconds, start_at, out))
                 for i in range(args.procs)]
        for p in procs:
            p.start()
        res = [out.get(timeout=args.seconds + 120) for _ in procs]
        for p in procs:
            p.join()
        wall = time.time() - start_at
        cpu = cpu_of(d.proc.pid) - cpu0
        lat = [x for r in res for x in r[0]]
        late = [x for r in res for x in r[1]]
        errors = sum(r[2] for r in res)
        harness_cpu = sum(r[3] for r in res)
        # the events reach HighLevel: each message's open and click, once
        end = time.time() + 30
        want = 2 * args.messages
        while time.time() < end:
            with ghl.lock:
                got = sum(sum((b.get("events") or {}).values()) for _, b in ghl.v3_statuses)
            if got >= want:
                break
            time.sleep(0.2)
        print(f"requests {len(lat)} in {wall:.1f} s: {len(lat) / wall:.0f}/s (asked {args.rate}/s), errors {errors}")
        print(f"latency ms: p50 {pct(lat, 0.5) * 1000:.2f}  p99 {pct(lat, 0.99) * 1000:.2f}  "
              f"max {max(lat) * 1000:.2f}")
        print(f"client slot lateness ms: p50 {pct(late, 0.5) * 1000:.2f}  p99 {pct(late, 0.99) * 1000:.2f} "
              f"(harness CPU {harness_cpu:.1f} s)")
        print(f"daemon CPU {cpu:.2f} s: {cpu / max(1, len(lat)) * 1e6:.0f} us per request")
        print(f"events reported to HighLevel: {got} (want {want}: each open and click once)")
    finally:
        d.stop()
        d.cleanup()
        ghl.close()


if __name__ == "__main__":
    main()
