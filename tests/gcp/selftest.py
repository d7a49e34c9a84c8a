"""Self-test of the Google Cloud fake: starts it, drives every endpoint over plain HTTP as a
client would, and checks behaviour, error shapes and the discovery validation.

Usage: python selftest.py   (exit status 0 = all passed; the last line is in cargo's
"test result: ok. N passed; 0 failed; ..." format, which tests/run-all.sh counts)
"""

import base64
import json
import os
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = "baton-test"
SA = "baton@baton-test.iam.gserviceaccount.com"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"


class Fake:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "fake.py"), "--port", "0"],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("LISTENING "):
            raise SystemExit("the fake did not start: %r" % line)
        self.port = int(line.split()[1])
        self.base = "http://127.0.0.1:%d" % self.port
        self.token = None

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)

    def call(self, method, path, body=None, headers=None, form=None, auth=True, timeout=30):
        """(status, headers, parsed body) for one request."""
        h = dict(headers or {})
        data = None
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            h["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        if auth and self.token and "Authorization" not in h:
            h["Authorization"] = "Bearer " + self.token
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, rh, raw = r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            status, rh, raw = e.code, dict(e.headers), e.read()
        text = raw.decode()
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = text
        return status, rh, parsed

    def ok(self, method, path, body=None, **kw):
        status, _, b = self.call(method, path, body, **kw)
        check(status == 200, "%s %s answered %s: %s" % (method, path, status, b))
        return b

    def ctl(self, method, path, body=None):
        return self.ok(method, "/_fake/" + path, body, auth=False)

    def md(self, rel, vm=None, timeout=30, flavor=True):
        prefix = "/_vm/%s" % vm if vm else ""
        return self.call("GET", prefix + "/computeMetadata/v1/" + rel, headers={"Metadata-Flavor": "Google"} if flavor
                         else {}, auth=False, timeout=timeout)


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def google_error(status, body, code, reason):
    check(status == code, "expected HTTP %d, got %d: %s" % (code, status, body))
    check(isinstance(body, dict) and set(body) == {"error"}, "not Google's error shape: %s" % body)
    e = body["error"]
    check(e["code"] == code and e["errors"][0]["reason"] == reason and e["errors"][0]["domain"] and e["status"],
          "expected reason %s: %s" % (reason, body))


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def sign_jwt(key, claims, kid=None):
    header = {"alg": "RS256", "typ": "JWT"}
    if kid:
        header["kid"] = kid
    signing = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    sig = key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing + "." + b64url(sig)


def wait_until(fn, timeout=10, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    raise Failure("timed out waiting for " + what)


DNS = "/dns/v1/projects/%s/managedZones" % PROJECT
COMPUTE = "/compute/v1/projects/%s" % PROJECT


# ---------------------------------------------------------------------------------------
# Tests (each takes the fake; the order matters only for the token)
# ---------------------------------------------------------------------------------------

def test_oauth_jwt_bearer(f):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    f.ctl("POST", "seed", {"serviceAccounts": [{"email": SA, "publicKeyPem": pem.decode(), "keyId": "k1"}]})
    now = int(time.time())
    claims = {"iss": SA, "scope": SCOPE, "aud": f.base + "/token", "iat": now, "exp": now + 3600}
    form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": sign_jwt(key, claims, "k1")}
    status, _, tok = f.call("POST", "/token", form=form, auth=False)
    check(status == 200 and tok["token_type"] == "Bearer" and tok["expires_in"] > 3000, "token: %s %s" % (status, tok))
    f.token = tok["access_token"]
    # A JWT signed with another key is refused.
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    form["assertion"] = sign_jwt(other, claims, "k1")
    status, _, b = f.call("POST", "/token", form=form, auth=False)
    check(status == 400 and b["error"] == "invalid_grant" and "Signature" in b["error_description"], "forged: %s" % b)
    # An expired one too, and one that lives longer than an hour.
    form["assertion"] = sign_jwt(key, dict(claims, iat=now - 7200, exp=now - 3600), "k1")
    status, _, b = f.call("POST", "/token", form=form, auth=False)
    check(status == 400 and b["error"] == "invalid_grant", "expired: %s" % b)
    form["assertion"] = sign_jwt(key, dict(claims, exp=now + 7200), "k1")
    check(f.call("POST", "/token", form=form, auth=False)[0] == 400, "a 2 h JWT was accepted")
    status, _, b = f.call("POST", "/token", form={"grant_type": "password"}, auth=False)
    check(status == 400 and b["error"] == "unsupported_grant_type", "grant type: %s" % b)


def test_key_file_from_control_api(f):
    info = f.ctl("POST", "service-account-keys", {"email": SA})
    check(info["type"] == "service_account" and info["token_uri"] == f.base + "/token", "key file: %s" % info)
    key = serialization.load_pem_private_key(info["private_key"].encode(), None)
    now = int(time.time())
    jwt = sign_jwt(key, {"iss": SA, "scope": SCOPE, "aud": info["token_uri"], "iat": now, "exp": now + 600},
                   info["private_key_id"])
    tok = f.ok("POST", "/token", form={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": jwt},
               auth=False)
    f.ok("GET", DNS + "/public-zone", headers={"Authorization": "Bearer " + tok["access_token"]})
    # A self-signed JWT is a bearer token too (Google's "without OAuth" flow).
    f.ok("GET", DNS + "/public-zone", headers={"Authorization": "Bearer " + jwt})


def test_oauth_refresh_token(f):
    f.ctl("POST", "seed", {"users": [{"client_id": "cid", "client_secret": "secret", "refresh_token": "rt-1",
                                      "account": "dev@example.com"}]})
    tok = f.ok("POST", "/token", form={"grant_type": "refresh_token", "client_id": "cid", "client_secret": "secret",
                                       "refresh_token": "rt-1"}, auth=False)
    f.ok("GET", COMPUTE + "/zones/us-central1-a/instances/node-1", headers={"Authorization": "Bearer " + tok["access_token"]})
    status, _, b = f.call("POST", "/token", form={"grant_type": "refresh_token", "client_id": "cid",
                                                  "client_secret": "wrong", "refresh_token": "rt-1"}, auth=False)
    check(status == 401 and b["error"] == "invalid_client", "bad secret: %s %s" % (status, b))
    status, _, b = f.call("POST", "/token", form={"grant_type": "refresh_token", "client_id": "cid",
                                                  "client_secret": "secret", "refresh_token": "nope"}, auth=False)
    check(status == 400 and b["error"] == "invalid_grant", "bad refresh token: %s" % b)


def test_api_requires_bearer(f):
    status, h, b = f.call("GET", DNS + "/public-zone", auth=False)
    google_error(status, b, 401, "required")
    check("WWW-Authenticate" in h, "no WWW-Authenticate header")
    status, _, b = f.call("GET", DNS + "/public-zone", headers={"Authorization": "Bearer not-issued"})
    google_error(status, b, 401, "authError")
    # Scopes: a token without a scope of the method's is refused.
    narrow = f.ctl("POST", "tokens", {"principal": SA, "scopes": ["https://www.googleapis.com/auth/userinfo.email"]})
    status, _, b = f.call("GET", DNS + "/public-zone", headers={"Authorization": "Bearer " + narrow["access_token"]})
    google_error(status, b, 403, "insufficientPermissions")


def test_iam(f):
    want = ["dns.changes.create", "dns.resourceRecordSets.list"]
    got = f.ok("POST", DNS + "/public-zone:testIamPermissions", {"permissions": want})
    check(got == {"permissions": want}, "everything granted by default: %s" % got)
    check(f.ok("POST", DNS + "/no-such-zone:testIamPermissions", {"permissions": want}) == {},
          "a zone that does not exist: an empty set, not NOT_FOUND")
    f.ctl("POST", "iam", {"principal": SA, "permissions": ["dns.resourceRecordSets.list", "dns.managedZones.get"]})
    try:
        got = f.ok("POST", DNS + "/public-zone:testIamPermissions", {"permissions": want})
        check(got == {"permissions": ["dns.resourceRecordSets.list"]}, "restricted: %s" % got)
        f.ok("GET", DNS + "/public-zone")
        status, _, b = f.call("POST", DNS + "/public-zone/changes", {"additions": []})
        google_error(status, b, 403, "forbidden")
        check("dns.changes.create" in b["error"]["message"], "names the permission: %s" % b)
    finally:
        f.ctl("DELETE", "iam")


def test_dns_zones(f):
    pub = f.ok("GET", DNS + "/public-zone")
    priv = f.ok("GET", DNS + "/private-zone")
    check(pub["visibility"] == "public" and pub["dnsName"] == "example.com.", "public zone: %s" % pub)
    check(priv["visibility"] == "private" and priv["privateVisibilityConfig"]["networks"], "private zone: %s" % priv)
    lst = f.ok("GET", DNS + "?dnsName=internal.example.")
    check([z["name"] for z in lst["managedZones"]] == ["private-zone"], "list by dnsName: %s" % lst)
    status, _, b = f.call("GET", DNS + "/nope")
    google_error(status, b, 404, "notFound")
    rr = f.ok("GET", DNS + "/public-zone/rrsets")
    check({r["type"] for r in rr["rrsets"]} == {"SOA", "NS"}, "a new zone has SOA and NS: %s" % rr)


def soa_serial(f, zone):
    rr = f.ok("GET", DNS + "/%s/rrsets?name=%s&type=SOA" % (zone, "example.com." if zone == "public-zone" else "internal.example."))
    return int(rr["rrsets"][0]["rrdatas"][0].split()[2])


def test_dns_change_pending_then_done(f):
    f.ctl("POST", "settings", {"dns_change_delay_ms": 1000})
    serial = soa_serial(f, "public-zone")
    a = {"name": "www.example.com.", "type": "A", "ttl": 60, "rrdatas": ["10.128.0.2"]}
    txt = {"name": "_baton-epoch.www.example.com.", "type": "TXT", "ttl": 60, "rrdatas": ['"epoch=1"']}
    ch = f.ok("POST", DNS + "/public-zone/changes", {"additions": [a, txt]})
    check(ch["status"] == "pending" and ch["kind"] == "dns#change", "a new change is pending: %s" % ch)
    served = f.ctl("GET", "dns/answer?zone=public-zone&name=www.example.com.&type=A")
    check(served == {}, "the authoritative answer changed before the change was done: %s" % served)
    seen = []

    def done():
        c = f.ok("GET", DNS + "/public-zone/changes/" + ch["id"])
        seen.append(c["status"])
        return c["status"] == "done"
    wait_until(done, what="change done")
    check(seen[0] == "pending", "the change was never seen pending: %s" % seen)
    served = f.ctl("GET", "dns/answer?zone=public-zone&name=www.example.com.&type=A")
    check(served.get("rrdatas") == ["10.128.0.2"], "served after done: %s" % served)
    got = f.ok("GET", DNS + "/public-zone/rrsets/www.example.com./A")
    check(got["ttl"] == 60 and got["rrdatas"] == ["10.128.0.2"], "rrsets.get: %s" % got)
    check(soa_serial(f, "public-zone") == serial + 1, "the SOA serial was not bumped")
    f.ctl("POST", "settings", {"dns_change_delay_ms": 0})


def test_dns_exact_deletion(f):
    cur = f.ok("GET", DNS + "/public-zone/rrsets?name=www.example.com.&type=A")["rrsets"][0]
    before = f.ok("GET", DNS + "/public-zone/rrsets")
    # A deletion that differs in TTL, or in data, fails the whole change (412).
    for wrong in (dict(cur, ttl=300), dict(cur, rrdatas=["10.128.0.9"])):
        status, _, b = f.call("POST", DNS + "/public-zone/changes",
                              {"deletions": [wrong], "additions": [dict(cur, rrdatas=["10.128.0.3"])]})
        google_error(status, b, 412, "conditionNotMet")
        check("deletions[0]" in b["error"]["message"], "412 message: %s" % b)
    check(f.ok("GET", DNS + "/public-zone/rrsets") == before, "a failed change altered the zone")
    # Deleting what is not there: 404; adding what is there: 409.
    status, _, b = f.call("POST", DNS + "/public-zone/changes",
                          {"deletions": [{"name": "nope.example.com.", "type": "A", "ttl": 60, "rrdatas": ["1.2.3.4"]}]})
    google_error(status, b, 404, "notFound")
    status, _, b = f.call("POST", DNS + "/public-zone/changes", {"additions": [cur]})
    google_error(status, b, 409, "alreadyExists")
    status, _, b = f.call("POST", DNS + "/public-zone/changes",
                          {"additions": [{"name": "www.other.org.", "type": "A", "ttl": 60, "rrdatas": ["1.2.3.4"]}]})
    google_error(status, b, 400, "invalid")
    # The exact current record as the deletion: the change is applied.
    ch = f.ok("POST", DNS + "/public-zone/changes", {"deletions": [cur], "additions": [dict(cur, rrdatas=["10.128.0.3"])]})
    check(ch["deletions"][0]["rrdatas"] == ["10.128.0.2"], "change: %s" % ch)
    got = f.ok("GET", DNS + "/public-zone/rrsets/www.example.com./A")
    check(got["rrdatas"] == ["10.128.0.3"], "after replace: %s" % got)
    chs = f.ok("GET", DNS + "/public-zone/changes")
    check([c["id"] for c in chs["changes"]] == [str(i) for i in range(len(chs["changes"]))], "change ids: %s" % chs)


def test_dns_second_writer(f):
    # Someone else changes the record between our read and our write: our change fails.
    f.ctl("POST", "second-writer", {"after": {"method": "GET", "path": "rrsets"},
                                     "action": {"type": "rrset", "zone": "public-zone", "name": "www.example.com.",
                                                "rrtype": "A", "ttl": 60, "rrdatas": ["10.128.0.77"]}})
    cur = f.ok("GET", DNS + "/public-zone/rrsets?name=www.example.com.&type=A")["rrsets"][0]
    check(cur["rrdatas"] == ["10.128.0.3"], "we read the old record: %s" % cur)
    status, _, b = f.call("POST", DNS + "/public-zone/changes",
                          {"deletions": [cur], "additions": [dict(cur, rrdatas=["10.128.0.2"])]})
    google_error(status, b, 412, "conditionNotMet")
    got = f.ok("GET", DNS + "/public-zone/rrsets/www.example.com./A")
    check(got["rrdatas"] == ["10.128.0.77"], "the other writer's record stays: %s" % got)
    # Private zones take the same changes.
    f.ok("POST", DNS + "/private-zone/changes",
         {"additions": [{"name": "db.internal.example.", "type": "A", "ttl": 30, "rrdatas": ["10.128.0.2"]}]})
    check(f.ok("GET", DNS + "/private-zone/rrsets/db.internal.example./A")["ttl"] == 30, "private zone record")


def wait_op(f, op, scope):
    def done():
        o = f.ok("GET", "%s/%s/operations/%s" % (COMPUTE, scope, op["name"]))
        return o if o["status"] == "DONE" else None
    return wait_until(done, what="operation " + op["name"])


def test_routes(f):
    f.ctl("POST", "settings", {"operation_delay_ms": 1000})
    route = {"name": "baton-vip", "network": "global/networks/default", "destRange": "10.200.0.10/32",
             "nextHopInstance": "zones/us-central1-a/instances/node-1", "priority": 900}
    op = f.ok("POST", COMPUTE + "/global/routes", route)
    check(op["status"] in ("PENDING", "RUNNING") and op["operationType"] == "insert", "insert op: %s" % op)
    status, _, b = f.call("GET", COMPUTE + "/global/routes/baton-vip")
    google_error(status, b, 404, "notFound")  # not there before the operation is done
    statuses = set()

    def done():
        o = f.ok("GET", COMPUTE + "/global/operations/" + op["name"])
        statuses.add(o["status"])
        return o if o["status"] == "DONE" else None
    done_op = wait_until(done, what="route insert")
    check("error" not in done_op and "RUNNING" in statuses, "insert op: %s %s" % (done_op, statuses))
    r = f.ok("GET", COMPUTE + "/global/routes/baton-vip")
    check(r["nextHopInstance"].endswith("projects/%s/zones/us-central1-a/instances/node-1" % PROJECT)
          and r["priority"] == 900, "route: %s" % r)
    lst = f.ok("GET", COMPUTE + '/global/routes?filter=' + urllib.parse.quote('destRange = "10.200.0.10/32"'))
    check([x["name"] for x in lst["items"]] == ["baton-vip"], "filtered list: %s" % lst)
    status, _, b = f.call("POST", COMPUTE + "/global/routes", route)
    google_error(status, b, 409, "alreadyExists")
    # Failover: delete + insert pointing at node-2, waiting with globalOperations.wait.
    op = f.ok("DELETE", COMPUTE + "/global/routes/baton-vip")
    w = f.ok("POST", COMPUTE + "/global/operations/%s/wait" % op["name"])
    check(w["status"] == "DONE" and "error" not in w, "wait: %s" % w)
    op = f.ok("POST", COMPUTE + "/global/routes", dict(route, nextHopInstance="zones/us-central1-b/instances/node-2"))
    w = f.ok("POST", COMPUTE + "/global/operations/%s/wait" % op["name"])
    r = f.ok("GET", COMPUTE + "/global/routes/baton-vip")
    check(r["nextHopInstance"].endswith("/instances/node-2"), "after failover: %s" % r)
    # An error inside the operation: HTTP 200 for the insert, the operation ends with errors.
    f.ctl("POST", "faults", {"method": "POST", "path": "/global/routes$",
                             "operation_error": {"code": "RESOURCE_NOT_READY", "message": "The resource is not ready"}})
    op = f.ok("POST", COMPUTE + "/global/routes", dict(route, name="other-route"))
    w = f.ok("POST", COMPUTE + "/global/operations/%s/wait" % op["name"])
    check(w["error"]["errors"][0]["code"] == "RESOURCE_NOT_READY" and w["httpErrorStatusCode"] == 400, "op error: %s" % w)
    check(f.call("GET", COMPUTE + "/global/routes/other-route")[0] == 404, "a failed insert created the route")
    # A second writer deletes our route between our read and our delete: 404 at once.
    f.ctl("POST", "second-writer", {"after": {"method": "GET", "path": "routes/baton-vip$"},
                                     "action": {"type": "route", "name": "baton-vip", "delete": True}})
    f.ok("GET", COMPUTE + "/global/routes/baton-vip")
    status, _, b = f.call("DELETE", COMPUTE + "/global/routes/baton-vip")
    google_error(status, b, 404, "notFound")
    # One that deletes it while our delete's operation runs: the operation ends in error.
    f.ctl("POST", "mutate", {"type": "route", "name": "baton-vip", "destRange": "10.200.0.10/32", "nextHopInstance": "node-1"})
    f.ctl("POST", "second-writer", {"after": {"method": "DELETE", "path": "routes/baton-vip$"},
                                     "action": {"type": "route", "name": "baton-vip", "delete": True}})
    op = f.ok("DELETE", COMPUTE + "/global/routes/baton-vip")
    w = f.ok("POST", COMPUTE + "/global/operations/%s/wait" % op["name"])
    check(w["error"]["errors"][0]["code"] == "RESOURCE_NOT_FOUND" and w["httpErrorStatusCode"] == 404, "raced delete: %s" % w)
    # A next hop that does not exist.
    status, _, b = f.call("POST", COMPUTE + "/global/routes", dict(route, nextHopInstance="zones/us-central1-a/instances/nope"))
    google_error(status, b, 404, "notFound")
    f.ok("POST", COMPUTE + "/global/routes", route)
    f.ctl("POST", "settings", {"operation_delay_ms": 0})


def test_alias_ip(f):
    inst = f.ok("GET", COMPUTE + "/zones/us-central1-a/instances/node-1")
    nic = inst["networkInterfaces"][0]
    check(nic["networkIP"] == "10.128.0.2" and nic["fingerprint"], "nic: %s" % nic)
    path = COMPUTE + "/zones/us-central1-a/instances/node-1/updateNetworkInterface?networkInterface=nic0"
    op = f.ok("PATCH", path, {"aliasIpRanges": [{"ipCidrRange": "10.128.0.100/32"}], "fingerprint": nic["fingerprint"]})
    check(op["zone"].endswith("/zones/us-central1-a"), "zonal operation: %s" % op)
    w = f.ok("POST", COMPUTE + "/zones/us-central1-a/operations/%s/wait" % op["name"])
    check(w["status"] == "DONE" and "error" not in w, "update op: %s" % w)
    nic2 = f.ok("GET", COMPUTE + "/zones/us-central1-a/instances/node-1")["networkInterfaces"][0]
    check(nic2["aliasIpRanges"] == [{"ipCidrRange": "10.128.0.100/32"}] and nic2["fingerprint"] != nic["fingerprint"],
          "after update: %s" % nic2)
    # The stale fingerprint: 412; none: 400.
    status, _, b = f.call("PATCH", path, {"aliasIpRanges": [], "fingerprint": nic["fingerprint"]})
    google_error(status, b, 412, "conditionNotMet")
    status, _, b = f.call("PATCH", path, {"aliasIpRanges": []})
    google_error(status, b, 400, "required")
    # Moving the alias to node-2 while node-1 still has it: the operation fails.
    n2 = f.ok("GET", COMPUTE + "/zones/us-central1-b/instances/node-2")["networkInterfaces"][0]
    p2 = COMPUTE + "/zones/us-central1-b/instances/node-2/updateNetworkInterface?networkInterface=nic0"
    op = f.ok("PATCH", p2, {"aliasIpRanges": [{"ipCidrRange": "10.128.0.100"}], "fingerprint": n2["fingerprint"]})
    w = f.ok("POST", COMPUTE + "/zones/us-central1-b/operations/%s/wait" % op["name"])
    check(w["error"]["errors"][0]["code"] == "IP_IN_USE_BY_ANOTHER_RESOURCE", "conflict: %s" % w)
    # Remove from node-1, then add to node-2.
    op = f.ok("PATCH", path, {"aliasIpRanges": [], "fingerprint": nic2["fingerprint"]})
    f.ok("POST", COMPUTE + "/zones/us-central1-a/operations/%s/wait" % op["name"])
    n2 = f.ok("GET", COMPUTE + "/zones/us-central1-b/instances/node-2")["networkInterfaces"][0]
    op = f.ok("PATCH", p2, {"aliasIpRanges": [{"ipCidrRange": "10.128.0.100/32"}], "fingerprint": n2["fingerprint"]})
    w = f.ok("POST", COMPUTE + "/zones/us-central1-b/operations/%s/wait" % op["name"])
    check("error" not in w, "move: %s" % w)
    status, _, aliases = f.md("instance/network-interfaces/0/ip-aliases/0", vm="node-2")
    check(status == 200 and aliases == "10.128.0.100/32", "metadata shows the alias: %s %s" % (status, aliases))
    # A concurrent writer bumps the fingerprint between our read and our write.
    f.ctl("POST", "second-writer", {"after": {"method": "GET", "path": "instances/node-2$"},
                                     "action": {"type": "fingerprint", "instance": "node-2"}})
    n2 = f.ok("GET", COMPUTE + "/zones/us-central1-b/instances/node-2")["networkInterfaces"][0]
    status, _, b = f.call("PATCH", p2, {"aliasIpRanges": [], "fingerprint": n2["fingerprint"]})
    google_error(status, b, 412, "conditionNotMet")
    lst = f.ok("GET", COMPUTE + "/aggregated/instances?filter=" + urllib.parse.quote('name = "node-2"'))
    check(list(lst["items"]) == ["zones/us-central1-b"], "aggregated list: %s" % lst)
    lst = f.ok("GET", COMPUTE + "/zones/us-central1-a/instances")
    check([i["name"] for i in lst["items"]] == ["node-1"], "zonal list: %s" % lst)


def test_load_balancer(f):
    bs = f.ok("GET", COMPUTE + "/regions/us-central1/backendServices/baton-ilb")
    check(bs["loadBalancingScheme"] == "INTERNAL" and len(bs["backends"]) == 2, "backend service: %s" % bs)
    hc_name = bs["healthChecks"][0].rsplit("/", 1)[-1]
    hc = f.ok("GET", COMPUTE + "/regions/us-central1/healthChecks/" + hc_name)
    check(hc["type"] == "TCP" and hc["tcpHealthCheck"]["port"] == 7080, "health check: %s" % hc)
    status, _, b = f.call("GET", COMPUTE + "/global/backendServices/baton-ilb")
    google_error(status, b, 404, "notFound")
    f.ctl("POST", "seed", {"healthChecks": [{"name": "g-hc", "type": "HTTP", "port": 8080, "requestPath": "/healthz"}],
                           "backendServices": [{"name": "g-bs", "healthChecks": ["g-hc"], "protocol": "HTTP",
                                                "loadBalancingScheme": "INTERNAL_MANAGED"}]})
    g = f.ok("GET", COMPUTE + "/global/backendServices/g-bs")
    check(g["healthChecks"][0].endswith("/global/healthChecks/g-hc"), "global backend: %s" % g)
    check(f.ok("GET", COMPUTE + "/global/healthChecks/g-hc")["httpHealthCheck"]["requestPath"] == "/healthz", "http hc")


def test_metadata(f):
    status, h, b = f.md("instance/name", flavor=False)
    check(status == 403, "no Metadata-Flavor header must be refused: %s" % status)
    status, h, b = f.md("instance/name")
    check(status == 200 and b == "node-1" and h.get("Metadata-Flavor") == "Google" and h.get("ETag"), "name: %s %s" % (b, h))
    check(f.md("instance/zone")[2] == "projects/123456789012/zones/us-central1-a", "zone")
    check(f.md("project/project-id")[2] == PROJECT, "project id")
    check(f.md("instance/network-interfaces/0/ip", vm="node-2")[2] == "10.128.0.3", "ip of node-2")
    check(f.md("instance/nope")[0] == 404, "unknown path")
    listing = f.md("instance/")[2]
    check("maintenance-event\n" in listing and "network-interfaces/\n" in listing, "listing: %r" % listing)
    rec = f.md("instance/?recursive=true")[2]
    check(rec["maintenanceEvent"] == "NONE" and rec["networkInterfaces"][0]["ip"] == "10.128.0.2", "recursive: %s" % rec)
    status, _, tok = f.md("instance/service-accounts/default/token")
    check(status == 200 and tok["token_type"] == "Bearer" and tok["expires_in"] > 0, "token: %s" % tok)
    f.ok("GET", DNS + "/public-zone", headers={"Authorization": "Bearer " + tok["access_token"]})
    check(f.md("instance/service-accounts/default/token")[2]["access_token"] == tok["access_token"], "token is cached")


def hanging_get(f, rel, vm=None):
    box = {}

    def run():
        t0 = time.time()
        box["r"] = f.md(rel, vm=vm, timeout=20)
        box["dt"] = time.time() - t0
    t = threading.Thread(target=run)
    t.start()
    return t, box


def test_maintenance_event(f):
    status, h, b = f.md("instance/maintenance-event")
    check(b == "NONE", "no event: %s" % b)
    etag = h["ETag"]
    # With last_etag equal to the current one the GET hangs until the event.
    t, box = hanging_get(f, "instance/maintenance-event?wait_for_change=true&last_etag=" + etag)
    time.sleep(0.5)
    check(t.is_alive(), "the hanging GET returned before any change")
    f.ctl("POST", "maintenance", {"instance": "node-1", "maintenanceEvent": "MIGRATE_ON_HOST_MAINTENANCE"})
    t.join(10)
    status, h2, b2 = box["r"]
    check(b2 == "MIGRATE_ON_HOST_MAINTENANCE" and h2["ETag"] != etag and box["dt"] >= 0.4, "event: %s %s" % (b2, box))
    # A stale last_etag answers at once; timeout_sec answers the unchanged value.
    t0 = time.time()
    check(f.md("instance/maintenance-event?wait_for_change=true&last_etag=" + etag)[2] == "MIGRATE_ON_HOST_MAINTENANCE"
          and time.time() - t0 < 2.5, "stale etag must answer at once")
    t0 = time.time()
    status, h3, b3 = f.md("instance/maintenance-event?wait_for_change=true&timeout_sec=1&last_etag=" + h2["ETag"])
    check(b3 == "MIGRATE_ON_HOST_MAINTENANCE" and 0.9 <= time.time() - t0 < 6, "timeout_sec")
    # A scheduled event (after_ms) wakes a hanging GET without last_etag.
    t, box = hanging_get(f, "instance/maintenance-event?wait_for_change=true")
    f.ctl("POST", "maintenance", {"instance": "node-1", "maintenanceEvent": "NONE", "after_ms": 300})
    t.join(10)
    check(box["r"][2] == "NONE" and box["dt"] >= 0.25, "scheduled event: %s" % box)
    # Preemption of a Spot VM: preempted TRUE, then the instance stops.
    f.ctl("POST", "settings", {"preempt_stop_ms": 300})
    t, box = hanging_get(f, "instance/preempted?wait_for_change=true", vm="node-2")
    time.sleep(0.2)
    f.ctl("POST", "maintenance", {"instance": "node-2", "preempted": True})
    t.join(10)
    check(box["r"][2] == "TRUE", "preempted: %s" % box)
    check(f.ok("GET", COMPUTE + "/zones/us-central1-b/instances/node-2")["status"] == "STOPPING", "stopping")
    wait_until(lambda: f.ok("GET", COMPUTE + "/zones/us-central1-b/instances/node-2")["status"] == "TERMINATED",
               what="TERMINATED")


def test_faults(f):
    f.ctl("POST", "faults", {"method": "GET", "path": "/global/routes/baton-vip$", "status": 429, "count": 2})
    for _ in range(2):
        status, _, b = f.call("GET", COMPUTE + "/global/routes/baton-vip")
        google_error(status, b, 429, "rateLimitExceeded")
    f.ok("GET", COMPUTE + "/global/routes/baton-vip")
    f.ctl("POST", "faults", {"path": "/changes$", "status": 503})
    status, _, b = f.call("POST", DNS + "/public-zone/changes", {"additions": []})
    google_error(status, b, 503, "backendError")
    f.ctl("POST", "faults", {"path": "managedZones/public-zone$", "latency_ms": 400})
    t0 = time.time()
    f.ok("GET", DNS + "/public-zone")
    check(time.time() - t0 >= 0.4, "latency fault")
    f.ctl("POST", "faults", {"path": "computeMetadata", "status": 503})
    check(f.md("instance/name")[0] == 503, "metadata fault")
    check(f.md("instance/name")[0] == 200, "fault count")
    calls = f.ctl("GET", "calls")
    check(calls.get("compute.routes.get", 0) >= 3 and calls.get("fault", 0) >= 4, "calls: %s" % calls)
    log = f.ctl("GET", "log")
    check(any(e["status"] == 429 for e in log), "log has the 429s")


def test_no_violations_so_far(f):
    v = f.ctl("GET", "violations")
    check(v == [], "correct requests produced violations: %s" % json.dumps(v, indent=1))


def expect_violation(f, method, path, body, needle):
    before = len(f.ctl("GET", "violations"))
    status, _, b = f.call(method, path, body)
    google_error(status, b, 400, "invalid")
    v = f.ctl("GET", "violations")
    check(len(v) == before + 1, "no violation recorded for %s %s" % (method, path))
    msgs = " | ".join(v[-1]["messages"])
    check(needle in msgs, "violation %r does not mention %r" % (msgs, needle))


def test_violations_recorded(f):
    expect_violation(f, "PATCH", COMPUTE + "/zones/us-central1-a/instances/node-1/updateNetworkInterface",
                     {"fingerprint": "AAAA"}, "required parameter networkInterface missing")
    expect_violation(f, "GET", COMPUTE + "/global/routes?maxResults=lots", None, "maxResults='lots' is not an integer")
    expect_violation(f, "POST", COMPUTE + "/global/routes",
                     {"name": "r", "network": "global/networks/default", "destRange": "10.0.0.1/32",
                      "nextHopIp": "10.128.0.2", "bogus": 1}, "'bogus' was unexpected")
    expect_violation(f, "GET", DNS + "/public-zone/changes?sortBy=time", None, "sortBy='time' is not one of")
    expect_violation(f, "POST", DNS + "/public-zone/changes",
                     {"additions": [{"name": "x.example.com.", "type": "A", "ttl": "60", "rrdatas": ["1.2.3.4"]}]},
                     "'60' is not of type 'integer'")
    expect_violation(f, "POST", COMPUTE + "/global/routes", {"destRange": "10.0.0.1/32", "nextHopIp": "10.128.0.2"},
                     "Required field 'resource.name' not specified")
    expect_violation(f, "GET", DNS + "/public-zone?colour=blue", None, "unknown query parameter colour")
    expect_violation(f, "GET", COMPUTE + "/zones/US_CENTRAL/instances/node-1", None, "does not match pattern")
    # An unknown URL is a violation (404), and so is a response that breaks its schema:
    # an instance seeded with a non-string label value.
    before = len(f.ctl("GET", "violations"))
    check(f.call("GET", "/compute/v1/projects/%s/nothing" % PROJECT)[0] == 404, "unknown path")
    f.ctl("POST", "seed", {"instances": [{"name": "bad-1", "zone": "us-central1-c", "networkIP": "10.128.0.9",
                                          "labels": {"n": 1}}]})
    f.ok("GET", COMPUTE + "/zones/us-central1-c/instances/bad-1")
    v = f.ctl("GET", "violations")[before:]
    check([x["kind"] for x in v] == ["request", "response"] and "labels" in v[1]["messages"][0], "violations: %s" % v)
    f.ctl("DELETE", "violations")


def test_official_client(f):
    """Google's own Python client (discovery-built) and google-auth talk to the fake."""
    try:
        from google.oauth2 import service_account
        from googleapiclient.discovery import build_from_document
        import discovery
    except ImportError as e:
        raise Failure("google-api-python-client is missing: %s" % e)
    info = f.ctl("POST", "service-account-keys", {"email": SA})
    creds = service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])
    d = discovery.Discovery()
    dns = build_from_document(d.apis["dns"].doc, credentials=creds, client_options={"api_endpoint": f.base + "/"})
    rr = dns.resourceRecordSets().list(project=PROJECT, managedZone="public-zone", name="www.example.com.").execute()
    check(rr["rrsets"][0]["type"] == "A", "client rrsets: %s" % rr)
    compute = build_from_document(d.apis["compute"].doc, credentials=creds,
                                  client_options={"api_endpoint": f.base + "/compute/v1/"})
    inst = compute.instances().get(project=PROJECT, zone="us-central1-a", instance="node-1").execute()
    check(inst["name"] == "node-1", "client instance: %s" % inst)
    v = f.ctl("GET", "violations")
    check(v == [], "the official client's requests broke the documents: %s" % v)


def test_state_and_reset(f):
    st = f.ctl("GET", "state")
    p = st["projects"][PROJECT]
    check("baton-vip" in p["routes"] and "us-central1-a/node-1" in p["instances"], "state: %s" % list(p))
    check(any(r["name"] == "www.example.com." for r in p["managedZones"]["public-zone"]["rrsets"]), "state rrsets")
    f.ctl("POST", "reset", {})
    p = f.ctl("GET", "state")["projects"][PROJECT]
    check(p["routes"] == {} and len(p["managedZones"]["public-zone"]["rrsets"]) == 2, "reset: %s" % p["routes"])
    status, _, b = f.call("GET", DNS + "/public-zone")
    google_error(status, b, 401, "authError")  # tokens are gone too
    f.ctl("POST", "reset", {"seed": False})
    check(f.ctl("GET", "state")["projects"] == {}, "reset without seed")


TESTS = [
    test_oauth_jwt_bearer, test_key_file_from_control_api, test_oauth_refresh_token, test_api_requires_bearer,
    test_iam,
    test_dns_zones, test_dns_change_pending_then_done, test_dns_exact_deletion, test_dns_second_writer,
    test_routes, test_alias_ip, test_load_balancer, test_metadata, test_maintenance_event, test_faults,
    test_no_violations_so_far, test_violations_recorded, test_official_client, test_state_and_reset,
]


def main():
    f = Fake()
    passed = failed = 0
    try:
        for t in TESTS:
            try:
                t(f)
                passed += 1
                print("test gcp_fake::%s ... ok" % t.__name__, flush=True)
            except Exception as e:
                failed += 1
                print("test gcp_fake::%s ... FAILED" % t.__name__, flush=True)
                print("    %s" % e, flush=True)
                if not isinstance(e, Failure):
                    traceback.print_exc()
    finally:
        f.stop()
    # cargo's closing-line format, which tests/run-all.sh counts.
    print("test result: %s. %d passed; %d failed; 0 ignored; 0 measured; 0 filtered out"
          % ("ok" if not failed else "FAILED", passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
