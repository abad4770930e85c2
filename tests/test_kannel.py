"""The kannel plugin against real Kannel (bearerbox + smsbox + Kannel's
fake SMSC): an SMS webhook reaches the phone network with the right
number and text, the DLR becomes a delivered status, Unicode goes as
UCS-2, an MO message becomes an inbound SMS threaded to its contact, and
Kannel down means retried, then failed after the queue lifetime."""
import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness.daemon import Daemon, location_conf, stop_all  # noqa: E402
from harness.fakeghl import FakeGHL  # noqa: E402
from harness.kannel import FAKESMSC, Kannel  # noqa: E402

BASE = int(os.environ.get("MB_TEST_PORT_BASE", "21000")) + 900
PLUGIN_DIR = os.path.abspath(os.environ.get("MB_PLUGIN_DIR", os.path.join(os.path.dirname(__file__), "..", "build", "plugins")))
DAEMON_PORT = BASE + 50
SECRET = "kannel-" + os.urandom(8).hex()


def setUpModule():
    global ghl, d, kannel
    if not os.path.exists(FAKESMSC):
        raise unittest.SkipTest("kannel-extras is not installed")
    ghl = FakeGHL()
    ghl.static_tokens.add("tok")
    # Kannel's get-url carries the plugin's secret, as an operator sets it
    kannel = Kannel(BASE, f"http://127.0.0.1:{DAEMON_PORT}/plugins/kannel/mo?secret={SECRET}",
                    mo_messages=["+15557654321 +15559990000 text Hello from my phone"])
    common = {"from": "K <k@sms.test>", "smtp_host": "127.0.0.1", "smtp_tls": "none", "token": "tok",
              "sms_provider_id": "smsprov"}
    d = Daemon(DAEMON_PORT, ghl.url, [location_conf("LKannel", sms="kannel", **common)],
               extra_store="max_lifetime = 4\n",
               extra_sections=(f"[plugins]\ndir = {PLUGIN_DIR}\nsend_timeout = 15\n\n[plugin kannel]\n"
                               f"sendsms_url = http://127.0.0.1:{kannel.sendsms}/cgi-bin/sendsms\n"
                               f"username = mb\npassword = mbpw\nmo_location = LKannel\nsecret = {SECRET}\n"))
    # the daemon first: Kannel sends its MO message once it is up, and a
    # slow daemon start (valgrind) would otherwise meet a refused connection
    d.start()
    kannel.start()


def tearDownModule():
    stop_all(d, ghl, kannel)


def sms(text, phone="+15550001111"):
    mid = "k" + os.urandom(6).hex()
    st, body = d.post_webhook({"type": "SMS", "locationId": "LKannel", "messageId": mid, "contactId": "c1",
                               "phone": phone, "message": text, "attachments": []})
    assert st == 200, (st, body)
    return mid


def statuses(mid):
    return [json.loads(r["body"]) for r in ghl.calls("PUT", f"/messages/{mid}/status")]


class TestKannel(unittest.TestCase):
    def test_a_mo_message_posted_as_inbound_sms(self):
        end = time.time() + 20
        hits = []
        while time.time() < end and not hits:
            with ghl.lock:
                hits = [b for b in ghl.inbound if b.get("type") == "SMS"]
            time.sleep(0.1)
        self.assertEqual(len(hits), 1, ghl.inbound)
        self.assertEqual(hits[0]["message"], "Hello from my phone")
        self.assertEqual(ghl.contacts[("LKannel", "+15557654321")], hits[0]["contactId"])

    def test_sms_reaches_the_network_and_dlr_reports_delivered(self):
        mid = sms("Your code is 1234")
        got = kannel.wait_received("Your code is 1234")
        self.assertEqual(len(got), 1)
        self.assertEqual(got[0][1], "+15550001111")
        end = time.time() + 15
        while time.time() < end and not statuses(mid):
            time.sleep(0.1)
        self.assertEqual([s["status"] for s in statuses(mid)], ["delivered"])

    def test_mms_attachment_urls_appended(self):
        mid = "k" + os.urandom(6).hex()
        st, body = d.post_webhook({"type": "SMS", "locationId": "LKannel", "messageId": mid, "contactId": "c1",
                                   "phone": "+15550001111", "message": "See the photo",
                                   "attachments": ["https://files.example/pic-" + mid + ".jpg"]})
        self.assertEqual(st, 200, body)
        # the fake SMSC reads the text line by line: the URL is its own line
        end = time.time() + 15
        out = ""
        while time.time() < end and "pic-" + mid not in out:
            with open(os.path.join(kannel.dir, "fakesmsc.out")) as f:
                out = f.read()
            time.sleep(0.1)
        self.assertIn("text See the photo>", out)
        self.assertIn("<https://files.example/pic-" + mid + ".jpg>", out)

    def test_unicode_goes_as_ucs2(self):
        import urllib.parse
        sms("Grüße ✓")

        def ucs2_texts():
            out = []
            for _, _, data in kannel.received():
                try:
                    out.append(urllib.parse.unquote_to_bytes(data.replace("+", "%20")).decode("utf-16-be"))
                except UnicodeDecodeError:
                    pass
            return out
        end = time.time() + 15
        while time.time() < end and "Grüße ✓" not in ucs2_texts():
            time.sleep(0.1)
        # the fake SMSC prints UCS-2 data form-encoded (+ for the 0x20 byte): big-endian units
        self.assertIn("Grüße ✓", ucs2_texts(), kannel.received())

    def test_forged_dlr_and_mo_refused(self):
        """Without the secret, a DLR cannot fail a message and an MO cannot
        post into a conversation; with it, a DLR still cannot touch an
        email (or any message that is not this plugin's)."""
        email = "e" + os.urandom(6).hex()
        st, body = d.post_webhook({"type": "Email", "locationId": "LKannel", "messageId": email, "contactId": "c1",
                                   "emailTo": ["a@sms.test"], "subject": "s", "html": "<p>x</p>", "attachments": []})
        self.assertEqual(st, 200, body)
        before = len(ghl.inbound)
        st, _, _ = d.request("GET", f"/plugins/kannel/dlr?id={email}&type=16")
        self.assertEqual(st, 401)
        st, _, _ = d.request("GET", "/plugins/kannel/mo?from=%2B15550002222&text=forged")
        self.assertEqual(st, 401)
        st, _, _ = d.request("GET", f"/plugins/kannel/dlr?id={email}&type=16&secret={SECRET}")
        self.assertEqual(st, 200)
        time.sleep(1)
        j = d.job(email)
        self.assertNotEqual(j["state"], "failed")
        self.assertIn(j["report_status"], (None, ""))
        self.assertEqual(statuses(email), [])
        self.assertIn(f"refused a status for messageId={email}", d.log())
        self.assertEqual(len(ghl.inbound), before)
        d.cli("queue", "drop", email)

    def test_z_kannel_down_retried_then_failed(self):
        kannel.stop_all()
        mid = sms("nobody home")
        j = d.wait_job(mid, lambda j: j["state"] == "failed", timeout=30)
        self.assertEqual(j["state"], "failed")
        self.assertGreaterEqual(j["attempts"], 2)
        self.assertIn("kannel unreachable", j["last_error"])
        end = time.time() + 10
        while time.time() < end and not statuses(mid):
            time.sleep(0.1)
        self.assertEqual(statuses(mid)[0]["status"], "failed")


if __name__ == "__main__":
    unittest.main()
