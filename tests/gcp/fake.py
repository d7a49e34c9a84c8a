"""A stateful Google Cloud fake for Baton's tests, validated against Google's discovery documents.

One HTTP server on one port serves:
  * Cloud DNS v1      /dns/v1/projects/...            (managed zones, rrsets, changes)
  * Compute Engine v1 /compute/v1/projects/...        (routes, instances, operations,
                                                      backend services, health checks)
  * the metadata server /computeMetadata/v1/...       (and /_vm/<instance>/computeMetadata/v1/...)
  * an OAuth 2.0 token endpoint /token                (JWT bearer and refresh_token grants)
  * a control API under /_fake/                       (seed, state, log, faults, violations)

Every Cloud DNS and Compute request is matched to its discovery method, its parameters
and body are validated, and so is the body the fake answers (discovery.py). A request
that breaks the documents is answered 400 INVALID_ARGUMENT as Google would, and every
violation (request or response) is kept for GET /_fake/violations.

Usage: python fake.py [--host 127.0.0.1] [--port 0] [--no-seed] [--quiet]
Prints "LISTENING <port>" on stdout once it accepts connections (as tests/moto/server.py).
See README.md beside this file for the control API.
"""

import argparse
import base64
import copy
import hashlib
import ipaddress
import json
import os
import re
import secrets
import sys
import threading
import time
import traceback
import urllib.parse
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import discovery  # noqa: E402

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
GOOGLE_TOKEN_AUD = "https://oauth2.googleapis.com/token"
MAINTENANCE_VALUES = ("NONE", "MIGRATE_ON_HOST_MAINTENANCE", "TERMINATE_ON_HOST_MAINTENANCE")

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
FAULT_DEFAULTS = {
    429: ("usageLimits", "rateLimitExceeded", "Rate Limit Exceeded"),
    500: ("global", "backendError", "Internal error encountered."),
    502: ("global", "backendError", "Bad Gateway"),
    503: ("global", "backendError", "The service is currently unavailable."),
    504: ("global", "backendError", "Deadline exceeded."),
}


def now_rfc3339(t=None):
    t = time.time() if t is None else t
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def compute_timestamp(t=None):
    # Compute writes RFC 3339 timestamps with an offset, e.g. 2024-05-01T10:00:00.000-07:00.
    t = time.time() if t is None else t
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+00:00"


def new_id():
    return str(secrets.randbelow(9 * 10**18) + 10**18)


def new_fingerprint():
    return base64.b64encode(secrets.token_bytes(8)).decode()


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class ApiError(Exception):
    """An error answered in Google's JSON API shape."""

    def __init__(self, code, reason, message, domain="global", status=None, location=None, location_type=None):
        super().__init__(message)
        self.code, self.reason, self.message, self.domain = code, reason, message, domain
        self.status = status or STATUS_NAMES.get(code, "UNKNOWN")
        self.location, self.location_type = location, location_type

    def body(self):
        item = {"message": self.message, "domain": self.domain, "reason": self.reason}
        if self.location:
            item["location"] = self.location
            item["locationType"] = self.location_type or "parameter"
        return {"error": {"code": self.code, "message": self.message, "errors": [item], "status": self.status}}


def not_found(what):
    return ApiError(404, "notFound", "The resource '%s' was not found" % what)


class Raw:
    """A non-JSON-API answer (metadata server, token endpoint, control API)."""

    def __init__(self, status, body, content_type="application/json", headers=None):
        self.status, self.body, self.content_type, self.headers = status, body, content_type, headers or {}


# ---------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------

DEFAULT_SETTINGS = {
    "dns_change_delay_ms": 300,  # a Cloud DNS change stays "pending" this long
    "operation_delay_ms": 300,  # a Compute operation is PENDING, then RUNNING, then DONE
    "operation_wait_max_s": 120,  # operations.wait returns by then even when not DONE
    "token_lifetime_s": 3600,
    "metadata_max_wait_s": 3600,  # a hanging metadata GET without timeout_sec
    "preempt_stop_ms": 30000,  # a preempted instance is TERMINATED this long after the notice
    "self_link_base": None,  # default: http://<host>:<port>/compute/v1/
}


class State:
    def __init__(self, base_url):
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.base_url = base_url
        self.reset()

    def reset(self):
        with self.lock:
            self.settings = dict(DEFAULT_SETTINGS)
            self.projects = {}  # id -> project dict (see seed())
            self.sa_keys = {}  # email -> {kid: public key}
            self.users = {}  # refresh_token -> {client_id, client_secret, account, scopes}
            self.tokens = {}  # access token -> {principal, expires, scopes}
            self.metadata_tokens = {}  # (zone, instance) -> token
            self.faults = []
            self.second_writers = []
            self.scheduled = []  # (due time, callable)
            self.log = []
            self.calls = {}
            self.violations = []
            self.default_instance = None
            # IAM: principal (or "*" for everyone) -> the permissions granted; a principal
            # without an entry (and no "*") has them all.
            self.iam = {}
            self.cond.notify_all()

    # -- links ---------------------------------------------------------------------------
    def compute_base(self):
        return self.settings.get("self_link_base") or self.base_url + "/compute/v1/"

    def link(self, rel):
        return self.compute_base() + rel

    @staticmethod
    def rel(link_or_partial):
        """'projects/p/zones/z/instances/i' from a full URL or a partial one."""
        s = link_or_partial or ""
        m = re.search(r"(projects/.*)$", s)
        return m.group(1) if m else s

    def project(self, pid):
        p = self.projects.get(pid)
        if p is None:
            raise ApiError(404, "notFound", "The resource 'projects/%s' was not found" % pid)
        return p

    # -- time-driven progress ----------------------------------------------------------------
    def tick(self):
        """Apply what is due: finished operations, finished DNS changes, scheduled events."""
        with self.lock:
            now = time.time()
            changed = False
            due = [s for s in self.scheduled if s[0] <= now]
            if due:
                self.scheduled = [s for s in self.scheduled if s[0] > now]
                for _, fn in sorted(due, key=lambda s: s[0]):
                    fn()
                changed = True
            for p in self.projects.values():
                for op in sorted(p["operations"].values(), key=lambda o: o["t0"]):
                    if not op["applied"] and op["done_at"] <= now:
                        op["applied"] = True
                        err = op["apply"]()
                        if err:
                            op["error"] = err
                        op["end"] = op["done_at"]
                        changed = True
                for z in p["zones"].values():
                    for ch in z["changes"]:
                        if not ch["served"] and ch["done_at"] <= now:
                            ch["served"] = True
                            apply_rrset_change(z["served"], ch["deletions"], ch["additions"])
                            changed = True
            if changed:
                self.cond.notify_all()

    def schedule(self, delay_s, fn):
        with self.lock:
            self.scheduled.append((time.time() + delay_s, fn))

    def violation(self, entry):
        with self.lock:
            self.violations.append(entry)


# ---------------------------------------------------------------------------------------
# Seeding (control API and the default world)
# ---------------------------------------------------------------------------------------

DEFAULT_SEED = {
    "project": {"id": "baton-test", "number": "123456789012"},
    "networks": [{"name": "default", "subnetworks": [{"name": "default", "region": "us-central1", "ipCidrRange": "10.128.0.0/20"}]}],
    "serviceAccounts": [{"email": "baton@baton-test.iam.gserviceaccount.com"}],
    "instances": [
        {"name": "node-1", "zone": "us-central1-a", "networkIP": "10.128.0.2"},
        {"name": "node-2", "zone": "us-central1-b", "networkIP": "10.128.0.3"},
    ],
    "managedZones": [
        {"name": "public-zone", "dnsName": "example.com.", "visibility": "public"},
        {"name": "private-zone", "dnsName": "internal.example.", "visibility": "private", "networks": ["default"]},
    ],
    "healthChecks": [{"name": "baton-hc", "region": "us-central1", "type": "TCP", "port": 7080}],
    "backendServices": [
        {"name": "baton-ilb", "region": "us-central1", "healthChecks": ["baton-hc"],
         "backends": ["zones/us-central1-a/instanceGroups/baton-a", "zones/us-central1-b/instanceGroups/baton-b"]}
    ],
    "defaultInstance": "node-1",
}


def empty_project(pid, number):
    return {
        "id": pid, "number": str(number), "networks": {}, "subnetworks": {}, "routes": {},
        "instances": {}, "backendServices": {}, "regionBackendServices": {}, "healthChecks": {},
        "regionHealthChecks": {}, "operations": {}, "zones": {}, "compute_zones": set(),
    }


def seed(state, spec):
    """Add the objects of `spec` (the format of DEFAULT_SEED; every key optional)."""
    with state.lock:
        pspec = spec.get("project") or {}
        pid = pspec.get("id") or next(iter(state.projects), None) or "baton-test"
        if pid not in state.projects:
            state.projects[pid] = empty_project(pid, pspec.get("number") or str(100000000000 + len(state.projects)))
        p = state.projects[pid]
        for n in spec.get("networks", []):
            rel = "projects/%s/global/networks/%s" % (pid, n["name"])
            p["networks"][n["name"]] = {"kind": "compute#network", "id": new_id(), "name": n["name"],
                                         "selfLink": state.link(rel), "autoCreateSubnetworks": False,
                                         "creationTimestamp": compute_timestamp()}
            for s in n.get("subnetworks", []):
                p["subnetworks"][(s["region"], s["name"])] = {
                    "name": s["name"], "region": s["region"], "network": rel,
                    "ipCidrRange": s["ipCidrRange"], "secondaryIpRanges": s.get("secondaryIpRanges", []),
                }
        for sa in spec.get("serviceAccounts", []):
            state.sa_keys.setdefault(sa["email"], {})
            if sa.get("publicKeyPem"):
                kid = sa.get("keyId") or secrets.token_hex(20)
                state.sa_keys[sa["email"]][kid] = serialization.load_pem_public_key(sa["publicKeyPem"].encode())
        for u in spec.get("users", []):
            state.users[u["refresh_token"]] = {
                "client_id": u["client_id"], "client_secret": u["client_secret"],
                "account": u.get("account", "user@example.com"), "scopes": u.get("scopes", [CLOUD_PLATFORM]),
            }
        for i in spec.get("instances", []):
            seed_instance(state, p, i)
        for z in spec.get("managedZones", []):
            seed_zone(state, p, z)
        for hc in spec.get("healthChecks", []):
            seed_health_check(state, p, hc)
        for bs in spec.get("backendServices", []):
            seed_backend_service(state, p, bs)
        if spec.get("defaultInstance"):
            state.default_instance = spec["defaultInstance"]
        state.cond.notify_all()
        return pid


def seed_instance(state, p, i):
    pid, zone = p["id"], i["zone"]
    region = zone.rsplit("-", 1)[0]
    p["compute_zones"].add(zone)
    nics = i.get("networkInterfaces") or [{"networkIP": i["networkIP"], "aliasIpRanges": i.get("aliasIpRanges", [])}]
    interfaces = []
    for n, nic in enumerate(nics):
        net = nic.get("network", "default")
        sub = nic.get("subnetwork", net)
        interfaces.append({
            "kind": "compute#networkInterface", "name": "nic%d" % n,
            "network": state.link("projects/%s/global/networks/%s" % (pid, net)),
            "subnetwork": state.link("projects/%s/regions/%s/subnetworks/%s" % (pid, region, sub)),
            "networkIP": nic["networkIP"],
            "aliasIpRanges": [{"ipCidrRange": normalize_cidr(a) if isinstance(a, str) else normalize_cidr(a["ipCidrRange"])}
                              for a in nic.get("aliasIpRanges", [])],
            "fingerprint": new_fingerprint(), "stackType": "IPV4_ONLY",
        })
    sa = i.get("serviceAccount") or next(iter(state.sa_keys), None)
    spot = bool(i.get("preemptible") or i.get("spot"))
    inst = {
        "kind": "compute#instance", "id": new_id(), "creationTimestamp": compute_timestamp(),
        "name": i["name"], "zone": state.link("projects/%s/zones/%s" % (pid, zone)),
        "machineType": state.link("projects/%s/zones/%s/machineTypes/%s" % (pid, zone, i.get("machineType", "e2-standard-2"))),
        "status": "RUNNING", "canIpForward": bool(i.get("canIpForward", True)),
        "networkInterfaces": interfaces, "fingerprint": new_fingerprint(),
        "scheduling": {"onHostMaintenance": "TERMINATE" if spot else "MIGRATE", "automaticRestart": not spot,
                       "preemptible": spot, "provisioningModel": "SPOT" if spot else "STANDARD"},
        "labels": i.get("labels", {}),
        "selfLink": state.link("projects/%s/zones/%s/instances/%s" % (pid, zone, i["name"])),
    }
    if sa:
        inst["serviceAccounts"] = [{"email": sa, "scopes": i.get("scopes", [CLOUD_PLATFORM])}]
    p["instances"][(zone, i["name"])] = inst
    # What only the metadata server shows.
    inst["_meta"] = {"maintenance-event": "NONE", "preempted": "FALSE", "attributes": dict(i.get("metadata", {}))}
    return inst


def seed_zone(state, p, z):
    name, dns_name = z["name"], z["dnsName"]
    private = z.get("visibility", "public") == "private"
    ns = ["ns-gcp-private.googledomains.com."] if private else [
        "ns-cloud-a%d.googledomains.com." % k for k in range(1, 5)]
    mz = {"kind": "dns#managedZone", "name": name, "dnsName": dns_name, "id": new_id(),
          "description": z.get("description", ""), "creationTime": now_rfc3339(), "nameServers": ns,
          "visibility": "private" if private else "public"}
    if private:
        mz["privateVisibilityConfig"] = {
            "kind": "dns#managedZonePrivateVisibilityConfig",
            "networks": [{"kind": "dns#managedZonePrivateVisibilityConfigNetwork",
                          "networkUrl": state.link("projects/%s/global/networks/%s" % (p["id"], n))}
                         for n in z.get("networks", ["default"])]}
    soa = "%s cloud-dns-hostmaster.google.com. 1 21600 3600 259200 300" % ns[0]
    initial = [rrset(dns_name, "SOA", 21600, [soa]), rrset(dns_name, "NS", 21600, ns)]
    zone = {"zone": mz, "rrsets": {}, "served": {}, "changes": []}
    apply_rrset_change(zone["rrsets"], [], initial)
    apply_rrset_change(zone["served"], [], initial)
    zone["changes"].append({"id": "0", "additions": initial, "deletions": [], "t0": time.time(),
                            "done_at": time.time(), "served": True})
    p["zones"][name] = zone
    for r in z.get("rrsets", []):
        r = rrset(r["name"], r["type"], r["ttl"], r["rrdatas"])
        apply_rrset_change(zone["rrsets"], [], [r])
        apply_rrset_change(zone["served"], [], [r])


def seed_health_check(state, p, hc):
    region = hc.get("region")
    kind = hc.get("type", "TCP").upper()
    rel = ("projects/%s/regions/%s/healthChecks/%s" % (p["id"], region, hc["name"]) if region
           else "projects/%s/global/healthChecks/%s" % (p["id"], hc["name"]))
    obj = {"kind": "compute#healthCheck", "id": new_id(), "creationTimestamp": compute_timestamp(), "name": hc["name"],
           "type": kind, "checkIntervalSec": hc.get("checkIntervalSec", 5), "timeoutSec": hc.get("timeoutSec", 5),
           "healthyThreshold": hc.get("healthyThreshold", 2), "unhealthyThreshold": hc.get("unhealthyThreshold", 2),
           "selfLink": state.link(rel)}
    if kind == "TCP":
        obj["tcpHealthCheck"] = {"port": hc.get("port", 80), "portSpecification": "USE_FIXED_PORT", "proxyHeader": "NONE"}
    elif kind in ("HTTP", "HTTPS", "HTTP2"):
        key = {"HTTP": "httpHealthCheck", "HTTPS": "httpsHealthCheck", "HTTP2": "http2HealthCheck"}[kind]
        obj[key] = {"port": hc.get("port", 80), "requestPath": hc.get("requestPath", "/"),
                    "portSpecification": "USE_FIXED_PORT", "proxyHeader": "NONE"}
    if region:
        obj["region"] = state.link("projects/%s/regions/%s" % (p["id"], region))
        p["regionHealthChecks"][(region, hc["name"])] = obj
    else:
        p["healthChecks"][hc["name"]] = obj


def seed_backend_service(state, p, bs):
    region = bs.get("region")
    pid = p["id"]

    def hc_link(h):
        if "/" in h:
            return state.link(state.rel(h))
        if region:
            return state.link("projects/%s/regions/%s/healthChecks/%s" % (pid, region, h))
        return state.link("projects/%s/global/healthChecks/%s" % (pid, h))

    rel = ("projects/%s/regions/%s/backendServices/%s" % (pid, region, bs["name"]) if region
           else "projects/%s/global/backendServices/%s" % (pid, bs["name"]))
    obj = {"kind": "compute#backendService", "id": new_id(), "creationTimestamp": compute_timestamp(),
           "name": bs["name"], "protocol": bs.get("protocol", "TCP"),
           "loadBalancingScheme": bs.get("loadBalancingScheme", "INTERNAL"),
           "healthChecks": [hc_link(h) for h in bs.get("healthChecks", [])],
           "backends": [{"group": state.link(g if g.startswith("projects/") else "projects/%s/%s" % (pid, g)),
                         "balancingMode": "CONNECTION"} for g in bs.get("backends", [])],
           "sessionAffinity": "NONE", "timeoutSec": 30, "fingerprint": new_fingerprint(),
           "network": state.link("projects/%s/global/networks/%s" % (pid, bs.get("network", "default"))),
           "selfLink": state.link(rel)}
    if region:
        obj["region"] = state.link("projects/%s/regions/%s" % (pid, region))
        p["regionBackendServices"][(region, bs["name"])] = obj
    else:
        p["backendServices"][bs["name"]] = obj


def normalize_cidr(s):
    return str(ipaddress.ip_network(s if "/" in s else s + "/32", strict=False))


# ---------------------------------------------------------------------------------------
# Authentication: the OAuth token endpoint and bearer tokens on API calls
# ---------------------------------------------------------------------------------------

def issue_token(state, principal, scopes, source):
    with state.lock:
        tok = "ya29.fake-" + secrets.token_urlsafe(32)
        life = int(state.settings["token_lifetime_s"])
        state.tokens[tok] = {"principal": principal, "expires": time.time() + life, "scopes": list(scopes), "source": source}
        return tok, life - 1


def oauth_error(status, error, description):
    # The token endpoint answers in RFC 6749's shape, not the JSON API one.
    return Raw(status, {"error": error, "error_description": description})


def verify_jwt(state, jwt):
    """(claims, None) or (None, description) for an RS256 JWT signed by a registered key."""
    try:
        h64, c64, s64 = jwt.split(".")
        header = json.loads(b64url_decode(h64))
        claims = json.loads(b64url_decode(c64))
        sig = b64url_decode(s64)
    except Exception:
        return None, "Invalid JWT: could not be decoded."
    if header.get("alg") != "RS256":
        return None, "Invalid JWT Signature."
    keys = state.sa_keys.get(claims.get("iss"))
    if not keys:
        return None, "Invalid grant: account not found"
    candidates = [keys[header["kid"]]] if header.get("kid") in keys else list(keys.values())
    for key in candidates:
        try:
            key.verify(sig, (h64 + "." + c64).encode(), padding.PKCS1v15(), hashes.SHA256())
            break
        except InvalidSignature:
            continue
    else:
        return None, "Invalid JWT Signature."
    now = time.time()
    iat, exp = claims.get("iat"), claims.get("exp")
    if not isinstance(iat, (int, float)) or not isinstance(exp, (int, float)) or exp <= now or iat > now + 300 \
            or exp - iat > 3600:
        return None, ("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. "
                      "Check your iat and exp values in the JWT claim.")
    return claims, None


def token_endpoint(state, handler, form):
    grant = form.get("grant_type", "")
    if grant == JWT_BEARER:
        claims, err = verify_jwt(state, form.get("assertion", ""))
        if err:
            return oauth_error(400, "invalid_grant", err)
        aud = claims.get("aud")
        own = "http://%s/token" % handler.headers.get("Host", "")
        if aud not in (GOOGLE_TOKEN_AUD, own, state.base_url + "/token"):
            return oauth_error(400, "invalid_grant", "Invalid JWT: Failed audience check.")
        scopes = (claims.get("scope") or "").split()
        if not scopes:
            return oauth_error(400, "invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        tok, life = issue_token(state, claims["iss"], scopes, "jwt-bearer")
        return Raw(200, {"access_token": tok, "expires_in": life, "token_type": "Bearer"})
    if grant == "refresh_token":
        user = state.users.get(form.get("refresh_token", ""))
        if user is None:
            return oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
        if form.get("client_id") != user["client_id"] or form.get("client_secret") != user["client_secret"]:
            return oauth_error(401, "invalid_client", "The OAuth client was not found.")
        tok, life = issue_token(state, user["account"], user["scopes"], "refresh_token")
        return Raw(200, {"access_token": tok, "expires_in": life, "token_type": "Bearer",
                         "scope": " ".join(user["scopes"])})
    return oauth_error(400, "unsupported_grant_type", "Invalid grant_type: %s" % grant)


def authenticate(state, handler, method):
    """The caller's principal, or an ApiError 401/403 in Google's shape."""
    auth = handler.headers.get("Authorization", "")
    if not auth:
        raise ApiError(401, "required", "Request is missing required authentication credential. Expected OAuth 2 "
                       "access token, login cookie or other valid authentication credential.",
                       location="Authorization", location_type="header")
    invalid = ApiError(401, "authError", "Request had invalid authentication credentials. Expected OAuth 2 access "
                       "token, login cookie or other valid authentication credential.",
                       location="Authorization", location_type="header")
    if not auth.startswith("Bearer "):
        raise invalid
    tok = auth[len("Bearer "):].strip()
    with state.lock:
        info = state.tokens.get(tok)
    if info is None and tok.count(".") == 2:
        # A self-signed service-account JWT used directly as the bearer token.
        claims, err = verify_jwt(state, tok)
        if err:
            raise invalid
        scopes = (claims.get("scope") or "").split() or [CLOUD_PLATFORM]
        info = {"principal": claims["iss"], "expires": claims["exp"], "scopes": scopes}
    if info is None or info["expires"] <= time.time():
        raise invalid
    if method.scopes and not set(info["scopes"]) & set(method.scopes):
        raise ApiError(403, "insufficientPermissions", "Request had insufficient authentication scopes.")
    return info["principal"]


# ---------------------------------------------------------------------------------------
# Cloud DNS v1
# ---------------------------------------------------------------------------------------

def rrset(name, rtype, ttl, rrdatas):
    return {"kind": "dns#resourceRecordSet", "name": name, "type": rtype, "ttl": ttl, "rrdatas": list(rrdatas)}


def rr_key(r):
    return (r.get("name", "").lower(), r.get("type", "").upper())


def apply_rrset_change(table, deletions, additions):
    for d in deletions:
        table.pop(rr_key(d), None)
    for a in additions:
        table[rr_key(a)] = rrset(a["name"], a["type"], a.get("ttl"), a.get("rrdatas", []))


def dns_zone(state, ctx):
    p = state.projects.get(ctx.params["project"])
    if p is None:
        raise ApiError(404, "notFound", "The 'parameters.project' resource named '%s' does not exist." % ctx.params["project"])
    z = p["zones"].get(ctx.params["managedZone"])
    if z is None:
        raise ApiError(404, "notFound", "The 'parameters.managedZone' resource named '%s' does not exist."
                       % ctx.params["managedZone"])
    return p, z


def page(items, ctx, default_max=None):
    start = int(ctx.query1("pageToken") or 0)
    mx = int(ctx.query1("maxResults") or default_max or 1000)
    mx = mx or 1000
    chunk = items[start:start + mx]
    token = str(start + mx) if start + mx < len(items) else None
    return chunk, token


def dns_managed_zones_get(state, ctx):
    return dns_zone(state, ctx)[1]["zone"]


def dns_managed_zones_list(state, ctx):
    p = state.projects.get(ctx.params["project"])
    if p is None:
        raise ApiError(404, "notFound", "The 'parameters.project' resource named '%s' does not exist." % ctx.params["project"])
    zones = [z["zone"] for _, z in sorted(p["zones"].items())]
    if ctx.query1("dnsName"):
        want = ctx.query1("dnsName").rstrip(".").lower() + "."
        zones = [z for z in zones if z["dnsName"].lower() == want]
    chunk, token = page(zones, ctx)
    out = {"kind": "dns#managedZonesListResponse", "managedZones": chunk}
    if token:
        out["nextPageToken"] = token
    return out


def dns_rrsets_list(state, ctx):
    _, z = dns_zone(state, ctx)
    items = [z["rrsets"][k] for k in sorted(z["rrsets"])]
    name, rtype = ctx.query1("name"), ctx.query1("type")
    if rtype and not name:
        raise ApiError(400, "invalid", "Invalid value for 'parameters.type': '%s' requires 'parameters.name'" % rtype)
    if name:
        items = [r for r in items if r["name"].lower() == name.lower()]
    if rtype:
        items = [r for r in items if r["type"].upper() == rtype.upper()]
    chunk, token = page(items, ctx)
    out = {"kind": "dns#resourceRecordSetsListResponse", "rrsets": chunk}
    if token:
        out["nextPageToken"] = token
    return out


def dns_rrsets_get(state, ctx):
    _, z = dns_zone(state, ctx)
    r = z["rrsets"].get((ctx.params["name"].lower(), ctx.params["type"].upper()))
    if r is None:
        raise ApiError(404, "notFound", "The 'parameters.name' resource named '%s (%s)' does not exist."
                       % (ctx.params["name"], ctx.params["type"]))
    return r


def check_rrset(z, r, where, addition):
    """400s for a malformed record of a change (Cloud DNS's 'invalid'/'required' reasons)."""
    for field in ("name", "type") + (("ttl", "rrdatas") if addition else ()):
        if field not in r or r[field] in ("", []):
            raise ApiError(400, "required", "The '%s.%s' parameter is required but was missing." % (where, field))
    name = r["name"].lower()
    zone = z["zone"]["dnsName"].lower()
    if not name.endswith(".") or not (name == zone or name.endswith("." + zone)):
        raise ApiError(400, "invalid", "Invalid value for '%s.name': '%s'" % (where, r["name"]))
    if "ttl" in r and r["ttl"] < 0:
        raise ApiError(400, "invalid", "Invalid value for '%s.ttl': '%s'" % (where, r["ttl"]))
    for i, d in enumerate(r.get("rrdatas", [])):
        try:
            if r["type"].upper() == "A":
                ipaddress.IPv4Address(d)
            elif r["type"].upper() == "AAAA":
                ipaddress.IPv6Address(d)
        except ValueError:
            raise ApiError(400, "invalid", "Invalid value for '%s.rrdata[%d]': '%s'" % (where, i, d))
    if r["type"].upper() == "CNAME" and len(r.get("rrdatas", [])) > 1:
        raise ApiError(400, "invalid", "Invalid value for '%s.rrdata': a CNAME has one value" % where)


def same_record(current, wanted):
    return (current.get("ttl") == wanted.get("ttl")
            and sorted(current.get("rrdatas", [])) == sorted(wanted.get("rrdatas", [])))


def dns_commit_change(state, z, additions, deletions):
    """Validates a change against the zone as it is now; applies it atomically or raises."""
    for i, d in enumerate(deletions):
        check_rrset(z, d, "entity.change.deletions[%d]" % i, False)
    for i, a in enumerate(additions):
        check_rrset(z, a, "entity.change.additions[%d]" % i, True)
    after = dict(z["rrsets"])
    for i, d in enumerate(deletions):
        cur = after.get(rr_key(d))
        if cur is None:
            raise ApiError(404, "notFound", "The 'entity.change.deletions[%d]' resource named '%s (%s)' does not exist."
                           % (i, d["name"], d["type"]))
        if not same_record(cur, d):
            raise ApiError(412, "conditionNotMet", "Precondition not met for 'entity.change.deletions[%d]'" % i)
        del after[rr_key(d)]
    for i, a in enumerate(additions):
        if rr_key(a) in after:
            raise ApiError(409, "alreadyExists", "The resource 'entity.change.additions[%d]' named '%s (%s)' already "
                           "exists" % (i, a["name"], a["type"]))
        after[rr_key(a)] = a
    adds = [rrset(a["name"], a["type"], a["ttl"], a["rrdatas"]) for a in additions]
    dels = [rrset(d["name"], d["type"], d.get("ttl"), d.get("rrdatas", [])) for d in deletions]
    apply_rrset_change(z["rrsets"], dels, adds)
    # Cloud DNS bumps the SOA serial on every change that does not touch the SOA itself.
    soa_key = (z["zone"]["dnsName"].lower(), "SOA")
    if soa_key in z["rrsets"] and not any(rr_key(r) == soa_key for r in adds + dels):
        soa = z["rrsets"][soa_key]
        parts = soa["rrdatas"][0].split()
        parts[2] = str(int(parts[2]) + 1)
        old = copy.deepcopy(soa)
        soa["rrdatas"] = [" ".join(parts)]
        dels.append(old)
        adds.append(copy.deepcopy(soa))
    t0 = time.time()
    ch = {"id": str(len(z["changes"])), "additions": adds, "deletions": dels, "t0": t0,
          "done_at": t0 + state.settings["dns_change_delay_ms"] / 1000.0, "served": False}
    z["changes"].append(ch)
    return ch


def render_change(ch, at_creation=False):
    done = ch["served"] and not at_creation
    return {"kind": "dns#change", "id": ch["id"], "startTime": now_rfc3339(ch["t0"]),
            "status": "done" if done else "pending", "additions": ch["additions"], "deletions": ch["deletions"]}


def dns_changes_create(state, ctx):
    _, z = dns_zone(state, ctx)
    body = ctx.body or {}
    additions, deletions = body.get("additions", []), body.get("deletions", [])
    if not additions and not deletions:
        raise ApiError(400, "required", "The 'entity.change' parameter is required but was missing.")
    ch = dns_commit_change(state, z, additions, deletions)
    return render_change(ch, at_creation=True)


def dns_changes_get(state, ctx):
    _, z = dns_zone(state, ctx)
    for ch in z["changes"]:
        if ch["id"] == ctx.params["changeId"]:
            return render_change(ch)
    raise ApiError(404, "notFound", "The 'parameters.changeId' resource named '%s' does not exist." % ctx.params["changeId"])


def dns_changes_list(state, ctx):
    _, z = dns_zone(state, ctx)
    items = [render_change(c) for c in z["changes"]]
    if ctx.query1("sortOrder") == "descending":
        items.reverse()
    chunk, token = page(items, ctx)
    out = {"kind": "dns#changesListResponse", "changes": chunk}
    if token:
        out["nextPageToken"] = token
    return out


def dns_rrsets_create(state, ctx):
    _, z = dns_zone(state, ctx)
    ch = dns_commit_change(state, z, [ctx.body], [])
    return ch["additions"][0]


def dns_rrsets_delete(state, ctx):
    _, z = dns_zone(state, ctx)
    cur = z["rrsets"].get((ctx.params["name"].lower(), ctx.params["type"].upper()))
    if cur is None:
        raise ApiError(404, "notFound", "The 'parameters.name' resource named '%s (%s)' does not exist."
                       % (ctx.params["name"], ctx.params["type"]))
    dns_commit_change(state, z, [], [cur])
    return {}


def dns_rrsets_patch(state, ctx):
    _, z = dns_zone(state, ctx)
    cur = z["rrsets"].get((ctx.params["name"].lower(), ctx.params["type"].upper()))
    if cur is None:
        raise ApiError(404, "notFound", "The 'parameters.name' resource named '%s (%s)' does not exist."
                       % (ctx.params["name"], ctx.params["type"]))
    new = dict(cur)
    new.update({k: v for k, v in (ctx.body or {}).items() if k in ("ttl", "rrdatas")})
    ch = dns_commit_change(state, z, [new], [cur])
    return ch["additions"][0]


# ---------------------------------------------------------------------------------------
# Compute Engine v1
# ---------------------------------------------------------------------------------------

def new_operation(state, ctx, p, op_type, target_rel, target_id, apply, zone=None, region=None):
    """A Compute operation; `apply()` runs when it reaches DONE and returns None or an error dict."""
    t0 = time.time()
    name = "operation-%d-%s-%s-%s" % (t0 * 1000, secrets.token_hex(7)[:13], secrets.token_hex(4), secrets.token_hex(4))
    if zone:
        scope_rel = "projects/%s/zones/%s" % (p["id"], zone)
    elif region:
        scope_rel = "projects/%s/regions/%s" % (p["id"], region)
    else:
        scope_rel = "projects/%s/global" % p["id"]
    injected = ctx.operation_error
    if injected:
        def apply():  # noqa: F811 - a fault replaces the effect with an error
            return {"code": injected.get("code", "INTERNAL_ERROR"), "message": injected.get("message", "Injected error."),
                    "httpStatus": injected.get("httpStatus", 400)}
    op = {"name": name, "type": op_type, "t0": t0, "done_at": t0 + state.settings["operation_delay_ms"] / 1000.0,
          "apply": apply, "applied": False, "error": None, "end": None, "id": new_id(), "user": ctx.principal,
          "target": state.link(target_rel), "targetId": target_id, "zone": zone, "region": region,
          "selfLink": state.link(scope_rel + "/operations/" + name), "project": p["id"]}
    p["operations"][name] = op
    return render_operation(state, op, at_creation=True)


def render_operation(state, op, at_creation=False):
    now = time.time()
    if op["applied"] and not at_creation:
        status, progress = "DONE", 100
    elif now < op["t0"] + (op["done_at"] - op["t0"]) / 2 or at_creation:
        status, progress = "PENDING", 0
    else:
        status, progress = "RUNNING", 50
    out = {"kind": "compute#operation", "id": op["id"], "name": op["name"], "operationType": op["type"],
           "targetLink": op["target"], "status": status, "user": op["user"], "progress": progress,
           "insertTime": compute_timestamp(op["t0"]), "selfLink": op["selfLink"]}
    if op["targetId"]:
        out["targetId"] = op["targetId"]
    if status != "PENDING":
        out["startTime"] = compute_timestamp(op["t0"])
    if status == "DONE":
        out["endTime"] = compute_timestamp(op["end"])
        if op["error"]:
            e = op["error"]
            out["error"] = {"errors": [{"code": e["code"], "message": e["message"]}]}
            out["httpErrorStatusCode"] = e.get("httpStatus", 400)
            out["httpErrorMessage"] = {400: "BAD REQUEST", 404: "NOT FOUND", 409: "CONFLICT", 412: "PRECONDITION FAILED",
                                       500: "INTERNAL SERVER ERROR"}.get(e.get("httpStatus", 400), "ERROR")
    if op["zone"]:
        out["zone"] = state.link("projects/%s/zones/%s" % (op["project"], op["zone"]))
    if op["region"]:
        out["region"] = state.link("projects/%s/regions/%s" % (op["project"], op["region"]))
    return out


def find_operation(state, ctx, zone=None, region=None):
    p = state.project(ctx.params["project"])
    op = p["operations"].get(ctx.params["operation"])
    if op is None or op["zone"] != zone or op["region"] != region:
        scope = ("zones/%s" % zone) if zone else ("regions/%s" % region) if region else "global"
        raise not_found("projects/%s/%s/operations/%s" % (p["id"], scope, ctx.params["operation"]))
    return op


def operation_get(state, ctx, zone=None, region=None):
    return render_operation(state, find_operation(state, ctx, zone, region))


def operation_wait(state, ctx, zone=None, region=None):
    """Blocks until the operation is DONE or operation_wait_max_s passed (as Compute's wait)."""
    op = find_operation(state, ctx, zone, region)
    deadline = time.time() + state.settings["operation_wait_max_s"]
    while not op["applied"] and time.time() < deadline:
        state.cond.wait(0.05)
        state.tick()
    return render_operation(state, op)


def compute_list(items, ctx, kind, self_rel, state):
    items = apply_filter(items, ctx.query1("filter"))
    chunk, token = page(items, ctx, 500)
    out = {"kind": kind, "id": self_rel, "items": chunk, "selfLink": state.link(self_rel)}
    if token:
        out["nextPageToken"] = token
    return out


FILTER_TERM = re.compile(r'\(?\s*([A-Za-z][\w.]*)\s*(=|!=|\beq\b|\bne\b)\s*(?:"([^"]*)"|\'([^\']*)\'|([^\s)]+))\s*\)?')


def apply_filter(items, expr):
    """Compute list filters: `field = "v"`, `field != v`, `field eq regex`, `field ne regex`, ANDed."""
    if not expr:
        return items
    terms = FILTER_TERM.findall(expr)
    if not terms or FILTER_TERM.sub("", expr).replace("AND", "").strip():
        raise ApiError(400, "invalid", "Invalid value for field 'filter': '%s'. Invalid list filter expression." % expr)
    out = []
    for it in items:
        ok = True
        for field, op, v1, v2, v3 in terms:
            v = v1 or v2 or v3
            cur = it
            for part in field.split("."):
                cur = cur.get(part) if isinstance(cur, dict) else None
            cur = "" if cur is None else str(cur).lower() if isinstance(cur, bool) else str(cur)
            if op == "=":
                hit = cur == v
            elif op == "!=":
                hit = cur != v
            else:
                hit = re.fullmatch(v, cur) is not None
                hit = hit if op == "eq" else not hit
            ok = ok and hit
        if ok:
            out.append(it)
    return out


# -- routes -------------------------------------------------------------------------------

def routes_get(state, ctx):
    p = state.project(ctx.params["project"])
    r = p["routes"].get(ctx.params["route"])
    if r is None:
        raise not_found("projects/%s/global/routes/%s" % (p["id"], ctx.params["route"]))
    return r


def routes_list(state, ctx):
    p = state.project(ctx.params["project"])
    return compute_list([p["routes"][k] for k in sorted(p["routes"])], ctx, "compute#routeList",
                        "projects/%s/global/routes" % p["id"], state)


NEXT_HOPS = ("nextHopInstance", "nextHopIp", "nextHopGateway", "nextHopIlb", "nextHopVpnTunnel", "nextHopNetwork")


def routes_insert(state, ctx):
    p = state.project(ctx.params["project"])
    body = dict(ctx.body or {})
    name = body.get("name", "")
    if not re.fullmatch(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?", name):
        raise ApiError(400, "invalid", "Invalid value for field 'resource.name': '%s'. Must be a match of regex "
                       "'(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'" % name)
    rel = "projects/%s/global/routes/%s" % (p["id"], name)
    if name in p["routes"]:
        raise ApiError(409, "alreadyExists", "The resource '%s' already exists" % rel)
    try:
        body["destRange"] = normalize_cidr(body.get("destRange", ""))
    except ValueError:
        raise ApiError(400, "invalid", "Invalid value for field 'resource.destRange': '%s'. Invalid IPv4 CIDR range."
                       % body.get("destRange"))
    net_name = state.rel(body.get("network", "")).rsplit("/", 1)[-1]
    if net_name not in p["networks"]:
        raise not_found("projects/%s/global/networks/%s" % (p["id"], net_name))
    hops = [h for h in NEXT_HOPS if body.get(h)]
    if len(hops) != 1:
        raise ApiError(400, "invalid", "Invalid value for field 'resource': ''. Exactly one nextHop must be specified.")
    if hops[0] == "nextHopInstance":
        m = re.search(r"zones/([^/]+)/instances/([^/]+)$", body["nextHopInstance"])
        if not m or (m.group(1), m.group(2)) not in p["instances"]:
            raise not_found(state.rel(body["nextHopInstance"]))
        body["nextHopInstance"] = state.link("projects/%s/zones/%s/instances/%s" % (p["id"], m.group(1), m.group(2)))
    elif hops[0] == "nextHopIp":
        try:
            ipaddress.IPv4Address(body["nextHopIp"])
        except ValueError:
            raise ApiError(400, "invalid", "Invalid value for field 'resource.nextHopIp': '%s'." % body["nextHopIp"])
    route = {k: v for k, v in body.items() if k in ("name", "description", "destRange", "tags", "priority") + NEXT_HOPS}
    route.update({"kind": "compute#route", "id": new_id(), "creationTimestamp": compute_timestamp(),
                  "network": p["networks"][net_name]["selfLink"], "priority": body.get("priority", 1000),
                  "routeType": "STATIC", "selfLink": state.link(rel)})

    def apply():
        if name in p["routes"]:
            return {"code": "RESOURCE_ALREADY_EXISTS", "message": "The resource '%s' already exists" % rel, "httpStatus": 409}
        p["routes"][name] = route
        return None

    return new_operation(state, ctx, p, "insert", rel, route["id"], apply)


def routes_delete(state, ctx):
    route = routes_get(state, ctx)
    p = state.project(ctx.params["project"])
    rel = state.rel(route["selfLink"])

    def apply():
        # By name, as Compute does: routes carry no fingerprint, so a route someone else
        # put in its place after our request is deleted all the same.
        if route["name"] not in p["routes"]:
            return {"code": "RESOURCE_NOT_FOUND", "message": "The resource '%s' was not found" % rel, "httpStatus": 404}
        del p["routes"][route["name"]]
        return None

    return new_operation(state, ctx, p, "delete", rel, route["id"], apply)


# -- instances --------------------------------------------------------------------------------

def public_instance(inst):
    return {k: v for k, v in inst.items() if not k.startswith("_")}


def find_instance(state, ctx):
    p = state.project(ctx.params["project"])
    inst = p["instances"].get((ctx.params["zone"], ctx.params["instance"]))
    if inst is None:
        raise not_found("projects/%s/zones/%s/instances/%s" % (p["id"], ctx.params["zone"], ctx.params["instance"]))
    return p, inst


def instances_get(state, ctx):
    return public_instance(find_instance(state, ctx)[1])


def instances_list(state, ctx):
    p = state.project(ctx.params["project"])
    zone = ctx.params["zone"]
    items = [public_instance(i) for (z, n), i in sorted(p["instances"].items()) if z == zone]
    return compute_list(items, ctx, "compute#instanceList", "projects/%s/zones/%s/instances" % (p["id"], zone), state)


def instances_aggregated_list(state, ctx):
    p = state.project(ctx.params["project"])
    scoped = {}
    for (z, n), i in sorted(p["instances"].items()):
        scoped.setdefault("zones/" + z, []).append(public_instance(i))
    items = {}
    for scope, insts in scoped.items():
        insts = apply_filter(insts, ctx.query1("filter"))
        if insts:
            items[scope] = {"instances": insts}
    return {"kind": "compute#instanceAggregatedList", "id": "projects/%s/aggregated/instances" % p["id"], "items": items,
            "selfLink": state.link("projects/%s/aggregated/instances" % p["id"])}


def subnet_of(state, p, nic):
    m = re.search(r"regions/([^/]+)/subnetworks/([^/]+)$", nic["subnetwork"])
    return p["subnetworks"].get((m.group(1), m.group(2))) if m else None


def ip_users(p, exclude_nic):
    """(network, ip_network, owner) for every address in use on the project's interfaces."""
    for (z, n), inst in p["instances"].items():
        for nic in inst["networkInterfaces"]:
            if nic is exclude_nic:
                continue
            yield nic["subnetwork"], ipaddress.ip_network(nic["networkIP"] + "/32"), n
            for a in nic.get("aliasIpRanges", []):
                yield nic["subnetwork"], ipaddress.ip_network(a["ipCidrRange"]), n


def instances_update_network_interface(state, ctx):
    p, inst = find_instance(state, ctx)
    nic_name = ctx.query1("networkInterface")
    nic = next((n for n in inst["networkInterfaces"] if n["name"] == nic_name), None)
    if nic is None:
        raise ApiError(400, "invalid", "Invalid value for field 'networkInterface': '%s'. The network interface does "
                       "not exist." % nic_name)
    body = ctx.body or {}
    if not body.get("fingerprint"):
        raise ApiError(400, "required", "Required field 'resource.fingerprint' not specified")
    if body["fingerprint"] != nic["fingerprint"]:
        raise ApiError(412, "conditionNotMet", "Supplied fingerprint does not match current fingerprint.")
    seen_fp = nic["fingerprint"]
    new_ranges = None
    if "aliasIpRanges" in body:
        subnet = subnet_of(state, p, nic)
        new_ranges = []
        for i, a in enumerate(body["aliasIpRanges"]):
            raw = a.get("ipCidrRange", "")
            try:
                net = ipaddress.ip_network(normalize_cidr(raw))
            except ValueError:
                raise ApiError(400, "invalid", "Invalid value for field 'resource.aliasIpRanges[%d].ipCidrRange': '%s'."
                               % (i, raw))
            ranges = [subnet["ipCidrRange"]] if subnet else []
            if a.get("subnetworkRangeName") and subnet:
                ranges = [r["ipCidrRange"] for r in subnet["secondaryIpRanges"] if r["rangeName"] == a["subnetworkRangeName"]]
            if subnet and not any(net.subnet_of(ipaddress.ip_network(r)) for r in ranges):
                raise ApiError(400, "invalid", "Invalid value for field 'resource.aliasIpRanges[%d].ipCidrRange': '%s'. "
                               "The alias IP range is not within the subnetwork's ranges." % (i, raw))
            entry = {"ipCidrRange": str(net)}
            if a.get("subnetworkRangeName"):
                entry["subnetworkRangeName"] = a["subnetworkRangeName"]
            new_ranges.append(entry)
    rel = state.rel(inst["selfLink"])

    def apply():
        if nic["fingerprint"] != seen_fp:
            return {"code": "CONDITION_NOT_MET", "message": "Supplied fingerprint does not match current fingerprint.",
                    "httpStatus": 412}
        if new_ranges is not None:
            for r in new_ranges:
                net = ipaddress.ip_network(r["ipCidrRange"])
                for subnetwork, used, owner in ip_users(p, nic):
                    if subnetwork == nic["subnetwork"] and net.overlaps(used):
                        return {"code": "IP_IN_USE_BY_ANOTHER_RESOURCE",
                                "message": "IP '%s' is already being used by another resource." % r["ipCidrRange"],
                                "httpStatus": 400}
            nic["aliasIpRanges"] = new_ranges
        nic["fingerprint"] = new_fingerprint()
        state.cond.notify_all()
        return None

    return new_operation(state, ctx, p, "updateNetworkInterface", rel, inst["id"], apply, zone=ctx.params["zone"])


# -- load balancing: backend services and health checks ----------------------------------------

def lb_get(collection, label):
    def handler(state, ctx):
        p = state.project(ctx.params["project"])
        region = ctx.params.get("region")
        key_name = ctx.params["backendService"] if "backendService" in ctx.params else ctx.params["healthCheck"]
        obj = p[collection].get((region, key_name) if region else key_name)
        if obj is None:
            scope = "regions/%s" % region if region else "global"
            raise not_found("projects/%s/%s/%s/%s" % (p["id"], scope, label, key_name))
        return obj
    return handler


def lb_list(collection, kind, label):
    def handler(state, ctx):
        p = state.project(ctx.params["project"])
        region = ctx.params.get("region")
        items = [v for k, v in sorted(p[collection].items(), key=lambda kv: str(kv[0]))
                 if not region or k[0] == region]
        scope = "regions/%s" % region if region else "global"
        return compute_list(items, ctx, kind, "projects/%s/%s/%s" % (p["id"], scope, label), state)
    return handler


# ---------------------------------------------------------------------------------------
# The metadata server (not in any discovery document)
# ---------------------------------------------------------------------------------------
#
# Google's documented behaviour, which the fake follows:
#  * Every request must carry `Metadata-Flavor: Google`; without it the answer is 403
#    (and a request with `X-Forwarded-For` is refused too). Every answer carries
#    `Metadata-Flavor: Google`.
#  * A value is text (Content-Type application/text); `?alt=json` answers JSON. A path
#    ending in '/' lists its entries, one per line, directories with a trailing '/';
#    `?recursive=true` answers the whole subtree as JSON with camelCase keys.
#  * Every answer has an `ETag` header, a hash of the content.
#  * `?wait_for_change=true` is a hanging GET: it answers when the content's ETag differs
#    from `last_etag` (at once if it differs already) or, without `last_etag`, when the
#    content changes from what it is now; `timeout_sec=N` answers the current content
#    after N seconds even if nothing changed.
#  * instance/maintenance-event is NONE, MIGRATE_ON_HOST_MAINTENANCE or
#    TERMINATE_ON_HOST_MAINTENANCE (about 60 s before the event); instance/preempted is
#    TRUE once a Spot/preemptible VM is being preempted (30 s before it stops), else FALSE.
#  * instance/service-accounts/default/token answers
#    {"access_token", "expires_in", "token_type": "Bearer"} for the VM's service account;
#    the token is reused until it is close to expiry (expires_in counts down).
#  * instance/zone is projects/<project NUMBER>/zones/<zone>.
#  * Unknown paths answer 404.
#
# One fake serves every VM: /computeMetadata/v1/... is the default instance's view
# (control API `defaultInstance`); /_vm/<instance>/computeMetadata/v1/... is <instance>'s.

def find_vm(state, name):
    name = name or state.default_instance
    for p in state.projects.values():
        for (z, n), inst in p["instances"].items():
            if n == name:
                return p, z, inst
    return None, None, None


def metadata_tree(state, p, zone, inst):
    nics = []
    for nic in inst["networkInterfaces"]:
        subnet = subnet_of(state, p, nic)
        net = ipaddress.ip_network(subnet["ipCidrRange"]) if subnet else ipaddress.ip_network(nic["networkIP"] + "/24", strict=False)
        nics.append({
            "ip": nic["networkIP"],
            "ip-aliases": [a["ipCidrRange"] for a in nic.get("aliasIpRanges", [])],
            "network": "projects/%s/networks/%s" % (p["number"], nic["network"].rsplit("/", 1)[-1]),
            "mac": "42:01:0a:%02x:%02x:%02x" % tuple(int(x) for x in nic["networkIP"].split(".")[1:]),
            "gateway": str(next(net.hosts())), "subnetmask": str(net.netmask),
            "mtu": "1460",
        })
    sas = {}
    for sa in inst.get("serviceAccounts", []):
        entry = {"aliases": ["default"], "email": sa["email"], "scopes": list(sa["scopes"]), "token": None}
        sas["default"] = entry
        sas[sa["email"]] = entry
    return {
        "instance": {
            "id": inst["id"], "name": inst["name"], "hostname": "%s.%s.c.%s.internal" % (inst["name"], zone, p["id"]),
            "zone": "projects/%s/zones/%s" % (p["number"], zone),
            "machine-type": "projects/%s/machineTypes/%s" % (p["number"], inst["machineType"].rsplit("/", 1)[-1]),
            "maintenance-event": inst["_meta"]["maintenance-event"],
            "preempted": inst["_meta"]["preempted"],
            "attributes": dict(inst["_meta"]["attributes"]),
            "network-interfaces": nics,
            "scheduling": {"on-host-maintenance": inst["scheduling"]["onHostMaintenance"],
                           "automatic-restart": str(inst["scheduling"]["automaticRestart"]).upper(),
                           "preemptible": str(inst["scheduling"]["preemptible"]).upper()},
            "service-accounts": sas,
        },
        "project": {"project-id": p["id"], "numeric-project-id": p["number"], "attributes": {}},
    }


def camel(k):
    return re.sub(r"-([a-z])", lambda m: m.group(1).upper(), k)


def to_json(node):
    if isinstance(node, dict):
        return {camel(k): to_json(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [to_json(v) for v in node]
    return node


def metadata_lookup(tree, parts):
    node = tree
    for part in parts:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return KeyError
    return node


def metadata_render(state, vm_name, rel, query):
    """(status, body text, content type) for one metadata path, as it is now."""
    p, zone, inst = find_vm(state, vm_name)
    if inst is None:
        return 404, "No such VM: %s\n" % (vm_name or "(no default instance)"), "text/html"
    is_dir = rel.endswith("/") or rel == ""
    parts = [x for x in rel.split("/") if x]
    tree = metadata_tree(state, p, zone, inst)
    node = metadata_lookup(tree, parts)
    if node is KeyError:
        return 404, "Not Found\n", "text/html"
    if len(parts) == 4 and parts[:2] == ["instance", "service-accounts"] and parts[3] == "token":
        return 200, metadata_token(state, inst, zone), "application/json"
    if isinstance(node, (dict, list)):
        if query.get("recursive") == "true" or query.get("alt") == "json":
            return 200, json.dumps(to_json(node)), "application/json"
        if not is_dir:
            # The real server redirects a directory without '/' to the '/' form.
            return 301, "", "text/html"
        keys = [str(i) for i in range(len(node))] if isinstance(node, list) else list(node)
        lines = [k + ("/" if isinstance(node[int(k)] if isinstance(node, list) else node[k], (dict, list)) else "")
                 for k in keys]
        return 200, "".join(line + "\n" for line in lines), "application/text"
    if node is None:
        return 404, "Not Found\n", "text/html"
    if query.get("alt") == "json":
        return 200, json.dumps(node), "application/json"
    return 200, str(node), "application/text"


def metadata_token(state, inst, zone):
    sa = (inst.get("serviceAccounts") or [{}])[0]
    key = (zone, inst["name"])
    with state.lock:
        tok = state.metadata_tokens.get(key)
        info = state.tokens.get(tok) if tok else None
        if info is None or info["expires"] - time.time() < 300:
            tok, _ = issue_token(state, sa.get("email", "default"), sa.get("scopes", [CLOUD_PLATFORM]), "metadata")
            state.metadata_tokens[key] = tok
            info = state.tokens[tok]
        return json.dumps({"access_token": tok, "expires_in": int(info["expires"] - time.time()), "token_type": "Bearer"})


def etag_of(body):
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def metadata_request(state, handler, vm_name, rel, query):
    headers = {"Metadata-Flavor": "Google", "Server": "Metadata Server for VM"}
    if handler.headers.get("Metadata-Flavor") != "Google" or handler.headers.get("X-Forwarded-For"):
        return Raw(403, "Your client does not have permission to get URL /computeMetadata/v1/%s from this server. "
                   "Missing Metadata-Flavor:Google header.\n" % rel, "text/html", headers)
    with state.lock:
        state.tick()
        status, body, ctype = metadata_render(state, vm_name, rel, query)
    if status == 200 and query.get("wait_for_change") == "true" and "token" not in rel:
        last = query.get("last_etag") or etag_of(body)
        try:
            timeout = float(query.get("timeout_sec") or state.settings["metadata_max_wait_s"])
        except ValueError:
            return Raw(400, "Invalid timeout_sec\n", "text/html", headers)
        deadline = time.time() + timeout
        with state.lock:
            while etag_of(body) == last and time.time() < deadline:
                state.cond.wait(min(0.1, max(0.0, deadline - time.time())))
                state.tick()
                status, body, ctype = metadata_render(state, vm_name, rel, query)
                if status != 200:
                    break
    if status == 301:
        headers["Location"] = "/computeMetadata/v1/%s/" % rel
    if status == 200:
        headers["ETag"] = etag_of(body)
    return Raw(status, body, ctype, headers)


# ---------------------------------------------------------------------------------------
# Control API (/_fake/...)
# ---------------------------------------------------------------------------------------

def apply_action(state, action):
    """A change made by someone else: rrset, route, interface or fingerprint."""
    with state.lock:
        pid = action.get("project") or next(iter(state.projects))
        p = state.projects[pid]
        kind = action["type"]
        if kind == "rrset":
            z = p["zones"][action["zone"]]
            key = (action["name"].lower(), action.get("rrtype", "A").upper())
            cur = z["rrsets"].get(key)
            dels = [cur] if cur else []
            adds = [] if action.get("delete") else [rrset(action["name"], action.get("rrtype", "A"),
                                                         action.get("ttl", 300), action.get("rrdatas", []))]
            dns_commit_change(state, z, adds, dels)
        elif kind == "route":
            if action.get("delete"):
                p["routes"].pop(action["name"], None)
            else:
                rel = "projects/%s/global/routes/%s" % (pid, action["name"])
                r = {"kind": "compute#route", "id": new_id(), "creationTimestamp": compute_timestamp(),
                     "name": action["name"], "destRange": normalize_cidr(action["destRange"]),
                     "network": p["networks"][action.get("network", "default")]["selfLink"],
                     "priority": action.get("priority", 1000), "routeType": "STATIC", "selfLink": state.link(rel)}
                if action.get("nextHopInstance"):
                    r["nextHopInstance"] = state.link(state.rel(action["nextHopInstance"])) if "/" in action["nextHopInstance"] \
                        else next(i["selfLink"] for (z, n), i in p["instances"].items() if n == action["nextHopInstance"])
                else:
                    r["nextHopIp"] = action["nextHopIp"]
                p["routes"][action["name"]] = r
        elif kind in ("interface", "fingerprint"):
            inst = next(i for (z, n), i in p["instances"].items()
                        if n == action["instance"] and (not action.get("zone") or z == action["zone"]))
            nic = next(n for n in inst["networkInterfaces"] if n["name"] == action.get("nic", "nic0"))
            if kind == "interface":
                nic["aliasIpRanges"] = [{"ipCidrRange": normalize_cidr(a)} for a in action.get("aliasIpRanges", [])]
            nic["fingerprint"] = new_fingerprint()
        else:
            raise ValueError("unknown action type %r" % kind)
        state.cond.notify_all()


def set_metadata_event(state, spec):
    p, zone, inst = find_vm(state, spec["instance"])
    if inst is None:
        raise KeyError("no instance %s" % spec["instance"])

    def fire():
        if "maintenanceEvent" in spec:
            if spec["maintenanceEvent"] not in MAINTENANCE_VALUES:
                return
            inst["_meta"]["maintenance-event"] = spec["maintenanceEvent"]
        if spec.get("preempted") is not None:
            inst["_meta"]["preempted"] = "TRUE" if spec["preempted"] else "FALSE"
            if spec["preempted"]:
                inst["status"] = "STOPPING"

                def stop():
                    inst["status"] = "TERMINATED"
                state.scheduled.append((time.time() + state.settings["preempt_stop_ms"] / 1000.0, stop))
        state.cond.notify_all()

    if spec.get("maintenanceEvent") is not None and spec["maintenanceEvent"] not in MAINTENANCE_VALUES:
        raise ValueError("maintenanceEvent must be one of %s" % (MAINTENANCE_VALUES,))
    with state.lock:
        if spec.get("after_ms"):
            state.schedule(spec["after_ms"] / 1000.0, fire)
        else:
            fire()


def new_service_account_key(state, email, base):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = secrets.token_hex(20)
    with state.lock:
        state.sa_keys.setdefault(email, {})[kid] = key.public_key()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    pid = email.split("@", 1)[1].split(".", 1)[0] if "@" in email else "baton-test"
    return {"type": "service_account", "project_id": pid, "private_key_id": kid, "private_key": pem,
            "client_email": email, "client_id": str(secrets.randbelow(10**20)), "token_uri": base + "/token"}


def state_dump(state):
    with state.lock:
        state.tick()
        out = {"settings": state.settings, "defaultInstance": state.default_instance, "projects": {}}
        for pid, p in state.projects.items():
            out["projects"][pid] = {
                "number": p["number"],
                "managedZones": {n: {"zone": z["zone"], "rrsets": list(z["rrsets"].values()),
                                     "served": list(z["served"].values()),
                                     "changes": [render_change(c) for c in z["changes"]]}
                                 for n, z in p["zones"].items()},
                "routes": p["routes"],
                "instances": {"%s/%s" % k: dict(public_instance(i), metadata=i["_meta"]) for k, i in p["instances"].items()},
                "backendServices": {str(k): v for k, v in p["backendServices"].items()},
                "regionBackendServices": {"%s/%s" % k: v for k, v in p["regionBackendServices"].items()},
                "healthChecks": {str(k): v for k, v in p["healthChecks"].items()},
                "regionHealthChecks": {"%s/%s" % k: v for k, v in p["regionHealthChecks"].items()},
                "operations": [render_operation(state, o) for o in p["operations"].values()],
            }
        out["serviceAccounts"] = {e: list(k) for e, k in state.sa_keys.items()}
        out["tokens"] = len(state.tokens)
        return out


def control(state, handler, method, path, query, body):
    base = "http://%s" % handler.headers.get("Host", "127.0.0.1")
    route = (method, path)
    if route == ("GET", "/_fake/health"):
        return Raw(200, {"ok": True, "discovery": state.discovery.revisions()})
    if route == ("GET", "/_fake/state"):
        return Raw(200, state_dump(state))
    if route == ("POST", "/_fake/reset"):
        state.reset()
        if (body or {}).get("seed", True):
            seed(state, DEFAULT_SEED)
        return Raw(200, {"ok": True})
    if route == ("POST", "/_fake/seed"):
        return Raw(200, {"project": seed(state, body or {})})
    if route == ("POST", "/_fake/service-account-keys"):
        return Raw(200, new_service_account_key(state, body["email"], base))
    if route == ("POST", "/_fake/tokens"):
        tok, life = issue_token(state, body.get("principal", "test@example.com"), body.get("scopes", [CLOUD_PLATFORM]), "control")
        return Raw(200, {"access_token": tok, "expires_in": life, "token_type": "Bearer"})
    if route == ("DELETE", "/_fake/tokens"):
        with state.lock:
            state.tokens.clear()
            state.metadata_tokens.clear()
        return Raw(200, {"ok": True})
    if path == "/_fake/settings":
        with state.lock:
            if method == "POST":
                unknown = set(body or {}) - set(DEFAULT_SETTINGS)
                if unknown:
                    return Raw(400, {"error": "unknown settings %s" % sorted(unknown)})
                state.settings.update(body)
            return Raw(200, state.settings)
    if path == "/_fake/faults":
        with state.lock:
            if method == "POST":
                f = dict(body)
                re.compile(f.get("path", ".*"))
                f.setdefault("count", 1)
                f.setdefault("method", "*")
                state.faults.append(f)
            elif method == "DELETE":
                state.faults = []
            return Raw(200, state.faults)
    if path == "/_fake/second-writer":
        with state.lock:
            if method == "POST":
                w = dict(body)
                w.setdefault("count", 1)
                state.second_writers.append(w)
            elif method == "DELETE":
                state.second_writers = []
            return Raw(200, state.second_writers)
    if path == "/_fake/iam":
        with state.lock:
            if method == "POST":
                perms = (body or {}).get("permissions")
                state.iam[(body or {}).get("principal", "*")] = None if perms is None else set(perms)
            elif method == "DELETE":
                state.iam = {}
            return Raw(200, {k: (None if v is None else sorted(v)) for k, v in state.iam.items()})
    if route == ("POST", "/_fake/mutate"):
        apply_action(state, body)
        return Raw(200, {"ok": True})
    if route == ("POST", "/_fake/maintenance"):
        set_metadata_event(state, body)
        return Raw(200, {"ok": True})
    if path == "/_fake/log":
        with state.lock:
            if method == "DELETE":
                state.log = []
            return Raw(200, state.log)
    if path == "/_fake/calls":
        with state.lock:
            if method == "DELETE":
                state.calls = {}
            return Raw(200, state.calls)
    if path == "/_fake/violations":
        with state.lock:
            if method == "DELETE":
                state.violations = []
            return Raw(200, state.violations)
    if route == ("GET", "/_fake/dns/answer"):
        # What the zone's authoritative servers answer: only changes that are done.
        with state.lock:
            state.tick()
            pid = query.get("project") or next(iter(state.projects))
            z = state.projects[pid]["zones"][query["zone"]]
            r = z["served"].get((query["name"].lower(), query.get("type", "A").upper()))
            return Raw(200, r or {})
    return Raw(404, {"error": "no control endpoint %s %s" % (method, path)})


# ---------------------------------------------------------------------------------------
# HTTP plumbing
# ---------------------------------------------------------------------------------------

# The IAM permission a method needs, where it is not the method's own id.
PERMISSION_OF = {
    "compute.routes.insert": "compute.routes.create",
    "compute.instances.aggregatedList": "compute.instances.list",
    "compute.globalOperations.wait": "compute.globalOperations.get",
    "compute.zoneOperations.wait": "compute.zoneOperations.get",
    "compute.regionOperations.wait": "compute.regionOperations.get",
    "dns.resourceRecordSets.patch": "dns.resourceRecordSets.update",
    # Anyone may ask what they may do.
    "dns.managedZones.testIamPermissions": None,
}


def permission_of(method_id):
    return PERMISSION_OF.get(method_id, method_id)


def granted(state, principal, permission):
    perms = state.iam.get(principal, state.iam.get("*"))
    return perms is None or permission in perms


def dns_managed_zones_test_iam(state, ctx):
    """The requested permissions the caller has on the zone; none for a zone that does not
    exist (the method's documented behaviour: an empty set, not NOT_FOUND)."""
    m = re.match(r"^projects/([^/]+)/managedZones/([^/]+)$", ctx.params["resource"])
    project = state.projects.get(m.group(1)) if m else None
    if project is None or m.group(2) not in project["zones"]:
        return {}
    have = [p for p in (ctx.body or {}).get("permissions", []) if granted(state, ctx.principal, p)]
    return {"permissions": have} if have else {}


HANDLERS = {
    "dns.managedZones.testIamPermissions": dns_managed_zones_test_iam,
    "dns.managedZones.get": dns_managed_zones_get,
    "dns.managedZones.list": dns_managed_zones_list,
    "dns.resourceRecordSets.list": dns_rrsets_list,
    "dns.resourceRecordSets.get": dns_rrsets_get,
    "dns.resourceRecordSets.create": dns_rrsets_create,
    "dns.resourceRecordSets.delete": dns_rrsets_delete,
    "dns.resourceRecordSets.patch": dns_rrsets_patch,
    "dns.changes.create": dns_changes_create,
    "dns.changes.get": dns_changes_get,
    "dns.changes.list": dns_changes_list,
    "compute.routes.get": routes_get,
    "compute.routes.list": routes_list,
    "compute.routes.insert": routes_insert,
    "compute.routes.delete": routes_delete,
    "compute.instances.get": instances_get,
    "compute.instances.list": instances_list,
    "compute.instances.aggregatedList": instances_aggregated_list,
    "compute.instances.updateNetworkInterface": instances_update_network_interface,
    "compute.globalOperations.get": lambda s, c: operation_get(s, c),
    "compute.globalOperations.wait": lambda s, c: operation_wait(s, c),
    "compute.zoneOperations.get": lambda s, c: operation_get(s, c, zone=c.params["zone"]),
    "compute.zoneOperations.wait": lambda s, c: operation_wait(s, c, zone=c.params["zone"]),
    "compute.regionOperations.get": lambda s, c: operation_get(s, c, region=c.params["region"]),
    "compute.regionOperations.wait": lambda s, c: operation_wait(s, c, region=c.params["region"]),
    "compute.backendServices.get": lb_get("backendServices", "backendServices"),
    "compute.backendServices.list": lb_list("backendServices", "compute#backendServiceList", "backendServices"),
    "compute.regionBackendServices.get": lb_get("regionBackendServices", "backendServices"),
    "compute.regionBackendServices.list": lb_list("regionBackendServices", "compute#backendServiceList", "backendServices"),
    "compute.healthChecks.get": lb_get("healthChecks", "healthChecks"),
    "compute.healthChecks.list": lb_list("healthChecks", "compute#healthCheckList", "healthChecks"),
    "compute.regionHealthChecks.get": lb_get("regionHealthChecks", "healthChecks"),
    "compute.regionHealthChecks.list": lb_list("regionHealthChecks", "compute#healthCheckList", "healthChecks"),
}


class Ctx:
    def __init__(self, params, query, body, principal):
        self.params, self.query, self.body, self.principal = params, query, body, principal
        self.operation_error = None

    def query1(self, name):
        v = self.query.get(name)
        return v[0] if v else None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "GoogleFake/1"
    # The status line and headers, then the body, are two writes: without TCP_NODELAY the
    # body waits for the client's delayed ACK (~40 ms per call on Linux), which is the
    # fake's latency, not the client's.
    disable_nagle_algorithm = True
    state = None  # set in main()
    quiet = True

    def log_message(self, fmt, *args):
        if not self.quiet:
            sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

    def do_GET(self):
        self.dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    # -- the request pipeline ------------------------------------------------------------------
    def dispatch(self):
        t0 = time.time()
        state = self.state
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        query_multi = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        query = {k: v[-1] for k, v in query_multi.items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if path.startswith("/_fake/"):
            try:
                body = json.loads(raw) if raw else None
                result = control(state, self, self.command, path, query, body)
            except Exception as e:  # a bad control request is the test's bug: say so
                result = Raw(400, {"error": "%s: %s" % (type(e).__name__, e)})
            return self.send(result)
        entry = {"t": t0, "method": self.command, "path": path, "query": url.query}
        try:
            result, op_error = self.faults(path)
            if result is not None:
                entry["op"] = "fault"
            else:
                m = re.match(r"^(?:/_vm/([^/]+))?/computeMetadata/v1/?(.*)$", path)
                if m:
                    entry["op"] = "metadata." + (m.group(2) or "/")
                    result = metadata_request(state, self, m.group(1), m.group(2), query)
                elif path == "/token" and self.command == "POST":
                    entry["op"] = "oauth.token"
                    form = {k: v[-1] for k, v in urllib.parse.parse_qs(raw.decode("utf-8", "replace")).items()}
                    result = token_endpoint(state, self, form)
                else:
                    result = self.api(path, query_multi, raw, entry, op_error)
        except Exception:
            traceback.print_exc()
            result = Raw(500, ApiError(500, "backendError", "Internal error in the fake.").body())
        entry["status"] = result.status
        entry["ms"] = round((time.time() - t0) * 1000, 1)
        with state.lock:
            state.log.append(entry)
            op = entry.get("op", "?")
            state.calls[op] = state.calls.get(op, 0) + 1
        # Someone else's change lands after our answer was made and before the client
        # can act on it: the client's next write finds the state it read gone.
        self.second_writer(entry)
        self.send(result)

    def faults(self, path):
        """(answer, operation error) from the injected faults matching this request."""
        state = self.state
        latency = 0
        answer = None
        op_error = None
        with state.lock:
            for f in state.faults:
                if f["count"] == 0:
                    continue
                if f["method"] not in ("*", self.command) or not re.search(f.get("path", ".*"), path):
                    continue
                if f["count"] > 0:
                    f["count"] -= 1
                latency += f.get("latency_ms", 0)
                if f.get("operation_error"):
                    op_error = f["operation_error"]
                if f.get("status"):
                    code = int(f["status"])
                    domain, reason, msg = FAULT_DEFAULTS.get(code, ("global", "backendError", "Error"))
                    err = ApiError(code, f.get("reason", reason), f.get("message", msg), domain=domain)
                    if "/computeMetadata/" in path:
                        answer = Raw(code, err.message + "\n", "text/html", {"Metadata-Flavor": "Google"})
                    elif path == "/token":
                        answer = Raw(code, {"error": "internal_failure", "error_description": err.message})
                    else:
                        answer = Raw(code, err.body())
                    break
            state.faults = [f for f in state.faults if f["count"] != 0]
        if latency:
            time.sleep(latency / 1000.0)
        return answer, op_error

    def second_writer(self, entry):
        """After a matching request was served, someone else changes the state."""
        state = self.state
        with state.lock:
            for w in state.second_writers:
                after = w.get("after", {})
                if w["count"] == 0 or after.get("method", "*") not in ("*", entry["method"]):
                    continue
                if not re.search(after.get("path", ".*"), entry["path"]):
                    continue
                if w["count"] > 0:
                    w["count"] -= 1
                apply_action(state, w["action"])
            state.second_writers = [w for w in state.second_writers if w["count"] != 0]

    def api(self, path, query, raw, entry, op_error):
        state = self.state
        disc = state.discovery
        method, params = disc.match(self.command, path)
        if method is None:
            state.violation({"t": time.time(), "kind": "request", "method": None, "path": path, "messages": [params]})
            entry["op"] = "unknown"
            return Raw(404, ApiError(404, "notFound", "Not Found: %s %s" % (self.command, path)).body())
        entry["op"] = method.id
        try:
            principal = authenticate(state, self, method)
            entry["principal"] = principal
        except ApiError as e:
            return self.api_error(method, path, e, {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'}
                                  if e.code == 401 else None)
        body = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError as e:
                state.violation({"t": time.time(), "kind": "request", "method": method.id, "path": path,
                                 "messages": ["body is not JSON: %s" % e]})
                return self.api_error(method, path, ApiError(400, "parseError", "Invalid JSON payload received. %s" % e))
        problems = disc.check_request(method, params, query, body, bool(raw))
        if problems:
            state.violation({"t": time.time(), "kind": "request", "method": method.id, "path": path, "messages": problems})
            return self.api_error(method, path, ApiError(400, "invalid", "Invalid request: " + "; ".join(problems)))
        needed = permission_of(method.id)
        if needed is not None and not granted(state, principal, needed):
            return self.api_error(method, path, ApiError(
                403, "forbidden", "Required '%s' permission for '%s'" % (needed, path)))
        handler = HANDLERS.get(method.id)
        if handler is None:
            return self.api_error(method, path, ApiError(501, "notImplemented",
                                                         "The fake does not implement %s." % method.id))
        ctx = Ctx(params, query, body, principal)
        ctx.operation_error = op_error
        try:
            with state.lock:
                state.tick()
                result = copy.deepcopy(handler(state, ctx))
        except ApiError as e:
            return self.api_error(method, path, e)
        problems = disc.check_response(method, result)
        if problems:
            state.violation({"t": time.time(), "kind": "response", "method": method.id, "path": path, "messages": problems})
        return Raw(200, result if method.response_ref else (result or None))

    def api_error(self, method, path, err, headers=None):
        body = err.body()
        problems = discovery.check_error_body(body)
        if problems:
            self.state.violation({"t": time.time(), "kind": "response", "method": method.id, "path": path,
                                  "messages": problems})
        return Raw(err.code, body, "application/json; charset=UTF-8", headers)

    def send(self, r):
        if isinstance(r.body, (dict, list)) or (r.body is None and r.content_type.startswith("application/json")):
            data = b"" if r.body is None else json.dumps(r.body).encode()
            ctype = r.content_type if r.content_type.startswith("application/json") else "application/json"
        else:
            data = (r.body or "").encode() if isinstance(r.body, str) else (r.body or b"")
            ctype = r.content_type
        if r.content_type == "application/json":
            ctype = "application/json; charset=UTF-8"
        self.send_response(r.status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in r.headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--no-seed", action="store_true", help="start empty (no default project, zones, instances)")
    ap.add_argument("--verbose", action="store_true", help="log every request on stderr")
    args = ap.parse_args(argv)
    disc = discovery.Discovery()
    server = Server((args.host, args.port), Handler)
    port = server.server_address[1]
    state = State("http://%s:%d" % (args.host, port))
    state.discovery = disc
    if not args.no_seed:
        seed(state, DEFAULT_SEED)
    Handler.state = state
    Handler.quiet = not args.verbose
    print("LISTENING %d" % port, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
