#!/usr/bin/env python3
"""Validates custom resources against the openAPIV3Schema of their CRD, offline.

usage: validate-custom-resources.py CRD.yaml MANIFESTS.yaml...

Objects of the CRD's group and kind are checked against the schema of their
version (JSON Schema), and, as the API server would prune them silently,
fields the schema does not declare are errors too. Other objects are
skipped. Prints each problem with its path; exits 1 if there was any.
"""
import sys

import jsonschema
import yaml


def undeclared(schema, value, path):
    """Fields in `value` that `schema` neither declares nor preserves."""
    if not isinstance(schema, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict) and "properties" in schema:
        props = schema["properties"]
        for key, item in value.items():
            if key not in props:
                if path == "" and key in ("apiVersion", "kind", "metadata"):
                    continue
                yield f"{path}.{key}: not in the schema (the API server would drop it)"
            else:
                yield from undeclared(props[key], item, f"{path}.{key}")
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, item in value.items():
            yield from undeclared(schema["additionalProperties"], item, f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            yield from undeclared(schema["items"], item, f"{path}[{i}]")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        crd = next(d for d in yaml.safe_load_all(f) if d)
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    schemas = {
        f"{group}/{v['name']}": v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"]
    }
    problems, checked = [], 0
    for name in sys.argv[2:]:
        with open(name) as f:
            for doc in yaml.safe_load_all(f):
                if not doc or doc.get("kind") != kind or not doc.get("apiVersion", "").startswith(group + "/"):
                    continue
                where = f"{name}: {kind} {doc.get('metadata', {}).get('name')}"
                schema = schemas.get(doc["apiVersion"])
                if schema is None:
                    problems.append(f"{where}: no version {doc['apiVersion']} in the CRD")
                    continue
                checked += 1
                validator = jsonschema.Draft7Validator(schema)
                for e in validator.iter_errors(doc):
                    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path)
                    problems.append(f"{where}: {path or '.'}: {e.message}")
                problems.extend(f"{where}: {p}" for p in undeclared(schema, doc, ""))
    for p in problems:
        print(p)
    print(f"{checked} {kind} objects checked, {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
