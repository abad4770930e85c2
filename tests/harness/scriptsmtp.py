"""A scripted SMTP server for failure cases Postfix cannot stage on
demand: "450 now, 250 on the next attempt", STARTTLS with a chosen
certificate (wrong host name), a hang-up after each message. Real TCP and
TLS on loopback; records every session's commands and every accepted
message, with whether its RCPT and DATA came pipelined with its MAIL."""
import select
import socket
import socketserver
import ssl
import threading
import time


class ScriptedSMTP:
    def __init__(self, port, cert=None, key=None, rcpt_script=None, dsn=True, esmtp=True, hangup=False,
                 tls_legacy=False, size=None, greet_delay=0):
        """rcpt_script: {address: [reply, reply, ...]} consumed one per
        attempt; when exhausted, 250. esmtp=False: a pre-ESMTP relay that
        answers EHLO with 500 and knows only HELO. hangup: close each
        connection silently after its first message (as relays with a
        per-connection limit or a short idle timeout do). tls_legacy: the
        server speaks TLS 1.0 and 1.1 only. size: advertise SIZE (RFC 1870).
        greet_delay: seconds before the 220 greeting (a slow relay)."""
        self.port = port
        self.rcpt_script = {k: list(v) for k, v in (rcpt_script or {}).items()}
        self.messages = []
        self.sessions = []
        self.lock = threading.Lock()
        ctx = None
        if cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            if tls_legacy:
                import warnings
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
                    ctx.minimum_version = ssl.TLSVersion.TLSv1
                    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def setup(self):
                super().setup()
                self.log = []

            def rfile_buffered(self):
                # bytes already read from the socket into rfile's buffer:
                # peek() returns them without reading when there are any
                try:
                    self.connection.setblocking(False)
                    return len(self.rfile.peek(1)) > 0
                except (BlockingIOError, ssl.SSLWantReadError, OSError, ValueError):
                    return False
                finally:
                    self.connection.setblocking(True)

            def reply(self, line):
                self.wfile.write((line + "\r\n").encode())
                self.wfile.flush()

            def handle(self):
                with outer.lock:
                    outer.sessions.append(self.log)
                if greet_delay:
                    time.sleep(greet_delay)
                self.reply("220 scripted ESMTP")
                rcpts, mail, pipelined = [], None, False
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return
                    cmd = line.decode(errors="replace").rstrip("\r\n")
                    self.log.append(cmd)
                    verb = cmd.split(" ")[0].upper()
                    if verb == "EHLO" and not esmtp:
                        self.reply("500 5.5.1 command unrecognized")
                    elif verb == "HELO":
                        self.reply("250 scripted")
                    elif verb == "EHLO":
                        caps = ["250-scripted", "250-PIPELINING"]
                        if ctx is not None and not isinstance(self.connection, ssl.SSLSocket):
                            caps.append("250-STARTTLS")
                        if dsn:
                            caps.append("250-DSN")
                        if size:
                            caps.append(f"250-SIZE {size}")
                        caps.append("250 8BITMIME")
                        for c in caps:
                            self.reply(c)
                    elif verb == "STARTTLS" and ctx is not None:
                        self.reply("220 go ahead")
                        try:
                            self.connection = ctx.wrap_socket(self.connection, server_side=True)
                        except (ssl.SSLError, OSError):
                            return
                        self.rfile = self.connection.makefile("rb")
                        self.wfile = self.connection.makefile("wb")
                    elif verb == "MAIL":
                        mail, rcpts = cmd, []
                        # what the client sent before reading this reply
                        # sits in rfile's buffer (the same recv) or the socket
                        ready = select.select([self.connection], [], [], 0)[0]
                        ahead = self.rfile.peek(4096) if ready or self.rfile_buffered() else b""
                        pipelined = b"RCPT" in ahead.upper() and b"DATA" in ahead.upper()
                        self.reply("250 2.1.0 ok")
                    elif verb == "RCPT":
                        addr = cmd[cmd.index("<") + 1:cmd.index(">")]
                        with outer.lock:
                            script = outer.rcpt_script.get(addr)
                            answer = script.pop(0) if script else "250 2.1.5 ok"
                        if answer.startswith("2"):
                            rcpts.append(addr)
                        self.reply(answer)
                    elif verb == "DATA":
                        if not rcpts:
                            self.reply("554 5.5.1 no valid recipients")
                            continue
                        self.reply("354 go")
                        data = []
                        while True:
                            l2 = self.rfile.readline()
                            if not l2 or l2 == b".\r\n":
                                break
                            data.append(l2)
                        with outer.lock:
                            outer.messages.append({"mail": mail, "rcpts": rcpts, "data": b"".join(data),
                                                   "pipelined": pipelined})
                        self.reply("250 2.0.0 queued as SCRIPTED")
                        if hangup:
                            return
                    elif verb in ("RSET", "NOOP"):
                        self.reply("250 2.0.0 ok")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    else:
                        self.reply("502 5.5.2 not implemented")

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
