"""Many mailboxes in one process: 200 Dovecot users, each the IMAP
mailbox of its own location, all idling at once over TLS; a message to
any of them is posted to HighLevel within 2 seconds."""
import os
import random
import re
import sys
import time
import unittest
import email.utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness.daemon import Daemon, location_conf, stop_all  # noqa: E402
from harness.fakeghl import FakeGHL  # noqa: E402
from harness.servers import MailServers  # noqa: E402

BASE = int(os.environ.get("MB_TEST_PORT_BASE", "21000")) + 500
N = int(os.environ.get("MB_MANY_MAILBOXES", "200"))
USERS = [f"box{i:04d}" for i in range(N)]


def setUpModule():
    global srv, ghl, d
    srv = MailServers(BASE, extra_users=USERS).start()
    ghl = FakeGHL()
    ghl.static_tokens.add("tok")
    locs = [location_conf(f"L{u}", **{"from": f"{u} <{u}@mail.test>", "smtp_host": "127.0.0.1", "smtp_port": srv.smtp,
                                     "smtp_tls": "none", "token": "tok", "imap_host": "127.0.0.1",
                                     "imap_port": srv.imaps, "imap_tls": "tls", "imap_ca_file": srv.cert,
                                     "imap_user": u, "imap_password": u + "pw"}) for u in USERS]
    d = Daemon(BASE + 50, ghl.url, locs)
    d.start()


def tearDownModule():
    stop_all(d, ghl, srv)


class TestManyMailboxes(unittest.TestCase):
    def test_all_connect_and_any_posts_fast(self):
        end = time.time() + 90
        while time.time() < end:
            if len(re.findall(r"imap: locationId=\S+ connected", d.log())) >= N:
                break
            time.sleep(0.2)
        self.assertEqual(len(set(re.findall(r"imap: locationId=(\S+) connected", d.log()))), N)
        time.sleep(1.0)   # every watcher back in IDLE
        import imaplib
        latencies = []
        for u in random.sample(USERS, 8):
            msgid = email.utils.make_msgid(domain="many.test")
            raw = f"From: x@many.test\r\nTo: {u}@mail.test\r\nSubject: hi {u}\r\nMessage-ID: {msgid}\r\n\r\nhello\r\n"
            t0 = time.time()
            with imaplib.IMAP4("127.0.0.1", srv.imap, timeout=10) as m:
                m.login(u, u + "pw")
                m.append("INBOX", None, None, raw.encode())
            hit = None
            while time.time() - t0 < 5 and not hit:
                with ghl.lock:
                    hit = [b for b in ghl.inbound if b.get("altId") == msgid]
                time.sleep(0.02)
            latencies.append(time.time() - t0)
            self.assertTrue(hit, f"nothing posted for {u}")
            self.assertEqual(ghl.calls("GET", "/contacts/search/duplicate")[-1]["path"].split("locationId=")[1].split("&")[0], f"L{u}")
        self.assertLess(max(latencies), 2.0, latencies)
        self.assertFalse("retry in" in d.log(), "no watcher should have had to reconnect")


if __name__ == "__main__":
    unittest.main()
