"""Inbound Email: real Postfix delivers into real Dovecot; mailbridge's
IMAP IDLE watcher posts replies, new threads and DSN results to the fake
HighLevel. Charsets, broken MIME, auto-replies, our own mail, restarts."""
import base64
import email.message
import email.utils
import imaplib
import json
import os
import re
import smtplib
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness.daemon import VALGRIND, Daemon, location_conf, stop_all  # noqa: E402
from harness.fakeghl import FakeGHL  # noqa: E402
from harness.servers import MailServers  # noqa: E402

BASE = int(os.environ.get("MB_TEST_PORT_BASE", "21000")) + 400
TOKEN = "static-token"


def setUpModule():
    global srv, ghl, d
    srv = MailServers(BASE, extra_users=["sales", "burst"]).start()
    ghl = FakeGHL()
    ghl.static_tokens.add(TOKEN)
    common = {"smtp_host": "127.0.0.1", "smtp_port": srv.smtp, "smtp_tls": "none", "token": TOKEN,
              "imap_host": "127.0.0.1", "imap_port": srv.imaps, "imap_tls": "tls", "imap_ca_file": srv.cert,
              "imap_idle_interval": 30}
    locations = [
        location_conf("LIn", **common, **{"from": "Acme Support <support@mail.test>", "reply_domain": "mail.test",
                                          "provider_id": "prov-email", "delivered_on": "dsn",
                                          "imap_user": "support", "imap_password": "supportpw"}),
        location_conf("LPoll", **{**common, "imap_idle": "no", "imap_poll_interval": 1},
                      **{"from": "Poller <alice@mail.test>", "reply_domain": "poll.test", "provider_id": "prov-poll", "imap_after": "move:Done",
                         "imap_user": "alice", "imap_password": "alicepw"}),
        # a custom location sharing mail.test with LIn, its own mailbox sales@,
        # and no Postfix alias at all: reply_address and return_path default
        # to the from mailbox, plus-addressed
        location_conf("LSales", **common, **{"from": "Sales Team <sales@mail.test>", "mode": "custom",
                                             "provider_id": "prov-sales", "delivered_on": "dsn",
                                             "imap_user": "sales", "imap_password": "salespw"}),
        # replies at another domain than the mailbox's, through Postfix's alias
        # reply@client.test -> carol (reply_address given explicitly)
        location_conf("LCust", **common, **{"from": "Carol Co <carol@mail.test>", "reply_domain": "client.test",
                                            "reply_address": "reply@client.test",
                                            "mode": "custom", "provider_id": "prov-custom",
                                            "imap_user": "carol", "imap_password": "carolpw"}),
    ]
    d = Daemon(BASE + 50, ghl.url, locations,
               extra_highlevel="client_id = test-client\nclient_secret = test-secret\napp_id = a\n")
    with imaplib.IMAP4("127.0.0.1", srv.imap, timeout=10) as m:
        m.login("alice", "alicepw")
        m.create("Done")
    # HighLevel knows bob as the contact our outbound mail names
    for loc in ("LIn", "LCust", "LPoll", "LSales"):
        ghl.contacts[(loc, "bob@mail.test")] = "c-bob"
    d.start()
    wait_watching(4)


def tearDownModule():
    stop_all(d, ghl, srv)


def wait_watching(n, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        if d.log().count("imap: locationId=") and len(re.findall(r"imap: locationId=\S+ connected", d.log())) >= n:
            return
        time.sleep(0.05)
    raise AssertionError("watchers did not connect:\n" + d.log()[-3000:])


def send_mail(msg, rcpts, sender="bob@mail.test"):
    with smtplib.SMTP("127.0.0.1", srv.smtp, timeout=10) as s:
        s.sendmail(sender, rcpts, msg.as_bytes() if hasattr(msg, "as_bytes") else msg)


def append(user, raw, when=None):
    """when: the message's INTERNALDATE (seconds since the epoch)."""
    with imaplib.IMAP4("127.0.0.1", srv.imap, timeout=10) as m:
        m.login(user, user + "pw")
        m.append("INBOX", None, imaplib.Time2Internaldate(when) if when else None, raw)


def posted(pred, timeout=10.0):
    end = time.time() + timeout
    while True:
        with ghl.lock:
            hits = [b for b in ghl.inbound if pred(b)]
        if hits or time.time() >= end:
            return hits
        time.sleep(0.05)


def outbound(location="LIn", to="bob@mail.test", **kw):
    mid = "m" + os.urandom(8).hex()
    p = {"type": "Email", "locationId": location, "messageId": mid, "emailMessageId": mid, "contactId": "c-bob",
         "emailTo": [to], "html": "<p>Hello from Acme</p>", "subject": "Your ticket"}
    p.update(kw)
    st, body = d.post_webhook(p)
    assert st == 200, (st, body)
    return mid


def wait_for(user, mid, timeout=15):
    return srv.wait_job_mail(user, mid, timeout)


def reply_to(orig, body, sender="Bob Builder <bob@mail.test>", keep_threading=True, to=None):
    r = email.message.EmailMessage()
    r["From"] = sender
    r["To"] = to or orig["Reply-To"]
    r["Subject"] = "Re: " + orig["Subject"]
    r["Date"] = email.utils.formatdate()
    r["Message-ID"] = email.utils.make_msgid(domain="mail.test")
    if keep_threading:
        r["In-Reply-To"] = orig["Message-ID"]
        r["References"] = orig["Message-ID"]
    r.set_content(body)
    return r


def wait_recorded(location, msgid, timeout=10):
    """Until mailbridge has stored the post (HighLevel's answer arrives first)."""
    end = time.time() + timeout
    while time.time() < end:
        with d.db() as c:
            r = c.execute("SELECT state FROM inbound_seen WHERE location_id=? AND dedupe_key=?",
                          (location, msgid.strip("<>"))).fetchone()
        if r and r[0] == "posted":
            return
        time.sleep(0.05)
    raise AssertionError(f"{msgid} not recorded")


def statuses(mid):
    return [json.loads(r["body"]) for r in ghl.calls("PUT", f"/messages/{mid}/status")]


class TestInbound(unittest.TestCase):
    def test_reply_round_trip(self):
        mid = outbound()
        orig = wait_for("bob", mid)
        r = reply_to(orig, "Thanks, that fixed it!\n\nOn Tue, Acme Support wrote:\n> Hello from Acme\n")
        t0 = time.time()
        send_mail(r, [email.utils.parseaddr(orig["Reply-To"])[1]])
        hits = posted(lambda b: b.get("altId") == r["Message-ID"])
        self.assertEqual(len(hits), 1, ghl.inbound)
        self.assertLess(time.time() - t0, 3.0)
        b = hits[0]
        self.assertEqual(b["type"], "Email")
        self.assertEqual(b["direction"], "inbound")
        self.assertEqual(b["emailMessageId"], mid)
        self.assertEqual(b["conversationProviderId"], "prov-email")
        self.assertEqual(b["subject"], "Re: Your ticket")
        self.assertEqual(b["message"].strip(), "Thanks, that fixed it!")
        self.assertEqual(b["emailFrom"], "Bob Builder <bob@mail.test>")
        self.assertEqual(b["contactId"], "c-bob")
        self.assertTrue(b["conversationId"])
        self.assertEqual(ghl.contacts[("LIn", "bob@mail.test")], b["contactId"])
        wait_recorded("LIn", r["Message-ID"])
        self.assertIn(f"reply from bob@mail.test <{r['Message-ID'].strip('<>')}>", d.cli("trace", mid).stdout)
        # nothing posted twice, even after more IDLE rounds
        time.sleep(1.0)
        self.assertEqual(len(posted(lambda b: b.get("altId") == r["Message-ID"])), 1)

    def test_inline_image_uploaded_once_and_linked(self):
        # an image the HTML shows by cid: uploaded once, and the HTML
        # HighLevel gets points at the upload
        msgid = email.utils.make_msgid(domain="cid.test")
        png = b"\x89PNG\r\n\x1a\n" + os.urandom(64)
        raw = (f"From: pic@cid.test\r\nSubject: logo\r\nMessage-ID: {msgid}\r\nMIME-Version: 1.0\r\n"
               "Content-Type: multipart/related; boundary=\"r\"\r\n\r\n"
               "--r\r\nContent-Type: text/html\r\n\r\n<p>Our logo: <img src=\"cid:logo.1@cid.test\"></p>\r\n"
               "--r\r\nContent-Type: image/png\r\nContent-ID: <logo.1@cid.test>\r\n"
               "Content-Disposition: inline\r\nContent-Transfer-Encoding: base64\r\n\r\n"
               + base64.b64encode(png).decode() + "\r\n--r--\r\n").encode()
        before = len(ghl.uploads)
        append("support", raw)
        hits = posted(lambda b: b.get("altId") == msgid)
        self.assertEqual(len(hits), 1)
        html = hits[0].get("html", "")
        self.assertNotIn("cid:logo.1@cid.test", html)
        self.assertRegex(html, r'<img src="https://storage\.fake/\d+/[^"]+">')
        with ghl.lock:
            mine = [u for u in ghl.uploads[before:] if u[1] == png]
        self.assertEqual(len(mine), 1)
        self.assertEqual(hits[0]["attachments"], [re.search(r'src="([^"]+)"', html).group(1)])

    def test_reply_from_another_sender(self):
        # a Cc'd colleague answers in bob's thread: HighLevel's
        # conversations are per contact, so by default it goes to carol's
        # own conversation, not threaded under bob's email
        mid = outbound()
        orig = wait_for("bob", mid)
        r = reply_to(orig, "I can help too", sender="Carol <carol@mail.test>")
        send_mail(r, [email.utils.parseaddr(orig["Reply-To"])[1]], sender="carol@mail.test")
        hits = posted(lambda b: b.get("altId") == r["Message-ID"])
        self.assertEqual(len(hits), 1)
        self.assertNotIn("emailMessageId", hits[0])
        self.assertEqual(hits[0]["contactId"], ghl.contacts[("LIn", "carol@mail.test")])
        self.assertNotEqual(hits[0]["contactId"], "c-bob")
        # and bob's own reply still threads
        r2 = reply_to(orig, "me again")
        send_mail(r2, [email.utils.parseaddr(orig["Reply-To"])[1]])
        hits = posted(lambda b: b.get("altId") == r2["Message-ID"])
        self.assertEqual(len(hits), 1)
        self.assertEqual((hits[0]["emailMessageId"], hits[0]["contactId"]), (mid, "c-bob"))

    def test_reply_by_plus_address_only(self):
        mid = outbound()
        orig = wait_for("bob", mid)
        # the watched mailbox's own plus address (no alias needed)
        self.assertRegex(orig["Reply-To"], r"^support\+[0-9a-f]{16}@mail\.test$")
        r = reply_to(orig, "Replying from a client that drops In-Reply-To", keep_threading=False)
        send_mail(r, [orig["Reply-To"]])
        hits = posted(lambda b: b.get("altId") == r["Message-ID"])
        self.assertEqual(len(hits), 1)
        self.assertEqual(hits[0]["emailMessageId"], mid)

    def test_fresh_email_creates_contact_and_thread(self):
        m = email.message.EmailMessage()
        m["From"] = "Dana Newcomer <dana@elsewhere.test>"
        m["To"] = "support@mail.test"
        m["Subject"] = "Question about pricing"
        m["Message-ID"] = email.utils.make_msgid(domain="elsewhere.test")
        m["Date"] = email.utils.formatdate()
        m.set_content("Hi, how much is it?")
        send_mail(m, ["support@mail.test"], sender="dana@elsewhere.test")
        hits = posted(lambda b: b.get("altId") == m["Message-ID"])
        self.assertEqual(len(hits), 1)
        b = hits[0]
        self.assertNotIn("emailMessageId", b)
        upserts = [json.loads(r["body"]) for r in ghl.calls("POST", "^/contacts/upsert$")]
        self.assertTrue(any(u["email"] == "dana@elsewhere.test" and u["name"] == "Dana Newcomer" for u in upserts))
        self.assertTrue(ghl.calls("POST", "^/conversations/$"))
        self.assertEqual(b["message"].strip(), "Hi, how much is it?")

    def test_custom_mode_alt_id_round_trip(self):
        mid = outbound(location="LCust", to="bob@mail.test")
        orig = wait_for("bob", mid)
        self.assertIn("@client.test", orig["Reply-To"])
        r = reply_to(orig, "Custom channel reply")
        send_mail(r, [orig["Reply-To"]])
        hits = posted(lambda b: b.get("altId") == r["Message-ID"])
        self.assertEqual(len(hits), 1)
        self.assertEqual(hits[0]["type"], "Custom")
        self.assertEqual(hits[0]["conversationProviderId"], "prov-custom")
        wait_recorded("LCust", r["Message-ID"])
        # HighLevel echoes altId back as replyToAltId on the next reply
        mid2 = outbound(location="LCust", replyToAltId=r["Message-ID"], subject="Re: Re: Your ticket")
        second = wait_for("bob", mid2)
        self.assertEqual(second["In-Reply-To"], r["Message-ID"])
        self.assertIn(orig["Message-ID"], second["References"])

    def test_custom_location_on_a_shared_domain(self):
        """A custom-mode location whose mailbox is sales@ on a domain another
        location uses, with no alias anywhere: its replies and DSNs come back
        plus-addressed to sales@ and are its own."""
        mid = outbound(location="LSales", to="bob@mail.test")
        orig = wait_for("bob", mid)
        rt = email.utils.parseaddr(orig["Reply-To"])[1]
        self.assertRegex(rt, r"^sales\+[0-9a-f]{16}@mail\.test$")
        self.assertRegex(orig["Return-Path"], r"^<sales\+b[0-9a-f]{16}@mail\.test>$")
        # the success DSN (delivered_on = dsn) lands in sales@ and is matched by its token
        end = time.time() + 30
        while time.time() < end and not statuses(mid):
            time.sleep(0.1)
        self.assertEqual([s["status"] for s in statuses(mid)], ["delivered"], d.log()[-3000:])
        # a reply from a client that drops In-Reply-To: the token alone threads it
        r = reply_to(orig, "Sales reply, with no alias set up", keep_threading=False)
        send_mail(r, [rt])
        hits = posted(lambda b: b.get("altId") == r["Message-ID"], timeout=20)
        self.assertEqual(len(hits), 1, d.log()[-3000:])
        self.assertEqual((hits[0]["type"], hits[0]["conversationProviderId"]), ("Custom", "prov-sales"))
        self.assertEqual(hits[0]["message"].strip(), "Sales reply, with no alias set up")
        wait_recorded("LSales", r["Message-ID"])
        with d.db() as c:
            rows = c.execute("SELECT location_id FROM inbound_seen WHERE dedupe_key=?",
                             (r["Message-ID"].strip("<>"),)).fetchall()
        self.assertEqual([x[0] for x in rows], ["LSales"])   # not LIn's, though LIn is on mail.test too

    def arf(self, orig, reply_to):
        """A feedback-loop complaint (RFC 5965) returning orig's headers."""
        return (f"From: Yahoo Feedback <feedback@fbl.test>\r\nTo: support@mail.test\r\nSubject: FW: abuse report\r\n"
                f"Message-ID: {email.utils.make_msgid(domain='fbl.test')}\r\nMIME-Version: 1.0\r\n"
                "Content-Type: multipart/report; report-type=feedback-report; boundary=\"arf\"\r\n\r\n"
                "--arf\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n"
                "--arf\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n"
                "User-Agent: Yahoo!-Mail-Feedback/2.0\r\nVersion: 1\r\nOriginal-Rcpt-To: bob@mail.test\r\n\r\n"
                "--arf\r\nContent-Type: text/rfc822-headers\r\n\r\n"
                f"From: {orig['From']}\r\nTo: bob@mail.test\r\nSubject: {orig['Subject']}\r\n"
                f"Message-ID: {orig['Message-ID']}\r\nReply-To: {reply_to}\r\n\r\n--arf--\r\n").encode()

    def test_complaint_arf_sets_dnd_and_is_not_posted(self):
        mid = outbound(to="bob@mail.test", contactId="c-arf")
        orig = wait_for("bob", mid)
        # a forged report: the returned headers lack the message's reply token
        forged = self.arf(orig, "support+" + "0" * 16 + "@mail.test")
        append("support", forged)
        real = self.arf(orig, orig["Reply-To"])
        append("support", real)
        end = time.time() + 30
        while time.time() < end and not [c for c, b in ghl.contact_updates if c == "c-arf"]:
            time.sleep(0.1)
        got = [b for c, b in ghl.contact_updates if c == "c-arf"]
        self.assertEqual(len(got), 1, d.log()[-3000:])
        self.assertEqual(got[0]["dndSettings"]["Email"]["status"], "active")
        out = d.cli("inbound", "list").stdout
        self.assertIn("complaint (ARF): the contact's Email DND is set", out)
        self.assertIn("complaint (ARF) whose returned message does not carry its reply address", out)
        # neither report is posted as a message from Yahoo
        time.sleep(1)
        self.assertEqual(posted(lambda b: "fbl.test" in (b.get("emailFrom") or "") or
                                "abuse report" in (b.get("subject") or ""), timeout=0), [])

    def test_unsubscribe_by_mail(self):
        mid = outbound(to="bob@mail.test")
        orig = wait_for("bob", mid)
        mailto = re.search(r"<mailto:([^>]+)>", orig["List-Unsubscribe"]).group(1)
        self.assertRegex(mailto, r"^support\+u[0-9a-f]{32}@mail\.test$")
        req = email.message.EmailMessage()
        req["From"] = "Bob Builder <bob@mail.test>"
        req["To"] = mailto
        req["Subject"] = "unsubscribe"
        req["Message-ID"] = email.utils.make_msgid(domain="mail.test")
        req.set_content("")
        send_mail(req, [mailto])
        end = time.time() + 30
        while time.time() < end and not [c for c, b in ghl.contact_updates if c == "c-bob"]:
            time.sleep(0.1)
        got = [b for c, b in ghl.contact_updates if c == "c-bob"]
        self.assertEqual(len(got), 1, d.log()[-3000:])
        self.assertEqual(got[0]["dndSettings"]["Email"]["status"], "active")
        # a request, never a reply: not posted, recorded with why
        self.assertEqual(posted(lambda b: b.get("altId") == req["Message-ID"], timeout=1), [])
        self.assertIn("unsubscribe request (mailto)", d.cli("inbound", "list").stdout)

    def test_success_dsn_reports_delivered(self):
        mid = outbound(to="alice@mail.test")
        end = time.time() + 20
        while time.time() < end and not statuses(mid):
            time.sleep(0.1)
        st = statuses(mid)
        self.assertEqual([s["status"] for s in st], ["delivered"], "\n".join(d.log().splitlines()[-20:]))
        self.assertEqual(d.job(mid)["state"], "sent")

    def test_bounce_reports_failed_not_inbound(self):
        mid = outbound(to="ghost@mail.test")
        end = time.time() + 30
        while time.time() < end and not statuses(mid):
            time.sleep(0.1)
        st = statuses(mid)
        self.assertEqual([s["status"] for s in st], ["failed"], st)
        self.assertIn("ghost@mail.test", st[0]["error"]["message"])
        self.assertEqual(st[0]["error"]["code"], "550")
        self.assertFalse([b for b in ghl.inbound if "ghost" in json.dumps(b)], "a DSN is never an inbound message")

    def test_charsets(self):
        cases = [("iso-8859-1", "Grüße aus München, ½ Preis"), ("windows-1252", "Smart “quotes” – and € sign"),
                 ("shift_jis", "日本語のテキストです")]
        for charset, text in cases:
            with self.subTest(charset=charset):
                msgid = email.utils.make_msgid(domain="cs.test")
                raw = (f"From: Charset Tester <cs@cs.test>\r\nTo: support@mail.test\r\nSubject: {charset}\r\n"
                       f"Message-ID: {msgid}\r\nMIME-Version: 1.0\r\n"
                       f"Content-Type: text/plain; charset={charset}\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                       ).encode() + text.encode(charset) + b"\r\n"
                append("support", raw)
                hits = posted(lambda b: b.get("altId") == msgid)
                self.assertEqual(len(hits), 1)
                self.assertEqual(hits[0]["message"].strip(), text)

    def test_body_bytes_pass_the_imap_filter_untouched(self):
        # netstream rewrites "[PERMANENTFLAGS" in IMAP responses (a libetpan
        # crash); inside a literal, i.e. a message body, nothing may change
        msgid = email.utils.make_msgid(domain="lit.test")
        text = "See [PERMANENTFLAGS (\\Seen \\)] and {12}\r\n[PERMANENTFLAGS too, C:\\ dir"
        raw = (f"From: lit@lit.test\r\nTo: support@mail.test\r\nSubject: literal\r\nMessage-ID: {msgid}\r\n"
               "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text + "\r\n").encode()
        append("support", raw)
        hits = posted(lambda b: b.get("altId") == msgid)
        self.assertEqual(len(hits), 1)
        self.assertEqual(hits[0]["message"].strip(), text)

    def test_undeclared_latin1_falls_back(self):
        msgid = email.utils.make_msgid(domain="cs.test")
        raw = (f"From: cs@cs.test\r\nTo: support@mail.test\r\nSubject: no charset\r\nMessage-ID: {msgid}\r\n"
               "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n").encode() + "café crème".encode("latin-1")
        append("support", raw)
        hits = posted(lambda b: b.get("altId") == msgid)
        self.assertEqual(len(hits), 1)
        self.assertEqual(hits[0]["message"].strip(), "café crème")

    def test_html_only_and_quote_containers(self):
        msgid = email.utils.make_msgid(domain="h.test")
        html = ('<div dir="ltr">New answer here</div><div class="gmail_quote"><div>On Mon wrote:</div>'
                '<blockquote>old text</blockquote></div>')
        raw = (f"From: h@h.test\r\nTo: support@mail.test\r\nSubject: html\r\nMessage-ID: {msgid}\r\n"
               f"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n").encode()
        append("support", raw)
        hits = posted(lambda b: b.get("altId") == msgid)
        self.assertEqual(len(hits), 1)
        self.assertEqual(hits[0]["message"].strip(), "New answer here")
        self.assertIn("gmail_quote", hits[0]["html"])

    def test_broken_mime_is_handled(self):
        msgid = email.utils.make_msgid(domain="b.test")
        raw = (f"From: b@b.test\r\nTo: support@mail.test\r\nSubject: broken\r\nMessage-ID: {msgid}\r\n"
               "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n"
               "--XX\r\nContent-Type: text/plain\r\n\r\nvisible text\r\n--XX\r\nContent-Type: application/pdf\r\n"
               "Content-Transfer-Encoding: base64\r\n\r\n!!!not base64***\r\n").encode()   # no closing boundary
        append("support", raw)
        hits = posted(lambda b: b.get("altId") == msgid)
        self.assertEqual(len(hits), 1)
        self.assertIn("visible text", hits[0]["message"])
        # the watcher is still alive afterwards
        msgid2 = email.utils.make_msgid(domain="b.test")
        append("support", f"From: b@b.test\r\nSubject: after\r\nMessage-ID: {msgid2}\r\n\r\nfine\r\n".encode())
        self.assertEqual(len(posted(lambda b: b.get("altId") == msgid2)), 1)

    def test_attachments_uploaded(self):
        m = email.message.EmailMessage()
        m["From"] = "files@f.test"
        m["To"] = "support@mail.test"
        m["Subject"] = "with files"
        m["Message-ID"] = email.utils.make_msgid(domain="f.test")
        m.set_content("see attached")
        pdf = os.urandom(300 * 1024)
        m.add_attachment(pdf, maintype="application", subtype="pdf", filename="quote.pdf")
        append("support", m.as_bytes())
        hits = posted(lambda b: b.get("altId") == m["Message-ID"])
        self.assertEqual(len(hits), 1)
        self.assertEqual(len(hits[0]["attachments"]), 1)
        self.assertIn("quote.pdf", hits[0]["attachments"][0])
        self.assertIn(("quote.pdf", pdf), ghl.uploads)

    def test_large_attachment_20mb(self):
        m = email.message.EmailMessage()
        m["From"] = "big@f.test"
        m["To"] = "support@mail.test"
        m["Subject"] = "big file"
        m["Message-ID"] = email.utils.make_msgid(domain="f.test")
        m.set_content("20 MB attached")
        big = os.urandom(20 * 1024 * 1024)
        m.add_attachment(big, maintype="application", subtype="zip", filename="big.zip")
        append("support", m.as_bytes())
        hits = posted(lambda b: b.get("altId") == m["Message-ID"], timeout=60)
        self.assertEqual(len(hits), 1)
        self.assertTrue(any(f == "big.zip" and data == big for f, data in ghl.uploads))

    def test_refused_attachment_is_named(self):
        ghl.fail(r"/messages/upload$", 415, count=1, body={"status": 415, "message": "Unsupported file type"})
        m = email.message.EmailMessage()
        m["From"] = "exe@f.test"
        m["To"] = "support@mail.test"
        m["Subject"] = "program"
        m["Message-ID"] = email.utils.make_msgid(domain="f.test")
        m.set_content("here is a program")
        m.add_attachment(b"MZ\x90\x00", maintype="application", subtype="octet-stream", filename="tool.exe")
        append("support", m.as_bytes())
        hits = posted(lambda b: b.get("altId") == m["Message-ID"])
        self.assertEqual(len(hits), 1)
        self.assertIn("tool.exe", hits[0]["message"])
        self.assertIn("not accepted", hits[0]["message"])

    def test_refused_file_does_not_sink_its_neighbour(self):
        # the first upload (the .exe) is refused; the PDF beside it still goes
        ghl.fail(r"/messages/upload$", 415, count=1, body={"status": 415, "message": "Unsupported file type"})
        pdf = b"%PDF-1.4 neighbour " + os.urandom(64)
        m = email.message.EmailMessage()
        m["From"] = "two@f.test"
        m["To"] = "support@mail.test"
        m["Subject"] = "two files"
        m["Message-ID"] = email.utils.make_msgid(domain="f.test")
        m.set_content("a program and a quote")
        m.add_attachment(b"MZ\x90\x00", maintype="application", subtype="octet-stream", filename="tool2.exe")
        m.add_attachment(pdf, maintype="application", subtype="pdf", filename="quote2.pdf")
        append("support", m.as_bytes())
        hits = posted(lambda b: b.get("altId") == m["Message-ID"])
        self.assertEqual(len(hits), 1)
        self.assertIn("tool2.exe", hits[0]["message"])
        self.assertNotIn("quote2.pdf", hits[0]["message"])
        self.assertEqual(len(hits[0]["attachments"]), 1)
        self.assertIn("quote2.pdf", hits[0]["attachments"][0])
        self.assertIn(("quote2.pdf", pdf), ghl.uploads)

    def test_forwarded_message_goes_as_eml(self):
        inner = email.message.EmailMessage()
        inner["From"] = "Carol <carol@f.test>"
        inner["Subject"] = "Quote 42"
        inner.set_content("the original")
        inner.add_attachment(b"%PDF-1.4 inner", maintype="application", subtype="pdf", filename="inner.pdf")
        m = email.message.EmailMessage()
        m["From"] = "fwd@f.test"
        m["To"] = "support@mail.test"
        m["Subject"] = "Fwd: Quote 42"
        m["Message-ID"] = email.utils.make_msgid(domain="f.test")
        m.set_content("see the forwarded mail")
        m.add_attachment(inner)
        append("support", m.as_bytes())
        hits = posted(lambda b: b.get("altId") == m["Message-ID"])
        self.assertEqual(len(hits), 1)
        self.assertIn("Forwarded message: Quote 42 from Carol <carol@f.test>", hits[0]["message"])
        eml = [data for name, data in ghl.uploads if name == "forwarded1.eml"]
        self.assertTrue(eml and b"inner.pdf" in eml[-1], ghl.uploads[-3:])

    def test_metrics_count_the_mailboxes(self):
        msgid = email.utils.make_msgid(domain="metrics.test")
        append("support", f"From: m@metrics.test\r\nSubject: m\r\nMessage-ID: {msgid}\r\n\r\ntimed\r\n".encode())
        self.assertEqual(len(posted(lambda b: b.get("altId") == msgid)), 1)
        # registered by the watcher's owner (mailboxes.c), not read by metrics.c
        st, body, _ = d.request("GET", "/metrics")
        self.assertEqual(st, 200)
        text = body.decode()
        self.assertIn('mailbridge_imap_mailboxes{state="configured"} 4\n', text)
        self.assertRegex(text, r'mailbridge_imap_mailboxes\{state="connected"\} [0-4]\n')
        self.assertLess(text.index("mailbridge_highlevel_requests_today"), text.index("mailbridge_imap_mailboxes"))
        self.assertRegex(text, r'\nmailbridge_inbound_spooled \d+\n')
        # every reply posted so far was timed from its reading to its post
        # (the two are counted one after the other: a scrape may fall between)
        end = time.time() + 5
        while True:
            text = d.request("GET", "/metrics")[1].decode()
            n_posted = float(re.search(r'mailbridge_inbound_total\{result="posted"\} (\d+)', text).group(1))
            count = float(re.search(r'\nmailbridge_reply_to_post_seconds_count (\d+)', text).group(1))
            if count == n_posted or time.time() > end:
                break
            time.sleep(0.05)
        self.assertGreater(n_posted, 0)
        self.assertEqual(count, n_posted)
        self.assertRegex(text, r'mailbridge_reply_to_post_seconds_bucket\{le="0.5"\} \d+\n')

    def test_auto_reply_is_marked(self):
        msgid = email.utils.make_msgid(domain="ooo.test")
        append("support", (f"From: ooo@ooo.test\r\nTo: support@mail.test\r\nSubject: Out of office\r\n"
                           f"Auto-Submitted: auto-replied\r\nMessage-ID: {msgid}\r\n\r\nI am away.\r\n").encode())
        hits = posted(lambda b: b.get("altId") == msgid)
        self.assertEqual(len(hits), 1)
        self.assertTrue(hits[0]["message"].startswith("(auto-reply)"))

    def test_own_address_is_ignored(self):
        msgid = email.utils.make_msgid(domain="mail.test")
        append("support", (f"From: Acme Support <support@mail.test>\r\nTo: bob@mail.test\r\nSubject: mine\r\n"
                           f"Message-ID: {msgid}\r\n\r\nour own copy\r\n").encode())
        marker = email.utils.make_msgid(domain="mark.test")
        append("support", f"From: m@mark.test\r\nSubject: marker\r\nMessage-ID: {marker}\r\n\r\nx\r\n".encode())
        self.assertEqual(len(posted(lambda b: b.get("altId") == marker)), 1)
        self.assertEqual(posted(lambda b: b.get("altId") == msgid, timeout=0.5), [])

    def test_slow_highlevel_does_not_hold_the_reader(self):
        # posting happens off the IMAP threads: the mailbox's mark passes a
        # message once it is spooled (durably), while HighLevel still
        # holds the post; the post then lands once
        def mark():
            with d.db() as c:
                row = c.execute("SELECT last_uid FROM imap_checkpoints WHERE account='LIn'").fetchone()
            return row[0] if row else 0
        msgid = email.utils.make_msgid(domain="slow.test")
        before = mark()
        with ghl.lock:
            ghl.delays.append([re.compile(r"/messages/inbound$"), 8])
        try:
            append("support", f"From: s@slow.test\r\nSubject: slow\r\nMessage-ID: {msgid}\r\n\r\nwait\r\n".encode())
            end = time.time() + 8
            while mark() <= before and not posted(lambda b: b.get("altId") == msgid, timeout=0) and time.time() < end:
                time.sleep(0.05)
            self.assertGreater(mark(), before, "the mark did not pass the message")
            self.assertEqual(posted(lambda b: b.get("altId") == msgid, timeout=0), [],
                             "the mark waited for HighLevel's answer")
        finally:
            with ghl.lock:
                ghl.delays = [x for x in ghl.delays if x[0].pattern != r"/messages/inbound$"]
        self.assertEqual(len(posted(lambda b: b.get("altId") == msgid, timeout=30)), 1)

    def test_inbound_429_then_posted_once(self):
        ghl.fail(r"/messages/inbound$", 429, count=1)
        msgid = email.utils.make_msgid(domain="rl.test")
        append("support", f"From: rl@rl.test\r\nSubject: rl\r\nMessage-ID: {msgid}\r\n\r\nretry me\r\n".encode())
        hits = posted(lambda b: b.get("altId") == msgid, timeout=40)
        self.assertEqual(len(hits), 1)

    def test_inbound_4xx_recorded_failed_and_retryable(self):
        ghl.fail(r"/messages/inbound$", 422, count=1, body={"statusCode": 422, "message": ["bad thing"]})
        msgid = email.utils.make_msgid(domain="f4.test")
        append("support", f"From: f4@f4.test\r\nSubject: f4\r\nMessage-ID: {msgid}\r\n\r\nfails once\r\n".encode())
        end = time.time() + 10
        out = ""
        while time.time() < end:
            out = d.cli("inbound", "list").stdout
            if msgid.strip("<>") in out and "failed" in out:
                break
            time.sleep(0.1)
        self.assertIn("bad thing", out)
        self.assertEqual(posted(lambda b: b.get("altId") == msgid, timeout=0.5), [])
        r = d.cli("inbound", "retry", "LIn", msgid.strip("<>"))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(len(posted(lambda b: b.get("altId") == msgid)), 1)

    def test_polling_mailbox_and_move_after(self):
        self.assertRegex(d.log(), r"locationId=LPoll connected \S+ idle=no")
        msgid = email.utils.make_msgid(domain="poll.test")
        append("alice", f"From: p@poll.test\r\nSubject: p\r\nMessage-ID: {msgid}\r\n\r\npolled\r\n".encode())
        hits = posted(lambda b: b.get("altId") == msgid, timeout=10)
        self.assertEqual(len(hits), 1)
        time.sleep(0.5)
        with imaplib.IMAP4("127.0.0.1", srv.imap, timeout=10) as m:
            m.login("alice", "alicepw")
            m.select("INBOX")
            self.assertEqual(m.search(None, "HEADER", "Message-ID", msgid)[1], [b""])
            m.select("Done")
            self.assertNotEqual(m.search(None, "HEADER", "Message-ID", msgid)[1], [b""])

    def test_processed_messages_are_seen(self):
        msgid = email.utils.make_msgid(domain="seen.test")
        append("support", f"From: s@seen.test\r\nSubject: s\r\nMessage-ID: {msgid}\r\n\r\nflag me\r\n".encode())
        self.assertEqual(len(posted(lambda b: b.get("altId") == msgid)), 1)
        time.sleep(0.3)
        with imaplib.IMAP4("127.0.0.1", srv.imap, timeout=10) as m:
            m.login("support", "supportpw")
            m.select("INBOX", readonly=True)
            num = m.search(None, "HEADER", "Message-ID", msgid)[1][0].split()
            self.assertEqual(len(num), 1)
            self.assertIn(b"\\Seen", m.fetch(num[0], "(FLAGS)")[1][0])

    def test_zz_contract(self):
        self.assertEqual(ghl.spec_errors, [])


class TestZRestarts(unittest.TestCase):
    """Runs last: restarts servers and the daemon."""

    def test_accounts_shows_watchers(self):
        out = d.cli("accounts").stdout
        self.assertRegex(out, r"LIn\s+default\s+static \(config\)\s+yes\s+(\S+: )?idling since")
        self.assertRegex(out, r"LCust\s+custom\s+static \(config\)\s+yes\s+(\S+: )?idling since")
        if d.pg:
            # several instances may share the store: the one reading it is named
            self.assertRegex(out, r"LIn\s+.*yes\s+\S+:\d+: idling since")

    def test_uninstall_stops_the_watcher(self):
        st, body = d.post_webhook({"type": "UNINSTALL", "appId": "a", "locationId": "LCust"}, path="/webhooks/app")
        self.assertEqual((st, body["status"]), (200, "ok"))
        end = time.time() + 20
        while time.time() < end and "watcher stopped: app uninstalled" not in d.log():
            time.sleep(0.1)
        self.assertIn("locationId=LCust watcher stopped: app uninstalled", d.log())
        self.assertRegex(d.cli("accounts").stdout, r"LCust\s+custom\s+uninstalled\s+yes\s+(\S+: )?stopped since .*app uninstalled")
        msgid = email.utils.make_msgid(domain="gone.test")
        append("carol", f"From: g@gone.test\r\nSubject: g\r\nMessage-ID: {msgid}\r\n\r\nx\r\n".encode())
        self.assertEqual(posted(lambda b: b.get("altId") == msgid, timeout=2), [])

    def test_dovecot_restart_mid_idle(self):
        srv.stop_dovecot()
        m = email.message.EmailMessage()
        m["From"] = "late@l.test"
        m["To"] = "support@mail.test"
        m["Subject"] = "sent while Dovecot was down"
        m["Message-ID"] = email.utils.make_msgid(domain="l.test")
        m.set_content("queued by Postfix meanwhile")
        send_mail(m, ["support@mail.test"], sender="late@l.test")
        time.sleep(1.0)
        srv.start_dovecot()
        # the watchers back off up to 4-8 s by now, Postfix up to 5 s, and
        # under valgrind every TLS login is slow: allow a minute (two under
        # valgrind: once, beside fuzz_smoke under ctest -j2, one was not enough)
        hits = posted(lambda b: b.get("altId") == m["Message-ID"],
                      timeout=120 if os.environ.get("MB_VALGRIND") else 60)
        self.assertEqual(len(hits), 1, d.log()[-6000:] + "\n--- Postfix:\n" + srv.maillog()[-3000:])
        time.sleep(2.0)
        self.assertEqual(len(posted(lambda b: b.get("altId") == m["Message-ID"])), 1)

    def test_kill9_mid_batch(self):
        ids = []
        for i in range(15):
            msgid = email.utils.make_msgid(domain="k.test")
            ids.append(msgid)
            append("support", f"From: k{i}@k.test\r\nSubject: k{i}\r\nMessage-ID: {msgid}\r\n\r\nbatch {i}\r\n".encode())
        time.sleep(0.3)
        d.kill9()
        d.start()
        for msgid in ids:
            self.assertGreaterEqual(len(posted(lambda b, m=msgid: b.get("altId") == m, timeout=30)), 1, msgid)
        time.sleep(1.5)
        dups = sum(len(posted(lambda b, m=m: b.get("altId") == m, timeout=0)) - 1 for m in ids)
        self.assertLessEqual(dups, d.log().count("was being posted when mailbridge stopped"))

    def test_uidvalidity_change_no_duplicates(self):
        msgid = email.utils.make_msgid(domain="u.test")
        append("support", f"From: u@u.test\r\nSubject: u\r\nMessage-ID: {msgid}\r\n\r\nbefore\r\n".encode())
        self.assertEqual(len(posted(lambda b: b.get("altId") == msgid)), 1)
        rc = d.stop()
        self.assertEqual(rc, 0)
        # while mailbridge is down: one new reply, and one that arrived 60
        # days ago and is not in the dedupe table (as if pruned after the
        # 30-day keep_days): the rescan must post the first, not the second
        missed = email.utils.make_msgid(domain="u.test")
        append("support", f"From: u@u.test\r\nSubject: m\r\nMessage-ID: {missed}\r\n\r\nmissed\r\n".encode())
        ancient = email.utils.make_msgid(domain="u.test")
        append("support", f"From: u@u.test\r\nSubject: a\r\nMessage-ID: {ancient}\r\n\r\nold\r\n".encode(),
               when=time.time() - 60 * 86400)
        srv.stop_dovecot()
        maildir = os.path.join(srv.dovecot_dir, "mail", "support", "Maildir")
        for name in os.listdir(maildir):   # without its index and uidlist Dovecot starts a new UIDVALIDITY
            if name.startswith("dovecot-uidlist") or name.startswith("dovecot.index") or name == "dovecot-uidvalidity":
                os.unlink(os.path.join(maildir, name))
            elif name.startswith("dovecot-uidvalidity."):
                os.unlink(os.path.join(maildir, name))
        time.sleep(1.1)   # UIDVALIDITY is a timestamp: make sure it differs
        srv.start_dovecot()
        d.start()
        after = email.utils.make_msgid(domain="u.test")
        append("support", f"From: u@u.test\r\nSubject: u2\r\nMessage-ID: {after}\r\n\r\nafter\r\n".encode())
        # a restart, a new UIDVALIDITY and its rescan first: under valgrind,
        # beside other suites (ctest -j2), that once took longer than 45 s
        self.assertEqual(len(posted(lambda b: b.get("altId") == after,
                                    timeout=120 if os.environ.get("MB_VALGRIND") else 45)), 1)
        self.assertIn("UIDVALIDITY changed", d.log())
        self.assertEqual(len(posted(lambda b: b.get("altId") == msgid)), 1)
        self.assertEqual(len(posted(lambda b: b.get("altId") == missed)), 1)
        self.assertEqual(posted(lambda b: b.get("altId") == ancient, timeout=0), [], d.log()[-3000:])


class ReplyBurst(unittest.TestCase):
    """Replies to one location faster than HighLevel's window lets them be
    posted: our own limiter holds each until the window has room, and the
    spool takes it again then, not after a failure's backoff (which grew to
    minutes: a burst of replies waited up to 15 min in a soak)."""

    def test_full_window_is_a_wait_not_a_failure(self):
        loc = location_conf("LBurst", **{"from": "Burst <burst@mail.test>", "smtp_host": "127.0.0.1",
                                        "smtp_port": srv.smtp, "smtp_tls": "none", "token": TOKEN,
                                        "imap_host": "127.0.0.1", "imap_port": srv.imap, "imap_tls": "none",
                                        "imap_user": "burst", "imap_password": "burstpw",
                                        "provider_id": "prov-burst"})
        # 10 calls in 2 s: 20 replies (a contact search or upsert and the
        # post each) need about 8 s of windows
        d2 = Daemon(BASE + 80, ghl.url, [loc], extra_highlevel="rate_limit = 10\nrate_window = 2\n")
        self.addCleanup(d2.cleanup)
        d2.start()
        end = time.time() + 30
        while time.time() < end and "imap: locationId=LBurst connected" not in d2.log():
            time.sleep(0.05)
        ids = [email.utils.make_msgid(domain="burst.test") for _ in range(20)]
        t0 = time.time()
        for i, msgid in enumerate(ids):
            append("burst", f"From: Fan <fan@burst.test>\r\nTo: burst@mail.test\r\nSubject: b{i}\r\n"
                   f"Message-ID: {msgid}\r\n\r\nreply {i}\r\n".encode())
        end = time.time() + (120 if VALGRIND else 40)
        while time.time() < end and len(posted(lambda b: b.get("altId") in ids, timeout=0)) < len(ids):
            time.sleep(0.1)
        took = time.time() - t0
        hits = posted(lambda b: b.get("altId") in ids, timeout=1)
        print(f"\n[inbound] 20 replies through a 10-per-2-s window in {took:.1f} s", flush=True)
        self.assertEqual(sorted(b["altId"] for b in hits), sorted(ids), d2.log()[-3000:])
        # all within a few windows, not a failure's backoff (5, 10, 20, 40 s
        # ...); under valgrind the parsing alone takes longer than that
        if not VALGRIND:
            self.assertLess(took, 25)
        self.assertNotIn("will retry locationId=LBurst", d2.log())
        self.assertEqual(ghl.spec_errors, [])
        self.assertEqual(d2.stop(), 0)


class TlsResumption(unittest.TestCase):
    """A restart's many logins to one server resume the TLS session the
    first one got, where the server keeps its tickets valid (Dovecot's
    high-performance login mode, as big providers do), and still read
    mail through it."""

    def test_later_logins_resume(self):
        users = [f"tr{i}" for i in range(6)]
        s2 = MailServers(BASE + 60, extra_users=users, login_reuse=True).start()
        self.addCleanup(s2.stop)
        locs = [location_conf(f"LTr{i}", **{"from": f"{u} <{u}@mail.test>", "smtp_host": "127.0.0.1",
                                            "smtp_port": s2.smtp, "smtp_tls": "none", "token": TOKEN,
                                            "imap_host": "127.0.0.1", "imap_port": s2.imaps, "imap_tls": "tls",
                                            "imap_ca_file": s2.cert, "imap_user": u, "imap_password": u + "pw"})
                for i, u in enumerate(users)]
        # a login a second: the first session's ticket is in before the next,
        # under valgrind too
        d2 = Daemon(BASE + 70, ghl.url, locs, extra_server="imap_connect_rate = 1\n")
        self.addCleanup(d2.cleanup)
        d2.start()
        end = time.time() + 60
        while time.time() < end and len(re.findall(r"imap: locationId=LTr\d connected", d2.log())) < len(users):
            time.sleep(0.05)
        self.assertEqual(len(set(re.findall(r"imap: locationId=(LTr\d) connected", d2.log()))), len(users),
                         d2.log()[-3000:])
        # the first login is a full handshake; the later ones resume
        self.assertGreaterEqual(d2.log().count("TLS: session with 127.0.0.1 resumed"), len(users) - 2,
                                d2.log()[-3000:])
        # a resumed connection carries mail as any other
        msgid = email.utils.make_msgid(domain="tr.test")
        with imaplib.IMAP4("127.0.0.1", s2.imap, timeout=10) as m:
            m.login(users[-1], users[-1] + "pw")
            m.append("INBOX", None, None, f"From: t@tr.test\r\nTo: {users[-1]}@mail.test\r\nSubject: r\r\n"
                     f"Message-ID: {msgid}\r\n\r\nover a resumed session\r\n".encode())
        self.assertEqual(len(posted(lambda b: b.get("altId") == msgid, timeout=30)), 1, d2.log()[-3000:])
        d2.stop()


if __name__ == "__main__":
    unittest.main()
