"""Check recorded exchanges with a running agent against docs/src/openapi.yaml.

  python openapi_check.py SPEC EXCHANGES.json

SPEC is validated as an OpenAPI 3.0 document first (openapi-spec-validator). Each exchange
is {"method", "path", "status", "content_type", "body"} (path with its query string). For
each one the spec must have the path (templates like /v1/groups/{group}/{op} match), the
method, the status (or `default`) and the media type, and a JSON body must validate
against the response schema (openapi-schema-validator, OAS 3.0 rules). Objects are
closed for this check: a property the schema does not list is an error unless the schema
says `additionalProperties`, so an undocumented field fails the test. Every operation of
the spec must have been exercised with a 2xx answer.
Prints one line per problem and `openapi: N passed, M failed` last; exits 1 on failure."""
import json
import re
import sys

import yaml
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate as validate_spec

spec_path, exchanges_path = sys.argv[1], sys.argv[2]
spec = yaml.safe_load(open(spec_path))
validate_spec(spec)
exchanges = json.load(open(exchanges_path))


def resolve(node, seen=()):
    """Inline every $ref (the spec has no recursive schemas), closing objects."""
    if isinstance(node, list):
        return [resolve(x, seen) for x in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        if ref in seen:
            raise ValueError(f"recursive $ref {ref}")
        target = spec
        for part in ref[2:].split("/"):
            target = target[part]
        return resolve(target, seen + (ref,))
    out = {k: resolve(v, seen) for k, v in node.items()}
    if "properties" in out and "additionalProperties" not in out and out.get("type") == "object":
        out["additionalProperties"] = False
    return out


ops = {}
for path, item in spec["paths"].items():
    regex = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$"
    for method, op in item.items():
        if method in ("get", "post", "put", "delete", "patch", "head"):
            ops[(path, method)] = (re.compile(regex), resolve(op))

failed = []
covered = set()
for ex in exchanges:
    what = f'{ex["method"]} {ex["path"]} -> {ex["status"]}'
    bare = ex["path"].split("?", 1)[0]
    method = ex["method"].lower()
    found = [(p, op) for (p, m), (rx, op) in ops.items() if m == method and rx.match(bare)]
    # The most specific template: fewest parameters.
    found.sort(key=lambda x: x[0].count("{"))
    if not found:
        # The router's fallbacks: an unknown path is `404 not-found`, a known path with
        # another method `405 method-not-allowed`, both with the documented Error body.
        known_path = any(rx.match(bare) for (rx, _) in ops.values())
        want = (405, "method-not-allowed") if known_path else (404, "not-found")
        try:
            code = json.loads(ex["body"])["error"]["code"]
            errors = list(OAS30Validator(resolve({"$ref": "#/components/schemas/Error"})).iter_errors(json.loads(ex["body"])))
        except (ValueError, KeyError, TypeError) as e:
            failed.append(f"{what}: fallback answer is not the Error body ({e})")
            continue
        if (ex["status"], code) != want or errors:
            failed.append(f"{what}: no such operation; expected {want}, got ({ex['status']}, {code!r}) {errors[:1]}")
        continue
    path, op = found[0]
    responses = op.get("responses", {})
    resp = responses.get(str(ex["status"])) or responses.get("default")
    if resp is None:
        failed.append(f"{what}: status {ex['status']} is not documented for {method.upper()} {path}")
        continue
    content = resp.get("content", {})
    ctype = (ex.get("content_type") or "").split(";")[0].strip().lower()
    if not content:
        if ex["body"]:
            failed.append(f"{what}: the spec documents no body, the agent sent {ctype}")
            continue
    elif ctype not in content:
        failed.append(f"{what}: content type {ctype!r} not in {sorted(content)}")
        continue
    else:
        schema = content[ctype].get("schema")
        if schema is not None and ctype.endswith("json"):
            try:
                body = json.loads(ex["body"])
            except ValueError as e:
                failed.append(f"{what}: body is not JSON ({e})")
                continue
            errors = sorted(OAS30Validator(schema).iter_errors(body), key=str)
            if errors:
                e = errors[0]
                where = "/".join(str(x) for x in e.absolute_path)
                failed.append(f"{what}: at /{where}: {e.message} ({len(errors)} error(s))")
                continue
        elif schema is not None and schema.get("type") == "string" and "pattern" in schema:
            if not re.search(schema["pattern"], ex["body"]):
                failed.append(f"{what}: body does not match {schema['pattern']!r}")
                continue
    # A redirect is the success of a redirecting operation (login, logout, /).
    if 200 <= ex["status"] < 300 or (ex["status"] == 303 and not any(200 <= int(k) < 300 for k in responses if k.isdigit())):
        covered.add((path, method))

for key in sorted(set(ops) - covered):
    failed.append(f"{key[1].upper()} {key[0]}: never answered 2xx in the exchanges (not exercised)")

for f in failed:
    print("FAIL", f)
print(f"openapi: {len(exchanges) + len(ops) - len(failed)} passed, {len(failed)} failed")
sys.exit(1 if failed else 0)
