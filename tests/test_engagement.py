"""Engagement: the v3 email status's event counters (accepted, delivered,
rejected, permanent_fail, temporary_fail, replied, unsubscribed,
complained, opened, clicked), each reported once; hard bounces that set
Email DND; open and click tracking. Real Postfix and Dovecot, the fake
HighLevel with v3 on (it checks every body against conversations-v3.json)."""
import base64
import collections
import email
import email.message
import email.utils
import json
import os
import re
import smtplib
import sys
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness.daemon import Daemon, location_conf, stop_all  # noqa: E402
from harness.fakeghl import FakeGHL  # noqa: E402
from harness.servers import MailServers  # noqa: E402

BASE = int(os.environ.get("MB_TEST_PORT_BASE", "21000")) + 1200
TOKEN = "static-token"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120 Safari/537.36"


def setUpModule():
    global srv, ghl, d
    srv = MailServers(BASE, extra_users=["sales"]).start()
    ghl = FakeGHL()
    ghl.static_tokens.add(TOKEN)
    ghl.v3 = True
    common = {"smtp_host": "127.0.0.1", "smtp_port": srv.smtp, "smtp_tls": "none", "token": TOKEN,
              "imap_host": "127.0.0.1", "imap_port": srv.imaps, "imap_tls": "tls", "imap_ca_file": srv.cert,
              "imap_idle_interval": 30}
    locations = [
        # delivered when the relay takes it; opens and clicks counted at once
        location_conf("LEng", **common, **{"from": "Acme Support <support@mail.test>", "reply_domain": "mail.test",
                                           "provider_id": "prov-email", "imap_user": "support",
                                           "imap_password": "supportpw", "track_opens": "yes",
                                           "track_clicks": "yes", "track_min_delay": 0}),
        # delivered on the DSN; a 5.1.x bounce of the contact's email sets DND
        location_conf("LDsn", **common, **{"from": "Sales <sales@mail.test>", "provider_id": "prov-sales",
                                           "delivered_on": "dsn", "dnd_on_hard_bounce": "yes",
                                           "imap_user": "sales", "imap_password": "salespw",
                                           "track_opens": "yes", "track_min_delay": 3600}),
    ]
    d = Daemon(BASE + 50, ghl.url, locations)
    ghl.contacts[("LEng", "bob@mail.test")] = "c-bob"
    d.start()
    end = time.time() + 15
    while time.time() < end and len(re.findall(r"imap: locationId=\S+ connected", d.log())) < 2:
        time.sleep(0.05)


def tearDownModule():
    stop_all(d, ghl, srv)


def webhook(location="LEng", to=("bob@mail.test",), contact="c-bob", **kw):
    mid = "m" + os.urandom(8).hex()
    p = {"type": "Email", "locationId": location, "messageId": mid, "emailMessageId": mid, "contactId": contact,
         "emailTo": list(to), "html": "<p>Hello from Acme</p>", "subject": "Your ticket"}
    p.update(kw)
    st, body = d.post_webhook(p)
    assert st == 200, (st, body)
    return mid


def v3(mid):
    with ghl.lock:
        return [b for m, b in ghl.v3_statuses if m == mid]


def events(mid):
    """The counters HighLevel holds for mid: every call's events, summed."""
    total = collections.Counter()
    for b in v3(mid):
        total.update(b.get("events") or {})
    return dict(total)


def wait_events(mid, want, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        got = events(mid)
        if all(got.get(k, 0) >= v for k, v in want.items()):
            return got
        time.sleep(0.05)
    raise AssertionError(f"{mid}: events {events(mid)}, wanted {want}\n" + d.log()[-3000:])


def wait_mail(user, mid, timeout=15):
    return srv.wait_job_mail(user, mid, timeout)


def part(msg, ctype):
    for p in msg.walk():
        if p.get_content_type() == ctype:
            return p.get_payload(decode=True).decode()
    return None


def send_mail(msg, rcpts, sender="bob@mail.test"):
    with smtplib.SMTP("127.0.0.1", srv.smtp, timeout=10) as s:
        s.sendmail(sender, rcpts, msg.as_bytes())


def metric(name):
    st, body, _ = d.request("GET", "/metrics")
    assert st == 200, st
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def no_spec_errors(test):
    test.assertEqual([e for e in ghl.spec_errors if "/email/" in e or "/contacts/" in e], [])


class TestEngagement(unittest.TestCase):
    def test_two_recipients_one_refused(self):
        """Postfix refuses one of two recipients: one delivered, one failed
        with its 5.x.x, and the counters accepted, delivered, rejected once."""
        mid = webhook(to=("bob@mail.test", "permfail@mail.test"))
        got = wait_events(mid, {"accepted": 1, "delivered": 1, "rejected": 1})
        first = v3(mid)[0]
        rcpts = {r["emailId"]: r for r in first["recipients"]}
        self.assertEqual(rcpts["bob@mail.test"]["status"], "delivered")
        self.assertEqual(rcpts["permfail@mail.test"]["status"], "failed")
        self.assertIn("5.7.1", rcpts["permfail@mail.test"]["failReason"])
        self.assertEqual(first["status"], "delivered")
        # one call carried status and events: no second call for them
        time.sleep(1.5)
        self.assertEqual(len(v3(mid)), 1, v3(mid))
        self.assertEqual(got, {"accepted": 1, "delivered": 1, "rejected": 1})
        no_spec_errors(self)

    def test_dsn_delayed_success(self):
        """delivered_on = dsn: "accepted" when the relay takes it (status
        sent), "temporary_fail" for a delay report, "delivered" when the
        success DSN comes; each once."""
        mid = webhook(location="LDsn", to=("alice@mail.test",), contact="c-alice")
        rp = wait_mail("alice", mid)["Return-Path"].strip("<>")
        self.assertRegex(rp, r"^sales\+b[0-9a-f]+@mail\.test$")
        # a relay's "delayed" report at the message's return path, twice
        dsn = ("From: MAILER-DAEMON@relay.test\r\nTo: %s\r\nSubject: Delayed Mail (still being retried)\r\n"
               "Message-ID: <delay-%%d-%s@relay.test>\r\nMIME-Version: 1.0\r\n"
               "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
               "--b\r\nContent-Type: text/plain\r\n\r\nStill trying.\r\n"
               "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; relay.test\r\n"
               "Original-Envelope-Id: %s\r\n\r\nFinal-Recipient: rfc822; alice@mail.test\r\nAction: delayed\r\n"
               "Status: 4.4.1\r\nDiagnostic-Code: smtp; 451 4.4.1 try later\r\n\r\n--b--\r\n") % (rp, mid, mid)
        with smtplib.SMTP("127.0.0.1", srv.smtp, timeout=10) as s:
            for i in range(2):
                s.sendmail("", [rp], (dsn % i).encode())
        wait_events(mid, {"accepted": 1, "delivered": 1, "temporary_fail": 1}, timeout=30)
        time.sleep(1.5)
        calls = v3(mid)
        self.assertEqual(events(mid), {"accepted": 1, "delivered": 1, "temporary_fail": 1}, calls)
        self.assertEqual(calls[-1]["status"], "delivered")
        self.assertEqual([c["status"] for c in calls if "accepted" in (c.get("events") or {})], ["sent"])
        no_spec_errors(self)

    def test_hard_bounce_sets_dnd_only_for_the_contacts_email(self):
        ghl.contact_emails["c-ghost"] = "Ghost@Mail.test"
        ghl.contact_emails["c-moved"] = "new-address@mail.test"
        own = webhook(location="LDsn", to=("ghost@mail.test",), contact="c-ghost")
        other = webhook(location="LDsn", to=("ghost@mail.test",), contact="c-moved")
        wait_events(own, {"permanent_fail": 1}, timeout=30)
        wait_events(other, {"permanent_fail": 1}, timeout=30)
        end = time.time() + 15
        while time.time() < end and not [c for c, b in ghl.contact_updates if c == "c-ghost"]:
            time.sleep(0.1)
        got = [b for c, b in ghl.contact_updates if c == "c-ghost"]
        self.assertEqual(len(got), 1, d.log()[-3000:])
        self.assertEqual(got[0]["dndSettings"]["Email"]["status"], "active")
        end = time.time() + 10       # its GET /contacts/{id} may still be on its way
        while True:
            with d.db() as c:
                row = c.execute("SELECT via, done_at IS NOT NULL, error FROM unsubscribes WHERE contact_id='c-moved'"
                                ).fetchone()
            if (row and tuple(row)[1]) or time.time() > end:
                break
            time.sleep(0.05)
        self.assertEqual(tuple(row), ("hard-bounce", 1, "the bounced address is not the contact's email"))
        self.assertEqual([c for c, b in ghl.contact_updates if c == "c-moved"], [])
        self.assertEqual(v3(own)[-1]["status"], "failed")
        no_spec_errors(self)

    def test_reply_counts_replied_once_per_replier(self):
        mid = webhook()
        orig = wait_mail("bob", mid)
        wait_events(mid, {"delivered": 1})
        for text in ("Thanks!", "One more thing."):
            r = email.message.EmailMessage()
            r["From"] = "Bob Builder <bob@mail.test>"
            r["To"] = orig["Reply-To"]
            r["Subject"] = "Re: " + orig["Subject"]
            r["Message-ID"] = email.utils.make_msgid(domain="mail.test")
            r["In-Reply-To"] = orig["Message-ID"]
            r.set_content(text)
            send_mail(r, [email.utils.parseaddr(orig["Reply-To"])[1]])
        end = time.time() + 15
        while time.time() < end and len([b for b in ghl.inbound if b.get("emailMessageId") == mid]) < 2:
            time.sleep(0.05)
        wait_events(mid, {"replied": 1})
        time.sleep(1.5)
        self.assertEqual(events(mid).get("replied"), 1, v3(mid))
        replied = [c for c in v3(mid) if "replied" in (c.get("events") or {})]
        self.assertEqual(replied[0]["status"], "delivered")

    def test_unsubscribe_and_complaint_each_once(self):
        mid = webhook(contact="c-unsub")
        orig = wait_mail("bob", mid)
        url = re.search(r"<(https?://[^>]+)>", orig["List-Unsubscribe"]).group(1)
        path = urllib.parse.urlsplit(url).path
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        self.assertEqual(d.request("GET", path)[0], 200)
        for _ in range(2):
            st, body, _ = d.request("POST", path, body=b"List-Unsubscribe=One-Click", headers=form)
            self.assertEqual(st, 200, body)
        wait_events(mid, {"unsubscribed": 1})
        # an ARF report from the mailbox provider, returning our message
        arf = ("From: Yahoo FBL <feedback@fbl.test>\r\nTo: support@mail.test\r\nSubject: FW: report\r\n"
               "Message-ID: <arf-%s@fbl.test>\r\nMIME-Version: 1.0\r\n"
               "Content-Type: multipart/report; report-type=feedback-report; boundary=arf\r\n\r\n"
               "--arf\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n"
               "--arf\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n"
               "User-Agent: Yahoo!-Mail-Feedback/2.0\r\nVersion: 1\r\n\r\n"
               "--arf\r\nContent-Type: text/rfc822-headers\r\n\r\n"
               "From: %s\r\nTo: bob@mail.test\r\nSubject: %s\r\nMessage-ID: %s\r\nReply-To: %s\r\n\r\n--arf--\r\n"
               % (mid, orig["From"], orig["Subject"], orig["Message-ID"], orig["Reply-To"])).encode()
        with smtplib.SMTP("127.0.0.1", srv.smtp, timeout=10) as s:
            s.sendmail("feedback@fbl.test", ["support@mail.test"], arf)
        wait_events(mid, {"complained": 1}, timeout=30)
        time.sleep(1.5)
        got = events(mid)
        self.assertEqual((got.get("unsubscribed"), got.get("complained")), (1, 1), v3(mid))
        no_spec_errors(self)

    def test_open_and_click(self):
        html = ('<html><body><p>Hi <a href="https://shop.example/a?x=1&amp;y=2">the shop</a>, '
                '<a href="mailto:help@mail.test">mail us</a>, <A class="b" HREF=\'http://docs.example/b\'>docs</A>'
                '</p></body></html>')
        mid = webhook(html=html, text=None)
        msg = wait_mail("bob", mid)
        h, t = part(msg, "text/html"), part(msg, "text/plain")
        base = d.base_url if hasattr(d, "base_url") else f"http://127.0.0.1:{d.port}"
        pixel = re.search(r'<img src="%s(/o/[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.gif)"' % re.escape(base), h)
        links = re.findall(r'href=["\']%s(/c/[A-Za-z0-9_.-]+)["\']' % re.escape(base), h, re.I)
        self.assertTrue(pixel, h)
        self.assertLess(h.index(pixel.group(0)), h.lower().index("</body>"))
        self.assertEqual(len(links), 2, h)
        self.assertIn('href="mailto:help@mail.test"', h)
        self.assertIn("https://shop.example/a?x=1&y=2", t)      # the text part keeps its links
        self.assertNotIn("/c/", t)
        wait_events(mid, {"delivered": 1})
        hits = lambda: {r: metric(f'mailbridge_tracking_hits_total{{result="{r}"}}')
                        for r in ("counted", "not_counted", "bad_token")}
        before = hits()
        # the redirect goes to the signed link, and only there
        st, _, hdrs = d.request("GET", links[0], headers={"User-Agent": BROWSER})
        self.assertEqual((st, hdrs.get("Location")), (302, "https://shop.example/a?x=1&y=2"))
        st, _, hdrs = d.request("GET", links[1], headers={"User-Agent": BROWSER})
        self.assertEqual((st, hdrs.get("Location")), (302, "http://docs.example/b"))
        tok = links[0][3:]
        payload, mac = tok.split(".")
        # a token names no address (URLs are seen by proxies, and by whoever
        # a message is forwarded to)
        for t in (payload, pixel.group(1)[3:].split(".")[0]):
            self.assertNotIn(b"@", base64.urlsafe_b64decode(t + "=" * (-len(t) % 4)))
        # change whole characters in the middle: the last one of a base64 run
        # may carry only padding bits, which decoders ignore
        flip = lambda t, i: t[:i] + ("B" if t[i] != "B" else "C") + t[i + 1:]
        forged = flip(payload, 10)
        for bad in ("/c/" + forged + "." + mac, "/c/" + payload + "." + flip(mac, 3), "/c/" + payload,
                    "/c/x.y", "/o/" + tok + ".gif", pixel.group(1).replace("/o/", "/c/")[:-4]):
            st, _, hdrs = d.request("GET", bad, headers={"User-Agent": BROWSER})
            self.assertEqual(st, 404, bad)
            self.assertIsNone(hdrs.get("Location"))
        # a scanner's fetch and a HEAD are answered and not counted
        st, body, hdrs = d.request("GET", pixel.group(1), headers={"User-Agent": "curl/8.4.0"})
        self.assertEqual((st, hdrs.get("Content-Type"), body[:6]), (200, "image/gif", b"GIF89a"))
        self.assertEqual(hdrs.get("Cache-Control"), "no-store, private")
        self.assertEqual(d.request("HEAD", pixel.group(1), headers={"User-Agent": BROWSER})[0], 200)
        time.sleep(1.5)
        self.assertNotIn("opened", events(mid))
        # the reader: counted once however often
        for _ in range(3):
            self.assertEqual(d.request("GET", pixel.group(1), headers={"User-Agent": BROWSER})[0], 200)
        after = hits()
        self.assertEqual({k: after[k] - before[k] for k in after},
                         {"counted": 5, "not_counted": 2, "bad_token": 6})
        got = wait_events(mid, {"opened": 1, "clicked": 1})
        time.sleep(1.5)
        got = events(mid)
        self.assertEqual((got.get("opened"), got.get("clicked")), (1, 1), v3(mid))
        opened = [c for c in v3(mid) if "opened" in (c.get("events") or {}) or "clicked" in (c.get("events") or {})]
        self.assertTrue(all(c["status"] in ("opened", "clicked") for c in opened), opened)
        self.assertTrue(any({"emailId": "bob@mail.test", "status": "opened"} in c.get("recipients", [])
                            for c in opened), opened)
        no_spec_errors(self)

    def test_hits_right_after_the_send_are_not_counted(self):
        """LDsn: track_min_delay = 3600 s: a fetch at once is a gateway's."""
        mid = webhook(location="LDsn", to=("alice@mail.test",), contact="c-alice2")
        msg = wait_mail("alice", mid)
        pixel = re.search(r'<img src="[^"]*(/o/[^"]+\.gif)"', part(msg, "text/html")).group(1)
        self.assertEqual(d.request("GET", pixel, headers={"User-Agent": BROWSER})[0], 200)
        wait_events(mid, {"delivered": 1}, timeout=30)
        time.sleep(1.5)
        self.assertNotIn("opened", events(mid))

    def test_tracking_is_off_by_default(self):
        one = Daemon(BASE + 60, ghl.url, [location_conf("LPlain", smtp_host="127.0.0.1", smtp_port=srv.smtp,
                                                        smtp_tls="none", token=TOKEN, reply_domain="mail.test",
                                                        **{"from": "Plain <plain@mail.test>"})])
        try:
            one.start()
            mid = "m" + os.urandom(8).hex()
            st, body = one.post_webhook({"type": "Email", "locationId": "LPlain", "messageId": mid,
                                         "contactId": "c-plain", "emailTo": ["carol@mail.test"],
                                         "html": '<p><a href="https://x.example/">x</a></p>', "subject": "s"})
            self.assertEqual(st, 200, body)
            h = part(wait_mail("carol", mid), "text/html")
            self.assertIn('href="https://x.example/"', h)
            self.assertNotIn("/o/", h)
        finally:
            one.stop()
            one.cleanup()
