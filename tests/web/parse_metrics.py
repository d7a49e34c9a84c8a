"""Parse an OpenMetrics text exposition (stdin) with the Prometheus project's own parser
(prometheus_client.openmetrics.parser, strict: types, suffixes, label syntax, # EOF) and
print its samples as JSON: [{"family", "type", "name", "labels", "value"}] (a family
without samples as one entry with name "").
Exits 1 with the parser's message when the text does not parse."""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

text = sys.stdin.read()
out = []
try:
    for fam in text_string_to_metric_families(text):
        if not fam.samples:
            out.append({"family": fam.name, "type": fam.type, "name": "", "labels": {}, "value": 0})
        for s in fam.samples:
            out.append({"family": fam.name, "type": fam.type, "name": s.name,
                        "labels": dict(s.labels), "value": s.value})
except Exception as e:  # the parser raises ValueError and others
    print(f"not valid OpenMetrics: {e}", file=sys.stderr)
    sys.exit(1)
json.dump(out, sys.stdout)
