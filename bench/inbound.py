#!/usr/bin/env python3
"""Inbound benchmark (not a test; never fails on timing).

N mailboxes in a real Dovecot, each the IMAP mailbox of its own location,
all idling in one mailbridge over TLS. Reports RSS per idle mailbox (the
slope between a run with few and a run with N mailboxes), CPU used while
idle, and delivery-to-post latency p50/p99 for messages appended to
random mailboxes: from the APPEND sent (latency_ms_*) and from its answer
(after_append_ms_*) to the inbound post's arrival at the fake API.

usage: bench/inbound.py [N] [--build DIR] [--connect-rate R] [--imap-workers W] [--login-reuse]
       (run as root)
"""
import argparse
import email.utils
import imaplib
import json
import os
import random
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from harness.daemon import Daemon, location_conf  # noqa: E402
from harness.fakeghl import FakeGHL  # noqa: E402
from harness.servers import MailServers  # noqa: E402
from benchutil import pct  # noqa: E402


def proc_stat(pid):
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return rss, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def system_cpu_s():
    """CPU seconds the whole machine has spent busy (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")     # less idle and iowait


INOTIFY_INSTANCES = "/proc/sys/fs/inotify/max_user_instances"


def inotify_room(n):
    """Dovecot watches each IDLE mailbox with an inotify instance of its
    imap process; past the kernel's per-user limit (128 by default) it
    falls back to mailbox_idle_check_interval (1 s in the harness), and the
    latency measured is its polling, not the bridge. Raise the limit for
    the run when we may. Returns (limit in force, what it was)."""
    try:
        with open(INOTIFY_INSTANCES) as f:
            was = int(f.read())
    except OSError:
        return None, None
    want = 4 * n + 256
    if was < want:
        try:
            with open(INOTIFY_INSTANCES, "w") as f:
                f.write(str(want))
            return want, was
        except OSError:
            pass
    return was, was


def run_daemon(srv, ghl, users, port, tls, connect_rate=0, imap_workers=0):
    locs = [location_conf(f"L{u}", **{"from": f"{u} <{u}@mail.test>", "smtp_host": "127.0.0.1",
                                     "smtp_port": srv.smtp, "smtp_tls": "none", "token": "tok",
                                     "imap_host": "127.0.0.1", "imap_port": srv.imaps if tls else srv.imap,
                                     "imap_tls": "tls" if tls else "none", "imap_ca_file": srv.cert,
                                     "imap_user": u, "imap_password": u + "pw"}) for u in users]
    extra = (f"imap_connect_rate = {connect_rate}\n" if connect_rate else "") + \
        (f"imap_workers = {imap_workers}\n" if imap_workers else "")
    d = Daemon(port, ghl.url, locs, log_level="info", extra_server=extra)
    t0 = time.time()
    sys0 = system_cpu_s()
    d.start()
    end = t0 + 600
    while time.time() < end:
        if len(re.findall(r"imap: locationId=\S+ connected", d.log())) >= len(users):
            break
        time.sleep(0.05)
    d.all_connected_s = time.time() - t0
    # the machine's CPU over the start-up, and mailbridge's part of it
    # (the rest: Dovecot's logins and imap processes, and this script)
    d.startup_cpu_s = (system_cpu_s() - sys0, proc_stat(d.proc.pid)[1])
    time.sleep(2.0)
    return d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=1000)
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--plain", action="store_true", help="IMAP without TLS")
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--connect-rate", type=int, default=0, help="[server] imap_connect_rate (default: the daemon's)")
    ap.add_argument("--imap-workers", type=int, default=0, help="[server] imap_workers (default: the daemon's)")
    ap.add_argument("--login-reuse", action="store_true",
                    help="Dovecot's high-performance login mode: its TLS tickets stay valid, so sessions resume")
    args = ap.parse_args()
    inotify_limit, inotify_was = inotify_room(args.n)
    os.environ["MAILBRIDGE_BIN"] = os.path.join(args.build, "mailbridge")
    users = [f"u{i:05d}" for i in range(args.n)]
    srv = MailServers(24000, extra_users=users, login_reuse=args.login_reuse)
    ghl = FakeGHL()
    ghl.static_tokens.add("tok")
    try:
        srv.start()
        small = users[:10]
        d = run_daemon(srv, ghl, small, 24050, not args.plain)
        rss_small, _ = proc_stat(d.proc.pid)
        d.stop()
        d.cleanup()
        d = run_daemon(srv, ghl, users, 24051, not args.plain, args.connect_rate, args.imap_workers)
        rss_big, cpu0 = proc_stat(d.proc.pid)
        startup_s = d.all_connected_s
        startup_cpu = d.startup_cpu_s
        time.sleep(10)
        _, cpu1 = proc_stat(d.proc.pid)
        lat, after_append, steps = [], [], []
        for u in random.sample(users, min(args.samples, len(users))):
            msgid = email.utils.make_msgid(domain="bench.test")
            raw = f"From: x@bench.test\r\nTo: {u}@mail.test\r\nSubject: b\r\nMessage-ID: {msgid}\r\n\r\nhi\r\n"
            with imaplib.IMAP4("127.0.0.1", srv.imap, timeout=10) as m:
                m.login(u, u + "pw")
                t0 = time.time()
                m.append("INBOX", None, None, raw.encode())
                appended = time.time()
            while time.time() - t0 < 10:
                with ghl.lock:
                    if any(b.get("altId") == msgid for b in ghl.inbound):
                        break
                time.sleep(0.005)
            with ghl.lock:
                mine = [r for r in ghl.requests if r["t"] >= t0]
            # the post's arrival as the fake API saw it, not this loop's next look
            posted = [r["t"] for r in mine if r["path"].split("?")[0] == "/conversations/messages/inbound"]
            t_post = posted[0] if posted else time.time()
            lat.append(t_post - t0)
            after_append.append(t_post - appended)
            steps.append([(round((r["t"] - t0) * 1000), r["method"], r["path"].split("?")[0]) for r in mine])
        connected = len(set(re.findall(r"imap: locationId=(\S+) connected", d.log())))
        d.stop()
        d.cleanup()
        lat.sort()
        print(json.dumps({
            "mailboxes": args.n, "connected": connected, "tls": not args.plain,
            "dovecot_login_reuse": args.login_reuse, "connect_rate": args.connect_rate or "default",
            "imap_workers": args.imap_workers or "default",
            "start_to_all_connected_s": round(startup_s, 2),
            "startup_cpu_s_machine_mailbridge": [round(x, 2) for x in startup_cpu],
            "rss_kib_10_mailboxes": rss_small, "rss_kib_all": rss_big,
            "rss_kib_per_idle_mailbox": round((rss_big - rss_small) / (args.n - len(small)), 1),
            "idle_cpu_percent": round((cpu1 - cpu0) / 10 * 100, 2),
            "latency_ms_p50": round(pct(lat, 0.5) * 1000, 1),
            "latency_ms_p99": round(pct(lat, 0.99) * 1000, 1),
            "latency_ms_all": [round(x * 1000) for x in lat],
            # from the APPEND's answer: Dovecot's notify delay (500 ms) and the bridge
            "after_append_ms_p50": round(pct(after_append, 0.5) * 1000, 1),
            "after_append_ms_p99": round(pct(after_append, 0.99) * 1000, 1),
            "first_sample_requests": steps[0] if steps else None,
            "inotify_max_user_instances": inotify_limit,
        }, indent=2))
    finally:
        ghl.close()
        if inotify_was is not None and inotify_limit != inotify_was:
            with open(INOTIFY_INSTANCES, "w") as f:
                f.write(str(inotify_was))
        srv.stop()


if __name__ == "__main__":
    main()
