#!/usr/bin/env python3
"""Outbound benchmark (not a test; never fails on timing).

Pushes N signed webhooks (10 KB HTML; every 10th with a 100 KB attachment
served locally) into a running mailbridge relaying to a real Postfix
(delivery discarded, so Postfix's own queue is what we compare against),
then measures Postfix's own smtp-source injecting the same count and size
into the same Postfix. Prints webhooks accepted/s, ack latency p50/p99,
end-to-end messages/s (until Postfix accepted all), peak RSS, and the
ratio to smtp-source.

Webhooks are posted and timed by bench/tools/webhook_load.c (built here
with cc), so the latency is mailbridge's, not a Python client's.

With --store postgresql the store is a PostgreSQL the bench starts
(harness/pg.py, fsync on), and --instances 2 runs two mailbridges on it,
each sent half the webhooks by its own loader; then it also prints what
PostgreSQL did per message: commits, WAL bytes and syncs, its CPU.

usage: bench/outbound.py [N] [--build DIR] [--rate R] [--clients C] [--preload SO] [--python-client]
                         [--store sqlite|postgresql] [--instances K]
(run as root; needs the test packages)
"""
import argparse
import functools
import http.server
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import http.client

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from harness.daemon import Daemon, location_conf  # noqa: E402
from harness.fakeghl import FakeGHL  # noqa: E402
from harness.servers import MailServers  # noqa: E402
from harness import pg  # noqa: E402


# what Postfix's qmgr logs for this bench's messages (10 KB HTML, its text
# part, every 10th a 100 KB attachment): used when nothing went through Postfix
MEAN_BYTES_GUESS = 36000


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=2000)
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--clients", type=int, default=8, help="concurrent webhook senders")
    ap.add_argument("--preload", help="LD_PRELOAD for the daemon only (e.g. a shim that slows fsync)")
    ap.add_argument("--rate", type=float, default=0, help="pace webhooks at this many per second (0 = as fast as possible)")
    ap.add_argument("--python-client", action="store_true", help="time acks with the Python client, not webhook_load.c")
    ap.add_argument("--store", default="sqlite", choices=("sqlite", "postgresql"))
    ap.add_argument("--instances", type=int, default=1, help="mailbridges on one PostgreSQL (--store postgresql)")
    ap.add_argument("--pool", type=int, default=0, help="[store] pool (PostgreSQL connections per instance)")
    ap.add_argument("--target", default="both", choices=("postfix", "sink", "both"),
                    help="relay into Postfix, into smtp-sink (no queue, no disk), or both, one after the other")
    ap.add_argument("--locations", type=int, default=100,
                    help="locations the webhooks are spread over (HighLevel's window is per location)")
    ap.add_argument("--rate-limit", type=int, default=100,
                    help="[highlevel] rate_limit per 10 s per location (HighLevel's: 100)")
    ap.add_argument("--share-lease", type=int, default=None,
                    help="[highlevel] rate_share_lease, ms (PostgreSQL; 0: a round trip per HighLevel call)")
    ap.add_argument("--perf", metavar="FILE", help="perf record -g the (first) daemon during the run, into FILE")
    ap.add_argument("--perf-call-graph", default="fp", metavar="MODE",
                    help="perf's --call-graph for --perf: fp (default), or dwarf to see callers inside libraries")
    ap.add_argument("--pg-options", default="", help="PostgreSQL: more server options (-c name=value ...)")
    ap.add_argument("--statements", action="store_true",
                    help="PostgreSQL: log every statement and print the most frequent per message")
    args = ap.parse_args()
    if args.instances > 1 and args.store != "postgresql":
        ap.error("--instances > 1 needs --store postgresql")
    if args.instances > 1 and args.python_client:
        ap.error("--instances > 1 times acks with webhook_load.c")
    os.environ["MAILBRIDGE_BIN"] = os.path.join(args.build, "mailbridge")
    if args.statements and args.store != "postgresql":
        ap.error("--statements needs --store postgresql")
    base = 23000
    srv = MailServers(base, transport="discard:")
    try:
        srv.start()
        results = []
        for target in (("postfix", "sink") if args.target == "both" else (args.target,)):
            results.append(run(args, base, srv, target))
        print(json.dumps(results if len(results) > 1 else results[0], indent=2))
    finally:
        srv.stop()


class SmtpSink:
    """Postfix's smtp-sink: takes every message and keeps nothing, so
    what is left is mailbridge's own cost (and the sink's, reported)."""

    def __init__(self, port):
        self.port = port
        self.proc = subprocess.Popen(["smtp-sink", "-u", "nobody", f"127.0.0.1:{port}", "512"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("smtp-sink did not start")

    def cpu_s(self):
        return proc_cpu_s(self.proc.pid)

    def stop(self):
        self.proc.kill()
        self.proc.wait(timeout=10)


def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_stats(pid):
    """Each live thread of pid: tid -> (name, CPU ticks, context switches)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                st = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue   # ended meanwhile
        out[tid] = (st["Name"].strip(), int(fields[11]) + int(fields[12]),
                    int(st["voluntary_ctxt_switches"]) + int(st["nonvoluntary_ctxt_switches"]))
    return out


def by_thread(before, after, n):
    """CPU ms and context switches per message, by thread name (mb-outbound,
    MHD-worker, ...), of the threads alive at the end."""
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    parts = {}
    for tid, (name, cpu, cs) in after.items():
        _, cpu0, cs0 = before.get(tid, (name, 0, 0))
        p = parts.setdefault(name, [0, 0, 0])
        p[0] += 1
        p[1] += cpu - cpu0
        p[2] += cs - cs0
    return {name: {"threads": t, "cpu_ms_per_msg": round(c * tick_ms / n, 3), "switches_per_msg": round(k / n, 2)}
            for name, (t, c, k) in sorted(parts.items(), key=lambda kv: -kv[1][1])}


def ctx_switches(pid):
    """Voluntary and involuntary context switches of all the process's
    threads (/proc/PID/status counts only the main thread's)."""
    n = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if "ctxt_switches:" in line:
                        n += int(line.split()[1])
        except OSError:
            continue
    return n


def statement_profile(log, n, top=25):
    """Counts and server time of each statement PostgreSQL logged, per
    message: where the round trips go."""
    prof = {}
    for m in re.finditer(r"duration: ([0-9.]+) ms  (?:execute [^:]*|statement|parse [^:]*|bind [^:]*): (.*)", log):
        if m.group(0).find("  parse ") >= 0 or m.group(0).find("  bind ") >= 0:
            continue
        sql = " ".join(m.group(2).split())[:90]
        c = prof.setdefault(sql, [0, 0.0])
        c[0] += 1
        c[1] += float(m.group(1))
    rows = sorted(prof.items(), key=lambda kv: -kv[1][0])[:top]
    return {"statements_per_msg": round(sum(c for c, _ in prof.values()) / n, 2),
            "top": [{"per_msg": round(c / n, 2), "server_ms_per_msg": round(t / n, 3), "sql": sql}
                    for sql, (c, t) in rows]}


def statement_exec(pgs, db, n, top=20):
    """pg_stat_statements per message: calls, execution and planning time
    (a prepared statement is still planned again while PostgreSQL prefers
    custom plans for it), WAL bytes and shared blocks dirtied, the
    costliest first."""
    out = pgs.psql(db, "SELECT row_to_json(t) FROM (SELECT calls, total_exec_time, total_plan_time, plans, "
                       "wal_bytes, shared_blks_dirtied, "
                       "left(regexp_replace(query, '\\s+', ' ', 'g'), 90) AS sql FROM pg_stat_statements "
                       "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                       "ORDER BY total_exec_time DESC LIMIT %d) t" % top)
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [{"per_msg": round(r["calls"] / n, 2), "exec_ms_per_msg": round(r["total_exec_time"] / n, 3),
             "plans_per_msg": round(r["plans"] / n, 2), "plan_ms_per_msg": round(r["total_plan_time"] / n, 3),
             "wal_bytes_per_msg": round(int(r["wal_bytes"]) / n), "blocks_dirtied_per_msg":
             round(r["shared_blks_dirtied"] / n, 2), "sql": r["sql"]} for r in rows]


def run(args, base, srv, target):
    sink = SmtpSink(base + 40) if target == "sink" else None
    try:
        return run_into(args, base, srv, sink)
    finally:
        if sink:
            sink.stop()


def run_into(args, base, srv, sink):
    ghl = FakeGHL()
    ghl.static_tokens.add("tok")
    files = tempfile.mkdtemp(prefix="mb-bench-")
    with open(os.path.join(files, "a.bin"), "wb") as f:
        f.write(os.urandom(100 * 1024))
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass
    handler = functools.partial(Quiet, directory=files)
    fsrv = http.server.ThreadingHTTPServer(("127.0.0.1", base + 30), handler)
    threading.Thread(target=fsrv.serve_forever, daemon=True).start()
    pgs = db = None
    if args.store == "postgresql":
        pgs = pg.PgServer(base + 90, options=("-c log_min_duration_statement=0 -c shared_preload_libraries="
                                              "pg_stat_statements -c pg_stat_statements.track=all "
                                              "-c pg_stat_statements.track_planning=on "
                                              if args.statements else "") + args.pg_options).start()
        pg.PgServer._shared = pgs      # the one the harness's Daemons use
        db = pgs.create_db("bench")
        if args.statements:
            pgs.psql(db, "CREATE EXTENSION pg_stat_statements")
    ds = [Daemon(base + 50 + i, ghl.url, [location_conf(f"LBench{k}", **{
        "from": "Bench <bench@mail.test>", "smtp_host": "127.0.0.1", "smtp_port": sink.port if sink else srv.smtp,
        "smtp_tls": "none", "token": "tok"}) for k in range(args.locations)], workers=args.workers, log_level="warn",
        extra_store=f"attachment_allow = http://127.0.0.1:{base + 30}\n" + (f"pool = {args.pool}\n" if args.pool else ""),
        store=args.store, store_db=db,
        # HighLevel's window holds (100 calls per 10 s per location): the burst
        # is an agency's, spread over its sub-accounts (--locations)
        extra_highlevel=f"rate_limit = {args.rate_limit}\n" +
        (f"rate_share_lease = {args.share_lease}\n" if args.share_lease is not None else ""),
        extra_server=f"instance = bench{i}") for i in range(args.instances)]
    if args.preload:
        os.environ["LD_PRELOAD"] = args.preload
    for d in ds:
        d.start()
    os.environ.pop("LD_PRELOAD", None)
    try:
        return measure(args, base, srv, sink, ghl, files, fsrv, ds, pgs, db)
    finally:
        for d in ds:
            d.cleanup()     # no daemon outlives a failed run
        if pgs:
            pgs.stop()
        fsrv.shutdown()
        ghl.close()
        shutil.rmtree(files, ignore_errors=True)


class PsqlPoll:
    """One psql session for repeated counts, ended by its PID."""

    def __init__(self, pgs, db):
        self.p = subprocess.Popen(["psql", "-X", "-q", "-A", "-t", "-h", pgs.dir, "-p", str(pgs.port), "-U", pgs.user,
                                   "-d", db], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def count(self, sql):
        self.p.stdin.write(sql + ";\n\\echo __end__\n")
        self.p.stdin.flush()
        out = []
        while True:
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError("psql ended")
            if line.strip() == "__end__":
                return int(out[0])
            if line.strip():
                out.append(line.strip())

    def close(self):
        self.p.stdin.close()
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def pg_stats(pgs, db):
    """What PostgreSQL has done so far: commits, WAL bytes and syncs, and
    the CPU seconds of its processes."""
    row = json.loads(pgs.psql(db, "SELECT json_build_object('commits', (SELECT xact_commit FROM pg_stat_database "
                                  "WHERE datname = current_database()), 'wal_bytes', wal_bytes, 'wal_syncs', wal_sync, "
                                  "'tables', (SELECT json_object_agg(relname, json_build_array(n_tup_ins, n_tup_upd, "
                                  "n_tup_hot_upd, n_tup_del)) FROM pg_stat_user_tables)) "
                                  "FROM pg_stat_wal").strip())
    cpu, by_kind = 0.0, {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            # the postmaster and its children (backends, WAL writer, checkpointer)
            if int(pid) != pgs.pid and int(fields[1]) != pgs.pid:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        kind = pg_process_kind(title)
        cpu += s
        by_kind[kind] = by_kind.get(kind, 0.0) + s
    row["cpu_s"] = cpu
    row["cpu_s_by_kind"] = by_kind
    return row


def pg_row_changes(pg0, pg1, n):
    """Per table: rows inserted, updated, updated HOT, deleted, per message.
    (The statistics collector reports within its flush interval.)"""
    out = {}
    for t, after in sorted((pg1.get("tables") or {}).items()):
        before = (pg0.get("tables") or {}).get(t, [0, 0, 0, 0])
        d = [round((a - b) / n, 2) for a, b in zip(after, before)]
        if any(d):
            out[t] = d
    return out


def pg_process_kind(title):
    """'backend' for a client's connection (its title names the user and
    database), the postmaster, or the auxiliary process's own name."""
    if not title.startswith("postgres:"):
        return "postmaster"
    name = title[len("postgres:"):].strip()
    for aux in ("checkpointer", "background writer", "walwriter", "autovacuum launcher", "autovacuum worker",
                "logical replication launcher", "logger", "stats collector"):
        if name.startswith(aux):
            return aux
    return "backend"


# 10 KB of HTML as a newsletter has it: styled paragraphs of words, each
# message its own. (Until session 12 this was one Lorem ipsum sentence
# repeated, which compresses sixty-fold; this text compresses 4.6-fold,
# as HTML mail does.)
BENCH_WORDS = ("the of and to in a is that for it as was with be by on not this are or from at which but have an "
               "they you were their one all we can has there been if more when will would who so no your our new "
               "customer offer account please update team support order shipping free today click here newsletter "
               "product service email thanks best regards event week sale save price member plan").split()


def bench_html(i, size):
    rnd = random.Random(i)
    out, n = [], 0
    while n < size:
        words = " ".join(rnd.choice(BENCH_WORDS) for _ in range(rnd.randint(8, 20)))
        par = f'<p style="margin:0 0 12px;font-family:Arial,sans-serif;color:#333">{words.capitalize()}.</p>\n'
        out.append(par)
        n += len(par)
    return "".join(out)[:size]


def measure(args, base, srv, sink, ghl, files, fsrv, ds, pgs, db):
    d = ds[0]
    bodies = []
    for i in range(args.n):
        p = {"type": "Email", "locationId": f"LBench{i % args.locations}", "messageId": f"b{i:07d}", "emailTo": ["alice@mail.test"],
             "subject": f"bench {i}", "html": bench_html(i, 10200),
             "attachments": [f"http://127.0.0.1:{base + 30}/a.bin"] if i % 10 == 0 else []}
        body = json.dumps(p).encode()
        bodies.append((body, d.keys.sign_ed25519(body)))
    print(f"prepared {args.n} signed webhooks", flush=True)

    lat = []
    lock = threading.Lock()
    idx = [0]
    loader = None
    if not args.python_client:
        # the C client: Python's threads would share one lock with the fake
        # API answering status reports, and their waits would be timed as ours
        loader = os.path.join(files, "webhook_load")
        if subprocess.run(["cc", "-O2", "-pthread", "-o", loader, os.path.join(HERE, "tools", "webhook_load.c")],
                          capture_output=True).returncode != 0:
            print("cannot build bench/tools/webhook_load.c; timing with the Python client", flush=True)
            loader = None
    if loader:
        # one file per instance: instance k takes every k-th webhook
        for k in range(len(ds)):
            with open(os.path.join(files, f"webhooks{k}.txt"), "w") as f:
                for body, sig in bodies[k::len(ds)]:
                    f.write(sig + "\t" + body.decode() + "\n")
    pg0 = pg_stats(pgs, db) if pgs else None
    if pgs and args.statements:
        pgs.psql(db, "SELECT pg_stat_statements_reset()")

    start = time.perf_counter()

    def sender():
        c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
        while True:
            with lock:
                if idx[0] >= len(bodies):
                    break
                body, sig = bodies[idx[0]]
                i = idx[0]
                idx[0] += 1
            if args.rate:
                delay = start + i / args.rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            t = time.perf_counter()
            c.request("POST", "/webhooks/provider", body, {"X-GHL-Signature": sig, "Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            dt = time.perf_counter() - t
            assert r.status == 200, r.status
            with lock:
                lat.append(dt)
        c.close()

    perf = None
    if args.perf:
        perf = subprocess.Popen(["perf", "record", "--call-graph", args.perf_call_graph, "-q", "-o", args.perf + "." + ("sink" if sink else "postfix"),
                                 "-p", str(d.proc.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    t0 = time.perf_counter()
    own0 = os.times()      # this process serves the fake HighLevel API and the attachments
    sink0 = sink.cpu_s() if sink else 0
    cs0 = sum(ctx_switches(x.proc.pid) for x in ds)
    threads0 = thread_stats(ds[0].proc.pid)
    if loader:
        procs = [subprocess.Popen([loader, "127.0.0.1", str(x.port), str(args.clients), str(args.rate / len(ds)),
                                   os.path.join(files, f"webhooks{k}.txt")], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for k, x in enumerate(ds)]
        clients = []
        for pr in procs:
            o, e = pr.communicate(timeout=3600)
            assert pr.returncode == 0, o + e + d.log()[-1500:]
            clients.append(json.loads(o))
        # with two loaders: the slower one's figures
        client = {k: max(c[k] for c in clients) for k in ("p50_ms", "p99_ms", "max_ms")}
    else:
        threads = [threading.Thread(target=sender) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    t_acked = time.perf_counter() - t0
    with d.db() as c:
        sent_at_ack = c.execute("SELECT COUNT(*) FROM jobs WHERE state IN ('sent','failed')").fetchone()[0]
    # PostgreSQL is polled through one psql kept open: a psql (and a
    # backend) started every 50 ms took a tenth of the machine's CPU from
    # the run it measured
    poll = PsqlPoll(pgs, db) if pgs else None

    def until_none(where):
        sql = "SELECT COUNT(*) FROM jobs WHERE " + where
        while True:
            if poll:
                n = poll.count(sql)
            else:
                with d.db() as c:
                    n = c.execute(sql).fetchone()[0]
            if n == 0:
                return time.perf_counter() - t0
            time.sleep(0.05)
    try:
        t_sent = until_none("state NOT IN ('sent','failed')")
        # and every status told (the CPU figure covers webhook to status)
        t_reported = until_none("report_state='pending'")
    finally:
        if poll:
            poll.close()
    if perf:
        perf.send_signal(2)
        perf.wait(timeout=60)
    own1 = os.times()
    harness_cpu_s = (own1.user - own0.user) + (own1.system - own0.system)
    sink_cpu_s = sink.cpu_s() - sink0 if sink else 0
    cs = sum(ctx_switches(x.proc.pid) for x in ds) - cs0
    parts = by_thread(threads0, thread_stats(ds[0].proc.pid), args.n)
    peak = max(rss_kib(x.proc.pid) for x in ds)
    cpu_s = disk_written = disk_cancelled = 0
    for x in ds:
        cpu_s += proc_cpu_s(x.proc.pid)
        with open(f"/proc/{x.proc.pid}/io") as f:
            io = dict(l.split(": ") for l in f.read().splitlines())
        disk_written += int(io["write_bytes"])
        # pages dirtied, then dropped before writeback: the attachments'
        # unlinked spool files, gone before the kernel wrote them out
        disk_cancelled += int(io["cancelled_write_bytes"])
    with d.db() as c:
        failed = c.execute("SELECT COUNT(*) FROM jobs WHERE state='failed'").fetchone()[0]
    pg1 = pg_stats(pgs, db) if pgs else None
    # webhooks' jobs written in groups on PostgreSQL (store_job_add): the
    # mean group, over every instance
    # and the payloads the senders took as the webhook parsed them, not
    # parsed again from the store (outbound.c's cache)
    groups = adds = 0
    parsed = {}
    for x in ds:
        text = x.request("GET", "/metrics")[1].decode()
        for m in re.finditer(r"^mailbridge_store_job_(add_groups|adds)_total (\d+)$", text, re.M):
            groups, adds = (groups + int(m.group(2)), adds) if m.group(1) == "add_groups" else (groups, adds + int(m.group(2)))
        for m in re.finditer(r'^mailbridge_sender_payloads_total\{parsed="(\w+)"\} (\d+)$', text, re.M):
            parsed[m.group(1)] = parsed.get(m.group(1), 0) + int(m.group(2))
    for x in ds:
        x.stop()

    # Postfix's own injector, same count, same size: the mean size Postfix's
    # qmgr logged for our messages (HTML + text part + every 10th attachment)
    # (postlogd writes the log a little after qmgr's line: wait for it)
    for _ in range(50):
        with open(os.path.join(srv.postfix_dir, "maillog")) as f:
            sizes = [int(m.group(1)) for m in re.finditer(r"from=<(?:bench|bounce\+[^>]*)@mail\.test>, size=(\d+)", f.read())]
        if sink or len(sizes) >= args.n:
            break
        time.sleep(0.1)
    # into smtp-sink Postfix logged nothing: the Postfix phase's mean, if it ran
    size = round(statistics.mean(sizes)) if sizes else getattr(args, "mean_size", MEAN_BYTES_GUESS)
    args.mean_size = size
    t1 = time.perf_counter()
    subprocess.run(["smtp-source", "-s", str(args.workers), "-m", str(args.n), "-l", str(size),
                    "-f", "bench@mail.test", "-t", "alice@mail.test",
                    f"127.0.0.1:{sink.port if sink else srv.smtp}"], check=True, timeout=600)
    t_src = time.perf_counter() - t1

    lat.sort()
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
    if loader:
        acks = {"client": "C (bench/tools/webhook_load.c)", "ack_ms_p50": round(client["p50_ms"], 2),
                "ack_ms_p99": round(client["p99_ms"], 2), "ack_ms_max": round(client["max_ms"], 2)}
    else:
        acks = {"client": "Python", "ack_ms_p50": round(p(0.50), 2), "ack_ms_p99": round(p(0.99), 2),
                "ack_ms_max": round(lat[-1] * 1000, 2)}
    ours, theirs = args.n / t_sent, args.n / t_src
    on_pg = {}
    if pgs:
        on_pg = {"postgresql_commits_per_msg": round((pg1["commits"] - pg0["commits"]) / args.n, 2),
                 "postgresql_wal_kib_per_msg": round((int(pg1["wal_bytes"]) - int(pg0["wal_bytes"])) / 1024 / args.n, 1),
                 "postgresql_wal_syncs_per_msg": round((pg1["wal_syncs"] - pg0["wal_syncs"]) / args.n, 2),
                 "postgresql_cpu_ms_per_msg": round((pg1["cpu_s"] - pg0["cpu_s"]) * 1000 / args.n, 3),
                 # where the server's CPU goes; a process that ended during the
                 # run (an autovacuum worker) is not counted
                 "postgresql_cpu_ms_per_msg_by_process": {
                     k: round((v - pg0["cpu_s_by_kind"].get(k, 0.0)) * 1000 / args.n, 3)
                     for k, v in sorted(pg1["cpu_s_by_kind"].items())},
                 # rows inserted, updated (of them HOT: no index touched), deleted
                 "postgresql_rows_per_msg_ins_upd_hot_del": pg_row_changes(pg0, pg1, args.n),
                 **({"webhook_adds_per_group": round(adds / groups, 2)} if groups else {})}
    if args.statements:
        on_pg["statements"] = statement_profile(pgs.log(), args.n)
        on_pg["statements_by_exec_time"] = statement_exec(pgs, db, args.n)
    if args.pg_options and os.environ.get("MB_BENCH_PG_LOG"):
        shutil.copy(os.path.join(pgs.dir, "log"), os.environ["MB_BENCH_PG_LOG"])
    return {
        "target": "smtp-sink" if sink else "postfix",
        "store": args.store, "instances": args.instances, "locations": args.locations,
        "messages": args.n, "failed": failed, "paced_rate": args.rate or "unpaced", "clients": args.clients,
        "webhooks_accepted_per_s": round(args.n / t_acked, 1),
        **acks,
        "end_to_end_msgs_per_s": round(ours, 1),
        "statuses_reported_per_s": round(args.n / t_reported, 1),
        "sent_while_accepting": sent_at_ack,
        "msgs_per_s_after_intake": round((args.n - sent_at_ack) / max(t_sent - t_acked, 1e-9), 1),
        "mean_message_bytes": size, "largest_message_bytes": max(sizes, default=0),
        "smtp_source_msgs_per_s": round(theirs, 1),
        "ratio_to_smtp_source": round(ours / theirs, 2),
        "peak_rss_kib": peak,
        "mailbridge_cpu_s": round(cpu_s, 2),
        "mailbridge_cpu_ms_per_msg": round(cpu_s * 1000 / args.n, 3),
        "mailbridge_disk_kib_written_per_msg": round(disk_written / 1024 / args.n, 1),
        "mailbridge_disk_kib_written_net_per_msg": round((disk_written - disk_cancelled) / 1024 / args.n, 1),
        "mailbridge_context_switches_per_msg": round(cs / args.n, 1),
        # the first instance's threads, by part (each names itself)
        "mailbridge_by_thread": parts,
        "payloads_parsed_once_share": round(parsed.get("at_webhook", 0) / max(sum(parsed.values()), 1), 2),
        "fake_highlevel_and_attachment_server_cpu_ms_per_msg": round(harness_cpu_s * 1000 / args.n, 3),
        **({"smtp_sink_cpu_ms_per_msg": round(sink_cpu_s * 1000 / args.n, 3)} if sink else {}),
        **on_pg,
    }


if __name__ == "__main__":
    main()
