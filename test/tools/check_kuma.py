"""Checks Kuma resources against Kuma's own schemas: each YAML document of the given files,
by its `type`, against `#/components/schemas/<type>Item` of Kuma's OpenAPI document, with a JSON
Schema 2020-12 validator (PyPI's jsonschema). Kuma's schemas never say
`additionalProperties: false`; the check adds it to every object schema that lists its
properties, so that a misspelt field (numRetriez) is refused rather than ignored.

Usage: check_kuma.py KUMA_OPENAPI.yaml FILE...   exit 0 when every resource is valid.
"""
import copy
import sys

import jsonschema
import referencing
import yaml


def closed(schema):
    """The schema with additionalProperties: false wherever properties are listed."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed(v) for k, v in schema.items()}
    if (
        isinstance(out.get("properties"), dict)
        and "additionalProperties" not in out
        and "patternProperties" not in out
        and not any(k in out for k in ("allOf", "anyOf", "oneOf"))
    ):
        out["additionalProperties"] = False
    return out


def main(argv):
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        doc = closed(yaml.safe_load(f))
    uri = "urn:kuma-openapi"
    resource = referencing.Resource.from_contents(doc, default_specification=referencing.jsonschema.DRAFT202012)
    registry = referencing.Registry().with_resource(uri, resource)
    schemas = doc["components"]["schemas"]
    failures = 0
    checked = 0
    for path in argv[2:]:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        for n, res in enumerate(docs, 1):
            where = f"{path} (document {n})"
            kind = res.get("type") if isinstance(res, dict) else None
            if not isinstance(kind, str) or f"{kind}Item" not in schemas:
                print(f"{where}: no Kuma resource type {kind!r}")
                failures += 1
                continue
            schema = {"$ref": f"{uri}#/components/schemas/{kind}Item"}
            validator = jsonschema.Draft202012Validator(schema, registry=registry)
            errors = sorted(validator.iter_errors(res), key=lambda e: list(e.absolute_path))
            for e in errors:
                at = "/".join(str(p) for p in e.absolute_path) or "(the resource)"
                print(f"{where}: {kind} {res.get('name', '?')}: {at}: {e.message}")
            failures += len(errors)
            checked += 1
    if failures:
        print(f"{failures} problem(s) in {checked} resource(s)")
        return 1
    print(f"{checked} Kuma resources valid against Kuma's schemas")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
