"""Plugins: the ABI check at start-up, SMS jobs through the durable queue
to a plugin (delivered, accepted + delivery report, temporary -> retried,
permanent, hung -> timed out), inbound SMS via a plugin route, and the
shipped calllog plugin taking CDRs over HTTP."""
import json
import os
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness.daemon import Daemon, location_conf, stop_all  # noqa: E402
from harness.fakeghl import FakeGHL  # noqa: E402

BASE = int(os.environ.get("MB_TEST_PORT_BASE", "21000")) + 800
PLUGIN_DIR = os.path.abspath(os.environ.get("MB_PLUGIN_DIR", os.path.join(os.path.dirname(__file__), "..", "build", "plugins")))
OUT = tempfile.mktemp(prefix="mb-sms-")
SMS_SECRET = "sms-" + os.urandom(8).hex()
CDR_SECRET = "cdr-" + os.urandom(8).hex()


def preq(method, path, body=None):
    """A plugin route with its secret: a header for testsms, the query
    (as a PBX hook would carry it) for calllog."""
    if path.startswith("/plugins/calllog/"):
        return d.request(method, path + ("&" if "?" in path else "?") + f"secret={CDR_SECRET}", body)
    return d.request(method, path, body, headers={"X-Mailbridge-Secret": SMS_SECRET})


def loc(name, **kw):
    base = {"from": f"{name} <x@plug.test>", "smtp_host": "127.0.0.1", "smtp_tls": "none", "token": "tok"}
    base.update(kw)
    return location_conf(name, **base)


def setUpModule():
    global ghl, d
    ghl = FakeGHL()
    ghl.static_tokens.add("tok")
    d = Daemon(BASE + 50, ghl.url, [loc("LSms", sms="testsms", sms_provider_id="smsprov"), loc("LCall", call="calllog", call_provider_id="cp1")],
               extra_sections=f"[plugins]\ndir = {PLUGIN_DIR}\nsend_timeout = 2\n\n[plugin testsms]\noutfile = {OUT}\n"
                             f"secret = {SMS_SECRET}\n\n[plugin calllog]\nsecret = {CDR_SECRET}\n")
    d.start()


def tearDownModule():
    stop_all(d, ghl)
    if os.path.exists(OUT):
        os.unlink(OUT)


def sms(text, phone="+15550001234", location="LSms"):
    mid = "s" + os.urandom(6).hex()
    st, body = d.post_webhook({"type": "SMS", "locationId": location, "messageId": mid, "contactId": "c1",
                               "phone": phone, "message": text, "attachments": []})
    assert st == 200, (st, body)
    return mid


def statuses(mid):
    return [json.loads(r["body"]) for r in ghl.calls("PUT", f"/messages/{mid}/status")]


def wait_status(mid, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        st = statuses(mid)
        if st:
            return st
        time.sleep(0.05)
    return []


def sent_lines():
    try:
        with open(OUT) as f:
            return f.read().splitlines()
    except OSError:
        return []


class TestPlugins(unittest.TestCase):
    def test_sms_delivered(self):
        mid = sms("hello there")
        self.assertEqual([s["status"] for s in wait_status(mid)], ["delivered"])
        self.assertIn(f"{mid} +15550001234 hello there", sent_lines())

    def test_sms_accepted_then_dlr(self):
        mid = sms("accept")
        j = d.wait_job(mid, lambda j: j["state"] == "sent")
        self.assertEqual(statuses(mid), [])
        st, body, _ = preq("GET", f"/plugins/testsms/dlr?id=gw-{mid}&status=delivered")
        self.assertEqual(st, 200, body)
        self.assertEqual([s["status"] for s in wait_status(mid)], ["delivered"])

    def test_delivery_report_before_send_returns(self):
        """A fast gateway's report can arrive while the job is still being
        sent: it is kept and reported once the send is recorded."""
        mid = sms("instant-dlr")
        self.assertEqual([s["status"] for s in wait_status(mid)], ["delivered"])
        self.assertNotIn("early delivery report refused", d.log())
        mid = sms("instant-fail")
        st = wait_status(mid)
        self.assertEqual([s["status"] for s in st], ["failed"])
        self.assertEqual(d.job(mid)["state"], "failed")

    def test_sms_failed_dlr(self):
        mid = sms("accept")
        d.wait_job(mid, lambda j: j["state"] == "sent")
        preq("GET", f"/plugins/testsms/dlr?id=gw-{mid}&status=failed")
        st = wait_status(mid)
        self.assertEqual(st[-1]["status"], "failed")
        self.assertIn("DLR 16", st[-1]["error"]["message"])

    def test_temporary_is_retried(self):
        mid = sms("temp")
        j = d.wait_job(mid, lambda j: j["attempts"] >= 2 and j["state"] == "queued", timeout=20)
        self.assertEqual(j["last_error"], "gateway busy")
        self.assertEqual(statuses(mid), [])

    def test_permanent_fails_with_reason(self):
        mid = sms("perm")
        st = wait_status(mid)
        self.assertEqual(st[0]["status"], "failed")
        self.assertIn("number blocked", st[0]["error"]["message"])

    def test_hung_plugin_times_out(self):
        t0 = time.time()
        mid = sms("hang")
        j = d.wait_job(mid, lambda j: j["attempts"] >= 1 and j["state"] == "queued", timeout=20)
        self.assertIn("did not answer within 2 s", j["last_error"])
        self.assertLess(time.time() - t0, 10)
        # other jobs keep flowing meanwhile
        self.assertEqual([s["status"] for s in wait_status(sms("after the hang"))], ["delivered"])

    def test_inbound_sms_route(self):
        st, body, _ = preq("GET", "/plugins/testsms/mo?location=LSms&from=%2B15557654321&text=Hi+there")
        self.assertEqual(st, 200, body)
        b = ghl.inbound[-1]
        self.assertEqual((b["type"], b["message"], b["direction"]), ("SMS", "Hi there", "inbound"))
        self.assertEqual(ghl.contacts[("LSms", "+15557654321")], b["contactId"])

    def test_phone_numbers_normalised_to_e164(self):
        st, body, _ = preq("GET", "/plugins/testsms/mo?location=LSms&from=15553334444&text=no+plus")
        self.assertEqual(st, 200, body)
        self.assertEqual(ghl.contacts[("LSms", "+15553334444")], ghl.inbound[-1]["contactId"])
        st, body, _ = preq("GET", "/plugins/testsms/mo?location=LSms&from=0044%2020%207946%200000&text=intl")
        self.assertEqual(st, 200, body)
        self.assertIn(("LSms", "+442079460000"), ghl.contacts)
        st, body, _ = preq("GET", "/plugins/testsms/mo?location=LSms&from=hello&text=x")
        self.assertEqual(st, 422)

    def test_host_contact_and_upload(self):
        st, body, _ = preq("GET", "/plugins/testsms/contact?location=LSms&phone=%2B15550009999")
        self.assertEqual(st, 422, "unknown and not asked to create")
        st, cid, _ = preq("GET", "/plugins/testsms/contact?location=LSms&phone=%2B15550009999&create=1")
        self.assertEqual(st, 200)
        self.assertEqual(ghl.contacts[("LSms", "+15550009999")], cid.decode())
        jpeg = os.urandom(2048)
        st, url, _ = preq("POST", f"/plugins/testsms/upload?location=LSms&contact={cid.decode()}", jpeg)
        self.assertEqual(st, 200, url)
        self.assertTrue(url.decode().startswith("https://storage.fake/"))
        self.assertIn(("mms.jpg", jpeg), ghl.uploads)

    def test_sms_for_location_without_plugin_refused(self):
        st, body = d.post_webhook({"type": "SMS", "locationId": "LCall", "messageId": "sx1", "phone": "+15550001111",
                                   "message": "x"})
        self.assertEqual((st, body["field"]), (422, "type"))

    def test_calllog_cdrs(self):
        def cdr(**kw):
            st, body, _ = preq("POST", "/plugins/calllog/cdr", json.dumps(kw).encode())
            return st, json.loads(body)
        st, body = cdr(locationId="LCall", direction="inbound", **{"from": "+15551110000"}, to="+15559990000",
                       status="answered", recording_url="https://pbx.test/r.wav")
        self.assertEqual(st, 200, body)
        b = ghl.inbound[-1]
        self.assertEqual((b["type"], b["call"]["status"], b["attachments"]), ("Call", "answered", ["https://pbx.test/r.wav"]))
        self.assertEqual(b["conversationProviderId"], "cp1")
        st, _ = cdr(locationId="LCall", direction="inbound", **{"from": "+15551110000"}, to="+15559990000", status="no-answer")
        self.assertEqual(st, 200)
        st, _ = cdr(locationId="LCall", direction="outbound", **{"from": "+15559990000"}, to="+15551110000", status="completed")
        self.assertEqual(st, 200)
        self.assertEqual(ghl.outbound_calls[-1]["call"]["to"], "+15551110000")
        before = (len(ghl.inbound), len(ghl.outbound_calls))
        for bad, code in ((dict(direction="inbound", to="+1", status="answered"), 400),
                          (dict(locationId="LCall", direction="sideways", **{"from": "+15551110000"}, to="+15559990000",
                                status="answered"), 400),
                          (dict(locationId="LCall", direction="inbound", **{"from": "555"}, to="+15559990000",
                                status="answered"), 400),
                          (dict(locationId="LCall", direction="outbound", **{"from": "+15559990000"}, to="+15550009999",
                                status="completed"), 422)):
            st, body = cdr(**bad)
            self.assertEqual(st, code, (bad, body))
        st, _, _ = preq("POST", "/plugins/calllog/cdr", b"{not json")
        self.assertEqual(st, 400)
        st, _, _ = preq("POST", "/plugins/calllog/cdr", b"{" + b" " * 70000 + b"}")
        self.assertEqual(st, 413)
        self.assertEqual((len(ghl.inbound), len(ghl.outbound_calls)), before, "bad CDRs post nothing")

    def test_plugin_routes_need_the_secret(self):
        before = (len(ghl.inbound), len(ghl.outbound_calls))
        mo = "/plugins/testsms/mo?location=LSms&from=%2B15557654321&text=forged"
        cdr = json.dumps({"locationId": "LCall", "direction": "inbound", "from": "+15551110000",
                          "to": "+15559990000", "status": "answered", "recording_url": "https://evil.test/x"}).encode()
        for path, body, headers in ((mo, None, {}),
                                    (mo, None, {"X-Mailbridge-Secret": SMS_SECRET + "x"}),
                                    (mo + "&secret=" + SMS_SECRET[:-1], None, {}),
                                    (mo, None, {"X-Mailbridge-Secret": CDR_SECRET}),   # another plugin's
                                    ("/plugins/calllog/cdr", cdr, {}),
                                    ("/plugins/calllog/cdr?secret=", cdr, {})):
            st, body, _ = d.request("POST" if body else "GET", path, body, headers=headers)
            self.assertEqual(st, 401, (path, headers, body))
        self.assertEqual((len(ghl.inbound), len(ghl.outbound_calls)), before, "nothing posted")
        self.assertNotIn(SMS_SECRET, d.log())
        # the bearer form works too
        st, body, _ = d.request("GET", mo.replace("forged", "bearer"), headers={"Authorization": f"Bearer {SMS_SECRET}"})
        self.assertEqual(st, 200, body)

    def test_plugin_acts_only_for_its_own_locations(self):
        before = (len(ghl.inbound), len(ghl.outbound_calls))
        # testsms is LSms's SMS plugin, not LCall's; calllog is LCall's, not LSms's
        st, body, _ = preq("GET", "/plugins/testsms/mo?location=LCall&from=%2B15557654321&text=x")
        self.assertEqual(st, 422, body)
        self.assertIn(b"does not use plugin testsms", body)
        st, body, _ = preq("POST", "/plugins/calllog/cdr", json.dumps(
            {"locationId": "LSms", "direction": "inbound", "from": "+15551110000", "to": "+15559990000",
             "status": "answered"}).encode())
        self.assertEqual(st, 422, body)
        self.assertEqual((len(ghl.inbound), len(ghl.outbound_calls)), before)

    def test_routes_off_without_a_secret(self):
        other = Daemon(BASE + 53, ghl.url, [loc("LCall", call="calllog")],
                       extra_sections=f"[plugins]\ndir = {PLUGIN_DIR}\n")
        try:
            other.start()
            st, body, _ = other.request("POST", "/plugins/calllog/cdr?secret=", b"{}")
            self.assertEqual(st, 403, body)
            self.assertIn("no [plugin calllog] secret", other.log())
        finally:
            other.stop()
            other.cleanup()

    def test_zz_contract(self):
        self.assertEqual(ghl.spec_errors, [])


class TestPluginABI(unittest.TestCase):
    def test_wrong_abi_refused_at_startup(self):
        bad = Daemon(BASE + 51, ghl.url, [loc("LBad", sms="badabi")],
                     extra_sections=f"[plugins]\ndir = {PLUGIN_DIR}\n")
        try:
            with self.assertRaises(RuntimeError) as cm:
                bad.start(timeout=10)
            self.assertIn("speaks ABI 100, this mailbridge speaks 2", str(cm.exception))
        finally:
            bad.cleanup()

    def test_missing_plugin_refused(self):
        bad = Daemon(BASE + 52, ghl.url, [loc("LBad", sms="nosuch")], extra_sections=f"[plugins]\ndir = {PLUGIN_DIR}\n")
        try:
            with self.assertRaises(RuntimeError) as cm:
                bad.start(timeout=10)
            self.assertIn("plugin nosuch", str(cm.exception))
        finally:
            bad.cleanup()


if __name__ == "__main__":
    unittest.main()
