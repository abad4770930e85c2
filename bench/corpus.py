#!/usr/bin/env python3
"""Inbound fidelity on a folder of real messages: what mailbridge would post
(`mailbridge inbound parse --json`, the same parser and text composition as
the daemon) against Python's `email` package (policy.default) as the
reference, field by field.

    python3 bench/corpus.py DIR... [--build BUILD] [--show N]

Counted only where the reference gives a sensible answer (it parses the
field without a defect). Fields:
  subject      decoded subject, whitespace collapsed
  from         the From address, lower case
  body text    the reference's body (text/plain, else the HTML's text) is
               all in ours, word for word (our text may hold more: other
               inline text parts)
  reply kept   every line the sender wrote above the last quoted block
               (inline answers) is in the posted message (the reply
               extraction, judged on its own)
  attachments  every attachment the reference decodes is among ours,
               byte for byte (sha256); also counted in bytes
  skips        messages not posted without a recorded reason (must be 0)
Prints figures; fails only when asked (--min, the suite's check of the
project's own corpus, tests/corpus).
"""
import argparse
import email
import email.policy
import hashlib
import html.parser
import json
import os
import re
import subprocess
import sys


class _Text(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out, self.skip = [], 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style", "head", "title"):
            self.skip += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style", "head", "title") and self.skip:
            self.skip -= 1

    def handle_data(self, data):
        if not self.skip:
            self.out.append(data)


def words(s):
    return re.findall(r"\w+", (s or "").lower())


def contains(hay, needle):
    """needle's words appear in hay in order, each (a subsequence)."""
    it = iter(hay)
    return all(w in it for w in needle)


def files_in(paths):
    for p in paths:
        if os.path.isfile(p):
            yield p
            continue
        for root, _, names in os.walk(p):
            for n in sorted(names):
                if n.endswith((".eml", ".txt", ".msg")) or n.startswith("msg_"):
                    yield os.path.join(root, n)


def reference(path):
    with open(path, "rb") as f:
        raw = f.read()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    ref = {}
    try:
        s = msg["subject"]
        if s is not None and not getattr(s, "defects", None):
            ref["subject"] = " ".join(str(s).split())
        elif s is None:
            ref["subject"] = ""
    except Exception:
        pass
    try:
        f = msg["from"]
        if f is not None and f.addresses and not f.defects and f.addresses[0].addr_spec:
            ref["from"] = f.addresses[0].addr_spec.lower()
    except Exception:
        pass
    try:
        body = msg.get_body(preferencelist=("plain", "html"))
        if body is not None:
            content = body.get_content()
            if body.get_content_subtype() == "html":
                p = _Text()
                p.feed(content)
                content = " ".join(p.out)
            ref["text"] = content
    except Exception:
        pass
    atts = []
    try:
        for part in msg.walk():
            if part.is_multipart() or part is msg:
                continue
            if part.get_content_type() == "message/rfc822":
                continue   # ours uploads it as .eml: compared by presence, not bytes
            disp = part.get_content_disposition()
            if disp == "attachment" or (part.get_content_maintype() not in ("text", "multipart")
                                        and disp != "inline"):
                data = part.get_payload(decode=True)
                if data:
                    atts.append(hashlib.sha256(data).hexdigest())
                    ref.setdefault("att_bytes", 0)
                    ref["att_bytes"] += len(data)
        ref["attachments"] = atts
    except Exception:
        pass
    return ref


# "On ... X wrote:" and its translations: the line that opens a quote
ATTRIBUTION = re.compile(r"\b(wrote|schrieb|a écrit|escribió|escreveu|schreef|scritto)\b.*:\s*$", re.I)


def inline_answers(text):
    """Lines the sender wrote above the last quoted ('>') line."""
    lines = (text or "").splitlines()
    last_q = max((i for i, l in enumerate(lines) if l.lstrip().startswith(">")), default=-1)
    if last_q < 0:
        return []
    return [l for l in lines[:last_q] if l.strip() and not l.lstrip().startswith(">")
            and not ATTRIBUTION.search(l)]


def ours(binary, paths):
    out = []
    for i in range(0, len(paths), 50):
        r = subprocess.run([binary, "inbound", "parse", "--json", *paths[i:i + 50]], capture_output=True,
                           text=True, timeout=300)
        if r.returncode not in (0, 1) or not r.stdout.strip():
            sys.exit(f"mailbridge inbound parse failed ({r.returncode}): {r.stderr[-2000:]}")
        out += json.loads(r.stdout)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--build", default="build")
    ap.add_argument("--show", type=int, default=5, help="disagreements to print per field")
    ap.add_argument("--min", type=float, default=None,
                    help="exit 1 when a field agrees less than this %% or a message is empty without a reason "
                         "(the suite's check on tests/corpus; figures alone never fail)")
    a = ap.parse_args()
    binary = os.path.join(a.build, "mailbridge")
    paths = list(files_in(a.dirs))
    got = ours(binary, paths)
    fields = ["subject", "from", "body text", "reply kept", "attachments"]
    stats = {f: [0, 0] for f in fields}
    att_bytes = [0, 0]
    skipped, silent, refused = 0, 0, 0
    bad = {f: [] for f in fields}
    for path, o in zip(paths, got):
        if "error" in o:
            continue
        if "refused" in o:
            refused += 1     # recorded as failed with this reason by the daemon
            continue
        if o.get("skip"):
            skipped += 1
        ref = reference(path)
        checks = {}
        if "subject" in ref:
            checks["subject"] = " ".join((o.get("subject") or "").split()) == ref["subject"]
        if "from" in ref:
            checks["from"] = (o.get("from") or "").lower() == ref["from"]
        if ref.get("text") and words(ref["text"]):
            checks["body text"] = contains(words(o.get("text")), words(ref["text"]))
            answers = inline_answers(ref["text"])
            if answers and not o.get("dsn"):
                msg_words = words(o.get("message"))
                checks["reply kept"] = all(contains(msg_words, words(l)) for l in answers)
        if "attachments" in ref:
            mine = [x["sha256"] for x in o.get("attachments", [])]
            checks["attachments"] = all(h in mine for h in ref["attachments"])
            att_bytes[1] += ref.get("att_bytes", 0)
            sizes = {x["sha256"]: x["size"] for x in o.get("attachments", [])}
            att_bytes[0] += sum(sizes.get(h, 0) for h in ref["attachments"])
        for f, ok in checks.items():
            stats[f][1] += 1
            stats[f][0] += ok
            if not ok:
                bad[f].append(path)
        if not o.get("skip") and not o.get("message") and not o.get("dsn") and not o.get("attachments"):
            silent += 1      # nothing to post and no reason
    print(f"{len(paths)} files, {refused} refused with a reason, {skipped} skipped with a reason, "
          f"{silent} empty without a reason")
    print(f"{'field':<12} {'agree':>7} {'of':>6} {'%':>7}")
    for f in fields:
        n_ok, n = stats[f]
        print(f"{f:<12} {n_ok:>7} {n:>6} {100.0 * n_ok / n if n else float('nan'):>6.1f}%")
    if att_bytes[1]:
        print(f"{'att. bytes':<12} {att_bytes[0]:>7} {att_bytes[1]:>6} {100.0 * att_bytes[0] / att_bytes[1]:>6.1f}%")
    for f in fields:
        for p in bad[f][:a.show]:
            print(f"  {f}: {p}")
    if a.min is not None:
        low = [f for f in fields if stats[f][1] and 100.0 * stats[f][0] / stats[f][1] < a.min]
        if low or silent:
            sys.exit(f"below {a.min}%: {', '.join(low) or '-'}; empty without a reason: {silent}")


if __name__ == "__main__":
    main()
