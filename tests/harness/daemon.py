"""Runs the mailbridge binary under test: writes its config (one file per
location under locations.d/), starts it, waits for /healthz, posts signed
webhooks, reads its store, stops it (SIGTERM) or kills it (SIGKILL).

Webhook signatures: a test Ed25519 key pair and a test RSA key pair are
generated once per test run with openssl and stand in for HighLevel's.
"""
import base64
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import zlib

from . import pg

class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kw):
        return None   # tests look at the 302 itself


_OPENER = urllib.request.build_opener(_NoRedirect)

BINARY = os.environ.get("MAILBRIDGE_BIN", "mailbridge")
VALGRIND = os.environ.get("MB_VALGRIND")  # run the daemon under valgrind when set


class Keys:
    _inst = None

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mb-keys-")
        run = lambda *a: subprocess.run(a, check=True, capture_output=True, timeout=60)
        run("openssl", "genpkey", "-algorithm", "ed25519", "-out", f"{self.dir}/ed.key")
        run("openssl", "pkey", "-in", f"{self.dir}/ed.key", "-pubout", "-out", f"{self.dir}/ed.pub")
        run("openssl", "genpkey", "-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:2048",
            "-out", f"{self.dir}/rsa.key")
        run("openssl", "pkey", "-in", f"{self.dir}/rsa.key", "-pubout", "-out", f"{self.dir}/rsa.pub")
        self.ed_pub = f"{self.dir}/ed.pub"
        self.rsa_pub = f"{self.dir}/rsa.pub"

    @classmethod
    def get(cls):
        if cls._inst is None:
            import atexit
            cls._inst = Keys()
            atexit.register(shutil.rmtree, cls._inst.dir, True)
        return cls._inst

    def _sign(self, args, body):
        p = subprocess.run(args, input=body, capture_output=True, check=True, timeout=30)
        return base64.b64encode(p.stdout).decode()

    def sign_ed25519(self, body):
        with tempfile.NamedTemporaryFile() as f:
            f.write(body)
            f.flush()
            return self._sign(["openssl", "pkeyutl", "-sign", "-inkey", f"{self.dir}/ed.key",
                               "-rawin", "-in", f.name], b"")

    def sign_rsa(self, body):
        return self._sign(["openssl", "dgst", "-sha256", "-sign", f"{self.dir}/rsa.key"], body)


def location_conf(loc_id, **kw):
    lines = [f"[location {loc_id}]"]
    for k, v in kw.items():
        if v is not None:
            lines.append(f"{k} = {v}")
    return "\n".join(lines) + "\n"



PACK_MAGIC = b"\0mbz1"


def unpack_payload(value):
    """A payload as SQLite keeps it (store/store_pack.c): zlib after a
    magic that no JSON text starts with, or the text as written."""
    if isinstance(value, bytes) and value.startswith(PACK_MAGIC):
        return zlib.decompress(value[len(PACK_MAGIC):]).decode()
    return value

class Daemon:
    def __init__(self, port, api_base, locations, extra_highlevel="", extra_store="",
                 require_signature=True, workers=2, log_level="debug", extra_server="", extra_sections="",
                 store=None, store_db=None):
        """store: "postgresql" forces the PostgreSQL backend (default: as
        MB_TEST_STORE says); store_db: a database to share with another
        Daemon (two instances on one store)."""
        self.log_level = log_level
        self.extra_sections = extra_sections
        self.extra_server = extra_server
        self.port = port
        self.dir = tempfile.mkdtemp(prefix="mb-daemon-")
        self.conf = f"{self.dir}/mailbridge.conf"
        self.keys = Keys.get()
        self.proc = None
        self.api_base = api_base
        self.require_signature = require_signature
        self.extra_highlevel = extra_highlevel
        self.extra_store = extra_store
        self.workers = workers
        os.makedirs(f"{self.dir}/locations.d")
        # MB_TEST_STORE=postgresql: a database of its own on the shared server
        self.pg = self.pg_db = None
        if store == "postgresql" or (store is None and pg.enabled()):
            self.pg = pg.PgServer.shared()
            self.pg_db = store_db or self.pg.create_db("mb_" + os.path.basename(self.dir).replace("-", "_").lower())
        self.write_config(locations)
        self.log_path = f"{self.dir}/mailbridge.log"

    def write_config(self, locations):
        with open(self.conf, "w") as f:
            f.write(f"""[server]
listen = 127.0.0.1:{self.port}
public_url = http://127.0.0.1:{self.port}
max_body = 65536
log_level = {self.log_level}
{self.extra_server}

[highlevel]
api_base = {self.api_base}
webhook_key_ed25519 = {self.keys.ed_pub}
webhook_key_rsa = {self.keys.rsa_pub}
require_signature = {"yes" if self.require_signature else "no"}
{self.extra_highlevel}

[store]
data_dir = {self.dir}/data
{self.store_backend()}
workers = {self.workers}
retry_base = 1
retry_max = 2
{self.extra_store}

{self.extra_sections}

include = locations.d/*.conf
""")
        os.chmod(self.conf, 0o600)
        for name in os.listdir(f"{self.dir}/locations.d"):
            os.unlink(f"{self.dir}/locations.d/{name}")
        for i, text in enumerate(locations):
            path = f"{self.dir}/locations.d/{i:02d}.conf"
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o600)

    def store_backend(self):
        if not self.pg:
            return ""
        return f"backend = postgresql\ndsn = {self.pg.dsn(self.pg_db)}"

    def cli(self, *args, timeout=30):
        return subprocess.run([os.environ.get("MAILBRIDGE_BIN", BINARY), *args, "-c", self.conf], capture_output=True, text=True,
                              timeout=timeout)

    def start(self, timeout=10.0):
        log = open(self.log_path, "a")
        cmd = [os.environ.get("MAILBRIDGE_BIN", BINARY), "serve", "-c", self.conf]
        if VALGRIND:
            cmd = ["valgrind", "--trace-children=yes", "--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite",
                   "--quiet", *cmd]
            timeout *= 6
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mailbridge exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.get("/healthz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("mailbridge did not become healthy:\n" + self.log())

    def stop(self, timeout=20.0):
        """SIGTERM; returns the exit status (must be 0 for a clean stop)."""
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            rc = "timeout"
        self.proc = None
        return rc

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)
        self.proc = None

    def cleanup(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    # ---- HTTP ------------------------------------------------------------
    def request(self, method, path, body=None, headers=None, timeout=10):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body, method=method,
                                     headers=headers or {})
        try:
            with _OPENER.open(req, timeout=timeout) as r:
                return r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read(), dict(e.headers)

    def get(self, path):
        return self.request("GET", path)

    def post_webhook(self, payload, sign="ed25519", path="/webhooks/provider", raw=None):
        body = raw if raw is not None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        if sign == "ed25519":
            headers["X-GHL-Signature"] = self.keys.sign_ed25519(body)
        elif sign == "rsa":
            headers["X-WH-Signature"] = self.keys.sign_rsa(body)
        elif sign == "bad":
            headers["X-GHL-Signature"] = base64.b64encode(b"x" * 64).decode()
        status, data, _ = self.request("POST", path, body, headers)
        try:
            return status, json.loads(data) if data else None
        except ValueError:
            return status, data

    # ---- store -------------------------------------------------------------
    def db(self):
        if self.pg:
            return pg.PgDB(self.pg, self.pg_db)
        c = sqlite3.connect(f"{self.dir}/data/mailbridge.db", timeout=10)
        c.row_factory = sqlite3.Row
        c.create_function("mb_payload", 1, unpack_payload, deterministic=True)
        return c

    # a job row with its payload (kept in its own table since schema 5,
    # packed by SQLite since 18: mb_payload is its text on both engines)
    JOB_SQL = "SELECT j.*, mb_payload(p.payload) AS payload FROM jobs j LEFT JOIN job_payload p ON p.job_id = j.id"

    def jobs(self):
        with self.db() as c:
            return [dict(r) for r in c.execute(self.JOB_SQL + " ORDER BY j.id")]

    def job(self, message_id):
        with self.db() as c:
            r = c.execute(self.JOB_SQL + " WHERE j.message_id=?", (message_id,)).fetchone()
            return dict(r) if r else None

    def wait_job(self, message_id, pred, timeout=15.0):
        end = time.time() + timeout
        j = None
        while time.time() < end:
            j = self.job(message_id)
            if j and pred(j):
                return j
            time.sleep(0.05)
        return j


def stop_all(daemon, *others):
    """Module teardown: SIGTERM the daemon (it must exit 0: clean shutdown,
    and no leak report under ASan/valgrind), then close the fakes and
    servers in order; raises only after everything is stopped."""
    rc = daemon.stop()
    if rc not in (0, None):
        # what valgrind or the sanitizers said goes to the daemon's log
        import sys
        log = daemon.log()
        vg = [l for l in log.splitlines() if l.startswith("==")]
        sys.stderr.write(f"--- daemon exit status {rc}; valgrind said:\n" + "\n".join(vg[:300]) +
                         f"\n--- the end of its log:\n{log[-3000:]}\n")
    daemon.cleanup()
    for o in others:
        if hasattr(o, "close"):
            o.close()
        else:
            o.stop()
    assert rc in (0, None), f"daemon exit status {rc}"
