"""Google's discovery documents as a validator for the fake's traffic.

The documents ship inside PyPI's google-api-python-client (pinned in
tests/moto/requirements.txt) under googleapiclient/discovery_cache/documents/. For each
API this module:

  * turns every method into a matcher: HTTP method + URL template under the API's
    servicePath ("dns/v1/projects/{project}/managedZones/{managedZone}/changes",
    "compute/v1/" + "projects/{project}/global/routes/{route}"); `{x}` is one path
    segment, `{+x}` may span segments; the most literal template wins;
  * checks a request's parameters against the method's (and the API's global)
    parameter descriptions: required ones present, integer/boolean/number types,
    format bounds (int32, uint32), enum values, `pattern`, `minimum`/`maximum`,
    repeated or not, and no unknown query parameter;
  * converts the API's schemas (type, properties, items, $ref, enum, format,
    additionalProperties) into JSON Schema (draft 2020-12) and validates request and
    response bodies with `jsonschema`. An object schema with `properties` and no
    `additionalProperties` is closed: an unknown field is a violation, as Google's APIs
    reject unknown fields ("Invalid JSON payload received. Unknown name ...");
    int64/uint64 are decimal strings, `byte` is base64 text;
  * Compute marks fields required per method with `annotations.required`
    (e.g. Route.name for compute.routes.insert): those are checked too.
"""

import json
import os
import re
import urllib.parse

import jsonschema

API_FILES = {"dns": "dns.v1.json", "compute": "compute.v1.json"}

# The API-wide parameters every method accepts (from each document's "parameters").
INT_BOUNDS = {
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
}


def documents_dir():
    """Where google-api-python-client keeps its discovery documents."""
    override = os.environ.get("GCP_FAKE_DISCOVERY_DIR")
    if override:
        return override
    try:
        from importlib import resources

        return str(resources.files("googleapiclient") / "discovery_cache" / "documents")
    except Exception:  # pragma: no cover - fallback when importlib.resources misbehaves
        import googleapiclient

        return os.path.join(os.path.dirname(googleapiclient.__file__), "discovery_cache", "documents")


def convert(schema):
    """A discovery schema as JSON Schema (refs point into "#/$defs/")."""
    if "$ref" in schema:
        return {"$ref": "#/$defs/" + schema["$ref"]}
    t = schema.get("type")
    out = {}
    if t == "object" or (t is None and ("properties" in schema or "additionalProperties" in schema)):
        out["type"] = "object"
        if "properties" in schema:
            out["properties"] = {k: convert(v) for k, v in schema["properties"].items()}
        if "additionalProperties" in schema:
            out["additionalProperties"] = convert(schema["additionalProperties"])
        elif "properties" in schema:
            out["additionalProperties"] = False
    elif t == "array":
        out["type"] = "array"
        if "items" in schema:
            out["items"] = convert(schema["items"])
    elif t == "string":
        out["type"] = "string"
        fmt = schema.get("format")
        if fmt in ("int64", "uint64"):
            out["pattern"] = r"^-?[0-9]+$" if fmt == "int64" else r"^[0-9]+$"
        elif fmt == "byte":
            out["pattern"] = r"^[A-Za-z0-9+/_-]*={0,2}$"
    elif t == "integer":
        out["type"] = "integer"
        lo_hi = INT_BOUNDS.get(schema.get("format"))
        if lo_hi:
            out["minimum"], out["maximum"] = lo_hi
    elif t == "number":
        out["type"] = "number"
    elif t == "boolean":
        out["type"] = "boolean"
    # "any" or untyped: no constraint.
    if "enum" in schema:
        out["enum"] = list(schema["enum"])
    return out


class Method:
    def __init__(self, api, mid, m):
        self.api = api
        self.id = mid
        self.http_method = m["httpMethod"]
        self.template = api.service_path + m["path"]
        self.params = m.get("parameters", {})
        self.request_ref = (m.get("request") or {}).get("$ref")
        self.response_ref = (m.get("response") or {}).get("$ref")
        self.scopes = m.get("scopes", [])
        pattern = ""
        literal = 0
        for part in re.split(r"(\{\+?[^}]+\})", self.template):
            if part.startswith("{+"):
                pattern += "(?P<%s>.+)" % _group(part[2:-1])
            elif part.startswith("{"):
                pattern += "(?P<%s>[^/]+)" % _group(part[1:-1])
            else:
                pattern += re.escape(part)
                literal += len(part)
        self.regex = re.compile("^/" + pattern + "$")
        self.literal = literal
        self.group_names = {_group(n): n for n in re.findall(r"\{\+?([^}]+)\}", self.template)}

    def match(self, path):
        m = self.regex.match(path)
        if not m:
            return None
        return {self.group_names[g]: urllib.parse.unquote(v) for g, v in m.groupdict().items()}


def _group(name):
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


class Api:
    def __init__(self, doc):
        self.doc = doc
        self.name = doc["name"]
        self.version = doc["version"]
        self.revision = doc.get("revision")
        self.service_path = doc.get("servicePath", "")
        self.global_params = doc.get("parameters", {})
        self.schemas = doc.get("schemas", {})
        self.defs = {name: convert(s) for name, s in self.schemas.items()}
        self.methods = []
        self._walk(doc.get("resources", {}))
        self._validators = {}

    def _walk(self, resources):
        for res in resources.values():
            for m in res.get("methods", {}).values():
                self.methods.append(Method(self, m["id"], m))
            self._walk(res.get("resources", {}))

    def validator(self, ref):
        v = self._validators.get(ref)
        if v is None:
            v = jsonschema.Draft202012Validator({"$ref": "#/$defs/" + ref, "$defs": self.defs})
            self._validators[ref] = v
        return v

    def validate_body(self, ref, body, where):
        """Schema violations of `body` against schema `ref`, as strings."""
        out = []
        for e in sorted(self.validator(ref).iter_errors(body), key=lambda e: list(e.absolute_path)):
            out.append("%s body %s at %s: %s" % (where, ref, _json_path(e.absolute_path), e.message))
        return out

    def missing_required(self, ref, body, method_id, path="resource", depth=0):
        """Fields that `annotations.required` marks as required for `method_id`."""
        out = []
        schema = self.schemas.get(ref)
        if schema is None or not isinstance(body, dict) or depth > 8:
            return out
        for name, prop in schema.get("properties", {}).items():
            req = (prop.get("annotations") or {}).get("required", [])
            if method_id in req and name not in body:
                out.append("Required field '%s.%s' not specified" % (path, name))
            val = body.get(name)
            if val is None:
                continue
            sub = prop.get("$ref") or (prop.get("items") or {}).get("$ref")
            if sub:
                items = val if isinstance(val, list) else [val]
                for i, item in enumerate(items):
                    p = "%s.%s[%d]" % (path, name, i) if isinstance(val, list) else "%s.%s" % (path, name)
                    out.extend(self.missing_required(sub, item, method_id, p, depth + 1))
        return out


def _json_path(parts):
    s = "$"
    for p in parts:
        s += "[%d]" % p if isinstance(p, int) else "." + str(p)
    return s


def check_param(name, p, values):
    """Violations of one parameter's values (strings from the URL)."""
    out = []
    if len(values) > 1 and not p.get("repeated"):
        out.append("parameter %s given %d times but is not repeated" % (name, len(values)))
    for v in values:
        t = p.get("type", "string")
        if t == "integer":
            try:
                n = int(v)
            except ValueError:
                out.append("parameter %s=%r is not an integer" % (name, v))
                continue
            lo, hi = INT_BOUNDS.get(p.get("format"), (None, None))
            if "minimum" in p:
                lo = max(lo if lo is not None else int(p["minimum"]), int(p["minimum"]))
            if "maximum" in p:
                hi = min(hi if hi is not None else int(p["maximum"]), int(p["maximum"]))
            if (lo is not None and n < lo) or (hi is not None and n > hi):
                out.append("parameter %s=%s out of range [%s, %s]" % (name, v, lo, hi))
        elif t == "boolean":
            if v not in ("true", "false"):
                out.append("parameter %s=%r is not a boolean" % (name, v))
        elif t == "number":
            try:
                float(v)
            except ValueError:
                out.append("parameter %s=%r is not a number" % (name, v))
        if "enum" in p and v not in p["enum"]:
            out.append("parameter %s=%r is not one of %s" % (name, v, p["enum"]))
        if "pattern" in p and t == "string" and not re.fullmatch(p["pattern"], v):
            out.append("parameter %s=%r does not match pattern %s" % (name, v, p["pattern"]))
    return out


class Discovery:
    """Both APIs; `match` finds the method a request is for."""

    def __init__(self, directory=None):
        directory = directory or documents_dir()
        self.directory = directory
        self.apis = {}
        for key, fname in API_FILES.items():
            with open(os.path.join(directory, fname), encoding="utf-8") as f:
                self.apis[key] = Api(json.load(f))
        self.methods = sorted(
            (m for api in self.apis.values() for m in api.methods), key=lambda m: -m.literal
        )

    def revisions(self):
        return {a.name + "/" + a.version: a.revision for a in self.apis.values()}

    def match(self, http_method, path):
        """(method, path params) or (None, reason)."""
        path_only_match = None
        for m in self.methods:
            params = m.match(path)
            if params is None:
                continue
            if m.http_method == http_method:
                return m, params
            path_only_match = path_only_match or m
        if path_only_match:
            return None, "no %s method at %s (the path is %s's)" % (http_method, path, path_only_match.id)
        return None, "no discovery method matches %s %s" % (http_method, path)

    def check_request(self, method, path_params, query, body, body_present):
        """Violations of a request: parameters, then body."""
        out = []
        api = method.api
        allowed = dict(api.global_params)
        allowed.update(method.params)
        for name, p in method.params.items():
            loc = p.get("location")
            values = [path_params[name]] if loc == "path" and name in path_params else query.get(name)
            if not values:
                if p.get("required"):
                    out.append("required parameter %s missing" % name)
                continue
            out.extend(check_param(name, p, values))
        for name, values in query.items():
            if name not in allowed:
                out.append("unknown query parameter %s" % name)
            elif name in api.global_params:
                out.extend(check_param(name, api.global_params[name], values))
        if method.request_ref:
            if not body_present:
                out.append("request body (%s) missing" % method.request_ref)
            else:
                out.extend(api.validate_body(method.request_ref, body, "request"))
                out.extend(api.missing_required(method.request_ref, body, method.id))
        elif body_present and body not in (None, {}, ""):
            out.append("%s takes no request body" % method.id)
        return out

    def check_response(self, method, body):
        if method.response_ref is None:
            return [] if body in (None, {}, b"", "") else ["%s returns no body" % method.id]
        return method.api.validate_body(method.response_ref, body, "response")


# The error shape Google's JSON APIs answer with (not in the discovery documents).
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "errors", "status"],
            "additionalProperties": False,
            "properties": {
                "code": {"type": "integer"},
                "message": {"type": "string"},
                "status": {"type": "string"},
                "errors": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["domain", "reason", "message"],
                        "additionalProperties": False,
                        "properties": {
                            "domain": {"type": "string"},
                            "reason": {"type": "string"},
                            "message": {"type": "string"},
                            "location": {"type": "string"},
                            "locationType": {"type": "string"},
                        },
                    },
                },
            },
        }
    },
}


def check_error_body(body):
    v = jsonschema.Draft202012Validator(ERROR_SCHEMA)
    return ["error body at %s: %s" % (_json_path(e.absolute_path), e.message) for e in v.iter_errors(body)]
