"""mailbridge doctor against real servers: Postfix (submission with
STARTTLS and AUTH), Dovecot (IMAPS), and a real DNS server (unbound, on
loopback, serving the test zones) that doctor's libunbound asks."""
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness.daemon import Daemon, location_conf, stop_all  # noqa: E402
from harness.fakeghl import FakeGHL  # noqa: E402
from harness.servers import MailServers, port_open, stop_proc, wait_port  # noqa: E402

BASE = int(os.environ.get("MB_TEST_PORT_BASE", "21000")) + 1000
TOKEN = "static-token"
DNS_PORT = BASE + 60

# .example, not .test: libunbound answers the RFC 6761 names (test.,
# invalid., ...) itself, as NXDOMAIN
ZONES = {
    "acme.example": [
        'acme.example. TXT "v=spf1 include:_spf.relay.example -all"',
        'acme.example. MX 10 mx.acme.example.',
        'mx.acme.example. A 192.0.2.25',
        's1._domainkey.acme.example. TXT "v=DKIM1; k=rsa; " '
        '"p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC5test0key0only0for0the0doctor0check"',
        '_dmarc.acme.example. TXT "v=DMARC1; p=quarantine; rua=mailto:dmarc@acme.example"',
    ],
    "relay.example": ['_spf.relay.example. TXT "v=spf1 ip4:192.0.2.0/28 -all"'],
    "bad.example": [
        'bad.example. TXT "v=spf1 ip4:192.0.2.10 -all"',
        '_dmarc.bad.example. TXT "v=DMARC1; p=none"',
    ],
}


def start_unbound(workdir):
    conf = os.path.join(workdir, "unbound.conf")
    lines = ["server:", f"  interface: 127.0.0.1@{DNS_PORT}", f"  port: {DNS_PORT}", "  do-daemonize: no",
             "  use-syslog: no", '  chroot: ""', '  username: ""', f'  directory: "{workdir}"',
             f'  pidfile: "{workdir}/unbound.pid"', '  logfile: ""', "  do-ip6: no",
             "  access-control: 127.0.0.0/8 allow"]
    for zone, records in ZONES.items():
        lines.append(f'  local-zone: "{zone}." static')
        lines += [f"  local-data: '{r}'" for r in records]
    lines += ["remote-control:", "  control-enable: no"]
    with open(conf, "w") as f:
        f.write("\n".join(lines) + "\n")
    check = subprocess.run(["unbound-checkconf", conf], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    if port_open(DNS_PORT):
        raise RuntimeError(f"port {DNS_PORT} is already in use (stale server?)")
    proc = subprocess.Popen(["unbound", "-d", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # unbound listens on UDP and TCP; the TCP port says it is up
    wait_port(DNS_PORT, timeout=15)
    return proc


def setUpModule():
    global srv, ghl, d, dns, dnsdir
    dnsdir = tempfile.mkdtemp(prefix="mb-dns-")
    dns = start_unbound(dnsdir)
    srv = MailServers(BASE).start()
    ghl = FakeGHL()
    ghl.static_tokens.add(TOKEN)
    good = {"from": "Acme Support <support@acme.example>", "reply_domain": "acme.example", "token": TOKEN,
            "smtp_host": "127.0.0.1", "smtp_port": srv.submission, "smtp_tls": "starttls",
            "smtp_user": "alice", "smtp_password": "alicepw", "smtp_ca_file": srv.cert,
            "imap_host": "127.0.0.1", "imap_port": srv.imaps, "imap_tls": "tls", "imap_ca_file": srv.cert,
            "imap_user": "support", "imap_password": "supportpw",
            "dkim_selector": "s1", "relay_ips": "192.0.2.10"}
    bad = {"from": "Bad <x@bad.example>", "reply_domain": "bad.example",
           "smtp_host": "127.0.0.1", "smtp_port": BASE + 99, "smtp_tls": "none",
           "imap_host": "127.0.0.1", "imap_port": srv.imaps, "imap_tls": "tls", "imap_ca_file": srv.cert,
           "imap_user": "support", "imap_password": "wrong",
           "dkim_selector": "s1", "relay_ips": "198.51.100.9"}
    d = Daemon(BASE + 50, ghl.url, [location_conf("LGood", **good), location_conf("LBad", **bad)],
               extra_server=f"dns_resolver = 127.0.0.1@{DNS_PORT}")
    d.start()


def tearDownModule():
    stop_proc(dns)
    shutil.rmtree(dnsdir, ignore_errors=True)
    stop_all(d, ghl, srv)


def lines(out, check):
    return [l for l in out.splitlines() if l.split()[1:2] == [check]]


class TestDoctor(unittest.TestCase):
    def doctor(self, *args):
        return d.cli("doctor", *args, timeout=120)

    def test_a_good_location(self):
        st, body = d.post_webhook({"type": "Email", "locationId": "LGood", "messageId": "doc1",
                                   "emailMessageId": "doc1", "contactId": "c1", "emailTo": ["bob@mail.test"],
                                   "html": "<p>hi</p>", "subject": "s"})
        self.assertEqual(st, 200, body)
        r = self.doctor("--location", "LGood")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        out = r.stdout
        self.assertIn("[location LGood]", out)
        self.assertNotIn("[location LBad]", out)
        for check in ("token", "webhooks", "relay", "imap", "spf", "dkim", "dmarc", "mx"):
            got = lines(out, check)
            self.assertEqual(len(got), 1, (check, out))
            self.assertTrue(got[0].lstrip().startswith("OK "), got[0])
        self.assertIn("certificate verified", lines(out, "relay")[0])
        self.assertIn("AUTH accepted", lines(out, "relay")[0])
        self.assertIn("IDLE offered", lines(out, "imap")[0])
        # SPF through the include, for the configured relay address
        spf = lines(out, "spf")[0]
        self.assertIn("192.0.2.10: pass", spf)
        self.assertIn("_spf.relay.example", spf)
        self.assertIn("p=quarantine", lines(out, "dmarc")[0])
        self.assertIn("mx.acme.example", lines(out, "mx")[0])
        self.assertIn("0 failed", out)
        # the probe sent nothing: only the webhook's own message reaches bob
        self.assertNotIn("mailbridge test message", "".join(str(m) for m in srv.fetch_all("bob")))

    def test_b_bad_location_fails_with_fixes(self):
        r = self.doctor("--location", "LBad")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        out = r.stdout
        expect = {"token": "FAIL", "webhooks": "WARN", "relay": "FAIL", "imap": "FAIL", "spf": "FAIL",
                  "dkim": "FAIL", "dmarc": "WARN", "mx": "FAIL"}   # DMARC p=none: a warning
        for check, level in expect.items():
            got = lines(out, check)
            self.assertEqual(len(got), 1, (check, out))
            self.assertTrue(got[0].lstrip().startswith(level + " "), got[0])
        self.assertIn("198.51.100.9: fail", lines(out, "spf")[0])
        self.assertIn("fix:", lines(out, "spf")[0])
        self.assertIn("s1._domainkey.bad.example: no key published", lines(out, "dkim")[0])
        self.assertIn("p=none", lines(out, "dmarc")[0])
        self.assertIn("bad.example has no MX", lines(out, "mx")[0])
        self.assertIn("LOGIN", lines(out, "imap")[0])
        self.assertIn("not installed", lines(out, "token")[0])
        self.assertNotIn("wrong", out)     # the password is never shown
        self.assertIn("6 failed, 2 warning(s)", out)

    def test_c_send_test_and_all_locations(self):
        r = self.doctor("--location", "LGood", "--to", "bob@mail.test")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertTrue(lines(r.stdout, "send-test")[0].lstrip().startswith("OK "), r.stdout)
        self.assertTrue(srv.wait_mail("bob", 2, timeout=15))
        r = self.doctor()
        self.assertEqual(r.returncode, 1)
        self.assertIn("[location LGood]", r.stdout)
        self.assertIn("[location LBad]", r.stdout)
        r = self.doctor("--location", "Nope")
        self.assertEqual(r.returncode, 1)
        self.assertIn("location Nope is not configured", r.stderr)

    def test_d_resolver_down_is_a_warning(self):
        dd = Daemon(BASE + 51, ghl.url, [location_conf("LGood", **{
            "from": "A <a@acme.example>", "smtp_host": "127.0.0.1", "smtp_port": srv.smtp, "smtp_tls": "none",
            "token": TOKEN})], extra_server=f"dns_resolver = 127.0.0.1@{BASE + 98}")
        try:
            dd.start()
            r = dd.cli("doctor", timeout=120)
            for check in ("spf", "dmarc", "mx"):
                got = lines(r.stdout, check)
                self.assertEqual(len(got), 1, (check, r.stdout))
                self.assertTrue(got[0].lstrip().startswith("WARN "), got[0])
        finally:
            dd.stop()
            dd.cleanup()


if __name__ == "__main__":
    unittest.main()
