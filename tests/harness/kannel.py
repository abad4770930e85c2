"""Real Kannel for the SMS tests: bearerbox with Kannel's own fake SMSC,
fakesmsc (from kannel-extras) as the phone network, and smsbox serving
sendsms and calling mailbridge's plugin route for MO messages. All on
loopback ports from base; every process is stopped in stop()."""
import os
import shutil
import subprocess
import tempfile
import time

from .servers import port_open, stop_proc, wait_port

FAKESMSC = "/usr/lib/kannel/test/fakesmsc"


class Kannel:
    def __init__(self, base, mo_url, mo_messages=()):
        self.admin, self.box, self.smsc, self.sendsms = base, base + 1, base + 2, base + 3
        self.dir = tempfile.mkdtemp(prefix="mb-kannel-")
        self.mo_url = mo_url
        self.mo_messages = list(mo_messages)
        self.procs = []
        self.conf = os.path.join(self.dir, "kannel.conf")
        with open(self.conf, "w") as f:
            f.write(f"""group = core
admin-port = {self.admin}
admin-password = adm
smsbox-port = {self.box}
log-level = 0
log-file = "{self.dir}/bearerbox.log"
box-allow-ip = "127.0.0.1"
dlr-storage = internal

group = smsc
smsc = fake
smsc-id = fake
port = {self.smsc}
connect-allow-ip = "127.0.0.1"

group = smsbox
bearerbox-host = 127.0.0.1
sendsms-port = {self.sendsms}
global-sender = "+15559990000"
log-file = "{self.dir}/smsbox.log"
log-level = 0

group = sendsms-user
username = mb
password = mbpw
max-messages = 10
concatenation = true

group = sms-service
keyword = default
get-url = "{mo_url}{"&" if "?" in mo_url else "?"}from=%p&text=%a"
omit-empty = true
max-messages = 0
""")

    def _spawn(self, args, name):
        out = open(os.path.join(self.dir, name), "w")
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def start(self):
        for p in (self.admin, self.box, self.smsc, self.sendsms):
            if port_open(p):
                raise RuntimeError(f"port {p} is already in use")
        self._spawn(["/usr/sbin/bearerbox", self.conf], "bearerbox.out")
        wait_port(self.smsc)
        wait_port(self.box)
        # the phone network: MO messages after a pause, then it prints every MT it gets
        args = [FAKESMSC, "-H", "127.0.0.1", "-r", str(self.smsc), "-i", "3", "-m", str(len(self.mo_messages) or 0)]
        self.fakesmsc = self._spawn(args + (self.mo_messages or ["+10000000000 +10000000001 text unused"]),
                                    "fakesmsc.out")
        self._spawn(["/usr/sbin/smsbox", self.conf], "smsbox.out")
        wait_port(self.sendsms)
        return self

    def stop_all(self):
        for p in reversed(self.procs):
            stop_proc(p)
        self.procs = []

    def stop(self):
        self.stop_all()
        shutil.rmtree(self.dir, ignore_errors=True)

    def received(self):
        """MT messages the fake SMSC got: (sender, receiver, text)."""
        out = []
        try:
            with open(os.path.join(self.dir, "fakesmsc.out")) as f:
                for line in f:
                    if "Got message" in line and "<" in line:
                        body = line[line.index("<") + 1:line.rindex(">")]
                        parts = body.split(" ", 3)
                        if len(parts) == 4:
                            out.append((parts[0], parts[1], parts[3]))
        except OSError:
            pass
        return out

    def wait_received(self, text, timeout=15):
        end = time.time() + timeout
        while time.time() < end:
            hits = [m for m in self.received() if m[2] == text]
            if hits:
                return hits
            time.sleep(0.1)
        return []
