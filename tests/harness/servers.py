"""Real mail servers for the tests: Dovecot (IMAP with IDLE, IMAPS, LMTP)
and Postfix (smtpd on loopback delivering mail.test to Dovecot over LMTP,
plus a submission port with STARTTLS + AUTH), each from a temporary
directory on loopback high ports. Recipes and gotchas: shared/TOOLCHAIN.md.

Every process started is a child of the test process and is stopped in
stop(); start-up and shutdown are bounded in time.
"""
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

USERS = ["alice", "bob", "carol", "support", "tempfail", "permfail"]


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_port(port, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if port_open(port):
            return
        time.sleep(0.02)
    raise RuntimeError(f"port {port} did not open within {timeout}s")


def stop_proc(proc, timeout=5.0):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(2)


class MailServers:
    """Dovecot + Postfix. Ports: base+0 IMAP, +1 IMAPS, +2 LMTP,
    +3 SMTP (no auth, DSN), +4 submission (STARTTLS + AUTH)."""

    def __init__(self, base_port, extra_users=(), transport=None, lmtp_domain=None, login_reuse=False):
        """transport: override Postfix's delivery (e.g. "discard:" for benchmarks).
        lmtp_domain: (domain, port) that Postfix hands to an LMTP server (mailbridge).
        login_reuse: Dovecot's high-performance login mode (one login process
        serves many connections, so its TLS session tickets stay valid for the
        next connection, as a big provider's do); by default a process per login."""
        self._login_service = "  service_count = 0\n  process_min_avail = 1" if login_reuse else ""
        self.transport = transport
        self.lmtp_domain = lmtp_domain
        self.users = USERS + list(extra_users)
        self.base = base_port
        self.imap, self.imaps, self.lmtp, self.smtp, self.submission = (base_port + i for i in range(5))
        self.dir = tempfile.mkdtemp(prefix="mb-mail-")
        os.chmod(self.dir, 0o755)
        self.dovecot = None
        self.postfix = None

    # ---- Dovecot ------------------------------------------------------
    def _gen_dovecot(self):
        d = os.path.join(self.dir, "dovecot")
        for sub in ("run", "state", "mail"):
            os.makedirs(os.path.join(d, sub))
        os.chmod(d, 0o755)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                        "-keyout", f"{d}/key.pem", "-out", f"{d}/cert.pem"],
                       check=True, capture_output=True, timeout=30)
        os.chmod(f"{d}/cert.pem", 0o644)
        uid = pwd.getpwnam("nobody").pw_uid
        gid = grp.getgrnam("nogroup").gr_gid
        with open(f"{d}/users", "w") as f:
            for u in self.users:
                f.write(f"{u}:{{PLAIN}}{u}pw:{uid}:{gid}::{d}/mail/{u}::\n")
        for u in self.users:
            os.makedirs(f"{d}/mail/{u}")
        for root, dirs, _ in os.walk(f"{d}/mail"):
            os.chown(root, uid, gid)
        with open(f"{d}/dovecot.conf", "w") as f:
            f.write(f"""
protocols = imap lmtp
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
instance_name = mb-test-{self.base}
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 1
ssl = yes
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
auth_username_format = %Ln
mail_location = maildir:~/Maildir
mailbox_idle_check_interval = 1 secs
imap_idle_notify_interval = 10 secs
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {d}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%n {d}/users
}}
service imap-login {{
{self._login_service}
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.imaps}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.lmtp}
  }}
}}
default_process_limit = 4096
default_client_limit = 8192
default_vsz_limit = 0
service imap {{
  process_limit = 4096
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
login_trusted_networks = 127.0.0.0/8
service auth {{
  unix_listener postfix-auth {{
    mode = 0666
  }}
}}
protocol lmtp {{
  postmaster_address = postmaster@mail.test
}}
""")
        self.cert = f"{d}/cert.pem"
        self.dovecot_dir = d

    def start_dovecot(self):
        for p in (self.imap, self.imaps, self.lmtp):
            if port_open(p):
                raise RuntimeError(f"port {p} is already in use (stale server?)")
        log = open(os.path.join(self.dovecot_dir, "stdout"), "w")
        self.dovecot = subprocess.Popen(["dovecot", "-F", "-c", f"{self.dovecot_dir}/dovecot.conf"],
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        for p in (self.imap, self.imaps, self.lmtp):
            wait_port(p)

    def stop_dovecot(self):
        stop_proc(self.dovecot)
        self.dovecot = None

    # ---- Postfix ------------------------------------------------------
    def _gen_postfix(self):
        p = os.path.join(self.dir, "postfix")
        for sub in ("etc", "spool", "data"):
            os.makedirs(os.path.join(p, sub))
        os.chmod(p, 0o755)
        pf = pwd.getpwnam("postfix")
        os.chown(f"{p}/data", pf.pw_uid, pf.pw_gid)
        with open(f"{p}/etc/vmailbox", "w") as f:
            for u in self.users + ["ghost"]:   # ghost: Postfix accepts, Dovecot bounces
                f.write(f"{u}@mail.test ok\n")
        with open(f"{p}/etc/virtual", "w") as f:
            # plus-addressed replies and DSNs reach the locations' mailboxes
            f.write("reply@mail.test support@mail.test\nbounce@mail.test support@mail.test\n"
                    "reply@client.test carol@mail.test\nbounce@client.test carol@mail.test\n")
        with open(f"{p}/etc/rcpt_access", "w") as f:
            f.write("tempfail@mail.test 451 4.3.0 Test temporary failure\n"
                    "permfail@mail.test 550 5.7.1 Test permanent failure\n")
        dc = self.dovecot_dir
        extra = ""
        if self.lmtp_domain:
            dom, port = self.lmtp_domain
            with open(f"{p}/etc/transport", "w") as f:
                f.write(f"{dom} lmtp:inet:127.0.0.1:{port}\n")
            extra = (f"relay_domains = {dom}\ntransport_maps = texthash:{p}/etc/transport\n"
                     "lmtp_connect_timeout = 5s\n")
        with open(f"{p}/etc/main.cf", "w") as f:
            f.write(extra)
            f.write(f"""compatibility_level = 3.6
config_directory = {p}/etc
queue_directory = {p}/spool
data_directory = {p}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.mail.test
mydomain = mail.test
myorigin = $mydomain
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
local_recipient_maps =
local_transport = error:local delivery disabled
alias_maps =
alias_database =
biff = no
maillog_file = {p}/maillog
maillog_file_prefixes = /var, /dev/stdout, {p}
virtual_mailbox_domains = mail.test, client.test
virtual_mailbox_maps = texthash:{p}/etc/vmailbox
virtual_transport = {self.transport or f"lmtp:inet:127.0.0.1:{self.lmtp}"}
virtual_alias_maps = texthash:{p}/etc/virtual
recipient_delimiter = +
default_transport = error:outbound delivery disabled in tests
relay_transport = error:outbound delivery disabled in tests
smtp_dns_support_level = disabled
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions = check_recipient_access texthash:{p}/etc/rcpt_access
smtpd_tls_cert_file = {dc}/cert.pem
smtpd_tls_key_file = {dc}/key.pem
smtpd_tls_security_level = may
smtpd_sasl_type = dovecot
smtpd_sasl_path = {dc}/run/postfix-auth
smtpd_sasl_auth_enable = no
smtpd_tls_auth_only = no
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 5s
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 1000
smtpd_hard_error_limit = 1000
smtpd_client_connection_rate_limit = 0
default_process_limit = 50
""")
        with open(f"{p}/etc/master.cf", "w") as f:
            f.write(f"""127.0.0.1:{self.smtp} inet n - n - - smtpd
127.0.0.1:{self.submission} inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
""")
        old = time.time() - 120
        for name in os.listdir(f"{p}/etc"):
            os.utime(f"{p}/etc/{name}", (old, old))   # TOOLCHAIN gotcha #8
        self.postfix_dir = p

    def start_postfix(self):
        p = self.postfix_dir
        for port in (self.smtp, self.submission):
            if port_open(port):
                raise RuntimeError(f"port {port} is already in use (Postfix binds with SO_REUSEPORT)")
        subprocess.run(["postfix", "-c", f"{p}/etc", "check"], check=True, timeout=30,
                       stdin=subprocess.DEVNULL, capture_output=True)
        self.postfix = subprocess.Popen(["/usr/lib/postfix/sbin/master", "-c", f"{p}/etc"],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        for port in (self.smtp, self.submission):
            wait_port(port)

    def stop_postfix(self):
        stop_proc(self.postfix)
        self.postfix = None

    def start(self):
        try:
            self._gen_dovecot()
            self._gen_postfix()
            self.start_dovecot()
            self.start_postfix()
        except BaseException:
            self.stop()     # a failed start (say, a port in use) leaves no process or directory
            raise
        return self

    def stop(self):
        self.stop_postfix()
        self.stop_dovecot()
        shutil.rmtree(self.dir, ignore_errors=True)

    def maillog(self):
        try:
            with open(os.path.join(self.postfix_dir, "maillog")) as f:
                return f.read()
        except OSError:
            return ""

    # ---- reading mail back ---------------------------------------------
    def fetch_all(self, user):
        """All messages in user's INBOX, as raw bytes, over IMAP."""
        import imaplib
        with imaplib.IMAP4("127.0.0.1", self.imap, timeout=10) as m:
            m.login(user, user + "pw")
            m.select("INBOX")
            typ, data = m.search(None, "ALL")
            out = []
            for num in data[0].split():
                typ, msg = m.fetch(num, "(RFC822)")
                out.append(msg[0][1])
            return out

    def wait_job_mail(self, user, job, timeout=15.0):
        """The first message of mailbridge job (its X-Mailbridge-Job) in
        user's INBOX, parsed; AssertionError when none comes in time."""
        import email
        end = time.time() + timeout
        while time.time() < end:
            for raw in self.fetch_all(user):
                m = email.message_from_bytes(raw)
                if m["X-Mailbridge-Job"] == job:
                    return m
            time.sleep(0.1)
        raise AssertionError(f"{job} not delivered to {user}")

    def wait_mail(self, user, count, timeout=15.0):
        end = time.time() + timeout
        msgs = []
        while time.time() < end:
            msgs = self.fetch_all(user)
            if len(msgs) >= count:
                return msgs
            time.sleep(0.1)
        return msgs
