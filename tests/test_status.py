"""GET /status: the operator's page, rendered by mailbridge from the store,
against real Postfix and Dovecot, read over HTTP and in a real headless
browser (Chromium), whose screenshot is checked."""
import base64
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness.daemon import Daemon, location_conf, stop_all  # noqa: E402
from harness.fakeghl import FakeGHL  # noqa: E402
from harness.servers import MailServers  # noqa: E402

BASE = int(os.environ.get("MB_TEST_PORT_BASE", "21000")) + 1100
TOKEN = "static-token"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def webhook(loc, to, mid):
    return {"type": "Email", "locationId": loc, "messageId": mid, "emailMessageId": mid, "contactId": "c1",
            "emailTo": [to], "html": "<p>hi</p>", "subject": "status page"}


def setUpModule():
    global srv, ghl, d, tok
    srv = MailServers(BASE).start()
    ghl = FakeGHL()
    ghl.static_tokens.add(TOKEN)
    relay = {"smtp_host": "127.0.0.1", "smtp_port": srv.smtp, "smtp_tls": "none"}
    locs = [
        location_conf("LOk", **relay, **{"from": "Ok <support@mail.test>", "token": TOKEN,
                                         "imap_host": "127.0.0.1", "imap_port": srv.imaps, "imap_tls": "tls",
                                         "imap_ca_file": srv.cert, "imap_user": "support",
                                         "imap_password": "supportpw"}),
        location_conf("LPerm", **relay, **{"from": "Perm <p@mail.test>", "token": TOKEN}),
        location_conf("LBroken", **{"from": "Broken <b@mail.test>", "smtp_host": "127.0.0.1",
                                    "smtp_port": BASE + 99, "smtp_tls": "none"}),
    ]
    # no metrics_token: the page answers on loopback only
    d = Daemon(BASE + 50, ghl.url, locs)
    d.start()
    for i in range(3):
        assert d.post_webhook(webhook("LOk", "bob@mail.test", f"ok{i}"))[0] == 200
    assert d.post_webhook(webhook("LPerm", "permfail@mail.test", "perm1"))[0] == 200
    assert d.post_webhook(webhook("LBroken", "bob@mail.test", "broken1"))[0] == 200
    d.wait_job("perm1", lambda j: j["state"] == "failed")
    d.wait_job("broken1", lambda j: j["attempts"] >= 1)
    for i in range(3):
        d.wait_job(f"ok{i}", lambda j: j["state"] == "sent")
    end = time.time() + 15
    while time.time() < end and "connected" not in d.log():
        time.sleep(0.1)
    # a second daemon with a metrics token, for the page's authentication
    tok = Daemon(BASE + 51, ghl.url, [location_conf("LT", **relay, **{"from": "T <t@mail.test>"})],
                 extra_server="metrics_token = page-secret")
    tok.start()


def tearDownModule():
    tok.stop()
    tok.cleanup()
    stop_all(d, ghl, srv)


def png_pixels(path):
    """(width, height, rows of RGBA bytes) of an 8-bit RGBA or RGB PNG."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
            bpp = 4 if color == 6 else 3
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = w * bpp
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, bpp, rows


class TestStatusPage(unittest.TestCase):
    def page(self):
        st, body, headers = d.request("GET", "/status")
        self.assertEqual(st, 200, body)
        self.assertTrue(headers["Content-Type"].startswith("text/html"))
        return body.decode()

    def row(self, html, loc):
        m = re.search(rf'<tr id="loc-{loc}">(.*?)</tr>', html, re.S)
        self.assertIsNotNone(m, loc)
        return re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", m.group(1), re.S), m.group(1)

    def test_threads_named(self):
        """Each thread carries its part's name, as top -H and perf show
        it: the senders, reporters, inbound posters and IMAP threads."""
        names = set()
        deadline = time.time() + 10
        want = {"mb-outbound", "mb-report", "mb-inbound", "mb-imap-idle", "mb-imap-worker"}
        while time.time() < deadline and not want <= names:
            for tid in os.listdir(f"/proc/{d.proc.pid}/task"):
                try:
                    with open(f"/proc/{d.proc.pid}/task/{tid}/comm") as f:
                        names.add(f.read().strip())
                except OSError:
                    pass   # a thread that ended meanwhile
            time.sleep(0.1)
        self.assertLessEqual(want, names)

    def test_per_location_state(self):
        html = self.page()
        self.assertNotIn("<script", html.lower())
        cells, raw = self.row(html, "LOk")
        self.assertEqual(cells[1], "static (config)")
        self.assertRegex(cells[2], r"^(idling|polling) since ")
        self.assertEqual((cells[3], cells[4]), ("0", "-"))
        cells, raw = self.row(html, "LBroken")
        self.assertEqual(cells[1], "not installed")
        self.assertIn('class="fail"', raw)
        self.assertEqual(cells[2], "not configured")
        self.assertEqual(cells[3], "1")
        self.assertRegex(cells[4], r"^\d+s$")
        self.assertIn("connect", cells[5].lower())
        # the relay's words are escaped: the address in brackets is text
        cells, raw = self.row(html, "LPerm")
        self.assertIn("&lt;permfail@mail.test&gt;", cells[5])
        self.assertNotIn("<permfail", html)
        self.assertIn("5.7.1", cells[5])

    def test_recent_events(self):
        html = self.page()
        ok = re.search(r'<section id="events-LOk">(.*?)</section>', html, re.S).group(1)
        rows = re.findall(r"<tr><td", ok)
        self.assertGreaterEqual(len(rows), 6)          # 3 webhooks, 3 sends, statuses
        self.assertLessEqual(len(rows), 20)
        self.assertIn(">webhook<", ok)
        self.assertRegex(ok, r"attempt 1: sent")
        self.assertNotIn("perm1", ok)                  # another location's
        perm = re.search(r'<section id="events-LPerm">(.*?)</section>', html, re.S).group(1)
        self.assertIn("perm1", perm)
        self.assertIn("&lt;permfail@mail.test&gt;", perm)

    def test_token_or_loopback(self):
        st, body, headers = tok.request("GET", "/status")
        self.assertEqual(st, 401)
        self.assertTrue(headers.get("WWW-Authenticate", "").startswith("Basic "), headers)
        st, _, _ = tok.request("GET", "/status", headers={"Authorization": "Bearer page-secret"})
        self.assertEqual(st, 200)
        basic = base64.b64encode(b"admin:page-secret").decode()
        st, body, _ = tok.request("GET", "/status", headers={"Authorization": "Basic " + basic})
        self.assertEqual(st, 200)
        self.assertIn('id="loc-LT"', body.decode())
        wrong = base64.b64encode(b"admin:page-secreT").decode()
        self.assertEqual(tok.request("GET", "/status", headers={"Authorization": "Basic " + wrong})[0], 401)
        self.assertEqual(tok.request("GET", "/status", headers={"Authorization": "Bearer nope"})[0], 401)

    def test_loopback_only_without_token(self):
        # reach the page from an address of this host that is not loopback
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.connect(("192.0.2.1", 9))        # no packet is sent: only the route is looked up
            ip = s.getsockname()[0]
            s.close()
        except OSError:
            ip = None
        if not ip or ip.startswith("127."):
            self.skipTest("this host has no non-loopback address")
        other = Daemon(BASE + 52, ghl.url, [], extra_server="")
        try:
            other.write_config([])
            with open(other.conf) as f:
                text = f.read().replace(f"listen = 127.0.0.1:{BASE + 52}", f"listen = 0.0.0.0:{BASE + 52}")
            with open(other.conf, "w") as f:
                f.write(text)
            other.start()
            import urllib.request
            import urllib.error
            try:
                urllib.request.urlopen(f"http://{ip}:{BASE + 52}/status", timeout=10)
                self.fail("the page answered a non-loopback peer")
            except urllib.error.HTTPError as e:
                self.assertEqual(e.code, 403)
            self.assertEqual(other.request("GET", "/status")[0], 200)
        finally:
            other.stop()
            other.cleanup()

    @unittest.skipUnless(CHROMIUM, "chromium is not installed")
    def test_in_a_real_browser(self):
        out = tempfile.mkdtemp(prefix="mb-status-")
        try:
            shot = os.path.join(out, "status.png")
            common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                      f"--user-data-dir={out}/profile", "--window-size=1280,900"]
            url = f"http://127.0.0.1:{d.port}/status"
            dom = subprocess.run(common + ["--dump-dom", url], capture_output=True, text=True, timeout=60)
            self.assertIn('id="loc-LBroken"', dom.stdout, dom.stderr[-2000:])
            self.assertIn("&lt;permfail@mail.test&gt;", dom.stdout)
            r = subprocess.run(common + [f"--screenshot={shot}", url], capture_output=True, text=True, timeout=60)
            self.assertTrue(os.path.exists(shot), r.stderr[-2000:])
            w, h, bpp, rows = png_pixels(shot)
            self.assertEqual((w, h), (1280, 900))
            white = red = dark = 0
            for line in rows:
                for x in range(0, w * bpp, bpp):
                    px = line[x:x + 3]
                    if px == b"\xff\xff\xff":
                        white += 1
                    elif px == b"\xbb\x00\x00":       # .fail's background: the LBroken token cell
                        red += 1
                    elif max(px) < 90:
                        dark += 1
            self.assertGreater(white, w * h // 2)      # the page, not a blank or error screen
            self.assertGreater(red, 500)               # the failing token cell is painted red
            self.assertGreater(dark, 2000)             # and there is text
            keep = os.environ.get("MB_SCREENSHOT_DIR")
            if keep:
                shutil.copy(shot, os.path.join(keep, "status.png"))
        finally:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
