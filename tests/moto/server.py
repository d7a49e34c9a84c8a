"""moto server for Baton's tests, with fault injection and call counting.

Runs moto's WSGI application in-process behind a thin middleware that can:
  * fail chosen operations (throttling, 5xx, any AWS error code) a number of times,
  * add latency to chosen operations, or make them hang past the client's timeout,
  * override the state of an availability zone in DescribeAvailabilityZones,
  * count the API calls it served per (service, operation),
  * translate CloudWatch's Smithy RPC v2 CBOR protocol to the JSON protocol moto speaks
    (cbor_shim.py), so the current AWS SDK for Rust can talk to it.

Control endpoints (plain JSON, never reached by the SDK):
  POST /_baton/faults   {"operation": "ReplaceRoute", "error": "RequestLimitExceeded",
                         "status": 503, "count": 3, "latency_ms": 0}
                        ("count": -1 = until cleared; "error": null = latency only)
  DELETE /_baton/faults clear every fault
  POST /_baton/az       {"zone": "us-east-1a", "state": "impaired"}
  DELETE /_baton/az     clear every override
  GET  /_baton/calls    {"ec2.ReplaceRoute": 2, ...}   DELETE resets the counters
  GET  /_baton/log      [{"t": epoch_s, "op": "ec2.ReplaceRoute", "status": 200}, ...]

Usage: python server.py [--host 127.0.0.1] [--port 0]
Prints "LISTENING <port>" on stdout once it accepts connections.
"""

import argparse
import io
import json
import re
import sys
import threading
import time
import urllib.parse

from werkzeug.serving import make_server
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

try:
    import cbor_shim  # noqa: F401  (optional: the CloudWatch CBOR translation)
except ImportError:  # pragma: no cover
    cbor_shim = None

LOCK = threading.Lock()
FAULTS = []  # dicts: operation, error, status, count, latency_ms, message
AZ_STATE = {}
CALLS = {}
LOG = []

EC2_ERROR = """<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>{code}</Code><Message>{msg}</Message></Error></Errors><RequestID>baton-fault</RequestID></Response>"""
R53_ERROR = """<?xml version="1.0" encoding="UTF-8"?>
<ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Error><Type>Sender</Type><Code>{code}</Code><Message>{msg}</Message></Error><RequestId>baton-fault</RequestId></ErrorResponse>"""
S3_ERROR = """<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>{code}</Code><Message>{msg}</Message><RequestId>baton-fault</RequestId></Error>"""
QUERY_ERROR = """<?xml version="1.0" encoding="UTF-8"?>
<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{msg}</Message></Error><RequestId>baton-fault</RequestId></ErrorResponse>"""

R53_PATHS = [
    (r"^/2013-04-01/hostedzone/[^/]+/rrset/?$", "POST", "ChangeResourceRecordSets"),
    (r"^/2013-04-01/hostedzone/[^/]+/rrset/?$", "GET", "ListResourceRecordSets"),
    (r"^/2013-04-01/change/[^/]+$", "GET", "GetChange"),
    (r"^/2013-04-01/hostedzone/[^/]+$", "GET", "GetHostedZone"),
    (r"^/2013-04-01/hostedzone/?$", "GET", "ListHostedZones"),
    (r"^/2013-04-01/hostedzone/?$", "POST", "CreateHostedZone"),
    (r"^/2013-04-01/hostedzonesbyname/?$", "GET", "ListHostedZonesByName"),
]


def service_of(environ):
    auth = environ.get("HTTP_AUTHORIZATION", "")
    m = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/", auth)
    if m:
        return m.group(1)
    return "unknown"


def operation_of(environ, body, service):
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return target.split(".")[-1]
    path = environ.get("PATH_INFO", "")
    m = re.search(r"/operation/([A-Za-z0-9]+)$", path)
    if m:
        return m.group(1)
    ctype = environ.get("CONTENT_TYPE", "")
    if body and "x-www-form-urlencoded" in ctype:
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        if "Action" in form:
            return form["Action"][0]
    qs = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    if "Action" in qs:
        return qs["Action"][0]
    method = environ.get("REQUEST_METHOD", "GET")
    if service == "route53":
        for pat, meth, op in R53_PATHS:
            if meth == method and re.match(pat, path):
                return op
    if service == "s3":
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 2:
            return {"GET": "GetObject", "PUT": "PutObject", "DELETE": "DeleteObject", "HEAD": "HeadObject"}.get(method, method)
        return {"GET": "ListObjects", "PUT": "CreateBucket", "DELETE": "DeleteBucket", "HEAD": "HeadBucket"}.get(method, method)
    return method + " " + path


def error_response(start_response, service, environ, code, status, msg):
    protocol_json = bool(environ.get("HTTP_X_AMZ_TARGET")) or "json" in environ.get("CONTENT_TYPE", "")
    cbor = "/operation/" in environ.get("PATH_INFO", "") or bool(environ.get("BATON_CBOR"))
    if cbor and cbor_shim is not None:
        body, ctype, extra = cbor_shim.error_body(code, msg)
        start_response(f"{status} Error", [("Content-Type", ctype)] + extra)
        return [body]
    if protocol_json:
        body = json.dumps({"__type": code, "message": msg}).encode()
        start_response(f"{status} Error", [("Content-Type", "application/x-amz-json-1.0"), ("x-amzn-ErrorType", code)])
        return [body]
    if service == "ec2":
        body = EC2_ERROR.format(code=code, msg=msg)
    elif service == "route53":
        body = R53_ERROR.format(code=code, msg=msg)
    elif service == "s3":
        body = S3_ERROR.format(code=code, msg=msg)
    else:
        body = QUERY_ERROR.format(code=code, msg=msg)
    start_response(f"{status} Error", [("Content-Type", "text/xml")])
    return [body.encode()]


def json_reply(start_response, obj, status="200 OK"):
    body = json.dumps(obj).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


class Middleware:
    def __init__(self, app):
        self.app = app

    def control(self, environ, start_response, body):
        path = environ["PATH_INFO"]
        method = environ["REQUEST_METHOD"]
        with LOCK:
            if path == "/_baton/faults":
                if method == "POST":
                    f = json.loads(body or b"{}")
                    f.setdefault("count", 1)
                    f.setdefault("latency_ms", 0)
                    f.setdefault("status", 503 if f.get("error") else 200)
                    f.setdefault("message", "injected by the Baton test harness")
                    FAULTS.append(f)
                    return json_reply(start_response, {"faults": FAULTS})
                if method == "DELETE":
                    FAULTS.clear()
                    return json_reply(start_response, {"faults": []})
                return json_reply(start_response, {"faults": FAULTS})
            if path == "/_baton/az":
                if method == "POST":
                    f = json.loads(body or b"{}")
                    AZ_STATE[f["zone"]] = f["state"]
                elif method == "DELETE":
                    AZ_STATE.clear()
                return json_reply(start_response, AZ_STATE)
            if path == "/_baton/calls":
                if method == "DELETE":
                    CALLS.clear()
                    LOG.clear()
                return json_reply(start_response, CALLS)
            if path == "/_baton/log":
                return json_reply(start_response, LOG[-5000:])
        return json_reply(start_response, {"error": "unknown control path"}, "404 Not Found")

    def __call__(self, environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        if environ.get("PATH_INFO", "").startswith("/_baton/"):
            return self.control(environ, start_response, body)
        service = service_of(environ)
        if cbor_shim is not None and "/operation/" in environ.get("PATH_INFO", ""):
            environ, body = cbor_shim.request_to_json(environ, body)
        op = operation_of(environ, body, service)
        key = f"{service}.{op}"
        fault = None
        with LOCK:
            CALLS[key] = CALLS.get(key, 0) + 1
            for f in FAULTS:
                if f["operation"] in (op, key, "*") and f["count"] != 0:
                    fault = dict(f)
                    if f["count"] > 0:
                        f["count"] -= 1
                    break
            FAULTS[:] = [f for f in FAULTS if f["count"] != 0]
        if fault and fault.get("latency_ms"):
            time.sleep(fault["latency_ms"] / 1000.0)
        if fault and fault.get("error"):
            with LOCK:
                LOG.append({"t": time.time(), "op": key, "status": fault["status"]})
            return error_response(start_response, service, environ, fault["error"], fault["status"], fault["message"])
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"] = status
            captured["headers"] = headers
            return lambda data: None

        chunks = self.app(environ, capture)
        out = b"".join(chunks)
        if hasattr(chunks, "close"):
            chunks.close()
        status = captured.get("status", "500 Internal Server Error")
        headers = [(k, v) for (k, v) in captured.get("headers", []) if k.lower() != "content-length"]
        if op == "DescribeAvailabilityZones" and AZ_STATE:
            text = out.decode("utf-8", "replace")
            for zone, state in AZ_STATE.items():
                text = re.sub(
                    r"(<zoneName>" + re.escape(zone) + r"</zoneName>.*?<zoneState>)[^<]*(</zoneState>)",
                    r"\g<1>" + state + r"\g<2>",
                    text,
                    flags=re.S,
                )
            out = text.encode()
        if cbor_shim is not None and environ.get("BATON_CBOR"):
            status, headers, out = cbor_shim.response_to_cbor(status, headers, out)
        with LOCK:
            LOG.append({"t": time.time(), "op": key, "status": int(status.split()[0])})
        headers.append(("Content-Length", str(len(out))))
        start_response(status, headers)
        return [out]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    app = Middleware(DomainDispatcherApplication(create_backend_app))
    server = make_server(args.host, args.port, app, threaded=True)
    print(f"LISTENING {server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
