"""Webhook intake (Delivery URL): signatures, validation, durability,
dedupe, limits. Real daemon, fake HighLevel; no SMTP relay is reachable,
so jobs stay in the store where the tests look at them."""
import copy
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness.daemon import Daemon, location_conf, stop_all  # noqa: E402
from harness.fakeghl import FakeGHL  # noqa: E402

BASE = int(os.environ.get("MB_TEST_PORT_BASE", "21000")) + 100
EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "examples")
LOC = "GKifVDyQeo7nwe27vMP0"


def example(name):
    with open(os.path.join(EXAMPLES, name)) as f:
        return json.load(f)


def setUpModule():
    global ghl, d, notify, notify_dir
    ghl = FakeGHL()
    d = Daemon(BASE + 50, ghl.url, [location_conf(
        LOC, **{"from": "Support <support@mail.test>", "smtp_host": "127.0.0.1",
                "smtp_port": BASE + 99, "smtp_tls": "none", "token": "static-token"})])
    # systemd's side of sd_notify: a datagram socket named in NOTIFY_SOCKET
    notify_dir = tempfile.mkdtemp(prefix="mb-notify-")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(os.path.join(notify_dir, "notify"))
    os.environ["NOTIFY_SOCKET"] = os.path.join(notify_dir, "notify")
    try:
        d.start()
    finally:
        del os.environ["NOTIFY_SOCKET"]


def notifications(wait=0.0):
    """What the daemon told "systemd" so far, one string per datagram."""
    out, end = [], time.time() + wait
    while True:
        notify.settimeout(max(0.05, end - time.time()))
        try:
            out.append(notify.recv(4096).decode())
        except (socket.timeout, BlockingIOError):
            if time.time() >= end:
                return out


def post_concurrently(payloads, senders):
    """Posts each payload, signed, from `senders` threads at once: a list
    of (messageId, HTTP status, the answer's "status"), in the order the
    answers came. A post may wait 120 s: under valgrind a burst queues
    for seconds."""
    out, lock = [], threading.Lock()

    def sender(mine):
        for p in mine:
            body = json.dumps(p).encode()
            st, data, _ = d.request("POST", "/webhooks/provider", body,
                                    {"X-GHL-Signature": d.keys.sign_ed25519(body)}, timeout=120)
            with lock:
                out.append((p["messageId"], st, json.loads(data).get("status")))
    threads = [threading.Thread(target=sender, args=(payloads[i::senders],)) for i in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    return out


def tearDownModule():
    stop_all(d, ghl)
    notify.close()
    shutil.rmtree(notify_dir, ignore_errors=True)


class TestWebhookIntake(unittest.TestCase):
    def payload(self, **changes):
        p = example("provider-outbound-email.json")
        p["attachments"] = []
        p["messageId"] = "m" + os.urandom(6).hex()
        p.update(changes)
        return p

    def assertRejected(self, status, payload=None, sign="ed25519", raw=None, field=None):
        before = len(d.jobs())
        st, body = d.post_webhook(payload, sign=sign, raw=raw)
        self.assertEqual(st, status, body)
        if field is not None:
            self.assertEqual(body.get("field"), field, body)
        self.assertEqual(len(d.jobs()), before, "a rejected webhook must store nothing")
        return body

    def test_real_example_stored_once(self):
        p = example("provider-outbound-email.json")   # verbatim from HighLevel's docs
        p["attachments"] = []
        st, body = d.post_webhook(p)
        self.assertEqual(st, 200, body)
        self.assertEqual(body, {"status": "accepted", "messageId": p["messageId"]})
        job = d.job(p["messageId"])
        self.assertIsNotNone(job)
        self.assertEqual(job["location_id"], LOC)
        self.assertEqual(json.loads(job["payload"])["subject"], p["subject"])
        st, body = d.post_webhook(p)
        self.assertEqual((st, body["status"]), (200, "duplicate"))
        self.assertEqual(sum(1 for j in d.jobs() if j["message_id"] == p["messageId"]), 1)

    def test_reply_example_with_alt_id(self):
        p = example("provider-outbound-email-reply.json")
        st, body = d.post_webhook(p)
        self.assertEqual(st, 200, body)

    def test_legacy_rsa_signature(self):
        p = self.payload()
        st, body = d.post_webhook(p, sign="rsa")
        self.assertEqual(st, 200, body)
        self.assertIsNotNone(d.job(p["messageId"]))

    def test_bad_signature(self):
        self.assertRejected(401, self.payload(), sign="bad")

    def test_signature_over_other_bytes(self):
        p = self.payload()
        body = json.dumps(p).encode()
        sig = d.keys.sign_ed25519(body)
        tampered = body.replace(b"Subject from", b"Subject FROM")
        st, _, _ = d.request("POST", "/webhooks/provider", tampered,
                             {"X-GHL-Signature": sig, "Content-Type": "application/json"})
        self.assertEqual(st, 401)
        self.assertIsNone(d.job(p["messageId"]))

    def test_ed25519_header_wins_no_fallback(self):
        # a bad X-GHL-Signature must not fall back to a good legacy one
        p = self.payload()
        body = json.dumps(p).encode()
        st, _, _ = d.request("POST", "/webhooks/provider", body, {
            "X-GHL-Signature": "AAAA", "X-WH-Signature": d.keys.sign_rsa(body)})
        self.assertEqual(st, 401)

    def test_unsigned_refused(self):
        self.assertRejected(401, self.payload(), sign=None)

    def test_na_header_is_unsigned(self):
        p = self.payload()
        st, _, _ = d.request("POST", "/webhooks/provider", json.dumps(p).encode(), {"X-GHL-Signature": "N/A"})
        self.assertEqual(st, 401)

    def test_malformed_json(self):
        body = self.assertRejected(400, raw=b'{"type": "Email", "messageId": ')
        self.assertIn("JSON", body["error"])

    def test_duplicate_keys(self):
        self.assertRejected(400, raw=b'{"type":"Email","type":"SMS"}')

    def test_not_an_object(self):
        self.assertRejected(400, raw=b'[1,2,3]')

    def test_missing_fields(self):
        for field in ("messageId", "locationId", "emailTo", "type"):
            with self.subTest(field=field):
                p = self.payload()
                del p[field]
                self.assertRejected(400, p, field=field)
        p = self.payload()
        del p["html"]
        self.assertRejected(400, p, field="html")

    def test_wrong_types(self):
        cases = [("messageId", 12), ("emailTo", {"a": 1}), ("subject", ["x"]), ("attachments", "http://x"),
                 ("html", 5), ("emailTo", [1, 2]), ("locationId", None)]
        for field, value in cases:
            with self.subTest(field=field, value=value):
                self.assertRejected(400, self.payload(**{field: value}), field=field)

    def test_crlf_in_header_fields(self):
        cases = [("subject", "Hello\r\nBcc: victim@evil.test"),
                 ("subject", "Hello\nX-Injected: 1"),
                 ("emailFrom", "Name\r\nBcc: x@evil.test <a@b.test>"),
                 ("emailTo", ["a@b.test\r\nBcc: x@evil.test"]),
                 ("emailCc", "c@d.test\nBcc: x@evil.test"),
                 ("replyToAltId", "<a@b>\r\nX-Evil: 1"),
                 ("messageId", "abc\r\ndef")]
        for field, value in cases:
            with self.subTest(field=field):
                self.assertRejected(400, self.payload(**{field: value}), field=field)

    def test_bad_addresses(self):
        for value in (["not-an-address"], ["a@b@c"], "x <y>", ["<>"]):
            with self.subTest(value=value):
                self.assertRejected(400, self.payload(emailTo=value), field="emailTo")

    def test_attachment_urls(self):
        self.assertRejected(400, self.payload(attachments=["file:///etc/passwd"]), field="attachments")
        self.assertRejected(400, self.payload(attachments=["ftp://x/y"]), field="attachments")

    def test_unknown_location(self):
        self.assertRejected(404, self.payload(locationId="NotConfigured123"), field="locationId")

    def test_sms_without_plugin(self):
        p = example("provider-outbound-sms.json")
        p["locationId"] = LOC
        self.assertRejected(422, p, field="type")

    def test_oversized_body(self):
        p = self.payload(html="<p>" + "x" * 70000 + "</p>")
        self.assertRejected(413, p)

    def test_oversized_chunked_body(self):
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
        c.putrequest("POST", "/webhooks/provider")
        c.putheader("Transfer-Encoding", "chunked")
        c.putheader("X-GHL-Signature", "x")    # unsigned would be refused before the body
        c.endheaders()
        chunk = b"x" * 8192
        try:
            for _ in range(10):
                c.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            c.send(b"0\r\n\r\n")
            status = c.getresponse().status
        except (BrokenPipeError, ConnectionResetError):
            status = 413
        self.assertEqual(status, 413)

    def test_email_to_as_string_and_cc(self):
        p = self.payload(emailTo="abc@gmail.com, \"Doe, Jane\" <jane@example.com>", emailCc=["c@example.com"])
        st, body = d.post_webhook(p)
        self.assertEqual(st, 200, body)

    def test_concurrent_duplicates_store_once(self):
        p = self.payload()
        body = json.dumps(p).encode()
        sig = d.keys.sign_ed25519(body)
        results = []

        def post():
            st, data, _ = d.request("POST", "/webhooks/provider", body, {"X-GHL-Signature": sig})
            results.append((st, json.loads(data)["status"]))

        threads = [threading.Thread(target=post) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        self.assertEqual(len(results), 16)
        self.assertTrue(all(st == 200 for st, _ in results), results)
        self.assertEqual(sum(1 for _, s in results if s == "accepted"), 1, results)
        self.assertEqual(sum(1 for j in d.jobs() if j["message_id"] == p["messageId"]), 1)

    def test_concurrent_webhooks_each_stored_once(self):
        """Many webhooks at once, some of them posted twice: each
        messageId is one job with its own payload, one "accepted", and
        an event per post. On PostgreSQL the adds are written in groups
        (one transaction, one WAL flush): /metrics counts them, and with
        24 senders at least one group holds more than one add."""
        def counters():
            text = d.request("GET", "/metrics")[1].decode()
            got = {}
            for name in ("mailbridge_store_job_add_groups_total", "mailbridge_store_job_adds_total"):
                lines = [l for l in text.splitlines() if l.startswith(name + " ")]
                got[name] = int(lines[0].split()[1]) if lines else None
            return got
        before = counters()
        ps = [self.payload(html=f"<p>body {i}</p>") for i in range(72)]
        posts = ps + ps[:24]      # the first 24 posted twice
        results = post_concurrently(posts, 24)
        self.assertEqual(len(results), len(posts))
        self.assertTrue(all(st == 200 for _, st, _ in results), results)
        for p in ps:
            mine = [s for mid, _, s in results if mid == p["messageId"]]
            self.assertEqual(mine.count("accepted"), 1, (p["messageId"], mine))
            j = d.job(p["messageId"])
            self.assertEqual(json.loads(j["payload"])["html"], p["html"])
            with d.db() as c:
                ev = [r[0] for r in c.execute("SELECT detail FROM events WHERE message_id=? AND kind='webhook'",
                                              (p["messageId"],)).fetchall()]
            self.assertEqual(sorted(ev), sorted(["Email"] + ["duplicate (ignored)"] * (len(mine) - 1)), ev)
        after = counters()
        if d.pg:
            adds = after["mailbridge_store_job_adds_total"] - before["mailbridge_store_job_adds_total"]
            groups = after["mailbridge_store_job_add_groups_total"] - before["mailbridge_store_job_add_groups_total"]
            self.assertEqual(adds, len(posts))
            self.assertLess(groups, adds)
            print(f"\n{adds} adds in {groups} groups", file=sys.stderr)
        else:
            self.assertEqual(after["mailbridge_store_job_adds_total"], None)   # SQLite groups its commits itself

    def test_refused_add_fails_alone(self):
        """A webhook the database refuses gets its 503, and only it: on
        PostgreSQL the adds written with it in a group are written again
        one at a time. The refusal is a trigger on jobs."""
        with d.db() as c:
            if d.pg:
                c.execute("CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                          "IF NEW.message_id LIKE 'poison%' THEN RAISE EXCEPTION 'refused'; END IF; "
                          "RETURN NEW; END $$")
                c.execute("CREATE TRIGGER refuse_poison BEFORE INSERT ON jobs FOR EACH ROW "
                          "EXECUTE FUNCTION refuse_poison()")
            else:
                c.execute("CREATE TRIGGER refuse_poison BEFORE INSERT ON jobs WHEN NEW.message_id LIKE 'poison%' "
                          "BEGIN SELECT RAISE(ABORT, 'refused'); END")
            c.commit()
        try:
            ps = [self.payload(messageId=("poison" if i % 8 == 0 else "m") + os.urandom(6).hex()) for i in range(64)]
            results = {mid: st for mid, st, _ in post_concurrently(ps, 16)}
            self.assertEqual(len(results), len(ps))
            for mid, st in results.items():
                self.assertEqual(st, 503 if mid.startswith("poison") else 200, mid)
                self.assertEqual(d.job(mid) is None, mid.startswith("poison"), mid)
        finally:
            with d.db() as c:
                c.execute("DROP TRIGGER refuse_poison" + (" ON jobs" if d.pg else ""))
                if d.pg:
                    c.execute("DROP FUNCTION refuse_poison()")
                c.commit()

    def test_replay_after_prune_is_a_duplicate(self):
        """The job row goes with retention (keep_days); the messageId's
        fingerprint stays for replay_days, so the same signed body posted
        again later is not sent again."""
        p = self.payload()
        self.assertEqual(d.post_webhook(p)[0], 200)
        import hashlib
        db = d.db()
        # what the prune does (store_prune, tested in test_store): the
        # fingerprint stays, the job and its payload go
        fp = hashlib.sha256(b"job:" + p["messageId"].encode()).digest()[:12]
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("INSERT INTO replay_guard (fp, at) VALUES (?, 0)", (fp,))
        db.execute("DELETE FROM jobs WHERE message_id=?", (p["messageId"],))
        db.commit()
        db.close()
        st, body = d.post_webhook(p)
        self.assertEqual((st, body["status"]), (200, "duplicate"))
        self.assertIsNone(d.job(p["messageId"]))

    def test_delivery_url_token_path_without_one_configured(self):
        st, _ = d.post_webhook(self.payload(), path="/webhooks/provider/anything")
        self.assertEqual(st, 404)

    def test_health_and_unknown_routes(self):
        self.assertEqual(d.get("/healthz")[0], 200)
        self.assertEqual(d.get("/nope")[0], 404)
        self.assertEqual(d.get("/webhooks/provider")[0], 405)

    def test_no_fake_api_contract_drift(self):
        self.assertEqual(ghl.spec_errors, [])


if __name__ == "__main__":
    unittest.main()


class TestZReload(unittest.TestCase):
    """SIGHUP: a valid new configuration replaces the running one without a
    refused connection; an invalid one is refused and the daemon keeps going."""

    def test_sighup_reload_keeps_accepting(self):
        import signal
        p = example("provider-outbound-email.json")
        p["attachments"] = []
        p["locationId"] = "LNewLocation"
        p["messageId"] = "before" + os.urandom(4).hex()
        self.assertEqual(d.post_webhook(p)[0], 404)
        # a broken config is refused, the daemon keeps serving
        with open(d.conf, "a") as f:
            f.write("\n[server]\nbogus_key = 1\n")
        d.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        self.assertIn("has errors; keeping the running configuration", d.log())
        self.assertEqual(d.get("/healthz")[0], 200)
        # a valid one with a new location
        d.write_config([
            location_conf(LOC, **{"from": "Support <support@mail.test>", "smtp_host": "127.0.0.1",
                                  "smtp_port": BASE + 99, "smtp_tls": "none", "token": "static-token"}),
            location_conf("LNewLocation", **{"from": "New <new@mail.test>", "smtp_host": "127.0.0.1",
                                             "smtp_port": BASE + 99, "smtp_tls": "none", "token": "static-token"})])
        results, stop = [], threading.Event()

        def hammer():
            while not stop.is_set():
                q = self_payload()
                try:
                    st, _ = d.post_webhook(q)
                except OSError as e:
                    st = repr(e)
                results.append(st)

        def self_payload():
            q = example("provider-outbound-email.json")
            q["attachments"] = []
            q["messageId"] = "during" + os.urandom(6).hex()
            return q
        pid = d.proc.pid
        t = threading.Thread(target=hammer)
        t.start()
        time.sleep(0.3)
        d.proc.send_signal(signal.SIGHUP)
        end = time.time() + 15
        while time.time() < end and "restarting with the new configuration" not in d.log():
            time.sleep(0.05)
        time.sleep(1.5)
        stop.set()
        t.join(10)
        self.assertIn("restarting with the new configuration", d.log())
        self.assertEqual(d.proc.pid, pid)
        self.assertIsNone(d.proc.poll(), "still running (exec, not exit):\n" + d.log()[-3000:])
        self.assertTrue(results)
        self.assertEqual([r for r in results if r != 200], [], "no webhook refused during the reload")
        # every acknowledged webhook is in the store
        self.assertEqual(sum(1 for j in d.jobs() if j["message_id"].startswith("during")), len(results))
        p["messageId"] = "after" + os.urandom(4).hex()
        self.assertEqual(d.post_webhook(p)[0], 200)
        # systemd heard: ready; then, for the valid reload only, reloading
        # (with its monotonic time) and ready again from the exec'd daemon
        said = notifications(wait=1.0)
        self.assertTrue(said and said[0].startswith("READY=1"), said)
        reloading = [m for m in said if m.startswith("RELOADING=1\nMONOTONIC_USEC=")]
        self.assertEqual(len(reloading), 1, said)
        self.assertTrue(any(m.startswith("READY=1") for m in said[said.index(reloading[0]) + 1:]), said)


class TestDeliveryToken(unittest.TestCase):
    """[highlevel] delivery_token: the Delivery URL carries a secret; and
    app webhooks need a signature even with require_signature = no."""
    @classmethod
    def setUpClass(cls):
        cls.token = "dt-" + os.urandom(8).hex()
        cls.d = Daemon(BASE + 51, ghl.url, [location_conf(
            LOC, **{"from": "Support <support@mail.test>", "smtp_host": "127.0.0.1",
                    "smtp_port": BASE + 99, "smtp_tls": "none", "token": "static-token"})],
            require_signature=False,
            extra_highlevel=f"delivery_token = {cls.token}\napp_id = app1\n")
        cls.d.start()

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()
        cls.d.cleanup()

    def payload(self):
        p = example("provider-outbound-email.json")
        p["attachments"] = []
        p["messageId"] = "t" + os.urandom(6).hex()
        return p

    def test_token_required(self):
        dd = self.d
        for path in ("/webhooks/provider", "/webhooks/provider/wrong", f"/webhooks/provider/{self.token}x",
                     "/webhooks/provider?token=", f"/webhooks/provider?token={self.token[:-1]}"):
            p = self.payload()
            st, body = dd.post_webhook(p, path=path)
            self.assertEqual(st, 401, (path, body))
            self.assertIsNone(dd.job(p["messageId"]))
        for path in (f"/webhooks/provider/{self.token}", f"/webhooks/provider?token={self.token}"):
            p = self.payload()
            st, body = dd.post_webhook(p, path=path)
            self.assertEqual((st, body["status"]), (200, "accepted"), path)
        # the right token with a bad signature is logged, without the token
        st, _ = dd.post_webhook(self.payload(), path=f"/webhooks/provider/{self.token}", sign="bad")
        self.assertEqual(st, 401)
        self.assertIn("path=/webhooks/provider/<token>", dd.log())
        self.assertNotIn(self.token, dd.log())

    def test_check_config_quiet_and_masked(self):
        r = self.d.cli("check-config", "-q")
        self.assertEqual((r.returncode, r.stdout), (0, ""), r.stderr)
        r = self.d.cli("check-config")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("delivery_token = ********", r.stdout)
        self.assertNotIn(self.token, r.stdout + r.stderr)

    def test_app_webhook_always_signed(self):
        ev = {"type": "UNINSTALL", "appId": "app1", "locationId": LOC, "webhookId": os.urandom(4).hex()}
        st, body = self.d.post_webhook(ev, path="/webhooks/app", sign=None)
        self.assertEqual(st, 401, body)


class TestLimits(unittest.TestCase):
    """HTTP denial-of-service bounds: connections per address, one deadline
    per request, one budget for all bodies being received, small bodies
    off the Delivery URL, and no body buffered without a signature header."""
    @classmethod
    def setUpClass(cls):
        cls.d = Daemon(BASE + 52, ghl.url, [location_conf(
            LOC, **{"from": "Support <support@mail.test>", "smtp_host": "127.0.0.1",
                    "smtp_port": BASE + 99, "smtp_tls": "none", "token": "static-token"})],
            extra_server="connections_per_ip = 8\nrequest_timeout = 3\nmax_buffered = 200000\n")
        cls.d.start()

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()
        cls.d.cleanup()

    def open_post(self, path, length, headers=(), body=b""):
        import socket
        s = socket.create_connection(("127.0.0.1", self.d.port), timeout=10)
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n"
        for h in headers:
            head += h + "\r\n"
        s.sendall(head.encode() + b"\r\n" + body)
        return s

    def read_all(self, s, timeout):
        s.settimeout(timeout)
        data = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
                if b"\r\n\r\n" in data and b"Content-Length: " in data:
                    head, _, rest = data.partition(b"\r\n\r\n")
                    n = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                    if len(rest) >= n:
                        break
        except OSError:
            pass
        s.close()
        return data

    def test_unsigned_body_refused_before_it_is_read(self):
        # 60 KB announced, none sent: the 401 comes on the headers alone
        t0 = time.time()
        s = self.open_post("/webhooks/provider", 60000)
        data = self.read_all(s, 5)
        self.assertTrue(data.startswith(b"HTTP/1.1 401"), data[:100])
        self.assertIn(b"signature required", data)
        self.assertLess(time.time() - t0, 2)
        s = self.open_post("/webhooks/app", 1000)
        self.assertTrue(self.read_all(s, 5).startswith(b"HTTP/1.1 401"))

    def test_small_body_cap_off_the_delivery_url(self):
        for path in ("/webhooks/app", "/plugins/x/y", "/healthz"):
            s = self.open_post(path, 70000, ["X-GHL-Signature: x"])
            data = self.read_all(s, 5)
            self.assertTrue(data.startswith((b"HTTP/1.1 413", b"HTTP/1.1 405")), (path, data[:100]))

    def test_trickled_body_dropped_at_the_deadline(self):
        s = self.open_post("/webhooks/provider", 1000, ["X-GHL-Signature: x"], b"{")
        t0 = time.time()
        closed = False
        while time.time() - t0 < 8:
            try:
                s.sendall(b" ")
            except OSError:
                closed = True
                break
            time.sleep(0.25)
        if not closed:
            s.settimeout(1)
            try:
                closed = s.recv(100) == b""
            except OSError:
                closed = True
        s.close()
        self.assertTrue(closed, "a body trickled past request_timeout must be cut off")
        self.assertLess(time.time() - t0, 6)
        self.assertIn("request took too long", self.d.log())

    def test_budget_for_bodies_being_received(self):
        socks = []
        try:
            # each stalled body holds up to 64 KiB of the 200,000-byte budget
            for _ in range(4):
                socks.append(self.open_post("/webhooks/provider", 65000, ["X-GHL-Signature: x"], b"{" + b" " * 59999))
                time.sleep(0.3)
            time.sleep(0.5)
            self.assertIn("too many requests being received", self.d.log())
            self.assertEqual(self.d.get("/healthz")[0], 200)
        finally:
            for s in socks:
                s.close()

    def test_connections_per_address(self):
        import socket
        slow = os.environ.get("MB_VALGRIND")
        # connections of the tests before must be gone (slow under valgrind)
        time.sleep(5.0 if slow else 0.3)
        idle = [socket.create_connection(("127.0.0.1", self.d.port), timeout=5) for _ in range(8)]
        try:
            # the server must have accepted all 8 first (slow under valgrind)
            time.sleep(5.0 if slow else 0.3)
            extra = socket.create_connection(("127.0.0.1", self.d.port), timeout=5)
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertEqual(self.read_all(extra, 3), b"", "the 9th connection from one address is refused")
        finally:
            for s in idle:
                s.close()
        time.sleep(0.3)
        self.assertEqual(self.d.get("/healthz")[0], 200)
