"""Call logs through the HighLevel client (`mailbridge call-log`): an
inbound call creates its caller's contact and posts type Call to
/inbound; an outbound call needs an existing contact and posts to
/outbound; every request checked against HighLevel's OpenAPI."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness.daemon import Daemon, location_conf  # noqa: E402
from harness.fakeghl import FakeGHL  # noqa: E402

BASE = int(os.environ.get("MB_TEST_PORT_BASE", "21000")) + 700


def setUpModule():
    global ghl, d
    ghl = FakeGHL()
    ghl.static_tokens.add("tok")
    d = Daemon(BASE + 50, ghl.url, [
        location_conf("LCall", **{"from": "x@call.test", "smtp_host": "127.0.0.1", "smtp_tls": "none",
                                  "token": "tok", "provider_id": "call-prov"}),
        location_conf("LNoProv", **{"from": "x@call.test", "smtp_host": "127.0.0.1", "smtp_tls": "none",
                                    "token": "tok"})])


def tearDownModule():
    d.cleanup()
    ghl.close()


def log_call(*args):
    return d.cli("call-log", "--location", "LCall", *args)


class TestCallLog(unittest.TestCase):
    def test_inbound_call_creates_contact(self):
        r = log_call("--direction", "inbound", "--from", "+15550001111", "--to", "+15559990000",
                     "--status", "answered", "--recording", "https://pbx.test/rec/1.mp3")
        self.assertEqual(r.returncode, 0, r.stderr)
        b = ghl.inbound[-1]
        self.assertEqual(b["type"], "Call")
        self.assertEqual(b["call"], {"from": "+15550001111", "to": "+15559990000", "status": "answered"})
        self.assertEqual(b["conversationProviderId"], "call-prov")
        self.assertEqual(b["attachments"], ["https://pbx.test/rec/1.mp3"])
        self.assertEqual(ghl.contacts[("LCall", "+15550001111")], b["contactId"])
        search = ghl.calls("GET", "/contacts/search/duplicate")[-1]["path"]
        self.assertIn("number=%2B15550001111", search)

    def test_missed_call_and_voicemail(self):
        for status in ("no-answer", "voicemail"):
            r = log_call("--direction", "inbound", "--from", "+15550002222", "--to", "+15559990000", "--status", status)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(ghl.inbound[-1]["call"]["status"], status)

    def test_outbound_call_for_known_contact(self):
        log_call("--direction", "inbound", "--from", "+15550003333", "--to", "+15559990000", "--status", "completed")
        r = log_call("--direction", "outbound", "--from", "+15559990000", "--to", "+15550003333", "--status", "completed")
        self.assertEqual(r.returncode, 0, r.stderr)
        b = ghl.outbound_calls[-1]
        self.assertEqual(b["type"], "Call")
        self.assertEqual(b["conversationProviderId"], "call-prov")
        self.assertTrue(b["conversationId"])

    def test_outbound_call_unknown_number_refused(self):
        before = len(ghl.outbound_calls)
        r = log_call("--direction", "outbound", "--from", "+15559990000", "--to", "+15557770000", "--status", "completed")
        self.assertEqual(r.returncode, 1)
        self.assertIn("no contact with phone +15557770000", r.stderr)
        self.assertEqual(len(ghl.outbound_calls), before)

    def test_bad_records_refused(self):
        for args in (("--from", "5550001111", "--to", "+15559990000", "--status", "answered"),
                     ("--from", "+15550001111", "--to", "+15559990000", "--status", "ringing")):
            r = log_call("--direction", "inbound", *args)
            self.assertEqual(r.returncode, 1, args)
            self.assertIn("E.164", r.stderr)
        r = d.cli("call-log", "--location", "LNoProv", "--direction", "inbound", "--from", "+15550001111",
                  "--to", "+15559990000", "--status", "answered")
        self.assertEqual(r.returncode, 1)
        self.assertIn("call_provider_id", r.stderr)

    def test_highlevel_down_is_temporary(self):
        ghl.fail(r"/messages/inbound$", 503, count=1)
        r = log_call("--direction", "inbound", "--from", "+15550004444", "--to", "+15559990000", "--status", "busy")
        self.assertEqual(r.returncode, 75, r.stderr)

    def test_zz_contract(self):
        self.assertEqual(ghl.spec_errors, [])


if __name__ == "__main__":
    unittest.main()
