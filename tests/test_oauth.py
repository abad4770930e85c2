"""HighLevel app plumbing: OAuth install, refresh (before expiry, on 401,
concurrent, refused), agency location tokens, INSTALL/UNINSTALL webhooks,
and the per-location rate limiter against a fake that enforces it."""
import atexit
import datetime
import json
import os
import sys
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness.daemon import Daemon, location_conf, stop_all  # noqa: E402
from harness.fakeghl import FakeGHL  # noqa: E402
from harness.scriptsmtp import ScriptedSMTP  # noqa: E402

BASE = int(os.environ.get("MB_TEST_PORT_BASE", "21000")) + 300
LOCS = ["LInstall", "LState", "LRefresh401", "LExpiring", "LConcurrent", "LRefused", "LAgency", "LUninstall", "LRate"]


def setUpModule():
    global ghl, d, relay
    ghl = FakeGHL()
    relay = ScriptedSMTP(BASE + 31)
    locations = [location_conf(l, **{"from": "S <s@mail.test>", "smtp_host": "127.0.0.1",
                                     "smtp_port": BASE + 31, "smtp_tls": "none"}) for l in LOCS]
    global KEYFILE
    import tempfile
    fd, KEYFILE = tempfile.mkstemp(prefix="mb-tokenkey-")
    atexit.register(lambda: os.path.exists(KEYFILE) and os.unlink(KEYFILE))   # also when setup fails
    os.write(fd, os.urandom(32).hex().encode() + b"\n")
    os.close(fd)
    d = Daemon(BASE + 50, ghl.url, locations,
               extra_highlevel="client_id = test-client\nclient_secret = test-secret\napp_id = app1\n"
                               "rate_limit = 50\nrate_window = 1\n",
               extra_store=f"token_key_file = {KEYFILE}\n", workers=4)
    d.start()


def tearDownModule():
    os.unlink(KEYFILE)
    stop_all(d, relay, ghl)


def install(code):
    st, body, _ = d.request("GET", "/oauth/callback?code=" + urllib.parse.quote(code))
    assert st == 200, (st, body)


def send(location):
    mid = "m" + os.urandom(8).hex()
    st, body = d.post_webhook({"type": "Email", "locationId": location, "messageId": mid,
                               "emailTo": ["a@mail.test"], "html": "<p>x</p>", "subject": "s"})
    assert st == 200, (st, body)
    return mid


def wait_reported(mids, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        jobs = [d.job(m) for m in mids]
        if all(j and j["report_state"] == "done" for j in jobs):
            return True
        time.sleep(0.1)
    return False


def raw_token_row(location):
    with d.db() as c:
        r = c.execute("SELECT * FROM tokens WHERE location_id=?", (location,)).fetchone()
        return dict(r) if r else None


def token_row(location):
    """The row with tokens as HighLevel issued them: the fake knows which
    of its tokens belongs to the location (the store holds them sealed)."""
    row = raw_token_row(location)
    if row is None:
        return None
    with ghl.lock:
        now = time.time()
        live = [t for t, (k, exp) in ghl.access.items() if k == location and exp > now]
        refresh = [t for t, k in ghl.refresh.items() if k == location]
    row["access_token"] = live[-1] if live else None
    row["refresh_token"] = refresh[-1] if refresh else None
    return row


def refreshes():
    return [r for r in ghl.calls("POST", "^/oauth/token$") if b"grant_type=refresh_token" in r["body"]]


def status_calls(mid):
    return ghl.calls("PUT", f"/messages/{mid}/status")


def app_event(**kw):
    ev = {"type": "INSTALL", "appId": "app1", "versionId": "v1", "installType": "Location",
          "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z"),
          "webhookId": os.urandom(8).hex()}
    ev.update(kw)
    return d.post_webhook(ev, path="/webhooks/app")


class TestOAuth(unittest.TestCase):
    def test_start_redirects_to_consent(self):
        st, _, headers = d.request("GET", "/oauth/start")
        self.assertEqual(st, 302)
        url = urllib.parse.urlsplit(headers["Location"])
        q = urllib.parse.parse_qs(url.query)
        self.assertEqual(url.netloc + url.path, "marketplace.gohighlevel.com/v2/oauth/chooselocation")
        self.assertEqual(q["client_id"], ["test-client"])
        self.assertEqual(q["redirect_uri"], [f"http://127.0.0.1:{d.port}/oauth/callback"])
        self.assertEqual(q["response_type"], ["code"])
        self.assertIn("conversations/message.write", q["scope"][0].split())
        self.assertIn("contacts.write", q["scope"][0].split())

    def test_state_bound_to_a_cookie(self):
        st, _, headers = d.request("GET", "/oauth/start")
        state = urllib.parse.parse_qs(urllib.parse.urlsplit(headers["Location"]).query)["state"][0]
        self.assertRegex(state, r"^[0-9a-f]{32}$")
        cookie = headers["Set-Cookie"]
        self.assertIn(f"mb_oauth_state={state};", cookie)
        self.assertIn("HttpOnly", cookie)
        before = len(ghl.calls("POST", "^/oauth/token$"))
        # a state without its cookie, or with another one: no exchange
        for hdrs in ({}, {"Cookie": "mb_oauth_state=" + "0" * 32}):
            st, body, _ = d.request("GET", f"/oauth/callback?code=loc:LState&state={state}", headers=hdrs)
            self.assertEqual(st, 400, body)
        self.assertEqual(len(ghl.calls("POST", "^/oauth/token$")), before)
        st, body, _ = d.request("GET", f"/oauth/callback?code=loc:LState&state={state}",
                                headers={"Cookie": f"mb_oauth_state={state}"})
        self.assertEqual(st, 200, body)
        self.assertIsNotNone(token_row("LState"))

    def test_install_via_callback_then_use(self):
        install("loc:LInstall")
        raw = raw_token_row("LInstall")
        # sealed at rest (token_key_file): neither token readable in the file
        self.assertTrue(raw["access_token"].startswith("enc1:"))
        self.assertTrue(raw["refresh_token"].startswith("enc1:"))
        # SQLite: nor anywhere in its files (PostgreSQL's are the server's:
        # the rows above are what it stores)
        for name in () if d.pg else ("mailbridge.db", "mailbridge.db-wal"):
            with open(os.path.join(d.dir, "data", name), "rb") as f:
                self.assertNotIn(b"at-", f.read(), name)
        row = token_row("LInstall")
        self.assertTrue(row["access_token"].startswith("at-"))
        self.assertTrue(row["refresh_token"].startswith("rt-"))
        self.assertEqual(row["user_type"], "Location")
        mid = send("LInstall")
        self.assertTrue(wait_reported([mid]))
        self.assertEqual(status_calls(mid)[0]["headers"]["Authorization"], "Bearer " + row["access_token"])
        ex = ghl.calls("POST", "^/oauth/token$")[-1]
        self.assertNotIn("Version", ex["headers"])
        r = d.cli("accounts")
        self.assertRegex(r.stdout, r"LInstall\s+default\s+until 20")

    def test_bad_code_shows_error_page(self):
        st, body, _ = d.request("GET", "/oauth/callback?code=garbage")
        self.assertEqual(st, 502)
        self.assertIn(b"refused", body)
        st, _, _ = d.request("GET", "/oauth/callback")
        self.assertEqual(st, 400)

    def test_refresh_on_401_once(self):
        install("loc:LRefresh401")
        old = token_row("LRefresh401")
        with ghl.lock:
            ghl.access.pop(old["access_token"])      # HighLevel revoked it
        before = len(refreshes())
        mid = send("LRefresh401")
        self.assertTrue(wait_reported([mid]))
        self.assertEqual(len(refreshes()) - before, 1)
        calls = status_calls(mid)
        self.assertEqual([c["headers"]["Authorization"] for c in calls][-1],
                         "Bearer " + token_row("LRefresh401")["access_token"])
        self.assertNotEqual(token_row("LRefresh401")["refresh_token"], old["refresh_token"])

    def test_refresh_before_expiry(self):
        ghl.token_ttl = 60                     # inside the 5-minute margin
        try:
            install("loc:LExpiring")
        finally:
            ghl.token_ttl = 86399
        before = len(refreshes())
        mid = send("LExpiring")
        self.assertTrue(wait_reported([mid]))
        self.assertEqual(len(refreshes()) - before, 1)
        calls = status_calls(mid)
        self.assertEqual(len(calls), 1, "refreshed before the call, so no 401 first")
        self.assertEqual(calls[0]["headers"]["Authorization"], "Bearer " + token_row("LExpiring")["access_token"])

    def test_concurrent_need_makes_one_refresh(self):
        install("loc:LConcurrent")
        tok = token_row("LConcurrent")["access_token"]
        with ghl.lock:
            ghl.access.pop(tok)
        before = len(refreshes())
        mids = [send("LConcurrent") for _ in range(12)]
        self.assertTrue(wait_reported(mids))
        self.assertEqual(len(refreshes()) - before, 1)
        self.assertFalse([e for e in ghl.spec_errors if "used twice" in e])

    def test_refused_refresh_marks_location_and_jobs_wait(self):
        install("loc:LRefused")
        row = token_row("LRefused")
        with ghl.lock:
            ghl.access.pop(row["access_token"])
            ghl.refresh.pop(row["refresh_token"])   # e.g. the app was reinstalled elsewhere
        mid = send("LRefused")
        j = d.wait_job(mid, lambda j: j["report_error"] is not None, timeout=20)
        self.assertEqual(j["report_state"], "pending")
        self.assertEqual(j["state"], "sent")
        self.assertEqual(token_row("LRefused")["needs_reinstall"], 1)
        self.assertIn("needs re-install", d.cli("accounts").stdout)
        self.assertIn("LRefused", [l for l in d.log().splitlines() if "re-install" in l][0])
        install("loc:LRefused")                      # the agency re-installs
        self.assertTrue(wait_reported([mid], timeout=15))
        self.assertEqual(token_row("LRefused")["needs_reinstall"], 0)

    def test_agency_install_mints_location_token(self):
        install("company:C9")
        self.assertEqual(token_row("company:C9")["user_type"], "Company")
        st, body = app_event(installType="Company", locationId="LAgency", companyId="C9")
        self.assertEqual(st, 200, body)
        lt = ghl.calls("POST", "^/oauth/locationToken$")
        self.assertTrue(lt)
        self.assertEqual(lt[-1]["headers"]["Version"], "2021-07-28")
        self.assertEqual(lt[-1]["headers"]["Authorization"], "Bearer " + token_row("company:C9")["access_token"])
        mid = send("LAgency")
        self.assertTrue(wait_reported([mid]))
        self.assertEqual(status_calls(mid)[0]["headers"]["Authorization"],
                         "Bearer " + token_row("LAgency")["access_token"])

    def test_app_webhook_replay_protection(self):
        old = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=30)).isoformat()
        st, body = app_event(locationId="LUninstall", timestamp=old)
        self.assertEqual((st, body.get("field")), (400, "timestamp"))
        ev_id = os.urandom(8).hex()
        st, body = app_event(locationId="LUninstall", webhookId=ev_id)
        self.assertEqual((st, body["status"]), (200, "ok"))
        st, body = app_event(locationId="LUninstall", webhookId=ev_id)
        self.assertEqual((st, body["status"]), (200, "duplicate"))
        ev = {"type": "UNINSTALL", "appId": "app1", "locationId": "LUninstall", "webhookId": "x1"}
        st, _ = d.post_webhook(ev, path="/webhooks/app", sign="bad")
        self.assertEqual(st, 401)
        st, _ = d.post_webhook(ev, path="/webhooks/app", sign=None)
        self.assertEqual(st, 401)

    def test_app_webhook_timestamp_strict(self):
        now = datetime.datetime.now(datetime.timezone.utc)
        # a time that is now in its own offset's digits but 5 hours away
        shifted = now.replace(tzinfo=None).isoformat(timespec="milliseconds") + "+05:00"
        for bad in (12345, ["x"], shifted, now.replace(tzinfo=None).isoformat(), "2025-13-01T00:00:00Z",
                    now.isoformat().replace("+00:00", "Z") + "junk"):
            st, body = app_event(locationId="LUninstall", type="UNINSTALL", timestamp=bad)
            self.assertEqual((st, body.get("field")), (400, "timestamp"), bad)
        # the same instant written with another offset is fine
        east = now.astimezone(datetime.timezone(datetime.timedelta(hours=2))).isoformat()
        st, body = app_event(locationId="LUninstall", type="UNINSTALL", timestamp=east)
        self.assertEqual((st, body["status"]), (200, "ok"), east)

    def test_app_webhook_for_another_app_refused(self):
        for app in ("someone-else", None):
            ev = {"type": "UNINSTALL", "locationId": "LUninstall", "webhookId": os.urandom(4).hex()}
            if app:
                ev["appId"] = app
            st, body = d.post_webhook(ev, path="/webhooks/app")
            self.assertEqual((st, body.get("field")), (403, "appId"), app)

    def test_app_webhook_without_id_acted_on_once(self):
        # UNINSTALL as HighLevel's sample has it: no timestamp, no webhookId
        ev = {"type": "UNINSTALL", "appId": "app1", "locationId": "LOnce" + os.urandom(3).hex()}
        st, body = d.post_webhook(ev, path="/webhooks/app")
        self.assertEqual((st, body["status"]), (200, "ok"))
        st, body = d.post_webhook(ev, path="/webhooks/app")
        self.assertEqual((st, body["status"]), (200, "duplicate"))

    def test_uninstall_deletes_tokens_keeps_history(self):
        install("loc:LUninstall")
        mid = send("LUninstall")
        self.assertTrue(wait_reported([mid]))
        st, body = d.post_webhook({"type": "UNINSTALL", "appId": "app1", "locationId": "LUninstall"},
                                  path="/webhooks/app")
        self.assertEqual((st, body["status"]), (200, "ok"))
        self.assertIsNone(token_row("LUninstall"))
        self.assertIsNotNone(d.job(mid))

    def test_rate_limit_burst_never_429(self):
        install("loc:LRate")
        ghl.limit_per_window = (50, 1)
        try:
            mids = [send("LRate") for _ in range(300)]
            self.assertTrue(wait_reported(mids, timeout=90))
        finally:
            ghl.limit_per_window = None
        self.assertEqual(ghl.too_many, 0, "mailbridge caused a 429 itself")
        puts = [r for r in ghl.calls("PUT") if any(m in r["path"] for m in mids)]
        # status_api = auto: v3 until the first 404 is remembered (this fake has
        # none): once per reporter thread at most (two may be in flight at
        # once; seen under valgrind), v2 from then on
        self.assertIn(len([r for r in puts if "/messages/email/" in r["path"]]), (1, 2))
        self.assertEqual(len([r for r in puts if "/messages/email/" not in r["path"]]), 300)
        times = sorted(r["t"] for r in puts)     # the v3 attempt counts against the limit too
        worst = max(sum(1 for t in times if s <= t < s + 1.0) for s in times)
        self.assertLessEqual(worst, 50)

    def test_zz_contract(self):
        self.assertEqual([e for e in ghl.spec_errors], [])


class TestOAuthCallbackLimit(unittest.TestCase):
    def test_code_exchanges_rate_limited(self):
        dd = Daemon(BASE + 51, ghl.url, [], extra_highlevel="client_id = test-client\nclient_secret = test-secret\n"
                    "oauth_callbacks_per_minute = 5\noauth_require_state = no\n")
        dd.start()
        try:
            before = len(ghl.calls("POST", "^/oauth/token$"))
            codes = [dd.request("GET", f"/oauth/callback?code=junk{i}")[0] for i in range(12)]
            self.assertEqual(codes.count(429), 7, codes)
            self.assertEqual(len(ghl.calls("POST", "^/oauth/token$")) - before, 5)
        finally:
            dd.stop()
            dd.cleanup()

    def test_state_required_when_asked(self):
        dd = Daemon(BASE + 52, ghl.url, [], extra_highlevel="client_id = test-client\nclient_secret = test-secret\n"
                    "oauth_require_state = yes\n")
        dd.start()
        try:
            before = len(ghl.calls("POST", "^/oauth/token$"))
            self.assertEqual(dd.request("GET", "/oauth/callback?code=loc:LX")[0], 400)
            self.assertEqual(len(ghl.calls("POST", "^/oauth/token$")), before)
        finally:
            dd.stop()
            dd.cleanup()


if __name__ == "__main__":
    unittest.main()
