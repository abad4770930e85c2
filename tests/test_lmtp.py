"""LMTP intake: real Postfix hands mail for a domain straight to
mailbridge (transport lmtp:inet:...); replies and DSNs take the same path
as IMAP after intake; per-recipient 250 / 451 / 550 as Postfix sees them."""
import email.message
import email.utils
import json
import os
import smtplib
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness.daemon import Daemon, location_conf, stop_all  # noqa: E402
from harness.fakeghl import FakeGHL  # noqa: E402
from harness.servers import MailServers  # noqa: E402

BASE = int(os.environ.get("MB_TEST_PORT_BASE", "21000")) + 600
LMTP_PORT = BASE + 60


def setUpModule():
    global srv, ghl, d
    srv = MailServers(BASE, lmtp_domain=("lmtp.test", LMTP_PORT)).start()
    ghl = FakeGHL()
    ghl.static_tokens.add("tok")
    d = Daemon(BASE + 50, ghl.url, [location_conf("LL", **{
        "from": "Support <support@lmtp.test>", "reply_domain": "lmtp.test", "provider_id": "prov",
        "smtp_host": "127.0.0.1", "smtp_port": srv.smtp, "smtp_tls": "none", "token": "tok",
        "lmtp_addresses": "sales@lmtp.test"})],
        extra_server=f"lmtp_listen = 127.0.0.1:{LMTP_PORT}\nlmtp_max_sessions = 4")
    d.start()


def tearDownModule():
    stop_all(d, ghl, srv)


def send(msg, rcpts, sender="bob@mail.test"):
    with smtplib.SMTP("127.0.0.1", srv.smtp, timeout=10) as s:
        s.sendmail(sender, rcpts, msg.as_bytes())


def mail(frm, to, subject, body, **headers):
    m = email.message.EmailMessage()
    m["From"] = frm
    m["To"] = to
    m["Subject"] = subject
    m["Message-ID"] = email.utils.make_msgid(domain="mail.test")
    for k, v in headers.items():
        m[k.replace("_", "-")] = v
    m.set_content(body)
    return m


def posted(msgid, timeout=15):
    end = time.time() + timeout
    while True:
        with ghl.lock:
            hits = [b for b in ghl.inbound if b.get("altId") == msgid]
        if hits or time.time() >= end:
            return hits
        time.sleep(0.05)


def wait_log(text, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        if text in srv.maillog():
            return True
        time.sleep(0.1)
    return False


class TestLMTP(unittest.TestCase):
    def test_reply_through_lmtp_is_threaded(self):
        mid = "m" + os.urandom(6).hex()
        st, _ = d.post_webhook({"type": "Email", "locationId": "LL", "messageId": mid, "emailMessageId": mid,
                                "emailTo": ["bob@mail.test"], "html": "<p>hi</p>", "subject": "Order"})
        self.assertEqual(st, 200)
        orig = None
        end = time.time() + 15
        while time.time() < end and orig is None:
            for raw in srv.fetch_all("bob"):
                m = email.message_from_bytes(raw)
                if m["X-Mailbridge-Job"] == mid:
                    orig = m
            time.sleep(0.1)
        self.assertIsNotNone(orig)
        r = mail("Bob <bob@mail.test>", orig["Reply-To"], "Re: Order", "yes please",
                 In_Reply_To=orig["Message-ID"])
        send(r, [orig["Reply-To"]])
        hits = posted(r["Message-ID"])
        self.assertEqual(len(hits), 1)
        self.assertEqual(hits[0]["emailMessageId"], mid)
        self.assertEqual(hits[0]["message"].strip(), "yes please")
        self.assertTrue(wait_log(f"to=<{orig['Reply-To']}>"))

    def test_new_mail_to_listed_address(self):
        m = mail("Zed <zed@mail.test>", "sales@lmtp.test", "Quote?", "how much")
        send(m, ["sales@lmtp.test"], sender="zed@mail.test")
        hits = posted(m["Message-ID"])
        self.assertEqual(len(hits), 1)
        self.assertNotIn("emailMessageId", hits[0])

    def test_unknown_recipient_550(self):
        m = mail("bob@mail.test", "nobody@lmtp.test", "x", "x")
        send(m, ["nobody@lmtp.test"])
        self.assertTrue(wait_log("no location receives this address"))
        self.assertIn("status=bounced", [l for l in srv.maillog().splitlines() if "nobody@lmtp.test" in l and "status=" in l][0])
        self.assertEqual(posted(m["Message-ID"], timeout=0.5), [])

    def test_highlevel_down_451_then_delivered_once(self):
        ghl.fail(r"/messages/inbound$", 503, count=1)
        m = mail("Amy <amy@mail.test>", "support@lmtp.test", "later", "retry me")
        send(m, ["support@lmtp.test"], sender="amy@mail.test")
        self.assertTrue(wait_log("HighLevel unavailable, try again later"))
        self.assertIn("status=deferred", [l for l in srv.maillog().splitlines() if "support@lmtp.test" in l and "status=" in l][0])
        # Postfix retries on its own backoff (1-5 s here); flushing speeds that
        # up, but a flush that lands while the message is still in the active
        # queue does nothing for it, so flush again until it arrives.
        conf = os.path.join(srv.postfix_dir, "etc")
        end = time.time() + 60
        hits = []
        while not hits and time.time() < end:
            subprocess.run(["postqueue", "-c", conf, "-f"], timeout=30)
            hits = posted(m["Message-ID"], timeout=3)
        queue = subprocess.run(["postqueue", "-c", conf, "-p"], capture_output=True, text=True, timeout=30).stdout
        self.assertEqual(len(hits), 1, "maillog tail:\n" + "\n".join(srv.maillog().splitlines()[-40:]) +
                         "\nqueue:\n" + queue + "\ndaemon log tail:\n" + "\n".join(d.log().splitlines()[-30:]))
        time.sleep(1.5)
        self.assertEqual(len(posted(m["Message-ID"], timeout=0)), 1)
        # the outage is in the log twice: when it began, and when it ended
        log = d.log()
        self.assertIn("ghl: HighLevel unavailable (HTTP 5xx); retrying", log)
        self.assertRegex(log, r"ghl: HighLevel answers again after \d+ failed request\(s\) over \d+ s")

    def test_bounce_via_lmtp_fails_the_message(self):
        mid = "m" + os.urandom(6).hex()
        d.post_webhook({"type": "Email", "locationId": "LL", "messageId": mid, "emailTo": ["ghost@mail.test"],
                        "html": "<p>x</p>", "subject": "to nobody"})
        # Postfix bounces it and hands the DSN to us over LMTP; on a loaded
        # machine (valgrind, CI) that can wait in its queue: flush now and then
        end, flush_at = time.time() + 60, time.time() + 10
        st = []
        while time.time() < end:
            st = [json.loads(r["body"]) for r in ghl.calls("PUT", f"/messages/{mid}/status")]
            if any(s["status"] == "failed" for s in st):
                break
            if time.time() > flush_at:
                subprocess.run(["postqueue", "-c", os.path.join(srv.postfix_dir, "etc"), "-f"], timeout=30)
                flush_at = time.time() + 10
            time.sleep(0.1)
        self.assertEqual(st[-1]["status"], "failed", "%s\nmaillog tail:\n%s" % (st, "\n".join(srv.maillog().splitlines()[-30:])))
        self.assertIn("ghost@mail.test", st[-1]["error"]["message"])

    def sent(self):
        """A message sent and reported delivered; its copy in bob's mailbox."""
        mid = "m" + os.urandom(6).hex()
        st, _ = d.post_webhook({"type": "Email", "locationId": "LL", "messageId": mid, "emailMessageId": mid,
                                "emailTo": ["bob@mail.test"], "html": "<p>hi</p>", "subject": "Order"})
        self.assertEqual(st, 200)
        end = time.time() + 15
        while time.time() < end:
            for raw in srv.fetch_all("bob"):
                m = email.message_from_bytes(raw)
                if m["X-Mailbridge-Job"] == mid:
                    d.wait_job(mid, lambda j: j["report_state"] == "done")
                    return mid, m
            time.sleep(0.1)
        self.fail("not delivered")

    def forged_dsn(self, rcpt, envid):
        body = (f"From: MAILER-DAEMON@evil.test\r\nTo: {rcpt}\r\nSubject: Undelivered Mail\r\n"
                f"Message-ID: <{os.urandom(6).hex()}@evil.test>\r\nMIME-Version: 1.0\r\n"
                "Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n"
                "--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
                "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
                f"Reporting-MTA: dns; evil.test\r\nOriginal-Envelope-Id: {envid}\r\n\r\n"
                "Final-Recipient: rfc822; bob@mail.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
                "Diagnostic-Code: smtp; 550 5.1.1 forged\r\n\r\n--b--\r\n")
        with smtplib.LMTP("127.0.0.1", LMTP_PORT, timeout=20) as s:
            s.sendmail("", [rcpt], body.encode())

    def test_forged_dsn_changes_nothing(self):
        mid, copy = self.sent()
        other, other_copy = self.sent()
        token_rp = copy["Return-Path"].strip("<>")          # bounce+<token>@lmtp.test of mid
        self.assertTrue(token_rp.startswith("bounce+"), token_rp)
        guess = "bounce+" + "0" * 16 + "@lmtp.test"
        # at an ordinary address; at a made-up token; at mid's bounce address naming another job
        for rcpt, envid in (("sales@lmtp.test", mid), (guess, mid), (token_rp, other)):
            self.forged_dsn(rcpt, envid)
        time.sleep(1)
        for m in (mid, other):
            self.assertEqual(d.job(m)["state"], "sent")
            st = [json.loads(r["body"]) for r in ghl.calls("PUT", f"/messages/{m}/status")]
            self.assertEqual([s["status"] for s in st], ["delivered"], st)
        log = d.log()
        self.assertIn("DSN not addressed to a bounce address of this location", log)
        self.assertIn("DSN names another message than its bounce address", log)
        # the message's own bounce address, naming it: applied
        self.forged_dsn(token_rp, mid)
        end = time.time() + 10
        while time.time() < end and d.job(mid)["state"] != "failed":
            time.sleep(0.1)
        self.assertIn("forged", d.job(mid)["last_error"] or json.dumps(d.job(mid)))

    def test_long_lines_kept_whole(self):
        """Lines far past 2,047 bytes (a client that does not wrap, a base64
        attachment on one line) arrive whole, spoken straight to our LMTP."""
        import base64
        text = "start " + "x" * 9000 + " end"
        blob = os.urandom(6000)
        m = email.message.EmailMessage()
        m["From"] = "Lin <lin@mail.test>"
        m["To"] = "sales@lmtp.test"
        m["Subject"] = "long lines"
        m["Message-ID"] = email.utils.make_msgid(domain="mail.test")
        m.set_content(text, cte="8bit")
        raw = m.as_bytes().replace(b"\n", b"\r\n")
        b64 = base64.b64encode(blob)
        boundary = b"==b=="
        raw = (b"From: Lin <lin@mail.test>\r\nTo: sales@lmtp.test\r\nSubject: long lines\r\n"
               b"Message-ID: " + m["Message-ID"].encode() + b"\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: multipart/mixed; boundary=\"" + boundary + b"\"\r\n\r\n"
               b"--" + boundary + b"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text.encode() +
               b"\r\n--" + boundary + b"\r\nContent-Type: application/pdf; name=\"one.pdf\"\r\n"
               b"Content-Disposition: attachment; filename=\"one.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
               b64 + b"\r\n--" + boundary + b"--\r\n")
        with smtplib.LMTP("127.0.0.1", LMTP_PORT, timeout=20) as s:
            s.sendmail("lin@mail.test", ["sales@lmtp.test"], raw)
        hits = posted(m["Message-ID"])
        self.assertEqual(len(hits), 1)
        self.assertIn("x" * 9000 + " end", hits[0]["message"])
        self.assertIn(("one.pdf", blob), ghl.uploads)

    def test_part_bomb_recorded_failed(self):
        """200,000 tiny parts: refused before GMime builds them, recorded as
        failed with the reason (250 to Postfix: retrying would not help),
        nothing posted."""
        msgid = email.utils.make_msgid(domain="mail.test")
        parts = b"".join(b"--p\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(200000))
        raw = (b"From: Bomb <bomb@mail.test>\r\nTo: sales@lmtp.test\r\nSubject: parts\r\nMessage-ID: " +
               msgid.encode() + b"\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"p\"\r\n\r\n" +
               parts + b"--p--\r\n")
        t0 = time.time()
        with smtplib.LMTP("127.0.0.1", LMTP_PORT, timeout=60) as s:
            s.sendmail("bomb@mail.test", ["sales@lmtp.test"], raw)
        self.assertLess(time.time() - t0, 20)
        self.assertEqual(posted(msgid, timeout=1), [])
        r = d.cli("inbound", "list", "failed")
        self.assertIn("more than 1000 MIME parts", r.stdout)
        self.assertTrue(r.stdout.startswith("LOCATION "), r.stdout)
        self.assertNotEqual(d.cli("inbound", "list", "bogus").returncode, 0)

    def test_command_line_too_long_500(self):
        import socket
        with socket.create_connection(("127.0.0.1", LMTP_PORT), timeout=10) as s:
            f = s.makefile("rwb")
            f.readline()
            f.write(b"NOOP " + b"x" * 5000 + b"\r\n")
            f.flush()
            self.assertTrue(f.readline().startswith(b"500 "))
            f.write(b"NOOP\r\n")
            f.flush()
            self.assertTrue(f.readline().startswith(b"250 "), "the session goes on")

    def test_session_cap(self):
        import socket
        held = []
        try:
            for _ in range(4):
                c = socket.create_connection(("127.0.0.1", LMTP_PORT), timeout=10)
                c.recv(100)
                held.append(c)
            extra = socket.create_connection(("127.0.0.1", LMTP_PORT), timeout=10)
            self.assertTrue(extra.recv(100).startswith(b"421 "))
            extra.close()
        finally:
            for c in held:
                c.close()
        time.sleep(0.5)
        with smtplib.LMTP("127.0.0.1", LMTP_PORT, timeout=10) as s:
            self.assertEqual(s.noop()[0], 250)

    def test_zz_contract(self):
        self.assertEqual(ghl.spec_errors, [])


class TestLMTPListeners(unittest.TestCase):
    """A UNIX socket for Postfix's lmtp:unix:, a peer allow-list for TCP,
    and a stop while a session is inside DATA (ASan saw a use after free)."""
    def daemon(self, port, extra, extra_highlevel=""):
        dd = Daemon(port, ghl.url, [location_conf("LL", **{
            "from": "Support <support@lmtp.test>", "reply_domain": "lmtp.test", "smtp_host": "127.0.0.1",
            "smtp_port": srv.smtp, "smtp_tls": "none", "token": "tok", "lmtp_addresses": "sales@lmtp.test"})],
            extra_server=extra, extra_highlevel=extra_highlevel)
        dd.start()
        self.addCleanup(dd.cleanup)
        return dd

    def test_full_window_waits_in_the_session(self):
        """A burst for one location through a window of 10 calls in 2 s:
        each message waits in its session for room and gets its 250; none
        gets a 451 (Postfix would try it again only minutes later)."""
        port = BASE + 55
        dd = self.daemon(BASE + 56, f"lmtp_listen = 127.0.0.1:{port}", "rate_limit = 10\nrate_window = 2\n")
        msgs = [mail("Vic <vic@mail.test>", "sales@lmtp.test", f"burst {i}", f"message {i}") for i in range(16)]
        t0 = time.time()
        with smtplib.LMTP("127.0.0.1", port, timeout=60) as s:
            for m in msgs:
                self.assertEqual(s.sendmail("vic@mail.test", ["sales@lmtp.test"], m.as_bytes()), {})
        took = time.time() - t0
        print(f"\n[lmtp] 16 messages through a 10-per-2-s window in {took:.1f} s, each 250", flush=True)
        for m in msgs:
            self.assertEqual(len(posted(m["Message-ID"], timeout=5)), 1)
        self.assertEqual(dd.stop(), 0)

    def test_unix_socket(self):
        import stat
        import tempfile
        sock_dir = tempfile.mkdtemp(prefix="mb-lmtp-")
        self.addCleanup(lambda: os.path.isdir(sock_dir) and os.rmdir(sock_dir))
        path = os.path.join(sock_dir, "lmtp")
        dd = self.daemon(BASE + 51, f"lmtp_listen = unix:{path}")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o660)
        m = mail("Uma <uma@mail.test>", "sales@lmtp.test", "via unix", "over a unix socket")
        with smtplib.LMTP(path, timeout=10) as s:
            s.sendmail("uma@mail.test", ["sales@lmtp.test"], m.as_bytes())
        self.assertEqual(len(posted(m["Message-ID"])), 1)
        self.assertEqual(dd.stop(), 0)
        self.assertFalse(os.path.exists(path), "the socket is removed at stop")

    def test_unix_path_that_is_not_a_socket_is_left_alone(self):
        import tempfile
        fd, path = tempfile.mkstemp(prefix="mb-not-a-socket-")
        os.write(fd, b"precious")
        os.close(fd)
        self.addCleanup(os.unlink, path)
        dd = Daemon(BASE + 54, ghl.url, [location_conf("LL", **{
            "from": "Support <support@lmtp.test>", "smtp_host": "127.0.0.1", "smtp_port": srv.smtp,
            "smtp_tls": "none", "token": "tok"})], extra_server=f"lmtp_listen = unix:{path}")
        self.addCleanup(dd.cleanup)
        with self.assertRaises(RuntimeError):
            dd.start(timeout=10)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"precious")
        self.assertIn("exists and is not a socket", dd.log())

    def test_peer_not_allowed(self):
        import socket
        port = BASE + 62
        dd = self.daemon(BASE + 52, f"lmtp_listen = 127.0.0.1:{port}\nlmtp_allow = 192.0.2.0/24")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            self.assertTrue(s.recv(100).startswith(b"554 "))
        self.assertIn("lmtp: refused a connection from 127.0.0.1", dd.log())

    def test_stop_while_in_data(self):
        port = BASE + 63
        dd = self.daemon(BASE + 53, f"lmtp_listen = 127.0.0.1:{port}")
        # longer than the 5 s the old stop waited before freeing what the session used
        ghl.delay(r"/messages/inbound$", 6.5)
        try:
            m = mail("Sam <sam@mail.test>", "sales@lmtp.test", "slow", "HighLevel is slow")
            import threading
            errors = []

            def deliver():
                try:
                    with smtplib.LMTP("127.0.0.1", port, timeout=20) as s:
                        s.sendmail("sam@mail.test", ["sales@lmtp.test"], m.as_bytes())
                except (smtplib.SMTPException, OSError) as e:
                    errors.append(e)
            before = len(ghl.calls(None, "contacts"))
            t = threading.Thread(target=deliver)
            t.start()
            end = time.time() + 10
            while time.time() < end and len(ghl.calls(None, "contacts")) == before:
                time.sleep(0.02)
            time.sleep(0.3)
            rc = dd.stop()          # while the session is inside inbound_handle
            t.join(20)
        finally:
            with ghl.lock:
                ghl.delays.clear()
        self.assertEqual(rc, 0, dd.log()[-2000:])
        self.assertNotIn("AddressSanitizer", dd.log())


if __name__ == "__main__":
    unittest.main()
