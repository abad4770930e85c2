#!/usr/bin/env python3
"""Soak test (not CI): mixed outbound and inbound traffic for MINUTES
against real Postfix + Dovecot with both restarted at random, then a quiet
drain. Reports messages lost (must be 0), duplicated (must be 0) and RSS
over time (should be flat).

A copy of an outbound message found twice in bob's mailbox is classified by
the Postfix queue ids in its Received headers: two queue ids mean mailbridge
submitted it twice (ours); one queue id found twice means the copy was made
after Postfix queued it (Postfix to Dovecot's LMTP, or inside Dovecot while
it was being stopped) -- a duplicate downstream of mailbridge, reported
apart with Postfix's log lines for that queue id. With --kill-bridge
mailbridge itself is also killed with SIGKILL at random; the documented
end-of-DATA window can then open and is reported too.

usage: bench/soak.py [MINUTES] [--build DIR] [--kill-bridge] [--keep] [--base PORT] [--chaos MIN MAX]
(run as root)
"""
import argparse
import email
import email.utils
import imaplib
import json
import os
import random
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from harness.daemon import Daemon, location_conf  # noqa: E402
from harness.fakeghl import FakeGHL  # noqa: E402
from harness.servers import MailServers  # noqa: E402


def memory_kib(d):
    """(RSS, anonymous RSS, malloc in use, SQLite heap, database size) in KiB,
    from GET /metrics. Anonymous RSS leaves out library code paged in as it
    is first run; malloc in use flat while RSS grows is fragmentation."""
    st, body, _ = d.request("GET", "/metrics")
    v = dict(l.rsplit(" ", 1) for l in body.decode().splitlines() if l and not l.startswith("#"))
    return tuple(round(float(v.get(k, 0)) / 1024) for k in
                 ("process_resident_memory_bytes", "mailbridge_resident_anon_bytes",
                  "mailbridge_heap_inuse_bytes", "mailbridge_store_memory_bytes", "mailbridge_store_file_bytes"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("minutes", nargs="?", type=float, default=60)
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--kill-bridge", action="store_true", help="also SIGKILL mailbridge at random")
    ap.add_argument("--keep", action="store_true", help="keep the daemon's directory (log, store) and the maillog")
    ap.add_argument("--base", type=int, default=25000, help="first loopback port (two soaks side by side)")
    ap.add_argument("--chaos", type=float, nargs=2, default=(20, 60), metavar=("MIN_S", "MAX_S"),
                    help="seconds between restarts (default 20 60)")
    args = ap.parse_args()
    os.environ["MAILBRIDGE_BIN"] = os.path.join(args.build, "mailbridge")
    srv = MailServers(args.base)
    ghl = FakeGHL()
    d = None
    # SIGTERM (or ^C) stops what the soak started, by its PID: the finally
    # below runs, as it does at the end
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ghl.static_tokens.add("tok")
    try:
        srv.start()
        d = Daemon(args.base + 50, ghl.url, [location_conf("LSoak", **{
            "from": "Soak <support@mail.test>", "reply_domain": "mail.test", "provider_id": "p",
            "smtp_host": "127.0.0.1", "smtp_port": srv.smtp, "smtp_tls": "none", "token": "tok",
            "imap_host": "127.0.0.1", "imap_port": srv.imaps, "imap_tls": "tls", "imap_ca_file": srv.cert,
            "imap_user": "support", "imap_password": "supportpw", "imap_idle_interval": 30})],
            log_level="info" if args.keep else "warn",
            # beside Postfix: a send cut off after the dot is checked in its log
            extra_server=f"postfix_log = {srv.postfix_dir}/maillog")
        d.start()
        sent, replies, rss = [], [], []
        end = time.time() + args.minutes * 60
        stop = threading.Event()

        lock = threading.Lock()   # the webhook loop must not post while the daemon restarts
        restarts = {"postfix": 0, "dovecot": 0, "mailbridge": 0}

        def chaos():
            while not stop.wait(random.uniform(*args.chaos)):
                which = random.choice(["postfix", "dovecot"] + (["mailbridge"] if args.kill_bridge else []))
                restarts[which] += 1
                print(f"[soak] {time.strftime('%H:%M:%S')} restarting {which}", flush=True)
                if which == "mailbridge":
                    with lock:
                        d.kill9()
                        d.start()
                elif which == "postfix":
                    srv.stop_postfix()
                    time.sleep(random.uniform(1, 5))
                    srv.start_postfix()
                else:
                    srv.stop_dovecot()
                    time.sleep(random.uniform(1, 5))
                    srv.start_dovecot()
        t = threading.Thread(target=chaos, daemon=True)
        t.start()
        next_rss, t0 = 0, time.time()
        while time.time() < end:
            mid = "soak" + os.urandom(6).hex()
            with lock:
                try:
                    st, _ = d.post_webhook({"type": "Email", "locationId": "LSoak", "messageId": mid,
                                            "emailTo": ["bob@mail.test"], "html": "<p>soak</p>", "subject": "soak"})
                except OSError:
                    st = None
                if time.time() >= next_rss:
                    rss.append((round(time.time() - t0), *memory_kib(d)))
                    next_rss = time.time() + 30
            if st == 200:
                sent.append(mid)
            if random.random() < 0.5:
                r = email.message.EmailMessage()
                r["From"] = "bob@mail.test"
                r["To"] = "support@mail.test"
                r["Subject"] = "reply"
                r["Message-ID"] = email.utils.make_msgid(domain="soak.test")
                r.set_content("soak reply")
                try:
                    with smtplib.SMTP("127.0.0.1", srv.smtp, timeout=5) as s:
                        s.send_message(r)
                    replies.append(r["Message-ID"])
                except OSError:
                    pass   # Postfix is restarting: the sender would retry; we just do not count it
            time.sleep(0.2)
        stop.set()
        t.join(120)
        if not srv.postfix:
            srv.start_postfix()
        if not srv.dovecot:
            srv.start_dovecot()
        # drain: until no job is waiting for a retry (backoff can reach minutes
        # after a few failed attempts) and Postfix's queue is empty, at most 10 min
        print("[soak] draining", flush=True)
        drain_end = time.time() + 600
        conf = os.path.join(srv.postfix_dir, "etc")
        while time.time() < drain_end:
            waiting = sum(1 for j in d.jobs() if j["state"] not in ("sent", "failed"))
            queue = subprocess.run(["postqueue", "-c", conf, "-p"], capture_output=True, text=True).stdout
            if waiting == 0 and "Mail queue is empty" in queue:
                break
            if waiting == 0:
                subprocess.run(["postqueue", "-c", conf, "-f"], capture_output=True)
            time.sleep(5)
        time.sleep(5)   # the last ones through Dovecot
        # inbound: replies held back by the rate limiter are read again every
        # 15 s; wait while they are still being posted (no progress for 60 s:
        # what is missing then is missing)
        last, idle_since = -1, time.time()
        while time.time() < drain_end + 300 and time.time() - idle_since < 60:
            done = len({b.get("altId") for b in ghl.inbound} & set(replies))
            if done == len(replies):
                break
            if done != last:
                last, idle_since = done, time.time()
            time.sleep(5)
        drained_at = time.time()
        got = {}   # job -> Postfix queue id of each copy
        with imaplib.IMAP4("127.0.0.1", srv.imap, timeout=30) as m:
            m.login("bob", "bobpw")
            m.select("INBOX", readonly=True)
            for num in m.search(None, "ALL")[1][0].split():
                raw = m.fetch(num, "(BODY.PEEK[HEADER])")[1][0][1]
                hdr = email.message_from_bytes(raw)
                job = hdr["X-Mailbridge-Job"]
                if job:
                    qids = [q for r in hdr.get_all("Received", []) for q in re.findall(r"\(Postfix\) with E?SMTP id (\w+)", r)]
                    got.setdefault(job.strip(), []).append(qids[0] if qids else "?")
        ours = [m for m in sent if len(set(got.get(m, []))) > 1]
        downstream = [m for m in sent if len(got.get(m, [])) > len(set(got.get(m, [])))]
        lost = [m for m in sent if not got.get(m)]
        for m in lost:
            j = d.job(m)
            print(f"[soak] {m} not in the mailbox; job:", {k: j[k] for k in ("state", "attempts", "last_code",
                  "last_error", "rfc_message_id", "uncertain")} if j else None, flush=True)
            print(d.cli("trace", m).stdout, flush=True)
            qids = re.findall(r"queued as (\w+)", d.cli("trace", m).stdout)
            print("\n".join(l for l in srv.maillog().splitlines() if any(q in l for q in qids) or m in l), flush=True)
        for m in ours:
            print(f"[soak] {m} submitted twice, Postfix queue ids {got[m]}:", flush=True)
            print(d.cli("trace", m).stdout, flush=True)
        for m in downstream:
            print(f"[soak] {m} copied downstream, Postfix queue ids {got[m]}; Postfix said:", flush=True)
            print("\n".join(l for l in srv.maillog().splitlines() if got[m][0] in l), flush=True)
        posted = {}
        for b in ghl.inbound:
            posted[b.get("altId")] = posted.get(b.get("altId"), 0) + 1
        missing = [r for r in replies if posted.get(r, 0) == 0]
        if missing:
            print(f"[soak] {len(missing)} replies not posted when the inbound drain ended "
                  f"({time.time() - idle_since:.0f} s after the last progress)", flush=True)
        if missing:
            with d.db() as c:
                spool = c.execute("SELECT count(*), sum(claimed), min(next_at), max(attempts) FROM inbound_spool").fetchone()
            print(f"[soak] inbound spool now (rows, claimed, first due ms, most attempts): {tuple(spool)} "
                  f"at {int(time.time() * 1000)}", flush=True)
        log = srv.maillog()
        for r in missing:
            core = r.strip("<>")
            print(f"[soak] reply {r} not posted; trace:", flush=True)
            print(d.cli("trace", core).stdout, flush=True)
            with d.db() as c:
                seen = [tuple(x) for x in c.execute("SELECT state, attempts, error FROM inbound_seen "
                                                    "WHERE dedupe_key LIKE ?", (f"%{core}%",))]
            print(f"[soak]   inbound_seen: {seen}", flush=True)
            # where Postfix put it (its queue id, then that id's lines)
            qids = set(re.findall(r"(\w+): message-id=<" + re.escape(core) + ">", log))
            print("\n".join(l for l in log.splitlines() if any(q in l for q in qids)) or "[soak]   not in Postfix's log",
                  flush=True)
            try:
                with imaplib.IMAP4("127.0.0.1", srv.imap, timeout=30) as m:
                    m.login("support", "supportpw")
                    m.select("INBOX", readonly=True)
                    found = m.search(None, "HEADER", "Message-ID", core)[1][0].split()
                print(f"[soak]   in support's INBOX: {len(found)} copies", flush=True)
            except (OSError, imaplib.IMAP4.error) as e:
                print(f"[soak]   cannot search support's INBOX: {e}", flush=True)
        def kind(r):
            path = r["path"].split("?")[0]
            for k, pat in (("status_v3", r"^/conversations/messages/email/[^/]+/status$"),
                           ("status", r"^/conversations/messages/[^/]+/status$"),
                           ("inbound", r"^/conversations/messages/inbound$"),
                           ("upload", r"^/conversations/messages/upload$"),
                           ("contacts", r"^/contacts/"), ("conversations", r"^/conversations/")):
                if re.search(pat, path):
                    return k
            return "other"
        # what filled the location's window while the drain waited: a reply
        # starved by status reports shows as many of those and no inbound
        calls_end = {}
        for r in ghl.calls():
            if drained_at - 120 <= r["t"] <= drained_at:
                calls_end[kind(r)] = calls_end.get(kind(r), 0) + 1
        print(json.dumps({
            "minutes": args.minutes, "webhooks_acknowledged": len(sent), "replies_sent": len(replies),
            "restarts": restarts,
            "outbound_lost": len(lost),
            "outbound_duplicated": len(ours),
            "outbound_duplicated_downstream": len(downstream),
            # with --kill-bridge: the documented crash windows, as the daemon logged them
            "jobs_resent_after_crash_logged": sum(int(n) for n in re.findall(
                r"store: (\d+) job\(s\) were interrupted during DATA", d.log())),
            "inbound_reposted_after_crash_logged": d.log().count("was being posted when mailbridge stopped"),
            "inbound_lost": sum(1 for r in replies if posted.get(r, 0) == 0),
            "inbound_duplicated": sum(1 for r in replies if posted.get(r, 0) > 1),
            "highlevel_calls_last_120s_of_drain": calls_end,
            "highlevel_429": ghl.too_many,
            "rss_kib_first_last": [rss[0][1], rss[-1][1]] if rss else None,
            "anon_rss_kib_first_last": [rss[0][2], rss[-1][2]] if rss else None,
            "malloc_inuse_kib_first_last": [rss[0][3], rss[-1][3]] if rss else None,
            "samples_s_rss_anon_malloc_sqlite_heap_db_kib": rss[:: max(1, len(rss) // 20)] + rss[-1:],
        }, indent=2))
        d.stop()
        if args.keep:
            shutil.copy(srv.postfix_dir + "/maillog", d.dir + "/maillog")
            print(f"[soak] kept {d.dir}", flush=True)
        else:
            d.cleanup()
    finally:
        if d is not None and d.proc is not None:
            d.cleanup()
        ghl.close()
        srv.stop()


if __name__ == "__main__":
    main()
