#!/usr/bin/env python3
"""Parses an OpenMetrics text exposition with the Prometheus project's own Python parser (strict:
any malformed line, or a missing `# EOF`, raises) and prints its samples as JSON:
[{"name", "labels", "value", "type"}]."""

import json
import sys

try:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
except ImportError:
    sys.exit("the Python package prometheus-client is missing: run scripts/setup.sh")


def main(path):
    with open(path, encoding="utf-8") as text:
        families = text_string_to_metric_families(text.read())
        samples = [
            {"name": s.name, "labels": s.labels, "value": s.value, "type": family.type}
            for family in families
            for s in family.samples
        ]
    json.dump(samples, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
