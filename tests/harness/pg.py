"""A real PostgreSQL for the tests: initdb in a temporary directory and
pg_ctl, listening on a loopback port and a Unix socket in that directory,
stopped by its PID. As root (CI), the server runs as the "postgres" user
the Debian package creates: PostgreSQL refuses to run as root.

MB_TEST_STORE=postgresql makes every Daemon use it (one database each);
PgServer.shared() starts it once per test process.

The harness reads a PostgreSQL store through psql (no Python driver is
needed): PgDB offers the little of sqlite3's interface the tests use
(execute with ? parameters, fetchone, fetchall, rows by index or name).
"""
import atexit
import glob
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time


def _bindir():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise RuntimeError("PostgreSQL server not installed (apt-get install postgresql-15)")
    return os.path.dirname(found[-1])


class PgServer:
    _shared = None

    def __init__(self, port, options=""):
        self.port = port
        self.options = options      # more "-c name=value" for the server (bench/)
        self.bin = _bindir()
        self.dir = tempfile.mkdtemp(prefix="mb-pg-")
        self.data = f"{self.dir}/data"
        self.user = "mb"
        self.pid = None
        self._as = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args, timeout=60):
        return subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=timeout, cwd="/")

    def start(self):
        r = self._run(f"{self.bin}/initdb", "-D", self.data, "-U", self.user, "--auth=trust", "-E", "UTF8",
                      "--no-sync", "--no-instructions")
        if r.returncode != 0:
            raise RuntimeError(f"initdb: {r.stderr}")
        # a port another suite's server holds (two suites at once): the next
        for _ in range(20):
            try:
                self.up()
                return self
            except RuntimeError:
                if "could not create any TCP/IP sockets" not in self.log():
                    raise
                with open(f"{self.dir}/log", "w"):
                    pass
                self.port += 1
        raise RuntimeError(f"no free port for PostgreSQL up to {self.port}")

    def log(self):
        try:
            with open(f"{self.dir}/log") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        if self.pid is None:
            return
        r = self._run(f"{self.bin}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "20", "stop")
        if r.returncode != 0:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.pid = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def _opts(self):
        return (f"-k {self.dir} -p {self.port} -c listen_addresses=127.0.0.1 -c max_connections=200 "
                f"-c shared_buffers=32MB -c log_min_messages=warning {self.options}").strip()

    def down(self):
        """Stops the server (fast: connections are cut), keeping its data."""
        self._run(f"{self.bin}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "20", "stop")

    def up(self):
        r = self._run(f"{self.bin}/pg_ctl", "-D", self.data, "-o", self._opts(), "-l", f"{self.dir}/log", "-w",
                      "-t", "30", "start")
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl start: {r.stderr}")
        with open(f"{self.data}/postmaster.pid") as f:
            self.pid = int(f.readline())

    def dsn(self, db):
        return f"host={self.dir} port={self.port} user={self.user} dbname={db}"

    def psql(self, db, sql, variables=()):
        args = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", self.dir, "-p", str(self.port),
                "-U", self.user, "-d", db]
        for i, v in enumerate(variables, 1):
            args += ["-v", f"p{i}={v}"]
        r = subprocess.run(args, input=sql, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"psql: {r.stderr.strip()}\n{sql}")
        return r.stdout

    def create_db(self, name):
        self.psql("postgres", f'CREATE DATABASE "{name}"')
        return name

    @classmethod
    def shared(cls):
        if cls._shared is None:
            port = int(os.environ.get("MB_TEST_PG_PORT", "0")) or 26000 + os.getpid() % 2000
            cls._shared = PgServer(port).start()
            atexit.register(cls._shared.stop)
        return cls._shared


def enabled():
    return os.environ.get("MB_TEST_STORE", "sqlite") == "postgresql"


class Row(dict):
    """A row by column name or by position, as sqlite3.Row."""

    def __getitem__(self, k):
        if isinstance(k, int):
            return list(self.values())[k]
        return dict.__getitem__(self, k)

    def __iter__(self):
        return iter(self.values())

    def keys(self):
        return dict.keys(self)


class _Cursor:
    def __init__(self, rows):
        self.rows = rows

    def fetchone(self):
        return self.rows[0] if self.rows else None

    def fetchall(self):
        return self.rows

    def __iter__(self):
        return iter(self.rows)


class PgDB:
    """What a test reads of a PostgreSQL store, through psql."""

    def __init__(self, server, db):
        self.server = server
        self.db = db

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def close(self):
        pass

    def commit(self):
        pass   # psql commits each statement

    def execute(self, sql, params=()):
        n = [0]

        def var(_m):
            n[0] += 1
            return f":'p{n[0]}'"
        text = re.sub(r"\?", var, sql)
        if re.match(r"\s*PRAGMA\b", text, re.I):
            return _Cursor([])   # SQLite's own settings: nothing to do here
        # bytes as bytea's hex input form
        values = ["" if p is None else "\\x" + p.hex() if isinstance(p, bytes) else str(p) for p in params]
        if re.match(r"\s*(SELECT|WITH)\b", text, re.I):
            # row_to_json keeps the columns in order (json, not jsonb)
            out = self.server.psql(self.db, f"SELECT row_to_json(t) FROM ({text}) t", values)
            rows = []
            for line in out.splitlines():
                if line.strip():
                    rows.append(Row(json.loads(line)))
            return _Cursor(rows)
        self.server.psql(self.db, text, values)
        return _Cursor([])
