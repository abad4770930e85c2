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
        "lmtp_addresses": "sales@lmtp.test"})], extra_server=f"lmtp_listen = 127.0.0.1:{LMTP_PORT}")
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

    def test_zz_contract(self):
        self.assertEqual(ghl.spec_errors, [])


if __name__ == "__main__":
    unittest.main()
