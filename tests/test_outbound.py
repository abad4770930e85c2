"""Outbound Email end to end: signed webhook -> mailbridge -> real Postfix
-> Dovecot, read back over IMAP; status updates at the fake HighLevel.
Failure paths against Postfix's own replies and a scripted SMTP server."""
import atexit
import concurrent.futures
import email
import email.policy
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness.daemon import Daemon, location_conf  # noqa: E402
from harness.fakeghl import FakeGHL  # noqa: E402
from harness.scriptsmtp import ScriptedSMTP  # noqa: E402
from harness.servers import MailServers  # noqa: E402

BASE = int(os.environ.get("MB_TEST_PORT_BASE", "21000")) + 200
TOKEN = "static-token"
FILES = tempfile.mkdtemp(prefix="mb-files-")
atexit.register(shutil.rmtree, FILES, True)   # also when setUpModule fails
ATTACHMENT = bytes(range(256)) * 400 + b"\x00end"   # ~100 KB, every byte value


def loc(loc_id, **kw):
    base = {"from": "Acme Support <support@mail.test>", "smtp_host": "127.0.0.1",
            "smtp_port": srv.smtp, "smtp_tls": "none", "token": TOKEN}
    base.update(kw)
    return location_conf(loc_id, **base)


class FileHandler(http.server.SimpleHTTPRequestHandler):
    """The attachment server: files, plus /go?to=URL (a 302 there) and
    /slow/N (answers after N seconds) for the SSRF and deadline tests."""
    def log_message(self, *a):
        pass

    def do_GET(self):
        if self.path.startswith("/go?to="):
            self.send_response(302)
            self.send_header("Location", urllib.parse.unquote(self.path[len("/go?to="):]))
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path.startswith("/slow/"):
            time.sleep(float(self.path[len("/slow/"):]))
            try:
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:
                pass    # the fetcher gave up, as it should
        else:
            super().do_GET()


def setUpModule():
    global srv, ghl, d, files, scripted, tls_evil, old_relay, hangup, legacy_tls, slow_greet
    srv = MailServers(BASE).start()
    ghl = FakeGHL()
    ghl.static_tokens.add(TOKEN)
    with open(os.path.join(FILES, "report.bin"), "wb") as f:
        f.write(ATTACHMENT)
    handler = functools.partial(FileHandler, directory=FILES)
    files = http.server.ThreadingHTTPServer(("127.0.0.1", BASE + 30), handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    # a CA and a server certificate for the wrong name, for the host check
    ca = os.path.join(FILES, "ca")
    os.makedirs(ca)
    run = lambda *a: subprocess.run(a, check=True, capture_output=True, timeout=60)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-days", "2", "-subj", "/CN=Test CA", "-keyout", f"{ca}/ca.key", "-out", f"{ca}/ca.pem")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", "/CN=evil.example", "-keyout", f"{ca}/evil.key", "-out", f"{ca}/evil.csr")
    with open(f"{ca}/ext", "w") as f:
        f.write("subjectAltName=DNS:evil.example\n")
    run("openssl", "x509", "-req", "-in", f"{ca}/evil.csr", "-CA", f"{ca}/ca.pem", "-CAkey", f"{ca}/ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", f"{ca}/ext", "-out", f"{ca}/evil.pem")
    scripted = ScriptedSMTP(BASE + 31, rcpt_script={"later@mail.test": ["450 4.2.0 try again later"]})
    tls_evil = ScriptedSMTP(BASE + 32, cert=f"{ca}/evil.pem", key=f"{ca}/evil.key")
    old_relay = ScriptedSMTP(BASE + 34, esmtp=False)
    hangup = ScriptedSMTP(BASE + 35, hangup=True)
    legacy_tls = ScriptedSMTP(BASE + 36, cert=f"{ca}/evil.pem", key=f"{ca}/evil.key", tls_legacy=True)
    slow_greet = ScriptedSMTP(BASE + 38, greet_delay=2)
    locations = [
        loc("LMain", reply_domain="mail.test"),
        loc("LCustom", mode="custom", provider_id="prov1", reply_domain="mail.test"),
        loc("LAuth", smtp_port=srv.submission, smtp_tls="starttls", smtp_user="alice",
            smtp_password="alicepw", smtp_ca_file=srv.cert),
        loc("LUntrusted", smtp_port=srv.submission, smtp_tls="starttls", smtp_user="alice",
            smtp_password="alicepw"),
        loc("LWrongHost", smtp_port=BASE + 32, smtp_tls="starttls", smtp_ca_file=f"{ca}/ca.pem"),
        loc("LDown", smtp_port=BASE + 33),
        loc("LScripted", smtp_port=BASE + 31),
        loc("LOldRelay", smtp_port=BASE + 34),
        loc("LDsn", delivered_on="dsn", reply_domain="mail.test"),
        loc("LDsnScripted", delivered_on="dsn", smtp_port=BASE + 31),
        loc("LHangup", smtp_port=BASE + 35),
        loc("LLegacyTls", smtp_port=BASE + 36, smtp_tls="starttls", smtp_tls_verify="no"),
        loc("LSlowGreet", smtp_port=BASE + 38),
        loc("LQueue", reply_domain="mail.test"),       # test_queue_filters_retry_flush's own
        loc("LQueueDown", smtp_port=BASE + 33),
    ]
    global LOCATIONS
    LOCATIONS = locations
    # the attachment server is on loopback: it must be allowed explicitly
    d = Daemon(BASE + 50, ghl.url, locations, extra_server="metrics_token = scrape-secret",
               extra_store=f"attachment_allow = http://127.0.0.1:{BASE + 30}\nattachment_timeout = 4\n")
    d.start()


def tearDownModule():
    rc = d.stop()
    tail = d.log()[-4000:] if rc != 0 else ""
    d.cleanup()
    for s in (scripted, tls_evil, old_relay, hangup, legacy_tls, slow_greet):
        s.close()
    files.shutdown()
    shutil.rmtree(FILES, ignore_errors=True)
    ghl.close()
    srv.stop()
    assert rc == 0, f"daemon exit status {rc}\n{tail}"


def webhook(location="LMain", **kw):
    mid = "m" + os.urandom(8).hex()
    p = {"contactId": "c1", "locationId": location, "messageId": mid, "emailMessageId": mid,
         "type": "Email", "emailTo": ["alice@mail.test"], "emailFrom": "Agent Smith <agent@mail.test>",
         "attachments": [], "html": "<p>Hello</p>", "subject": "Hi", "userId": "u1"}
    p.update(kw)
    return p


def post_ok(p):
    st, body = d.post_webhook(p)
    assert st == 200, (st, body)
    return p["messageId"]


def statuses(message_id):
    return [json.loads(r["body"]) for r in ghl.calls("PUT", f"/conversations/messages/{message_id}/status")]


def wait_status(message_id, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        ok = [s for s in statuses(message_id)]
        j = d.job(message_id)
        if ok and j and j["report_state"] == "done":
            return ok
        time.sleep(0.05)
    return statuses(message_id)


def wait_for(user, message_id, timeout=15.0):
    """The copies of one job's message in user's INBOX, once at least one arrived."""
    end = time.time() + timeout
    while time.time() < end:
        found = find(srv.fetch_all(user), message_id)
        if found:
            return found
        time.sleep(0.1)
    return []


def find(msgs, message_id):
    out = []
    for raw in msgs:
        m = email.message_from_bytes(raw, policy=email.policy.default)
        if m["X-Mailbridge-Job"] == message_id:
            out.append(m)
    return out


class TestOutbound(unittest.TestCase):
    def test_full_delivery(self):
        p = webhook(emailTo=["alice@mail.test"], emailCc=["bob@mail.test"], emailBcc="carol@mail.test",
                    subject="Grüße — 日本語 subject", html="<p>Hello <b>Alice</b> &amp; team</p><p>Zweite Zeile ü</p>",
                    attachments=[f"http://127.0.0.1:{BASE + 30}/report.bin"])
        mid = post_ok(p)
        got = {}
        for user in ("alice", "bob", "carol"):
            got[user] = wait_for(user, mid)
        for user, msgs in got.items():
            self.assertEqual(len(msgs), 1, f"{user} should get exactly one copy")
        m = got["alice"][0]
        self.assertEqual(m["Subject"], "Grüße — 日本語 subject")
        self.assertEqual(m["From"].addresses[0].addr_spec, "support@mail.test")
        self.assertEqual(m["From"].addresses[0].display_name, "Agent Smith")
        self.assertEqual([a.addr_spec for a in m["To"].addresses], ["alice@mail.test"])
        self.assertEqual([a.addr_spec for a in m["Cc"].addresses], ["bob@mail.test"])
        self.assertIsNone(m["Bcc"])
        self.assertNotIn(b"carol", got["carol"][0].as_bytes().split(b"\r\n\r\n")[0].replace(b"Delivered-To: carol", b""))
        self.assertEqual(m["Message-ID"], f"<mb.{mid}@mail.test>")
        self.assertTrue(m["Reply-To"].addresses[0].addr_spec.startswith("reply+"))
        self.assertEqual(m["Feedback-ID"], "u1:LMain:mailbridge")   # Gmail's feedback loop: user, location
        self.assertTrue(m["Date"])
        plain = m.get_body(("plain",)).get_content()
        html = m.get_body(("html",)).get_content()
        self.assertIn("Hello Alice & team", plain)
        self.assertIn("Zweite Zeile ü", plain)
        self.assertIn("<b>Alice</b>", html)
        atts = list(m.iter_attachments())
        self.assertEqual(len(atts), 1)
        self.assertEqual(atts[0].get_filename(), "report.bin")
        self.assertEqual(atts[0].get_content(), ATTACHMENT)
        st = wait_status(mid)
        self.assertEqual(len(st), 1, st)
        self.assertEqual(st[0]["status"], "delivered")
        req = ghl.calls("PUT", f"/conversations/messages/{mid}/status")[0]
        self.assertEqual(req["headers"]["Version"], "2021-04-15")
        self.assertEqual(req["headers"]["Authorization"], f"Bearer {TOKEN}")

    def test_reply_threading_custom_alt_id(self):
        first = post_ok(webhook())
        self.assertEqual(len(wait_for("alice", first)), 1)
        reply = post_ok(webhook(location="LCustom", replyToAltId=f"<mb.{first}@mail.test>", subject="Re: Hi"))
        m = None
        end = time.time() + 15
        while time.time() < end and not m:
            found = find(srv.fetch_all("alice"), reply)
            m = found[0] if found else None
            time.sleep(0.1)
        self.assertIsNotNone(m)
        self.assertEqual(m["In-Reply-To"], f"<mb.{first}@mail.test>")
        self.assertIn(f"<mb.{first}@mail.test>", m["References"])

    def test_reply_threading_default_email_message_id(self):
        first = post_ok(webhook())
        wait_status(first)
        second = webhook(subject="Re: Hi")
        second["emailMessageId"] = first          # HighLevel's thread id
        mid = post_ok(second)
        wait_status(mid)
        third = webhook(subject="Re: Re: Hi")
        third["emailMessageId"] = mid
        mid3 = post_ok(third)
        wait_status(mid3)
        msgs = srv.fetch_all("alice")
        m2, m3 = find(msgs, mid)[0], find(msgs, mid3)[0]
        self.assertEqual(m2["In-Reply-To"], f"<mb.{first}@mail.test>")
        self.assertEqual(m3["In-Reply-To"], f"<mb.{mid}@mail.test>")
        self.assertEqual(m3["References"].split(), [f"<mb.{first}@mail.test>", f"<mb.{mid}@mail.test>"])

    def test_partial_recipient_failure(self):
        mid = post_ok(webhook(emailTo=["bob@mail.test", "permfail@mail.test"]))
        st = wait_status(mid)
        self.assertEqual([s["status"] for s in st], ["delivered"])
        self.assertEqual(len(wait_for("bob", mid)), 1)
        j = d.job(mid)
        rcpts = json.loads(j["rcpt_state"])
        self.assertEqual(rcpts["permfail@mail.test"]["code"], 550)
        self.assertEqual(rcpts["bob@mail.test"]["code"], 250)

    def test_permanent_failure_reports_smtp_reply(self):
        mid = post_ok(webhook(emailTo=["permfail@mail.test"]))
        st = wait_status(mid)
        self.assertEqual(len(st), 1, st)
        self.assertEqual(st[0]["status"], "failed")
        self.assertEqual(st[0]["error"]["code"], "550")
        self.assertIn("5.7.1", st[0]["error"]["message"])
        self.assertIn("Test permanent failure", st[0]["error"]["message"])
        self.assertEqual(d.job(mid)["state"], "failed")

    def test_temporary_failure_keeps_retrying(self):
        mid = post_ok(webhook(emailTo=["tempfail@mail.test"]))
        j = d.wait_job(mid, lambda j: j["attempts"] >= 2 and j["state"] == "queued", timeout=20)
        self.assertEqual(j["state"], "queued")
        self.assertGreaterEqual(j["attempts"], 2)
        self.assertEqual(j["last_code"], 451)
        self.assertEqual(statuses(mid), [], "a 4xx must never be reported as failed")

    def test_450_then_250_is_delivered(self):
        mid = post_ok(webhook(location="LScripted", emailTo=["later@mail.test"]))
        st = wait_status(mid)
        self.assertEqual([s["status"] for s in st], ["delivered"])
        j = d.job(mid)
        self.assertEqual(j["attempts"], 2)
        self.assertEqual(sum(1 for m in scripted.messages if mid.encode() in m["data"]), 1)

    def test_envelope_is_pipelined(self):
        # RFC 2920: MAIL, RCPT and DATA in one write when the relay offers it
        mid = post_ok(webhook(location="LScripted"))
        self.assertEqual([s["status"] for s in wait_status(mid)], ["delivered"])
        sent = [m for m in scripted.messages if mid.encode() in m["data"]]
        self.assertEqual(len(sent), 1)
        self.assertTrue(sent[0]["pipelined"], "RCPT and DATA were not sent with MAIL")

    def test_kept_connection_closed_by_relay(self):
        # the relay hangs up after each message: the next one, on the kept
        # connection, finds it closed and goes at once on a new one
        mids = []
        for _ in range(3):
            mids.append(post_ok(webhook(location="LHangup")))
            self.assertEqual([s["status"] for s in wait_status(mids[-1])], ["delivered"])
        for mid in mids:
            self.assertEqual(d.job(mid)["attempts"], 1, d.job(mid))
            self.assertEqual(sum(1 for m in hangup.messages if mid.encode() in m["data"]), 1)
        self.assertGreaterEqual(len(hangup.sessions), 3)

    def test_unrecorded_send_does_not_go(self):
        # the "sending" mark is what makes a crash after DATA safe: when it
        # cannot be written (here the row no longer says this worker holds
        # the job, as after a stale recovery), nothing past EHLO goes; the
        # job is sent later, once
        mid = post_ok(webhook(location="LSlowGreet"))
        d.wait_job(mid, lambda j: j["state"] == "claimed", timeout=10)
        due = int(time.time() * 1000) + 3000
        with d.db() as c:
            c.execute("UPDATE jobs SET state='queued', next_at=? WHERE message_id=?", (due, mid))
        j = d.wait_job(mid, lambda j: j["state"] == "sent", timeout=40)
        self.assertEqual(j["attempts"], 2, j)
        # the mark that found the row moved on wrote nothing with it: the
        # threading record is the second attempt's (on PostgreSQL each row
        # that goes with a change checks that the change was written), and
        # the journey has one send
        with d.db() as c:
            made = [r[0] for r in c.execute("SELECT created_at FROM message_map WHERE ghl_message_id=?", (mid,))]
            sends = c.execute("SELECT COUNT(*) FROM events WHERE message_id=? AND kind='send'", (mid,)).fetchone()[0]
        self.assertEqual(len(made), 1, made)
        self.assertGreaterEqual(made[0], due)
        self.assertEqual(sends, 1)
        self.assertEqual(sum(1 for m in slow_greet.messages if mid.encode() in m["data"]), 1)
        verbs = [c.split(" ")[0].upper() for c in slow_greet.sessions[0]]
        self.assertNotIn("MAIL", verbs, slow_greet.sessions[0])
        self.assertNotIn("DATA", verbs, slow_greet.sessions[0])
        self.assertEqual([s["status"] for s in wait_status(mid)], ["delivered"])

    def test_pre_esmtp_relay_gets_helo(self):
        mid = post_ok(webhook(location="LOldRelay"))
        self.assertEqual([s["status"] for s in wait_status(mid)], ["delivered"])
        self.assertEqual(sum(1 for m in old_relay.messages if mid.encode() in m["data"]), 1)
        verbs = [c.split(" ")[0] for c in old_relay.sessions[0]]
        self.assertEqual(verbs[:3], ["EHLO", "HELO", "MAIL"])
        self.assertNotIn("NOTIFY=", " ".join(old_relay.sessions[0]), "no DSN parameters without ESMTP")
        # no PIPELINING offered: one command at a time
        self.assertFalse([m for m in old_relay.messages if mid.encode() in m["data"]][0]["pipelined"])

    def test_relay_down_is_retried(self):
        mid = post_ok(webhook(location="LDown"))
        j = d.wait_job(mid, lambda j: j["attempts"] >= 2 and j["state"] == "queued", timeout=20)
        self.assertEqual(j["state"], "queued")
        self.assertIn("cannot connect", j["last_error"])
        self.assertEqual(statuses(mid), [])
        r = d.cli("queue", "show", mid)
        self.assertIn("cannot connect", r.stdout)
        # an operator gives up on it
        end = time.time() + 10
        while time.time() < end:
            r = d.cli("queue", "drop", mid)
            if r.returncode == 0:
                break
            time.sleep(0.1)   # not while a worker holds it
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIsNone(d.job(mid))

    def test_starttls_auth_delivers(self):
        mid = post_ok(webhook(location="LAuth"))
        self.assertEqual(len(wait_for("alice", mid)), 1)
        self.assertEqual([s["status"] for s in wait_status(mid)], ["delivered"])

    def test_untrusted_certificate_refused(self):
        mid = post_ok(webhook(location="LUntrusted"))
        j = d.wait_job(mid, lambda j: j["attempts"] >= 1 and j["state"] == "queued", timeout=20)
        self.assertIn("not trusted", j["last_error"] or "")
        time.sleep(0.5)
        self.assertEqual(find(srv.fetch_all("alice"), mid), [])
        self.assertNotIn("AUTH", "".join(str(x) for x in d.log().splitlines() if mid in x))

    def test_wrong_host_certificate_refused(self):
        mid = post_ok(webhook(location="LWrongHost"))
        j = d.wait_job(mid, lambda j: j["attempts"] >= 1 and j["state"] == "queued", timeout=20)
        self.assertIn("not trusted", j["last_error"] or "")
        self.assertEqual([m for m in tls_evil.messages if mid.encode() in m["data"]], [])
        # the session ended right after the handshake: no MAIL was sent
        self.assertFalse(any(c.startswith("MAIL") for s in tls_evil.sessions for c in s))

    def test_duplicate_webhooks_one_email(self):
        p = webhook()
        body = json.dumps(p).encode()
        sig = d.keys.sign_ed25519(body)
        threads = [threading.Thread(target=d.request, args=("POST", "/webhooks/provider", body,
                                                            {"X-GHL-Signature": sig})) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        d.post_webhook(p)
        wait_status(p["messageId"])
        time.sleep(1.0)
        self.assertEqual(len(find(srv.fetch_all("alice"), p["messageId"])), 1)
        self.assertEqual(len(statuses(p["messageId"])), 1)

    def test_status_403_window_and_429_are_retried(self):
        ghl.fail(r"/status$", 403, count=2)
        ghl.fail(r"/status$", 429, count=1)
        mid = post_ok(webhook())
        st = wait_status(mid, timeout=40)
        self.assertEqual([s["status"] for s in st][-1], "delivered")
        self.assertEqual(d.job(mid)["report_state"], "done")
        self.assertEqual(len(find(srv.fetch_all("alice"), mid)), 1)

    def test_dsn_mode_waits_for_dsn(self):
        mid = post_ok(webhook(location="LDsn"))
        self.assertEqual(len(wait_for("alice", mid)), 1)
        j = d.wait_job(mid, lambda j: j["state"] == "sent")
        self.assertEqual(j["last_error"], "relayed; awaiting DSN")
        self.assertEqual(statuses(mid), [])

    def test_dsn_parameters_on_the_wire(self):
        mid = post_ok(webhook(location="LDsnScripted"))
        d.wait_job(mid, lambda j: j["state"] == "sent")
        cmds = [c for s in scripted.sessions for c in s]
        mail = [c for c in cmds if c.startswith("MAIL") and f"ENVID={mid}" in c]
        self.assertEqual(len(mail), 1, cmds)
        self.assertIn("RET=HDRS", mail[0])
        self.assertTrue(any(c.startswith("RCPT TO:<alice@mail.test> NOTIFY=SUCCESS,FAILURE,DELAY") for c in cmds))

    def test_tls_below_1_2_refused(self):
        # even with verification off, a relay that offers only TLS 1.0/1.1
        # gets no message (and no password)
        mid = post_ok(webhook(location="LLegacyTls"))
        j = d.wait_job(mid, lambda j: j["attempts"] >= 1 and j["state"] == "queued" and j["last_error"])
        self.assertEqual(j["state"], "queued")
        self.assertIn("TLS", j["last_error"])
        self.assertEqual([m for m in legacy_tls.messages], [])
        d.cli("queue", "drop", mid)

    def test_attachments_bounded_by_the_relays_size(self):
        """Once a connection has told us the relay's SIZE, a message's
        attachments may not exceed what it takes (base64 included)."""
        small = ScriptedSMTP(BASE + 37, size=60000)
        one = Daemon(BASE + 51, ghl.url, [loc("LSmall", smtp_port=BASE + 37)], workers=1,
                     extra_store=f"attachment_allow = http://127.0.0.1:{BASE + 30}\n")
        try:
            one.start()
            for atts in ([], [f"http://127.0.0.1:{BASE + 30}/report.bin"]):
                st, body = one.post_webhook(webhook(location="LSmall", attachments=atts))
                self.assertEqual(st, 200, body)
                mid = body["messageId"]
                j = one.wait_job(mid, lambda j: j["state"] in ("sent", "failed"))
            self.assertEqual(j["state"], "failed")
            self.assertIn("attachment too large", j["last_error"])
            self.assertIn("bytes left for this message", one.log())
            self.assertEqual(len(small.messages), 1)
        finally:
            one.stop()
            one.cleanup()
            small.close()

    def test_missing_attachment_fails_with_reason(self):
        mid = post_ok(webhook(attachments=[f"http://127.0.0.1:{BASE + 30}/missing.pdf"]))
        st = wait_status(mid)
        self.assertEqual([s["status"] for s in st], ["failed"])
        # a generic reason goes out; the detail stays in our log
        self.assertEqual(st[0]["error"]["message"], "attachment could not be fetched (attachment 1 of 1)")
        self.assertIn("missing.pdf: HTTP 404", d.log())

    def assertFetchRefused(self, url, logged):
        mid = post_ok(webhook(attachments=[url]))
        st = wait_status(mid)
        self.assertEqual([s["status"] for s in st], ["failed"], st)
        self.assertEqual(st[0]["error"]["message"], "attachment could not be fetched (attachment 1 of 1)")
        self.assertIn(f"refused to connect to {logged}", d.log())
        self.assertEqual(wait_for("alice", mid, timeout=1), [])
        return mid

    def test_ssrf_internal_addresses_refused(self):
        # the fake HighLevel API is a live loopback service: never fetched
        hits = len(ghl.calls(None, "meta-data"))
        self.assertFetchRefused(f"{ghl.url}/latest/meta-data", "127.0.0.1")
        self.assertFetchRefused(f"http://localhost:{BASE + 50}/healthz", "127.0.0.1")
        self.assertFetchRefused("http://169.254.169.254/latest/meta-data", "169.254.169.254")
        self.assertFetchRefused("http://[::1]:9/x", "::1")
        self.assertFetchRefused("http://10.0.0.1:9/x", "10.0.0.1")
        self.assertEqual(len(ghl.calls(None, "meta-data")), hits)

    def test_ssrf_redirect_rechecked(self):
        # the allowed server redirects to an internal one: the second hop is refused
        target = urllib.parse.quote(f"http://127.0.0.1:{BASE + 50}/healthz", safe="")
        self.assertFetchRefused(f"http://127.0.0.1:{BASE + 30}/go?to={target}", "127.0.0.1")

    def test_redirect_within_the_allowed_origin_followed(self):
        target = urllib.parse.quote(f"http://127.0.0.1:{BASE + 30}/report.bin", safe="")
        mid = post_ok(webhook(attachments=[f"http://127.0.0.1:{BASE + 30}/go?to={target}"]))
        m = wait_for("alice", mid)
        self.assertEqual(len(m), 1)
        atts = list(m[0].iter_attachments())
        self.assertEqual(atts[0].get_content(), ATTACHMENT)

    def test_one_deadline_for_all_attachments(self):
        # three 2.5 s attachments cannot fit the message's 4 s deadline,
        # though each fits alone: retried, not a worker held for minutes
        slow = [f"http://127.0.0.1:{BASE + 30}/slow/2.5"] * 3
        t0 = time.time()
        mid = post_ok(webhook(attachments=slow))
        j = d.wait_job(mid, lambda j: j["attempts"] >= 1 and j["state"] == "queued" and j["last_error"], timeout=15)
        self.assertLess(time.time() - t0, 9)
        self.assertIn("attachment could not be fetched (temporary)", j["last_error"])
        self.assertIn("fetch deadline (attachment_timeout) passed", d.log())
        d.cli("queue", "drop", mid)

    def test_queue_cli(self):
        mid = post_ok(webhook())
        wait_status(mid)
        r = d.cli("queue", "show", mid)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("state         sent", r.stdout)
        self.assertIn(f"mb.{mid}@mail.test", r.stdout)
        r = d.cli("queue", "list")
        self.assertIn(mid, r.stdout)
        r = d.cli("queue", "retry", "nope")
        self.assertNotEqual(r.returncode, 0)

    def test_queue_filters_retry_flush(self):
        failed = [post_ok(webhook(location="LQueue", emailTo=["permfail@mail.test"])) for _ in range(2)]
        for mid in failed:
            self.assertEqual(d.wait_job(mid, lambda j: j["state"] == "failed")["state"], "failed")
        waiting = post_ok(webhook(location="LQueueDown"))
        j = d.wait_job(waiting, lambda j: j["attempts"] >= 1 and j["state"] == "queued")
        self.assertEqual((j["attempts"], j["state"]), (1, "queued"))
        r = d.cli("queue", "list", "--location", "LQueue", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertEqual((out["total"], out["shown"]), (2, 2))
        self.assertEqual(sorted(j["messageId"] for j in out["jobs"]), sorted(failed))
        self.assertEqual({j["state"] for j in out["jobs"]}, {"failed"})
        r = d.cli("queue", "list", "--state", "failed", "--location", "LQueue")
        self.assertIn("-- 2 job(s)", r.stdout)
        self.assertIn("MESSAGE", r.stdout.splitlines()[0])
        r = d.cli("queue", "list", "--location", "LQueue", "--older-than", "1h")
        self.assertIn("-- 0 job(s)", r.stdout)
        self.assertNotIn(failed[0], r.stdout)
        r = d.cli("queue", "list", "--state", "bogus")
        self.assertEqual(r.returncode, 2)
        self.assertIn('no state "bogus"', r.stderr)
        r = d.cli("queue", "list", "--older-than", "soon")
        self.assertEqual(r.returncode, 2)
        r = d.cli("queue")
        self.assertEqual(r.returncode, 2)
        self.assertIn("what to do?", r.stderr)
        # every failed job of the location, again
        r = d.cli("queue", "retry", "--all-failed", "--location", "LQueue")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("2 failed job(s) queued now", r.stdout)
        for mid in failed:
            j = d.wait_job(mid, lambda j: j["attempts"] >= 2 and j["state"] == "failed")
            self.assertEqual(j["attempts"], 2)
        # flush: the waiting job goes now, not after its backoff. With
        # retry_base = 1 s its own retry may be under way right then (claimed,
        # not waiting: "0 waiting"); then again once it waits
        for _ in range(50):
            before = d.job(waiting)["attempts"]
            r = d.cli("queue", "flush", "--location", "LQueueDown")
            if "1 waiting job(s) queued now" in r.stdout:
                break
            time.sleep(0.1)
        self.assertIn("1 waiting job(s) queued now", r.stdout)
        j = d.wait_job(waiting, lambda j: j["attempts"] > before, timeout=10)
        self.assertGreater(j["attempts"], before)
        self.assertEqual(d.cli("queue", "drop", waiting).returncode, 0)
        # --json on the other listings
        accts = json.loads(d.cli("accounts", "--json").stdout)
        mine = [a for a in accts if a["locationId"] == "LQueue"]
        self.assertEqual(len(mine), 1)
        self.assertEqual((mine[0]["mode"], mine[0]["smtp"]), ("default", True))
        show = json.loads(d.cli("queue", "show", failed[0], "--json").stdout)
        self.assertEqual((show["messageId"], show["state"], show["nextAttempt"]), (failed[0], "failed", None))
        trace = json.loads(d.cli("trace", failed[0], "--json").stdout)
        self.assertTrue(trace and all(e["messageId"] == failed[0] for e in trace), trace)
        self.assertRegex(trace[0]["at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

    def test_v3_status_per_recipient_and_the_v2_fallback(self):
        """status_api = auto: the v3 email status with each recipient's
        outcome; a HighLevel without v3 (404) gets v2, remembered."""
        one = Daemon(BASE + 53, ghl.url, [loc("LV3", reply_domain="mail.test"), loc("LV2", reply_domain="mail.test")],
                     workers=1)
        try:
            one.start()
            ghl.v3 = True
            st, body = one.post_webhook(webhook(location="LV3", emailTo=["bob@mail.test", "permfail@mail.test"]))
            self.assertEqual(st, 200, body)
            mid = body["messageId"]
            end = time.time() + 20
            while time.time() < end and not [b for m, b in ghl.v3_statuses if m == mid]:
                time.sleep(0.05)
            got = [b for m, b in ghl.v3_statuses if m == mid]
            self.assertEqual(len(got), 1, one.log()[-2000:])
            self.assertEqual(got[0]["status"], "delivered")
            rcpts = {r["emailId"]: r for r in got[0]["recipients"]}
            self.assertEqual(rcpts["bob@mail.test"]["status"], "delivered")
            self.assertEqual(rcpts["permfail@mail.test"]["status"], "failed")
            self.assertIn("5.7.1", rcpts["permfail@mail.test"]["failReason"])
            self.assertNotIn("failReason", rcpts["bob@mail.test"])
            self.assertEqual(statuses(mid), [])          # no v2 call besides
            v3_calls = ghl.calls("PUT", f"^/conversations/messages/email/{mid}/status$")
            self.assertEqual(v3_calls[0]["headers"].get("Version"), "v3")
            self.assertEqual([e for e in ghl.spec_errors if "/email/" in e], [])   # v3's own schema
            # without v3 (404): v2 at once, and v2 from then on for that location
            ghl.v3 = False
            mids = []
            for _ in range(2):
                st, body = one.post_webhook(webhook(location="LV2"))
                self.assertEqual(st, 200, body)
                mids.append(body["messageId"])
                end = time.time() + 20
                while time.time() < end and not statuses(mids[-1]):
                    time.sleep(0.05)
                self.assertEqual([s["status"] for s in statuses(mids[-1])], ["delivered"], one.log()[-2000:])
            self.assertEqual(len(ghl.calls("PUT", f"^/conversations/messages/email/{mids[0]}/status$")), 1)
            self.assertEqual(ghl.calls("PUT", f"^/conversations/messages/email/{mids[1]}/status$"), [])
            self.assertIn("locationId=LV2 HighLevel answered the v3 email status with 404", one.log())
            # v2 has no place for engagement events: the first message's (written
            # before v2 was known) end, said so, never sent; the second writes none
            end = time.time() + 10
            while time.time() < end:
                with one.db() as c:
                    rows = c.execute("SELECT message_id, event, done_at IS NOT NULL, error FROM engagement "
                                     "WHERE message_id IN (?, ?) ORDER BY message_id, event", mids).fetchall()
                if rows and all(r[2] for r in rows):
                    break
                time.sleep(0.1)
            self.assertEqual([tuple(r) for r in rows], [(mids[0], "accepted", 1, "v2: no events"),
                                                        (mids[0], "delivered", 1, "v2: no events")])
            self.assertEqual(ghl.calls("PUT", f"^/conversations/messages/email/{mids[1]}/status$"), [])
        finally:
            ghl.v3 = False
            one.stop()
            one.cleanup()
        # status_api = v2: never v3
        two = Daemon(BASE + 54, ghl.url, [loc("LOnly2", reply_domain="mail.test")], extra_highlevel="status_api = v2")
        try:
            two.start()
            ghl.v3 = True
            st, body = two.post_webhook(webhook(location="LOnly2"))
            mid = body["messageId"]
            end = time.time() + 20
            while time.time() < end and not statuses(mid):
                time.sleep(0.05)
            self.assertEqual([s["status"] for s in statuses(mid)], ["delivered"])
            self.assertEqual(ghl.calls("PUT", f"^/conversations/messages/email/{mid}/status$"), [])
        finally:
            ghl.v3 = False
            two.stop()
            two.cleanup()

    def test_one_click_unsubscribe(self):
        mid = post_ok(webhook(emailTo=["alice@mail.test"], contactId="c-unsub"))
        m = wait_for("alice", mid)[0]
        self.assertEqual(m["List-Unsubscribe-Post"], "List-Unsubscribe=One-Click")
        url = re.search(r"<(https?://[^>]+)>", m["List-Unsubscribe"]).group(1)
        mailto = re.search(r"<mailto:([^>]+)>", m["List-Unsubscribe"]).group(1)
        path = urllib.parse.urlsplit(url).path
        self.assertRegex(path, r"^/u/LMain/[0-9a-f]{32}$")
        self.assertRegex(mailto, r"^reply\+u[0-9a-f]{32}@mail\.test$")
        dnd = lambda: [b for c, b in ghl.contact_updates if c == "c-unsub"]
        # GET: a page with a button, and nothing changes (link scanners prefetch)
        st, body, _ = d.request("GET", path)
        self.assertEqual(st, 200)
        self.assertIn(b'<form method="post">', body)
        self.assertIn(b'name="List-Unsubscribe" value="One-Click"', body)
        # a changed, made-up, other location's or short token: 404, nothing changes
        token = path.rsplit("/", 1)[1]
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        for bad in ("/u/LMain/" + token[:-1] + ("0" if token[-1] != "0" else "1"), "/u/LMain/" + "0" * 32,
                    "/u/LCustom/" + token, "/u/LMain/" + token[:16], "/u/Nope/" + token):
            st, _, _ = d.request("POST", bad, body=b"List-Unsubscribe=One-Click", headers=form)
            self.assertEqual(st, 404, bad)
        # a POST that does not say One-Click changes nothing either
        self.assertEqual(d.request("POST", path, body=b"x=1", headers=form)[0], 400)
        time.sleep(1.5)
        self.assertEqual(dnd(), [])
        # RFC 8058's POST: answered at once, then the contact's Email DND
        st, body, _ = d.request("POST", path, body=b"List-Unsubscribe=One-Click", headers=form)
        self.assertEqual(st, 200, body)
        end = time.time() + 15
        while time.time() < end and not dnd():
            time.sleep(0.05)
        self.assertEqual(len(dnd()), 1, d.log()[-2000:])
        self.assertEqual(dnd()[0]["dndSettings"]["Email"]["status"], "active")
        self.assertEqual([e for e in ghl.spec_errors if "/contacts/" in e], [])
        # recorded once HighLevel answered (the fake saw the call a moment before)
        end = time.time() + 5
        while True:
            with d.db() as c:
                row = c.execute("SELECT via, done_at IS NOT NULL, error FROM unsubscribes "
                                "WHERE contact_id='c-unsub'").fetchone()
            if tuple(row)[1] or time.time() > end:
                break
            time.sleep(0.05)
        self.assertEqual(tuple(row), ("one-click", 1, None))
        # the location that turned it off sends no List-Unsubscribe
        one = Daemon(BASE + 55, ghl.url, [loc("LNoUnsub", unsubscribe="no")])
        try:
            one.start()
            st, body = one.post_webhook(webhook(location="LNoUnsub", emailTo=["alice@mail.test"]))
            self.assertEqual(st, 200, body)
            self.assertIsNone(wait_for("alice", body["messageId"])[0]["List-Unsubscribe"])
        finally:
            one.stop()
            one.cleanup()

    def test_send_test_command(self):
        r = d.cli("send-test", "--location", "LMain", "--to", "bob@mail.test")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("result     accepted", r.stdout)
        r = d.cli("send-test", "--location", "LUntrusted", "--to", "bob@mail.test")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("not trusted", r.stdout)

    def test_trace_shows_the_journey(self):
        p = webhook(emailTo=["bob@mail.test"], emailCc=["carol@mail.test"])
        mid = post_ok(p)
        wait_status(mid)
        r = d.cli("trace", mid)
        self.assertEqual(r.returncode, 0, r.stderr)
        kinds = [line.split()[2] for line in r.stdout.splitlines()]
        self.assertRegex(r.stdout, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z  m")
        self.assertEqual(kinds[:3], ["webhook", "send", "status"], r.stdout)
        self.assertRegex(r.stdout, r"send +attempt 1: sent <mb\.%s@mail\.test>; 250 .*queued as" % mid)
        self.assertIn("delivered", r.stdout.splitlines()[2])
        self.assertEqual(d.cli("trace", f"<mb.{mid}@mail.test>").stdout, r.stdout)   # by Message-ID
        self.assertIn(mid, d.cli("trace", "carol@mail.test").stdout)                # by address
        self.assertNotEqual(d.cli("trace", "nothing-here").returncode, 0)

    def test_zy_metrics(self):
        st, _, _ = d.request("GET", "/metrics")
        self.assertEqual(st, 401)
        st, body, headers = d.request("GET", "/metrics", headers={"Authorization": "Bearer scrape-secret"})
        self.assertEqual(st, 200)
        self.assertTrue(headers["Content-Type"].startswith("text/plain"))
        values = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        self.assertGreater(values['mailbridge_webhooks_total{result="accepted"}'], 10)
        self.assertGreater(values['mailbridge_webhooks_total{result="duplicate"}'], 0)
        self.assertGreater(values['mailbridge_smtp_replies_total{class="5xx"}'], 0)
        self.assertGreater(values['mailbridge_smtp_replies_total{class="4xx"}'], 0)
        self.assertGreater(values['mailbridge_status_reports_total{result="posted"}'], 0)
        self.assertGreater(values['mailbridge_highlevel_requests_total{status="429"}'], 0)
        self.assertGreater(values['mailbridge_jobs{state="queued"}'], 0)    # tempfail / relay down
        # a sender takes the payload the webhook parsed; a retry parses the stored one
        self.assertGreater(values['mailbridge_sender_payloads_total{parsed="at_webhook"}'], 10)
        self.assertGreater(values['mailbridge_sender_payloads_total{parsed="from_store"}'], 0)
        self.assertGreater(values["mailbridge_oldest_queued_job_seconds"], 0)
        self.assertEqual(len([k for k in values if k.startswith('mailbridge_build_info{version="')]), 1)
        self.assertEqual(values['mailbridge_jobs{state="sent"}'], len([j for j in d.jobs() if j["state"] == "sent"]))
        self.assertGreater(values['mailbridge_highlevel_requests_today{location="LMain"}'], 10)
        # latency histograms: cumulative buckets ending in +Inf == count, a sum, for every kind
        for h in ("webhook_ack", "smtp_transaction", "highlevel_call"):
            name = f"mailbridge_{h}_seconds"
            buckets = [(k, v) for k, v in values.items() if k.startswith(name + "_bucket{")]
            self.assertEqual(len(buckets), 16, h)
            counts = [v for _, v in buckets]
            self.assertEqual(counts, sorted(counts), h)
            self.assertEqual(values[name + '_bucket{le="+Inf"}'], values[name + "_count"])
            self.assertGreater(values[name + "_count"], 5, h)
            self.assertGreater(values[name + "_sum"], 0, h)
        self.assertEqual(values['mailbridge_webhook_ack_seconds_count'],
                         values['mailbridge_webhooks_total{result="accepted"}'] +
                         values['mailbridge_webhooks_total{result="duplicate"}'])
        # every series the shipped dashboard and alert rules name is one this daemon exports
        contrib = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "contrib")
        exported = set(re.findall(r"^# TYPE (\S+) ", body.decode(), re.M))
        for path in ("grafana/mailbridge.json", "prometheus/mailbridge-rules.yml"):
            with open(os.path.join(contrib, path)) as f:
                named = set(re.findall(r"\b(mailbridge_[a-z_]+|process_resident_memory_bytes)", f.read()))
            named = {re.sub(r"_(bucket|sum|count)$", "", n) for n in named}
            self.assertTrue(named, path)
            self.assertEqual(named - exported, set(), path)
        # per-location failures: the permanent failures of this run, by location
        self.assertGreaterEqual(values['mailbridge_location_failures_total{location="LQueue",kind="send"}'], 2)
        self.assertGreater(values['mailbridge_location_failures_total{location="LMain",kind="send"}'], 0)
        self.assertLess(values['mailbridge_highlevel_daily_remaining{location="LMain"}'], 200000)
        # memory and size, checked against what the kernel and the file say
        with open(f"/proc/{d.proc.pid}/status") as f:
            rss = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))
        self.assertLess(abs(values["process_resident_memory_bytes"] - rss), rss * 0.5)
        with open(f"/proc/{d.proc.pid}/status") as f:
            anon = next(int(l.split()[1]) * 1024 for l in f if l.startswith("RssAnon:"))
        self.assertTrue(0 < values["mailbridge_resident_anon_bytes"] < values["process_resident_memory_bytes"])
        self.assertLess(abs(values["mailbridge_resident_anon_bytes"] - anon), anon * 0.5)
        # glibc's malloc only: ASan's and valgrind's allocators report nothing
        if "mailbridge_heap_inuse_bytes" in values:
            self.assertGreater(values["mailbridge_heap_inuse_bytes"], 100 * 1024)
        if d.pg:
            # PostgreSQL: the database's size, as the server counts it
            size = int(d.db().execute("SELECT pg_database_size(current_database()) AS n").fetchone()[0])
            self.assertTrue(0 < values["mailbridge_store_file_bytes"] <= size * 2, (values, size))
            return
        self.assertGreater(values["mailbridge_store_memory_bytes"], 0)
        # pages not yet checkpointed from the WAL count too
        db = sum(os.path.getsize(os.path.join(d.dir, "data", n)) for n in ("mailbridge.db", "mailbridge.db-wal")
                 if os.path.exists(os.path.join(d.dir, "data", n)))
        self.assertTrue(0 < values["mailbridge_store_file_bytes"] <= db, (values["mailbridge_store_file_bytes"], db))
        self.assertNotIn("scrape-secret", d.log())


    def test_version_everywhere(self):
        out = d.cli("version")
        self.assertEqual(out.returncode, 0)
        self.assertRegex(out.stdout, r"^mailbridge \d+\.\d+\.\d+ \(commit \S+\)\n$")
        version = out.stdout.split()[1]
        self.assertEqual(d.cli("--version").stdout, out.stdout)
        st, body, _ = d.request("GET", "/healthz")
        self.assertEqual((st, json.loads(body)), (200, {"status": "ok", "version": version}))

    def test_backup_while_sending(self):
        # an online copy while webhooks are taken and mail goes out: whole,
        # consistent, 0600, with the store's keys; then the copy opens as a
        # store of its own (what a restore does)
        stop = threading.Event()
        mids = []

        def burst():
            while not stop.is_set():
                mids.append(post_ok(webhook()))
        t = threading.Thread(target=burst)
        t.start()
        try:
            time.sleep(0.3)
            path = os.path.join(d.dir, "backup.db")
            out = d.cli("backup", path)
        finally:
            stop.set()
            t.join()
        if d.pg:
            # the server's own tools back it up; the command says so, and writes nothing
            self.assertNotEqual(out.returncode, 0)
            self.assertIn("pg_dump", out.stderr)
            self.assertFalse(os.path.exists(path))
            return
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("store copied to", out.stdout)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        import sqlite3
        c = sqlite3.connect(path)
        try:
            self.assertEqual(c.execute("PRAGMA integrity_check").fetchone()[0], "ok")
            self.assertEqual(c.execute("SELECT COUNT(*) FROM secrets WHERE name='address-token'").fetchone()[0], 1)
            with d.db() as live:
                key = live.execute("SELECT value FROM secrets WHERE name='address-token'").fetchone()[0]
            self.assertEqual(c.execute("SELECT value FROM secrets WHERE name='address-token'").fetchone()[0], key)
            copied = {r[0] for r in c.execute("SELECT message_id FROM jobs")}
            self.assertGreater(len(copied & set(mids)), 0)
        finally:
            c.close()
        self.assertFalse(os.path.exists(path + ".tmp"))
        # refused: no file named
        self.assertEqual(d.cli("backup").returncode, 2)

    def test_zz_contract(self):
        self.assertEqual(ghl.spec_errors, [])


def copies_after_sent(ids, timeout=60):
    """Once every job is sent (or the timeout passes), how many copies of
    each reached alice's mailbox."""
    end = time.time() + timeout
    while time.time() < end and not all((d.job(i) or {}).get("state") == "sent" for i in ids):
        time.sleep(0.2)
    time.sleep(1.0)   # the last ones through Postfix into Dovecot
    msgs = srv.fetch_all("alice")
    return [len(find(msgs, i)) for i in ids]


class TestZCrashRecovery(unittest.TestCase):
    """Runs last (unittest orders classes by name): it restarts the daemon."""

    def tearDown(self):
        if d.proc is None:
            d.write_config(LOCATIONS)
            d.start()

    def test_interrupted_send_checked_in_postfix_log(self):
        """A job left 'sending' by a crash (the final dot went out, our record
        of the reply did not) is looked up in Postfix's log (postfix_log)
        before it is sent again: kept by the relay, it is marked sent and
        reported, not sent twice; absent, it is sent again."""
        kept = post_ok(webhook(subject="kept by the relay"))
        wait_status(kept)
        absent = post_ok(webhook(location="LDown", subject="never reached the relay"))
        d.wait_job(absent, lambda j: j["state"] == "queued" and j["attempts"] >= 1)
        d.stop()
        with d.db() as c:   # what a kill -9 between the dot and our commit leaves
            c.execute("UPDATE jobs SET state='sending', report_state='none', rcpt_state=NULL WHERE message_id=?", (kept,))
            c.execute("UPDATE jobs SET state='sending', rfc_message_id=? WHERE message_id=?",
                      (f"mb.{absent}@mail.test", absent))
        n_status = len(statuses(kept))
        saved = d.extra_server
        d.extra_server += f"\npostfix_log = {srv.postfix_dir}/maillog"
        try:
            d.write_config(LOCATIONS)
            d.start()
            j = d.wait_job(kept, lambda j: j["state"] == "sent" and j["report_state"] == "done")
            self.assertIsNotNone(j, d.log()[-2000:])
            self.assertFalse(j["uncertain"])
            self.assertEqual([s["status"] for s in statuses(kept)[n_status:]], ["delivered"])
            self.assertIn("found in the relay's log after an interrupted attempt", d.cli("trace", kept).stdout)
            self.assertIn(f"messageId={kept} was interrupted after DATA; the relay's log shows it queued as", d.log())
            self.assertEqual(copies_after_sent([kept]), [1])
            # the absent one is tried again (its relay is down: queued, no longer uncertain)
            j = d.wait_job(absent, lambda j: j["attempts"] >= 2 and j["state"] == "queued")
            self.assertIsNotNone(j)
            self.assertFalse(j["uncertain"])
            self.assertIn(f"messageId={absent} was interrupted after DATA and is not in the relay's log", d.log())
        finally:
            d.extra_server = saved
            d.stop()
            d.write_config(LOCATIONS)
            d.start()

    def test_kill9_with_queued_jobs(self):
        """Acknowledged webhooks survive kill -9: all delivered exactly once."""
        global d
        d.kill9()
        # restart with the relay unreachable so jobs stay queued, then kill -9 again
        d.write_config([loc("LMain", smtp_port=BASE + 33, reply_domain="mail.test")])
        d.start()
        ids = [post_ok(webhook(subject=f"crash {i}")) for i in range(20)]
        d.kill9()
        d.write_config(LOCATIONS)
        d.start()
        for i, n in zip(ids, copies_after_sent(ids)):
            self.assertEqual(n, 1, (i, d.job(i), d.cli("trace", i).stdout))

    def test_stop_leaves_nothing_claimed(self):
        """SIGTERM during a burst: the senders finish what they began, the
        jobs a batch claim had taken for the others are queued again (their
        attempt not counted), so a clean stop leaves no job claimed; each
        goes once after the restart."""
        global d
        handed_back = 0
        for round in range(2):
            before = d.log().count("handed back to the queue")
            # eight at a time: faster than the relay takes them, so claims
            # find several due and leave some for the other senders
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                ids = list(pool.map(lambda i: post_ok(webhook(subject=f"stop {round}.{i}")), range(60)))
            self.assertEqual(d.stop(), 0, d.log()[-3000:])
            with d.db() as c:
                left = [dict(r) for r in c.execute("SELECT message_id, state, attempts FROM jobs "
                                                   "WHERE state = 'claimed'")]
            self.assertEqual(left, [])
            handed_back += d.log().count("handed back to the queue") - before
            d.start()
            for i, n in zip(ids, copies_after_sent(ids)):
                self.assertEqual(n, 1, (i, d.job(i)))
        print(f"\n[outbound] jobs handed back at the stops: {handed_back}", flush=True)

    def test_kill9_while_sending(self):
        """kill -9 under load: nothing lost; a copy may repeat only for a job
        the restart log names as interrupted during DATA."""
        global d
        ids = [post_ok(webhook(subject=f"load {i}")) for i in range(40)]
        time.sleep(0.15)
        d.kill9()
        d.start()
        counts = copies_after_sent(ids)
        self.assertTrue(all(c >= 1 for c in counts), counts)
        dups = sum(c - 1 for c in counts)
        interrupted = sum(int(n) for n in re.findall(r"store: (\d+) job\(s\) were interrupted during DATA", d.log()))
        self.assertLessEqual(dups, interrupted, counts)

    def test_restart_prunes_sent_payloads(self):
        """Retention runs soon after start: a sent, reported job keeps its
        row (queue show, trace by address) but not its payload, so it
        cannot be sent again; queued work is never touched."""
        p = webhook(emailTo=["carol@mail.test"], subject="retention")
        mid = post_ok(p)
        wait_status(mid)
        pruned = lambda: len(re.findall(r"store: pruned payloads=[1-9]", d.log()))
        before = pruned()
        d.stop()
        d.start()
        end = time.time() + 10
        while time.time() < end and pruned() == before:
            time.sleep(0.1)
        self.assertEqual(pruned(), before + 1, d.log()[-3000:])
        self.assertEqual(d.job(mid)["payload"], None)
        self.assertIn("state         sent", d.cli("queue", "show", mid).stdout)
        self.assertIn("next attempt  - (sent)", d.cli("queue", "show", mid).stdout)
        self.assertIn(mid, d.cli("trace", "carol@mail.test").stdout)
        r = d.cli("queue", "retry", mid)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("cannot go again", r.stderr)


if __name__ == "__main__":
    unittest.main()
