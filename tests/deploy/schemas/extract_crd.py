"""Trim a CustomResourceDefinition to what offline validation needs, as JSON.

    python tests/deploy/schemas/extract_crd.py CRD.yaml OUT.json

Keeps apiVersion, kind, metadata.name and, of spec, group, names, scope and each version's
name, served, storage and schema; drops printer columns, subresources, conversion and every
schema's free-text ``description`` (a property that happens to be *named* description is
kept). Nothing else of the schema is changed. README.md says where each file came from.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml


def without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: without_descriptions(v) for k, v in node.items()
                if not (k == "description" and isinstance(v, str))}
    if isinstance(node, list):
        return [without_descriptions(v) for v in node]
    return node


def trim(crd: dict[str, Any]) -> dict[str, Any]:
    spec = crd["spec"]
    return {
        "apiVersion": crd["apiVersion"],
        "kind": crd["kind"],
        "metadata": {"name": crd["metadata"]["name"]},
        "spec": {
            "group": spec["group"],
            "names": spec["names"],
            "scope": spec["scope"],
            "versions": [
                {"name": v["name"], "served": v["served"], "storage": v["storage"],
                 "schema": without_descriptions(v["schema"])}
                for v in spec["versions"]
            ],
        },
    }


def main(argv: list[str]) -> int:
    source, target = Path(argv[0]), Path(argv[1])
    crd = yaml.safe_load(source.read_text(encoding="utf-8"))
    target.write_text(json.dumps(trim(crd), separators=(",", ":"), sort_keys=True) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
