"""Self-test of the Azure fake: starts it, drives every endpoint over plain HTTP as a client
would, checks the behaviour, checks that correct requests leave no violation, and that
deliberately wrong requests (and a deliberately wrong seeded object) are recorded as
violations, so the validator cannot pass by not running.

Usage: python selftest.py [--specs DIR]      (exit status 1 on any failure)
Closes with "N passed, M failed".
"""

import argparse
import base64
import datetime
import http.client
import json
import os
import subprocess
import sys
import time
import urllib.parse
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
SUB = "11111111-2222-3333-4444-555555555555"
RG = "rg-baton"
TENANT = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
ARM_SCOPE = "https://management.azure.com/.default"
DNS_V, PDNS_V, NET_V, AUTH_V = "2018-05-01", "2018-09-01", "2016-06-01", "2015-07-01"
PROVIDER = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers"

RESULTS = {"passed": 0, "failed": 0}


def check(cond, what, detail=""):
    if cond:
        RESULTS["passed"] += 1
        print(f"ok      {what}")
    else:
        RESULTS["failed"] += 1
        print(f"FAILED  {what}  {detail}")
    return cond


class Client:
    def __init__(self, port):
        self.port = port
        self.token = None

    def call(self, method, path, body=None, headers=None, form=None, raw=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        h = dict(headers or {})
        data = None
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            h.setdefault("Content-Type", "application/x-www-form-urlencoded")
        elif raw is not None:
            data = raw
        elif body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        text = r.read()
        conn.close()
        try:
            doc = json.loads(text) if text else None
        except ValueError:
            doc = text
        return r.status, {k.lower(): v for k, v in r.getheaders()}, doc

    def arm(self, method, path, api, body=None, headers=None, token=True):
        h = dict(headers or {})
        if token and self.token:
            h["Authorization"] = f"Bearer {self.token}"
        sep = "&" if "?" in path else "?"
        return self.call(method, f"{path}{sep}api-version={api}" if api else path, body, h)

    def ctl(self, method, path, body=None):
        status, _, doc = self.call(method, "/_fake" + path, body)
        if status != 200:
            raise RuntimeError(f"control {method} {path}: {status} {doc}")
        return doc


def start_fake(specs):
    args = [sys.executable, os.path.join(HERE, "fake.py"), "--port", "0"]
    if specs:
        args += ["--specs", specs]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=HERE)
    line = proc.stdout.readline()
    if not line.startswith("LISTENING "):
        proc.kill()
        raise SystemExit(f"the fake did not start: {line!r}")
    return proc, int(line.split()[1])


def err_code(doc):
    return (doc or {}).get("error", {}).get("code") if isinstance(doc, dict) and isinstance(doc.get("error"), dict) else None


# ---------------------------------------------------------------------------------------


def seed(c):
    c.ctl("POST", "/resource-groups", {"subscription": SUB, "resourceGroup": RG, "location": "westeurope"})
    c.ctl("POST", "/dns-zones", {"subscription": SUB, "resourceGroup": RG, "zone": "example.com"})
    c.ctl("POST", "/dns-zones", {"subscription": SUB, "resourceGroup": RG, "zone": "internal.example", "private": True})
    c.ctl("POST", "/route-tables", {"subscription": SUB, "resourceGroup": RG, "name": "rt-a", "routes": [
        {"name": "default", "addressPrefix": "0.0.0.0/0", "nextHopType": "Internet"}]})
    c.ctl("POST", "/load-balancers", {"subscription": SUB, "resourceGroup": RG, "name": "ilb",
                                      "frontendIPConfigurations": [{"name": "fe", "privateIPAddress": "10.0.0.100"}],
                                      "backendAddressPools": [{"name": "be"}],
                                      "probes": [{"name": "baton-probe", "protocol": "Tcp", "port": 26000}],
                                      "loadBalancingRules": [{"name": "db", "protocol": "Tcp", "frontendPort": 5432, "backendPort": 5432,
                                                              "probe": "baton-probe", "frontendIPConfiguration": "fe", "backendAddressPool": "be",
                                                              "enableFloatingIP": True}]})
    c.ctl("POST", "/network-interfaces", {"subscription": SUB, "resourceGroup": RG, "name": "node-1-nic", "privateIPAddress": "10.0.0.4", "virtualMachine": "node-1"})
    c.ctl("POST", "/clients", {"tenant": TENANT, "client_id": "sp-secret", "client_secret": "s3cret"})
    for i, zone in ((1, "1"), (2, "2")):
        c.ctl("POST", "/vms", {"name": f"node-{i}", "resourceGroupName": RG, "subscriptionId": SUB, "zone": zone,
                               "privateIpAddress": f"10.0.0.{3 + i}", "identity": {"tenant": TENANT}})


def test_entra_and_auth(c):
    st, _, doc = c.call("POST", f"/{TENANT}/oauth2/v2.0/token", form={"grant_type": "client_credentials", "client_id": "sp-secret", "client_secret": "wrong", "scope": ARM_SCOPE})
    check(st == 401 and doc["error"] == "invalid_client" and 7000215 in doc["error_codes"], "entra: a wrong secret is invalid_client (AADSTS7000215)", f"{st} {doc}")
    st, _, doc = c.call("POST", f"/{TENANT}/oauth2/v2.0/token", form={"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "x", "scope": ARM_SCOPE})
    check(st == 400 and doc["error"] == "unauthorized_client", "entra: an unknown client is unauthorized_client", f"{st} {doc}")
    st, _, doc = c.call("POST", f"/{TENANT}/oauth2/v2.0/token", form={"grant_type": "client_credentials", "client_id": "sp-secret", "client_secret": "s3cret", "scope": ARM_SCOPE})
    check(st == 200 and doc["token_type"] == "Bearer" and doc["expires_in"] > 0, "entra: client secret gives a bearer token", f"{st} {doc}")
    c.token = doc["access_token"]

    path = f"{PROVIDER}/Microsoft.Network/dnszones/example.com"
    st, h, doc = c.arm("GET", path, DNS_V, token=False)
    check(st == 401 and err_code(doc) == "AuthenticationFailed" and "www-authenticate" in h, "arm: no token is 401 AuthenticationFailed", f"{st} {doc}")
    st, _, doc = c.arm("GET", path, DNS_V, headers={"Authorization": "Bearer not.a.token"}, token=False)
    check(st == 401 and err_code(doc) == "InvalidAuthenticationToken", "arm: a forged token is 401 InvalidAuthenticationToken", f"{st} {doc}")
    _, _, other = c.call("POST", f"/{TENANT}/oauth2/v2.0/token", form={"grant_type": "client_credentials", "client_id": "sp-secret", "client_secret": "s3cret", "scope": "https://vault.azure.net/.default"})
    st, _, doc = c.arm("GET", path, DNS_V, headers={"Authorization": f"Bearer {other['access_token']}"}, token=False)
    check(st == 401 and err_code(doc) == "InvalidAuthenticationTokenAudience", "arm: a token for another audience is refused", f"{st} {doc}")
    st, _, doc = c.arm("GET", path, DNS_V)
    check(st == 200 and doc["name"] == "example.com" and doc["properties"]["nameServers"], "arm: zone GET with the token", f"{st} {doc}")

    # Certificate credential: a client assertion signed with the registered certificate.
    try:
        assertion_test(c)
    except ImportError as e:
        check(False, "entra: certificate assertion (needs the cryptography package)", repr(e))

    # Token expiry (all tokens issued so far are made stale), then a fresh one works.
    c.ctl("POST", "/tokens/expire")
    st, _, doc = c.arm("GET", path, DNS_V)
    check(st == 401 and err_code(doc) == "ExpiredAuthenticationToken", "arm: an expired token is 401 ExpiredAuthenticationToken", f"{st} {doc}")
    _, _, doc = c.call("POST", f"/{TENANT}/oauth2/v2.0/token", form={"grant_type": "client_credentials", "client_id": "sp-secret", "client_secret": "s3cret", "scope": ARM_SCOPE})
    c.token = doc["access_token"]


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def assertion_test(c):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "baton-test")])
    t = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(t - datetime.timedelta(minutes=1))
            .not_valid_after(t + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    c.ctl("POST", "/clients", {"tenant": TENANT, "client_id": "sp-cert", "certificate_pem": pem})
    endpoint = f"http://127.0.0.1:{c.port}/{TENANT}/oauth2/v2.0/token"

    def assertion(signing_key, aud=endpoint):
        head = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "x5t": b64url(cert.fingerprint(hashes.SHA1()))}).encode())
        now = int(time.time())
        body = b64url(json.dumps({"aud": aud, "iss": "sp-cert", "sub": "sp-cert", "jti": str(uuid.uuid4()), "nbf": now, "exp": now + 600}).encode())
        sig = signing_key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{head}.{body}.{b64url(sig)}"

    form = {"grant_type": "client_credentials", "client_id": "sp-cert", "scope": ARM_SCOPE,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
    st, _, doc = c.call("POST", f"/{TENANT}/oauth2/v2.0/token", form=dict(form, client_assertion=assertion(key)))
    check(st == 200 and doc.get("access_token"), "entra: certificate client assertion gives a token", f"{st} {doc}")
    if st == 200:
        st2, _, _ = c.arm("GET", f"{PROVIDER}/Microsoft.Network/dnszones/example.com", DNS_V, headers={"Authorization": f"Bearer {doc['access_token']}"}, token=False)
        check(st2 == 200, "arm: the certificate token is accepted", st2)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    st, _, doc = c.call("POST", f"/{TENANT}/oauth2/v2.0/token", form=dict(form, client_assertion=assertion(other)))
    check(st == 401 and doc["error"] == "invalid_client", "entra: an assertion signed by another key is refused", f"{st} {doc}")
    st, _, doc = c.call("POST", f"/{TENANT}/oauth2/v2.0/token", form=dict(form, client_assertion=assertion(key, aud="https://elsewhere/token")))
    check(st == 401 and doc["error"] == "invalid_client", "entra: an assertion for another audience is refused", f"{st} {doc}")


def test_api_version(c):
    path = f"{PROVIDER}/Microsoft.Network/dnszones/example.com/A/www"
    st, _, doc = c.arm("GET", path, None)
    check(st == 400 and err_code(doc) == "MissingApiVersionParameter", "arm: no api-version is 400 MissingApiVersionParameter", f"{st} {doc}")
    st, _, doc = c.arm("GET", path, "latest")
    check(st == 400 and err_code(doc) == "InvalidApiVersionParameter", "arm: a malformed api-version is 400 InvalidApiVersionParameter", f"{st} {doc}")
    st, _, doc = c.arm("GET", path, "2099-01-01")
    check(st == 400 and err_code(doc) == "NoRegisteredProviderFound", "arm: an unserved api-version is 400 NoRegisteredProviderFound", f"{st} {doc}")
    st, _, doc = c.arm("GET", f"/subscriptions/{SUB}/resourceGroups/nope/providers/Microsoft.Network/dnszones/example.com", DNS_V)
    check(st == 404 and err_code(doc) == "ResourceGroupNotFound", "arm: unknown resource group is 404 ResourceGroupNotFound", f"{st} {doc}")
    st, _, doc = c.arm("GET", f"/subscriptions/{uuid.uuid4()}/resourceGroups/{RG}/providers/Microsoft.Network/dnszones/example.com", DNS_V)
    check(st == 404 and err_code(doc) == "SubscriptionNotFound", "arm: unknown subscription is 404 SubscriptionNotFound", f"{st} {doc}")


def dns_cycle(c, private):
    kind, api = ("privateDnsZones", PDNS_V) if private else ("dnszones", DNS_V)
    zone = "internal.example" if private else "example.com"
    ttl, arecs, txtrecs = ("ttl", "aRecords", "txtRecords") if private else ("TTL", "ARecords", "TXTRecords")
    label = "private dns" if private else "dns"
    rec = f"{PROVIDER}/Microsoft.Network/{kind}/{zone}/A/vip"

    st, _, doc = c.arm("GET", rec, api)
    check(st == 404 and err_code(doc) == "NotFound", f"{label}: GET of a missing record set is 404 NotFound", f"{st} {doc}")
    body = {"properties": {ttl: 30, arecs: [{"ipv4Address": "10.0.0.4"}], "metadata": {"baton_epoch": "1"}}}
    st, h, doc = c.arm("PUT", rec, api, body, {"If-None-Match": "*"})
    check(st == 201 and doc["etag"] and h.get("etag") == doc["etag"] and doc["properties"]["fqdn"] == f"vip.{zone}.", f"{label}: create with If-None-Match: * is 201 with an etag", f"{st} {h} {doc}")
    etag1 = doc["etag"]
    st, _, doc = c.arm("PUT", rec, api, body, {"If-None-Match": "*"})
    check(st == 412 and err_code(doc) == "PreconditionFailed", f"{label}: a second create with If-None-Match: * is 412 PreconditionFailed", f"{st} {doc}")
    st, _, doc = c.arm("GET", rec, api)
    check(st == 200 and doc["etag"] == etag1 and doc["properties"][arecs][0]["ipv4Address"] == "10.0.0.4", f"{label}: GET returns what was written", f"{st} {doc}")
    body2 = {"properties": {ttl: 30, arecs: [{"ipv4Address": "10.0.0.5"}], "metadata": {"baton_epoch": "2"}}}
    st, _, doc = c.arm("PUT", rec, api, body2, {"If-Match": etag1})
    check(st == 200 and doc["etag"] != etag1, f"{label}: update with the current If-Match is 200 with a new etag", f"{st} {doc}")
    etag2 = doc["etag"]
    st, _, doc = c.arm("PUT", rec, api, body, {"If-Match": etag1})
    check(st == 412 and err_code(doc) == "PreconditionFailed", f"{label}: update with a stale If-Match is 412", f"{st} {doc}")
    # A second writer changes the record set between our GET and our PUT.
    c.ctl("POST", "/faults", {"kind": "second_writer", "method": "PUT", "path": f"/{kind}/{zone}/A/vip$", "count": 1,
                             "properties": {arecs: [{"ipv4Address": "10.9.9.9"}]}})
    st, _, doc = c.arm("PUT", rec, api, body, {"If-Match": etag2})
    check(st == 412, f"{label}: a second writer between GET and PUT makes the conditional PUT 412", f"{st} {doc}")
    st, _, doc = c.arm("GET", rec, api)
    check(st == 200 and doc["properties"][arecs][0]["ipv4Address"] == "10.9.9.9" and doc["etag"] != etag2, f"{label}: the second writer's value is what is stored", f"{st} {doc}")
    etag3 = doc["etag"]
    # PATCH keeps what it does not name.
    st, _, doc = c.arm("PATCH", rec, api, {"properties": {"metadata": {"baton_epoch": "3"}}}, {"If-Match": etag3})
    check(st == 200 and doc["properties"][arecs][0]["ipv4Address"] == "10.9.9.9" and doc["properties"]["metadata"]["baton_epoch"] == "3", f"{label}: PATCH merges", f"{st} {doc}")
    etag4 = doc["etag"]
    # A TXT record (the epoch record) and a CNAME in public DNS.
    txt = f"{PROVIDER}/Microsoft.Network/{kind}/{zone}/TXT/_baton-epoch"
    st, _, doc = c.arm("PUT", txt, api, {"properties": {ttl: 30, txtrecs: [{"value": ["epoch=3"]}]}})
    check(st == 201 and doc["type"].endswith("/TXT"), f"{label}: TXT record set created", f"{st} {doc}")
    if not private:
        cname = f"{PROVIDER}/Microsoft.Network/{kind}/{zone}/CNAME/db"
        st, _, doc = c.arm("PUT", cname, api, {"properties": {ttl: 30, "CNAMERecord": {"cname": f"vip.{zone}"}}})
        check(st == 201 and doc["properties"]["CNAMERecord"]["cname"] == f"vip.{zone}", "dns: CNAME record set created", f"{st} {doc}")
        st, _, doc = c.arm("PUT", cname, api, {"properties": {ttl: 30, "ARecords": [{"ipv4Address": "10.0.0.1"}]}})
        check(st == 400, "dns: A records in a CNAME record set are refused", f"{st} {doc}")
    st, _, doc = c.arm("GET", f"{PROVIDER}/Microsoft.Network/{kind}/{zone}/A", api)
    check(st == 200 and [r["name"] for r in doc["value"]] == ["vip"], f"{label}: list by type", f"{st} {doc}")
    listing = f"{PROVIDER}/Microsoft.Network/{kind}/{zone}/{'ALL' if private else 'recordsets'}"
    st, _, doc = c.arm("GET", listing, api)
    names = sorted(f"{r['type'].split('/')[-1]}/{r['name']}" for r in doc["value"]) if st == 200 else []
    check("A/vip" in names and "SOA/@" in names and "TXT/_baton-epoch" in names, f"{label}: list every record set (with the zone's SOA)", f"{st} {names}")
    st, _, doc = c.arm("GET", listing + "?$top=1", api)
    check(st == 200 and len(doc["value"]) == 1 and "nextLink" in doc, f"{label}: $top pages with a nextLink", f"{st} {doc}")
    # Delete: stale etag refused, current etag deletes, a second delete is 204.
    st, _, doc = c.arm("DELETE", rec, api, headers={"If-Match": etag3})
    check(st == 412, f"{label}: DELETE with a stale If-Match is 412", f"{st} {doc}")
    st, _, _ = c.arm("DELETE", rec, api, headers={"If-Match": etag4})
    check(st == 200, f"{label}: DELETE with the current If-Match is 200", st)
    st, _, _ = c.arm("DELETE", rec, api)
    check(st == 204, f"{label}: DELETE of a missing record set is 204", st)
    # A change by hand (portal/CLI) through the control API: a new etag.
    doc = c.ctl("POST", "/record-sets", {"subscription": SUB, "resourceGroup": RG, "zone": zone, "private": private, "type": "A", "name": "vip",
                                          "properties": {ttl: 300, arecs: [{"ipv4Address": "192.0.2.1"}]}})
    st, _, got = c.arm("GET", rec, api)
    check(st == 200 and got["etag"] == doc["etag"] and got["properties"][arecs][0]["ipv4Address"] == "192.0.2.1", f"{label}: a hand edit is visible with its etag", f"{st} {got}")
    st, _, doc = c.arm("GET", f"{PROVIDER}/Microsoft.Network/{kind}/missing.zone/A/vip", api)
    check(st == 404 and err_code(doc) == "ParentResourceNotFound", f"{label}: a record set in a missing zone is 404 ParentResourceNotFound", f"{st} {doc}")


def poll_async(c, url, deadline_s=10):
    u = urllib.parse.urlsplit(url)
    seen = []
    end = time.time() + deadline_s
    while time.time() < end:
        st, h, doc = c.arm("GET", f"{u.path}?{u.query}", None)
        seen.append((st, (doc or {}).get("status") if isinstance(doc, dict) else None))
        if st == 200 and doc["status"] != "InProgress":
            return doc["status"], seen
        time.sleep(0.05)
    return None, seen


def test_routes(c):
    c.ctl("POST", "/config", {"lro_duration_ms": 400, "lro_retry_after_s": 0})
    table = f"{PROVIDER}/Microsoft.Network/routeTables/rt-a"
    route = f"{table}/routes/baton-vip"
    st, _, doc = c.arm("GET", table, NET_V)
    check(st == 200 and [r["name"] for r in doc["properties"]["routes"]] == ["default"], "routes: table GET lists the seeded route", f"{st} {doc}")
    table_etag = doc["etag"]
    body = {"properties": {"addressPrefix": "10.1.0.10/32", "nextHopType": "VirtualAppliance", "nextHopIpAddress": "10.0.0.4"}}
    st, h, doc = c.arm("PUT", route, NET_V, body)
    ok = st == 201 and doc["properties"]["provisioningState"] == "Updating" and "azure-asyncoperation" in h and "retry-after" in h
    check(ok, "routes: PUT is 201, provisioningState Updating, Azure-AsyncOperation header", f"{st} {h} {doc}")
    route_etag = doc.get("etag")
    st2, h2, doc2 = c.arm("PUT", route, NET_V, body)
    check(st2 == 429 and err_code(doc2) == "AnotherOperationInProgress" and "retry-after" in h2, "routes: a PUT while the table is updating is 429 AnotherOperationInProgress", f"{st2} {doc2}")
    status, seen = poll_async(c, h["azure-asyncoperation"])
    check(status == "Succeeded" and seen[0][1] == "InProgress", "routes: the async operation goes InProgress -> Succeeded", seen)
    st, _, doc = c.arm("GET", route, NET_V)
    check(st == 200 and doc["properties"]["provisioningState"] == "Succeeded" and doc["properties"]["nextHopIpAddress"] == "10.0.0.4" and doc["etag"] == route_etag,
          "routes: GET after completion shows the route Succeeded", f"{st} {doc}")
    st, _, doc = c.arm("GET", table, NET_V)
    check(st == 200 and doc["etag"] != table_etag and len(doc["properties"]["routes"]) == 2, "routes: the table's etag changed and it holds the route", f"{st} {doc}")
    # Conditional update: the current etag works, a stale one is 412.
    body2 = {"properties": dict(body["properties"], nextHopIpAddress="10.0.0.5")}
    st, h, doc = c.arm("PUT", route, NET_V, body2, {"If-Match": route_etag})
    check(st == 200 and doc["etag"] != route_etag, "routes: PUT with the current If-Match is 200", f"{st} {doc}")
    poll_async(c, h["azure-asyncoperation"])
    st, _, doc = c.arm("PUT", route, NET_V, body, {"If-Match": route_etag})
    check(st == 412 and err_code(doc) == "PreconditionFailed", "routes: PUT with a stale If-Match is 412", f"{st} {doc}")
    # Second writer on the route between GET and PUT.
    st, _, doc = c.arm("GET", route, NET_V)
    current = doc["etag"]
    c.ctl("POST", "/faults", {"kind": "second_writer", "method": "PUT", "path": "/routes/baton-vip$", "properties": {"nextHopIpAddress": "10.0.0.99"}})
    st, _, doc = c.arm("PUT", route, NET_V, body, {"If-Match": current})
    check(st == 412, "routes: a second writer makes the conditional PUT 412", f"{st} {doc}")
    st, _, doc = c.arm("GET", route, NET_V)
    check(doc["properties"]["nextHopIpAddress"] == "10.0.0.99", "routes: the second writer's next hop is stored", doc)
    st, _, doc = c.arm("GET", f"{table}/routes", NET_V)
    check(st == 200 and len(doc["value"]) == 2, "routes: list", f"{st} {doc}")
    # DELETE: 202 with Azure-AsyncOperation and Location; Location polls 202 then 204.
    st, h, doc = c.arm("DELETE", route, NET_V)
    check(st == 202 and "azure-asyncoperation" in h and "location" in h and doc is None, "routes: DELETE is 202 with Azure-AsyncOperation and Location", f"{st} {h}")
    st_mid, _, doc_mid = c.arm("GET", route, NET_V)
    check(st_mid == 200 and doc_mid["properties"]["provisioningState"] == "Deleting", "routes: the route is Deleting meanwhile", f"{st_mid} {doc_mid}")
    loc = urllib.parse.urlsplit(h["location"])
    codes = []
    for _ in range(200):
        st, _, _ = c.arm("GET", f"{loc.path}?{loc.query}", None)
        codes.append(st)
        if st != 202:
            break
        time.sleep(0.05)
    check(codes[0] == 202 and codes[-1] == 204, "routes: the Location URL answers 202 then 204", codes)
    st, _, doc = c.arm("GET", route, NET_V)
    check(st == 404 and err_code(doc) == "NotFound", "routes: GET after delete is 404", f"{st} {doc}")
    st, _, doc = c.arm("GET", f"{PROVIDER}/Microsoft.Network/routeTables/missing", NET_V)
    check(st == 404 and err_code(doc) == "ResourceNotFound", "routes: a missing table is 404 ResourceNotFound", f"{st} {doc}")
    # A whole route table PUT (long-running) and DELETE.
    st, h, doc = c.arm("PUT", f"{PROVIDER}/Microsoft.Network/routeTables/rt-b", NET_V, {"location": "westeurope", "properties": {"routes": [
        {"name": "vip", "properties": {"addressPrefix": "10.1.0.10/32", "nextHopType": "VirtualAppliance", "nextHopIpAddress": "10.0.0.4"}}]}})
    check(st == 201 and doc["properties"]["provisioningState"] == "Updating", "routes: table PUT is 201 Updating", f"{st} {doc}")
    status, _ = poll_async(c, h["azure-asyncoperation"])
    check(status == "Succeeded", "routes: table PUT completes", status)
    st, h, _ = c.arm("DELETE", f"{PROVIDER}/Microsoft.Network/routeTables/rt-b", NET_V)
    status, _ = poll_async(c, h["azure-asyncoperation"])
    st, _, _ = c.arm("GET", f"{PROVIDER}/Microsoft.Network/routeTables/rt-b", NET_V)
    check(status == "Succeeded" and st == 404, "routes: table DELETE completes", (status, st))
    c.ctl("POST", "/config", {"lro_duration_ms": 200, "lro_retry_after_s": 1})


def test_lb_nic_permissions(c):
    st, _, doc = c.arm("GET", f"{PROVIDER}/Microsoft.Network/loadBalancers/ilb", NET_V)
    ok = st == 200
    if ok:
        probe = doc["properties"]["probes"][0]
        rule = doc["properties"]["loadBalancingRules"][0]
        ok = probe["properties"]["port"] == 26000 and rule["properties"]["probe"]["id"] == probe["id"] and probe["properties"]["loadBalancingRules"][0]["id"] == rule["id"]
    check(ok, "lb: GET shows the probe and the rule that uses it", f"{st} {doc}")
    st, _, doc = c.arm("GET", f"{PROVIDER}/Microsoft.Network/loadBalancers/nope", NET_V)
    check(st == 404 and err_code(doc) == "ResourceNotFound", "lb: a missing load balancer is 404 ResourceNotFound", f"{st} {doc}")
    st, _, doc = c.arm("GET", f"{PROVIDER}/Microsoft.Network/networkInterfaces/node-1-nic", NET_V)
    check(st == 200 and doc["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"] == "10.0.0.4", "nic: GET shows the private IP", f"{st} {doc}")
    perms = f"/subscriptions/{SUB}/resourcegroups/{RG}/providers/Microsoft.Authorization/permissions"
    st, _, doc = c.arm("GET", perms, AUTH_V)
    check(st == 200 and doc["value"][0]["actions"] == ["*"], "authorization: permissions default to everything", f"{st} {doc}")
    c.ctl("POST", "/permissions", {"subscription": SUB, "resourceGroup": RG, "permissions": [
        {"actions": ["Microsoft.Network/*/read", "Microsoft.Network/routeTables/routes/write"], "notActions": []}]})
    st, _, doc = c.arm("GET", perms, AUTH_V)
    check(st == 200 and "Microsoft.Network/*/read" in doc["value"][0]["actions"], "authorization: seeded permissions are listed", f"{st} {doc}")
    st, _, doc = c.arm("PUT", f"{PROVIDER}/Microsoft.Network/dnszones/example.com/A/denied", DNS_V, {"properties": {"TTL": 5, "ARecords": []}})
    check(st == 403 and err_code(doc) == "AuthorizationFailed" and "Microsoft.Network/dnszones/A/write" in doc["error"]["message"], "authorization: a write the role lacks is 403 AuthorizationFailed", f"{st} {doc}")
    st, _, _ = c.arm("GET", f"{PROVIDER}/Microsoft.Network/dnszones/example.com", DNS_V)
    check(st == 200, "authorization: a read the role has passes", st)
    c.ctl("POST", "/permissions", {"subscription": SUB, "resourceGroup": RG, "permissions": None})


def test_imds(c):
    st, _, doc = c.call("GET", "/metadata/identity/oauth2/token?api-version=2018-10-01&resource=https://management.azure.com/", headers={"Metadata": "true"})
    check(st == 200 and doc["token_type"] == "Bearer" and doc["expires_in"].isdigit(), "imds: managed identity token", f"{st} {doc}")
    st2, _, _ = c.arm("GET", f"{PROVIDER}/Microsoft.Network/loadBalancers/ilb", NET_V, headers={"Authorization": f"Bearer {doc['access_token']}"}, token=False)
    check(st2 == 200, "imds: the managed identity token works on ARM", st2)
    st, _, doc = c.call("GET", "/metadata/instance?api-version=2018-10-01", headers={"Metadata": "true"})
    check(st == 200 and doc["compute"]["name"] == "node-1" and doc["compute"]["zone"] == "1" and doc["network"]["interface"][0]["ipv4"]["ipAddress"][0]["privateIpAddress"] == "10.0.0.4",
          "imds: instance metadata of the default VM", f"{st} {doc}")
    st, _, doc = c.call("GET", "/_vm/node-2/metadata/instance?api-version=2018-10-01", headers={"Metadata": "true"})
    check(st == 200 and doc["compute"]["name"] == "node-2" and doc["compute"]["subscriptionId"] == SUB, "imds: per-VM prefix /_vm/node-2", f"{st} {doc}")

    ev_url = "/metadata/scheduledevents?api-version=2020-07-01"
    st, _, doc = c.call("GET", ev_url, headers={"Metadata": "true"})
    check(st == 200 and doc["Events"] == [] and isinstance(doc["DocumentIncarnation"], int), "events: none scheduled", f"{st} {doc}")
    inc0 = doc["DocumentIncarnation"]
    ev = c.ctl("POST", "/scheduled-events", {"EventType": "Reboot", "Resources": ["node-1", "node-2"], "not_before_s": 600})
    st, _, doc = c.call("GET", ev_url, headers={"Metadata": "true"})
    e = doc["Events"][0] if st == 200 and doc["Events"] else {}
    check(e.get("EventId") == ev["EventId"] and e["EventStatus"] == "Scheduled" and e["NotBefore"].endswith("GMT") and doc["DocumentIncarnation"] > inc0,
          "events: a scheduled Reboot is listed with NotBefore and a new incarnation", f"{st} {doc}")
    inc1 = doc["DocumentIncarnation"]
    st, _, _ = c.call("POST", ev_url, {"StartRequests": [{"EventId": ev["EventId"]}]}, {"Metadata": "true"})
    st2, _, doc = c.call("GET", "/_vm/node-2" + ev_url, headers={"Metadata": "true"})
    check(st == 200 and doc["Events"][0]["EventStatus"] == "Scheduled", "events: one of two VMs acknowledged: still Scheduled", f"{st} {doc}")
    st, _, _ = c.call("POST", "/_vm/node-2" + ev_url, {"StartRequests": [{"EventId": ev["EventId"]}]}, {"Metadata": "true"})
    st2, _, doc = c.call("GET", ev_url, headers={"Metadata": "true"})
    check(st == 200 and doc["Events"][0]["EventStatus"] == "Started" and doc["Events"][0]["NotBefore"] == "" and doc["DocumentIncarnation"] > inc1,
          "events: both acknowledged: Started, NotBefore empty, new incarnation", f"{st} {doc}")
    c.ctl("POST", f"/scheduled-events/{ev['EventId']}/complete")
    st, _, doc = c.call("GET", ev_url, headers={"Metadata": "true"})
    check(st == 200 and doc["Events"] == [], "events: a completed event disappears", f"{st} {doc}")
    ev = c.ctl("POST", "/scheduled-events", {"EventType": "Freeze", "Resources": ["node-1"], "not_before_s": 0.3})
    time.sleep(0.5)
    st, _, doc = c.call("GET", ev_url, headers={"Metadata": "true"})
    check(st == 200 and doc["Events"][0]["EventStatus"] == "Started" and doc["Events"][0]["EventType"] == "Freeze", "events: an event starts by itself at NotBefore", f"{st} {doc}")
    c.ctl("DELETE", f"/scheduled-events/{ev['EventId']}")
    st, _, doc = c.call("POST", ev_url, {"StartRequests": [{"EventId": "no-such-event"}]}, {"Metadata": "true"})
    check(st == 400, "events: acknowledging an unknown event is 400", f"{st} {doc}")


def test_faults(c):
    path = f"{PROVIDER}/Microsoft.Network/loadBalancers/ilb"
    c.ctl("POST", "/faults", {"method": "GET", "path": "/loadBalancers/ilb$", "status": 429, "retry_after": 3, "count": 1})
    st, h, doc = c.arm("GET", path, NET_V)
    check(st == 429 and h.get("retry-after") == "3" and err_code(doc) == "SubscriptionRequestsThrottled", "faults: 429 with Retry-After", f"{st} {h} {doc}")
    st, _, _ = c.arm("GET", path, NET_V)
    check(st == 200, "faults: the 429 was for one request only", st)
    c.ctl("POST", "/faults", {"path": "/loadBalancers/", "status": 503, "count": 2})
    codes = [c.arm("GET", path, NET_V)[0] for _ in range(3)]
    check(codes == [503, 503, 200], "faults: 503 twice, then served", codes)
    c.ctl("POST", "/faults", {"path": "/loadBalancers/", "latency_ms": 300, "count": 1})
    t = time.time()
    st, _, _ = c.arm("GET", path, NET_V)
    took = time.time() - t
    check(st == 200 and took >= 0.3, "faults: added latency", f"{st} {took:.3f}s")
    c.ctl("POST", "/faults", {"path": "^/metadata/identity/", "status": 500, "count": -1})
    st, _, doc = c.call("GET", "/metadata/identity/oauth2/token?api-version=2018-10-01&resource=https://management.azure.com/", headers={"Metadata": "true"})
    check(st == 500 and doc["error"] == "server_error", "faults: IMDS token endpoint down (until cleared)", f"{st} {doc}")
    c.ctl("DELETE", "/faults")
    st, _, _ = c.call("GET", "/metadata/identity/oauth2/token?api-version=2018-10-01&resource=https://management.azure.com/", headers={"Metadata": "true"})
    check(st == 200, "faults: cleared", st)
    log = c.ctl("GET", "/requests")
    check(any(e["status"] == 429 and e["operation"] == "LoadBalancers_Get" for e in log), "request log: records operation and status", len(log))


def violations_for(c, needle_path, needle_problem):
    vs = c.ctl("GET", "/violations")
    return [v for v in vs if needle_path in v["path"] and any(needle_problem in p for p in v["problems"])]


def test_wrong_requests_are_recorded(c):
    c.ctl("DELETE", "/violations")
    rec = f"{PROVIDER}/Microsoft.Network/dnszones/example.com/A/wrong"
    cases = []

    test_api_version(c)
    cases.append(("missing api-version", "/A/www", "missing required query parameter 'api-version'"))
    cases.append(("malformed api-version", "/A/www", "api-version 'latest' is not the spec's"))
    cases.append(("api-version other than the spec's", "/A/www", "api-version '2099-01-01' is not the spec's"))
    st, _, doc = c.arm("PUT", rec, DNS_V, {"properties": {"TTL": "thirty", "ARecords": [{"ipv4Address": "10.0.0.4"}]}})
    check(st == 400 and err_code(doc) == "InvalidRequestContent", "wrong: a string TTL is refused 400 InvalidRequestContent", f"{st} {doc}")
    cases.append(("body with a wrong type", rec, "'thirty' is not of type 'integer'"))
    st, _, doc = c.arm("PUT", rec, DNS_V, {"properties": {"TTL": 30, "ttl": 30, "ARecords": [{"ipv4Address": "10.0.0.4", "ip": "x"}]}})
    check(st == 201, "wrong: an undeclared property is ignored as Azure does (201)", f"{st} {doc}")
    cases.append(("undeclared property in the body", rec, "('ttl' was unexpected)"))
    cases.append(("undeclared nested property", rec, "('ip' was unexpected)"))
    route = f"{PROVIDER}/Microsoft.Network/routeTables/rt-a/routes/bad"
    st, _, doc = c.arm("PUT", route, NET_V, {"properties": {"addressPrefix": "10.1.0.10/32"}})
    check(st == 400, "wrong: a route without nextHopType is refused", f"{st} {doc}")
    cases.append(("missing required body property", route, "'nextHopType' is a required property"))
    c.arm("PUT", route, NET_V, {"properties": {"addressPrefix": "10.1.0.10/32", "nextHopType": "Router"}})
    cases.append(("enum violation in the body", route, "'Router' is not one of"))
    bad_type = f"{PROVIDER}/Microsoft.Network/dnszones/example.com/AA/www"
    c.arm("GET", bad_type, DNS_V)
    cases.append(("record type outside the path enum", bad_type, "path parameter 'recordType'"))
    c.arm("PUT", rec, DNS_V, headers={"Content-Type": "application/json"})
    cases.append(("missing required body", rec, "missing required request body"))
    c.call("PUT", rec + f"?api-version={DNS_V}", raw=b'{"properties": {"TTL": 3}}', headers={"Authorization": f"Bearer {c.token}", "Content-Type": "text/plain"})
    cases.append(("wrong content type", rec, "Content-Type is 'text/plain'"))
    st, _, doc = c.call("GET", "/metadata/identity/oauth2/token?api-version=2018-10-01&resource=https://management.azure.com/")
    check(st == 400 and doc["error"] == "invalid_request", "wrong: IMDS token without Metadata: true is 400 invalid_request", f"{st} {doc}")
    cases.append(("IMDS token without the Metadata header", "/metadata/identity/oauth2/token", "missing required header parameter 'Metadata'"))
    c.call("GET", "/metadata/identity/oauth2/token?api-version=2018-10-01", headers={"Metadata": "true"})
    cases.append(("IMDS token without resource", "/metadata/identity/oauth2/token", "missing required query parameter 'resource'"))
    c.call("POST", "/metadata/scheduledevents?api-version=2020-07-01", {"StartRequest": [{"EventId": "x"}]}, {"Metadata": "true"})
    cases.append(("Scheduled Events ack with a misspelt key", "/metadata/scheduledevents", "'StartRequests' is a required property"))
    c.call("GET", "/metadata/scheduledevents?api-version=2099-01-01", headers={"Metadata": "true"})
    cases.append(("Scheduled Events with an undocumented api-version", "/metadata/scheduledevents", "not a documented Scheduled Events version"))
    c.call("POST", f"/{TENANT}/oauth2/v2.0/token", form={"grant_type": "client_credentials", "client_id": "sp-secret", "client_secret": "s3cret"})
    cases.append(("Entra token request without scope", "/oauth2/v2.0/token", "missing form field 'scope'"))
    c.arm("GET", f"{PROVIDER}/Microsoft.Network/virtualHubs/hub", NET_V)
    cases.append(("ARM path no spec has", "/virtualHubs/hub", "no operation in the specs"))
    c.arm("DELETE", f"{PROVIDER}/Microsoft.Network/dnszones/example.com", DNS_V)
    cases.append(("spec operation the fake does not implement", "/dnszones/example.com", "not implemented by the fake"))

    # The response side: objects seeded outside the spec must be reported when served.
    c.ctl("POST", "/load-balancers", {"subscription": SUB, "resourceGroup": RG, "name": "bad-lb", "probes": [{"name": "p", "protocol": "Icmp", "port": 1}]})
    c.arm("GET", f"{PROVIDER}/Microsoft.Network/loadBalancers/bad-lb", NET_V)
    cases.append(("response with an enum violation", "/loadBalancers/bad-lb", "'Icmp' is not one of"))
    c.ctl("POST", "/record-sets", {"subscription": SUB, "resourceGroup": RG, "zone": "example.com", "type": "A", "name": "odd", "properties": {"TTL": 5, "weight": 3}})
    c.arm("GET", f"{PROVIDER}/Microsoft.Network/dnszones/example.com/A/odd", DNS_V)
    cases.append(("response with an undeclared property", "/dnszones/example.com/A/odd", "('weight' was unexpected)"))

    for what, path, problem in cases:
        found = violations_for(c, path, problem)
        check(bool(found), f"violation recorded: {what}", f"(looked for '{problem}' on {path}); recorded: {json.dumps(c.ctl('GET', '/violations'))[:3000]}")
    directions = {v["direction"] for v in c.ctl("GET", "/violations")}
    check(directions == {"request", "response"}, "violations: both directions are checked", directions)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--specs")
    args = ap.parse_args()
    proc, port = start_fake(args.specs)
    c = Client(port)
    try:
        seed(c)
        test_entra_and_auth(c)
        dns_cycle(c, private=False)
        dns_cycle(c, private=True)
        test_routes(c)
        test_lb_nic_permissions(c)
        test_imds(c)
        test_faults(c)
        vs = c.ctl("GET", "/violations")
        check(vs == [], "no violation after correct requests", json.dumps(vs, indent=1)[:6000])
        test_wrong_requests_are_recorded(c)
        c.ctl("POST", "/reset")
        st = c.ctl("GET", "/state")
        check(st["subscriptions"] == {} and c.ctl("GET", "/violations") == [], "reset empties the state", st["subscriptions"])
    except Exception as e:  # a crash is a failure with its reason, not a traceback only
        import traceback

        traceback.print_exc()
        check(False, "the self-test ran to its end", repr(e))
    finally:
        proc.kill()
        proc.wait()
    print(f"\nazure-fake: {RESULTS['passed']} passed, {RESULTS['failed']} failed")
    return 1 if RESULTS["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
