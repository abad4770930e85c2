"""Fake HighLevel API for the tests.

Records every request (method, path, headers, body) and checks each one
against HighLevel's official OpenAPI files in tests/openapi/ (copied from
GoHighLevel/highlevel-api-docs, CC0): the operation must exist, the
Version header must be one the spec allows, JSON bodies must carry the
required fields with allowed enum values. Violations are collected in
`spec_errors`; every test asserts it is empty, so we fail when we drift
from HighLevel's contract.

Behaviour can be scripted per path regex: `fail(pattern, status, count)`
answers `status` for the next `count` matching calls. /oauth/token and
/oauth/locationToken implement expiring access tokens and single-use
refresh tokens. A burst limiter (`limit_per_window`) answers 429 like the
real API when a location exceeds it.
"""
import json
import os
import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SPEC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "openapi")


class Spec:
    def __init__(self):
        self.ops = []  # (method, regex, op, doc)
        for name in ("apps/conversations.json", "apps/contacts.json", "apps/oauth.json",
                     "v3/apps/conversations-v3.json"):
            with open(os.path.join(SPEC_DIR, name)) as f:
                doc = json.load(f)
            for path, item in doc["paths"].items():
                rx = "^" + re.sub(r"\{[^}]+\}", "[^/]+", path.rstrip("/")) + "/?$"
                for method, op in item.items():
                    self.ops.append((method.upper(), re.compile(rx), op, doc, path))
        # literal paths first so /messages/upload beats /messages/{id}
        self.ops.sort(key=lambda o: o[4].count("{"))

    def resolve(self, doc, node):
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            if not ref.startswith("#/"):
                return {}
            target = doc
            for part in ref[2:].split("/"):
                target = target[part]
            node = target
        return node

    def check_schema(self, doc, schema, value, where, errors):
        schema = self.resolve(doc, schema)
        if not isinstance(schema, dict):
            return
        if "enum" in schema and value not in schema["enum"]:
            errors.append(f"{where}: {value!r} not in {schema['enum']}")
        t = schema.get("type")
        # spec erratum: ProcessMessageBodyDto.direction is typed "object"
        # while its default and examples are the strings "inbound"/"outbound"
        if t == "object" and isinstance(value, str) and isinstance(schema.get("default"), str):
            t = "string"
        if t == "object" and isinstance(value, dict):
            for req in schema.get("required", []):
                if req not in value:
                    errors.append(f"{where}: missing required field {req!r}")
            for k, v in value.items():
                if k in schema.get("properties", {}):
                    self.check_schema(doc, schema["properties"][k], v, f"{where}.{k}", errors)
        elif t == "array" and isinstance(value, list) and "items" in schema:
            for i, v in enumerate(value):
                self.check_schema(doc, schema["items"], v, f"{where}[{i}]", errors)
        elif t == "string" and value is not None and not isinstance(value, str):
            errors.append(f"{where}: expected string, got {type(value).__name__}")
        elif t == "object" and not isinstance(value, dict):
            errors.append(f"{where}: expected object")
        elif t == "array" and not isinstance(value, list):
            errors.append(f"{where}: expected array")

    def check(self, method, path, headers, body):
        errors = []
        for m, rx, op, doc, spath in self.ops:
            if m == method and rx.match(path):
                break
        else:
            return [f"{method} {path}: no such operation in HighLevel's spec"]
        for p in op.get("parameters", []):
            p = self.resolve(doc, p)
            if p.get("in") == "header" and p.get("name") == "Version":
                v = headers.get("Version")
                allowed = p.get("schema", {}).get("enum")
                if v is None:
                    errors.append(f"{method} {spath}: Version header missing")
                elif allowed and v not in allowed:
                    errors.append(f"{method} {spath}: Version {v!r} not in {allowed}")
            if p.get("in") == "header" and p.get("name") == "Authorization" and p.get("required"):
                if not headers.get("Authorization", "").startswith("Bearer "):
                    errors.append(f"{method} {spath}: Authorization Bearer missing")
        rb = op.get("requestBody")
        if rb:
            content = self.resolve(doc, rb).get("content", {})
            ctype = headers.get("Content-Type", "").split(";")[0].strip()
            if ctype not in content:
                errors.append(f"{method} {spath}: content type {ctype!r} not in {list(content)}")
            elif ctype == "application/json":
                try:
                    value = json.loads(body or b"null")
                except ValueError:
                    errors.append(f"{method} {spath}: body is not JSON")
                else:
                    self.check_schema(doc, content[ctype].get("schema", {}), value, "body", errors)
            elif ctype == "application/x-www-form-urlencoded":
                form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}
                self.check_schema(doc, content[ctype].get("schema", {}), form, "form", errors)
        return errors


SPEC = None


def parse_multipart(ctype, body):
    """{field: value} for plain fields, {"fileAttachment": [(filename, bytes)]}."""
    import email.parser
    import email.policy
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
    out = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fname = part.get_filename()
        data = part.get_payload(decode=True)
        if data is None and part.is_multipart():
            # a message/rfc822 file: Python parses it; the bytes are what came
            data = part.get_payload(0).as_bytes()
        if fname is not None:
            out.setdefault(name, []).append((fname, data))
        else:
            out[name] = data.decode()
    return out


class FakeGHL:
    def __init__(self, port=0, client_id="test-client", client_secret="test-secret"):
        global SPEC
        if SPEC is None:
            SPEC = Spec()
        self.requests = []
        self.spec_errors = []
        self.lock = threading.Lock()
        self.failures = []  # [regex, status, remaining, body]
        self.delays = []    # [regex, seconds]: answer late (a slow HighLevel)
        self.client_id = client_id
        self.client_secret = client_secret
        self.access = {}        # access token -> (locationKey, expires_at)
        self.refresh = {}       # refresh token -> locationKey (single use)
        self.used_refresh = set()
        self.token_ttl = 86399
        self.limit_per_window = None   # (count, seconds)
        self.window = {}
        self.static_tokens = set()
        self.too_many = 0
        self.contacts = {}        # (locationId, email) -> contact id
        self.conversations = {}   # contactId -> conversation id
        self.uploads = []         # (filename, bytes)
        self.inbound = []         # bodies of POST /conversations/messages/inbound
        self.outbound_calls = []  # bodies of POST /conversations/messages/outbound
        # the v3 email status: off by default, answered 404 as by a HighLevel
        # that has none for this app (mailbridge then falls back to v2)
        self.v3 = False
        self.v3_statuses = []     # (messageId, body) of PUT /conversations/messages/email/{id}/status
        self.contact_updates = [] # (contactId, body) of PUT /contacts/{contactId}
        self.contact_emails = {}  # contactId -> email, for GET /contacts/{contactId}
        self.seq = 0
        self.daily_used = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out in two writes: without this, Nagle
            # holds the body until the client's delayed ACK (40 ms), a
            # stall real HighLevel does not add to every call
            disable_nagle_algorithm = True

            def log_message(self, *a):
                pass

            def _handle(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                with fake.lock:
                    wait = max([sec for rx, sec in fake.delays if rx.search(self.path)] or [0])
                if wait:
                    time.sleep(wait)
                status, payload, hdrs = fake.handle(self.command, self.path, dict(self.headers), body)
                if self.headers.get("Authorization"):
                    with fake.lock:
                        fake.daily_used += 1
                        hdrs = {"X-RateLimit-Limit-Daily": "200000",
                                "X-RateLimit-Daily-Remaining": str(200000 - fake.daily_used), **hdrs}
                data = json.dumps(payload).encode() if payload is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in hdrs.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    # ---- scripting -------------------------------------------------
    def fail(self, pattern, status, count=1, body=None):
        with self.lock:
            self.failures.append([re.compile(pattern), status, count, body])

    def delay(self, pattern, seconds):
        with self.lock:
            self.delays.append([re.compile(pattern), seconds])

    def issue_token(self, key, with_refresh=True, ttl=None):
        tok = "at-" + os.urandom(8).hex()
        with self.lock:
            self.access[tok] = (key, time.time() + (ttl if ttl is not None else self.token_ttl))
            rt = None
            if with_refresh:
                rt = "rt-" + os.urandom(8).hex()
                self.refresh[rt] = key
        return tok, rt

    def calls(self, method=None, pattern=None):
        with self.lock:
            return [r for r in self.requests
                    if (method is None or r["method"] == method)
                    and (pattern is None or re.search(pattern, r["path"]))]

    # ---- behaviour -------------------------------------------------
    def _auth_ok(self, headers):
        auth = headers.get("Authorization", "")
        tok = auth[7:] if auth.startswith("Bearer ") else None
        if tok in self.static_tokens:
            return "static"
        with self.lock:
            entry = self.access.get(tok)
        if not entry or entry[1] < time.time():
            return None
        return entry[0]

    def handle(self, method, rawpath, headers, body):
        path = urllib.parse.urlsplit(rawpath).path
        rec = {"method": method, "path": rawpath, "headers": headers, "body": body, "t": time.time()}
        errors = SPEC.check(method, path, headers, body)
        with self.lock:
            self.requests.append(rec)
            self.spec_errors.extend(errors)
            for f in self.failures:
                if f[2] > 0 and f[0].search(path):
                    f[2] -= 1
                    return f[1], f[3] or {"statusCode": f[1], "message": f"scripted {f[1]}"}, {}
        if path == "/oauth/token":
            return self.oauth_token(body)
        key = self._auth_ok(headers)
        if key is None:
            return 401, {"statusCode": 401, "message": "Invalid token: access token is invalid",
                         "error": "Unauthorized"}, {}
        if self.limit_per_window:
            count, secs = self.limit_per_window
            now = time.time()
            with self.lock:
                w = [t for t in self.window.get(key, []) if t > now - secs]
                if len(w) >= count:
                    self.too_many += 1
                    return 429, {"statusCode": 429, "message": "Too many requests"}, {
                        "X-RateLimit-Remaining": "0", "X-RateLimit-Interval-Milliseconds": str(secs * 1000)}
                w.append(now)
                self.window[key] = w
        if path == "/oauth/locationToken":
            form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}
            tok, _ = self.issue_token(form.get("locationId"), with_refresh=False)
            return 200, {"access_token": tok, "token_type": "Bearer", "expires_in": self.token_ttl,
                         "scope": "conversations/message.write", "locationId": form.get("locationId"),
                         "userId": "u1", "planId": "p", "appId": "a", "versionId": "v",
                         "userType": "Location", "companyId": form.get("companyId")}, {}
        query = {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(rawpath).query).items()}
        if path == "/contacts/search/duplicate" and method == "GET":
            who = (query.get("email") or query.get("number") or "").lower()
            cid = self.contacts.get((query.get("locationId"), who))
            return 200, {"contact": {"id": cid} if cid else None}, {}
        if path == "/contacts/upsert" and method == "POST":
            b = json.loads(body)
            key = (b.get("locationId"), (b.get("email") or b.get("phone") or "").lower())
            with self.lock:
                new = key not in self.contacts
                if new:
                    self.seq += 1
                    self.contacts[key] = f"contact{self.seq}"
            return 200, {"new": new, "contact": {"id": self.contacts[key], **b}, "traceId": "t"}, {}
        if path == "/conversations/search" and method == "GET":
            cid = query.get("contactId")
            conv = self.conversations.get(cid)
            return 200, {"conversations": [{"id": conv, "contactId": cid}] if conv else [], "total": 1 if conv else 0}, {}
        if path.rstrip("/") == "/conversations" and method == "POST":
            b = json.loads(body)
            with self.lock:
                self.seq += 1
                conv = self.conversations.setdefault(b["contactId"], f"conv{self.seq}")
            return 201, {"success": True, "conversation": {"id": conv, "contactId": b["contactId"]}}, {}
        if path == "/conversations/messages/upload" and method == "POST":
            files = parse_multipart(headers.get("Content-Type", ""), body)
            for name in ("conversationId", "contactId", "locationId"):
                if name not in files:
                    with self.lock:
                        self.spec_errors.append(f"upload: missing form field {name}")
            out = {}
            for fname, data in files.get("fileAttachment", []):
                with self.lock:
                    self.uploads.append((fname, data))
                out[fname] = f"https://storage.fake/{len(self.uploads)}/{urllib.parse.quote(fname)}"
            return 200, {"uploadedFiles": out}, {}
        if path == "/conversations/messages/outbound" and method == "POST":
            b = json.loads(body)
            with self.lock:
                self.outbound_calls.append(b)
                self.seq += 1
                mid = f"out{self.seq}"
            return 200, {"success": True, "conversationId": b.get("conversationId"), "messageId": mid,
                         "message": "ok", "traceId": "t"}, {}
        if path == "/conversations/messages/inbound" and method == "POST":
            b = json.loads(body)
            with self.lock:
                self.inbound.append(b)
                self.seq += 1
                mid = f"in{self.seq}"
            resp = {"success": True, "conversationId": b.get("conversationId"), "messageId": mid,
                    "message": "Message added", "traceId": "t"}
            if b.get("type") == "Email":
                resp["emailMessageId"] = b.get("emailMessageId") or mid
            return 200, resp, {}
        m = re.match(r"^/contacts/([^/]+)$", path)
        if m and method == "GET":
            cid = m.group(1)
            if cid not in self.contact_emails:
                return 400, {"statusCode": 400, "message": "Contact not found"}, {}
            return 200, {"contact": {"id": cid, "locationId": query.get("locationId"),
                                     "email": self.contact_emails[cid]}}, {}
        if m and method == "PUT":
            b = json.loads(body)
            with self.lock:
                self.contact_updates.append((m.group(1), b))
            return 200, {"succeded": True, "contact": {"id": m.group(1), **b}}, {}
        m = re.match(r"^/conversations/messages/email/([^/]+)/status$", path)
        if m and method == "PUT":
            if not self.v3:
                return 404, {"statusCode": 404, "message": f"Cannot PUT {path}", "error": "Not Found"}, {}
            with self.lock:
                self.v3_statuses.append((m.group(1), json.loads(body)))
            return 200, {"success": True, "message": "Updated email message successfully"}, {}
        m = re.match(r"^/conversations/messages/([^/]+)/status$", path)
        if m and method == "PUT":
            b = json.loads(body)
            return 200, {"conversationId": "conv1", "messageId": m.group(1), "status": b.get("status"),
                         "traceId": "trace-" + m.group(1)}, {}
        return 200, {"traceId": "t"}, {}

    def oauth_token(self, body):
        form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return 401, {"statusCode": 401, "message": "bad client"}, {}
        gt = form.get("grant_type")
        if gt == "authorization_code":
            code = form.get("code", "")
            # codes look like "loc:<locationId>" or "company:<companyId>"
            kind, _, ident = code.partition(":")
            if kind not in ("loc", "company"):
                return 400, {"statusCode": 400, "message": "Invalid code"}, {}
            key = ident if kind == "loc" else "company:" + ident
            tok, rt = self.issue_token(key)
            resp = {"access_token": tok, "token_type": "Bearer", "expires_in": self.token_ttl,
                    "refresh_token": rt, "scope": "conversations/message.write", "userId": "u1",
                    "companyId": ident if kind == "company" else "c1",
                    "userType": "Location" if kind == "loc" else "Company"}
            if kind == "loc":
                resp["locationId"] = ident
            return 200, resp, {}
        if gt == "refresh_token":
            rt = form.get("refresh_token")
            with self.lock:
                if rt in self.used_refresh:
                    self.spec_errors.append(f"refresh token {rt} used twice")
                    return 400, {"statusCode": 400, "message": "Invalid refresh token"}, {}
                key = self.refresh.pop(rt, None)
                if rt:
                    self.used_refresh.add(rt)
            if key is None:
                return 400, {"statusCode": 400, "message": "Invalid refresh token"}, {}
            tok, nrt = self.issue_token(key)
            return 200, {"access_token": tok, "token_type": "Bearer", "expires_in": self.token_ttl,
                         "refresh_token": nrt, "scope": "conversations/message.write", "userId": "u1",
                         "userType": "Company" if key.startswith("company:") else "Location",
                         "locationId": None if key.startswith("company:") else key,
                         "companyId": key[8:] if key.startswith("company:") else "c1"}, {}
        return 400, {"statusCode": 400, "message": "unsupported grant_type"}, {}
