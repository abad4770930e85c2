#!/bin/sh
# contrib_check.sh SOURCE_DIR
# The shipped Prometheus rules pass `promtool check rules` and their unit
# tests (`promtool test rules`: each alert fires on the series it is for);
# the Grafana dashboard is valid JSON with its panels' queries. Without
# promtool (the prometheus package) it exits 77: ctest reports it skipped.
set -eu
src=$(cd "$1" && pwd)
python3 - "$src/contrib/grafana/mailbridge.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
panels = [p for p in d["panels"] if p["type"] != "row"]
assert d["uid"] == "mailbridge" and len(panels) >= 12, "dashboard"
for p in panels:
    assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]
print(f"dashboard: {len(panels)} panels")
PY
command -v promtool >/dev/null || { echo "skipped: promtool is not installed (apt install prometheus)"; exit 77; }
promtool check rules "$src/contrib/prometheus/mailbridge-rules.yml"
cd "$src/contrib/prometheus" && promtool test rules mailbridge-rules.test.yml
