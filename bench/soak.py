#!/usr/bin/env python3
"""Soak test (not CI): mixed outbound and inbound traffic for MINUTES
against real Postfix + Dovecot with both restarted at random, then a quiet
drain. Reports messages lost (must be 0), duplicated (must be 0; the two
documented crash windows cannot open here since mailbridge itself is never
killed) and RSS over time (should be flat).

usage: bench/soak.py [MINUTES] [--build DIR]   (run as root)
"""
import argparse
import email
import email.utils
import imaplib
import json
import os
import random
import smtplib
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from harness.daemon import Daemon, location_conf  # noqa: E402
from harness.fakeghl import FakeGHL  # noqa: E402
from harness.servers import MailServers  # noqa: E402


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("minutes", nargs="?", type=float, default=60)
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    args = ap.parse_args()
    os.environ["MAILBRIDGE_BIN"] = os.path.join(args.build, "mailbridge")
    srv = MailServers(25000)
    ghl = FakeGHL()
    ghl.static_tokens.add("tok")
    try:
        srv.start()
        d = Daemon(25050, ghl.url, [location_conf("LSoak", **{
            "from": "Soak <support@mail.test>", "reply_domain": "mail.test", "provider_id": "p",
            "smtp_host": "127.0.0.1", "smtp_port": srv.smtp, "smtp_tls": "none", "token": "tok",
            "imap_host": "127.0.0.1", "imap_port": srv.imaps, "imap_tls": "tls", "imap_ca_file": srv.cert,
            "imap_user": "support", "imap_password": "supportpw", "imap_idle_interval": 30})], log_level="warn")
        d.start()
        sent, replies, rss = [], [], []
        end = time.time() + args.minutes * 60
        stop = threading.Event()

        def chaos():
            while not stop.wait(random.uniform(20, 60)):
                which = random.choice(["postfix", "dovecot"])
                print(f"[soak] restarting {which}", flush=True)
                if which == "postfix":
                    srv.stop_postfix()
                    time.sleep(random.uniform(1, 5))
                    srv.start_postfix()
                else:
                    srv.stop_dovecot()
                    time.sleep(random.uniform(1, 5))
                    srv.start_dovecot()
        t = threading.Thread(target=chaos, daemon=True)
        t.start()
        while time.time() < end:
            mid = "soak" + os.urandom(6).hex()
            st, _ = d.post_webhook({"type": "Email", "locationId": "LSoak", "messageId": mid,
                                    "emailTo": ["bob@mail.test"], "html": "<p>soak</p>", "subject": "soak"})
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
            if len(sent) % 50 == 0:
                rss.append((round(time.time()), rss_kib(d.proc.pid)))
            time.sleep(0.2)
        stop.set()
        t.join(120)
        if not srv.postfix:
            srv.start_postfix()
        if not srv.dovecot:
            srv.start_dovecot()
        print("[soak] draining", flush=True)
        time.sleep(60)
        got = {}
        with imaplib.IMAP4("127.0.0.1", srv.imap, timeout=30) as m:
            m.login("bob", "bobpw")
            m.select("INBOX", readonly=True)
            for num in m.search(None, "ALL")[1][0].split():
                hdr = m.fetch(num, "(BODY.PEEK[HEADER.FIELDS (X-MAILBRIDGE-JOB)])")[1][0][1].decode()
                job = hdr.split(":", 1)[1].strip() if ":" in hdr else None
                if job:
                    got[job] = got.get(job, 0) + 1
        posted = {}
        for b in ghl.inbound:
            posted[b.get("altId")] = posted.get(b.get("altId"), 0) + 1
        print(json.dumps({
            "minutes": args.minutes, "webhooks_acknowledged": len(sent), "replies_sent": len(replies),
            "outbound_lost": sum(1 for m in sent if got.get(m, 0) == 0),
            "outbound_duplicated": sum(1 for m in sent if got.get(m, 0) > 1),
            "inbound_lost": sum(1 for r in replies if posted.get(r, 0) == 0),
            "inbound_duplicated": sum(1 for r in replies if posted.get(r, 0) > 1),
            "rss_kib_first_last": [rss[0][1], rss[-1][1]] if rss else None,
            "rss_kib_samples": rss[:: max(1, len(rss) // 20)],
        }, indent=2))
        d.stop()
        d.cleanup()
    finally:
        ghl.close()
        srv.stop()


if __name__ == "__main__":
    main()
