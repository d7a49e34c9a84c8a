"""Smithy RPC v2 CBOR <-> AWS JSON 1.0 translation for moto (CloudWatch).

aws-sdk-cloudwatch >= 1.100 (the AWS SDK for Rust) speaks the Smithy RPC v2 CBOR
protocol:

    POST /service/GraniteServiceVersion20100801/operation/PutMetricData
    smithy-protocol: rpc-v2-cbor
    Content-Type: application/cbor
    <CBOR body; timestamps as CBOR tag 1 (epoch seconds)>

moto 5.2.5 answers that with 404: it knows CloudWatch's query and JSON protocols only.
The JSON protocol (awsJson1_0, `X-Amz-Target: GraniteServiceVersion20100801.<Op>`) has
the same shapes as CBOR, so the translation is mechanical: server.py calls

    request_to_json(environ, body)        -> (environ, body)      for /operation/ paths
    response_to_cbor(status, headers, out) -> (status, headers, out) when BATON_CBOR is set
    error_body(code, msg)                 -> (bytes, content_type, extra_headers)

Values are converted shape by shape with botocore's CloudWatch model (timestamps:
CBOR tag 1 <-> JSON epoch seconds; blobs: bytes <-> base64), so a timestamp in a
response goes back as tag 1, as the SDK requires. Errors go back as a CBOR map
{"__type": code, "message": text} with the `smithy-protocol` header.
"""

import base64
import datetime
import json
import re
import threading

import cbor2

try:
    import botocore.session

    _SESSION = botocore.session.get_session()
except Exception:  # pragma: no cover
    _SESSION = None

PATH_RE = re.compile(r"^/service/([^/]+)/operation/([A-Za-z0-9]+)$")
CBOR_TYPE = "application/cbor"
PROTOCOL_HEADER = ("smithy-protocol", "rpc-v2-cbor")

_MODELS = {}
_LOCAL = threading.local()


def _model(target_prefix):
    """The botocore service model whose JSON target prefix is `target_prefix`."""
    if _SESSION is None:
        return None
    if target_prefix in _MODELS:
        return _MODELS[target_prefix]
    found = None
    for name in ("cloudwatch",):
        try:
            m = _SESSION.get_service_model(name)
        except Exception:  # pragma: no cover
            continue
        if m.metadata.get("targetPrefix") == target_prefix:
            found = m
    _MODELS[target_prefix] = found
    return found


def _to_epoch(v):
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=datetime.timezone.utc)
        return v.timestamp()
    return v


def _to_json(value, shape):
    """A CBOR-decoded value as the JSON protocol writes it."""
    if value is None:
        return None
    t = shape.type_name if shape is not None else None
    if t == "structure":
        return {k: _to_json(v, shape.members.get(k)) for k, v in value.items() if v is not None}
    if t == "list":
        return [_to_json(v, shape.member) for v in value]
    if t == "map":
        return {k: _to_json(v, shape.value) for k, v in value.items()}
    if t == "timestamp":
        return _to_epoch(value)
    if t == "blob":
        return base64.b64encode(value).decode() if isinstance(value, (bytes, bytearray)) else value
    # Untyped (no model): make CBOR-only types JSON-safe.
    if isinstance(value, datetime.datetime):
        return _to_epoch(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _to_json(v, None) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_json(v, None) for v in value]
    return value


def _parse_time(v):
    if isinstance(v, (int, float)):
        return datetime.datetime.fromtimestamp(v, tz=datetime.timezone.utc)
    if isinstance(v, str):
        try:
            return datetime.datetime.fromtimestamp(float(v), tz=datetime.timezone.utc)
        except ValueError:
            d = datetime.datetime.fromisoformat(v.replace("Z", "+00:00"))
            return d if d.tzinfo else d.replace(tzinfo=datetime.timezone.utc)
    return v


def _to_cbor(value, shape):
    """A JSON-protocol value as CBOR wants it (timestamps as datetimes -> tag 1)."""
    if value is None:
        return None
    t = shape.type_name if shape is not None else None
    if t == "structure":
        return {k: _to_cbor(v, shape.members.get(k)) for k, v in value.items() if v is not None}
    if t == "list":
        return [_to_cbor(v, shape.member) for v in value]
    if t == "map":
        return {k: _to_cbor(v, shape.value) for k, v in value.items()}
    if t == "timestamp":
        return _parse_time(value)
    if t == "blob":
        return base64.b64decode(value) if isinstance(value, str) else value
    if t in ("double", "float"):
        return float(value)
    if t in ("integer", "long"):
        return int(value)
    if t == "boolean" and isinstance(value, str):
        return value.lower() == "true"
    return value


def _dumps(obj):
    return cbor2.dumps(obj, datetime_as_timestamp=True, timezone=datetime.timezone.utc)


def request_to_json(environ, body):
    """Rewrite a CBOR request into the JSON protocol request moto understands."""
    m = PATH_RE.match(environ.get("PATH_INFO", ""))
    if not m:
        return environ, body
    prefix, op = m.group(1), m.group(2)
    model = _model(prefix)
    shape = None
    if model is not None:
        try:
            shape = model.operation_model(op).input_shape
        except Exception:
            shape = None
    data = cbor2.loads(body) if body else {}
    converted = _to_json(data, shape) if data is not None else {}
    out = json.dumps(converted or {}).encode()
    environ = dict(environ)
    environ["PATH_INFO"] = "/"
    environ["RAW_URI"] = "/"
    environ["REQUEST_URI"] = "/"
    environ["HTTP_X_AMZ_TARGET"] = f"{prefix}.{op}"
    environ["CONTENT_TYPE"] = "application/x-amz-json-1.0"
    environ["CONTENT_LENGTH"] = str(len(out))
    environ.pop("HTTP_SMITHY_PROTOCOL", None)
    environ.pop("HTTP_ACCEPT", None)
    environ["BATON_CBOR"] = "1"
    environ["BATON_CBOR_OP"] = f"{prefix}.{op}"
    _LOCAL.op = (prefix, op)
    return environ, out


def error_body(code, msg):
    return _dumps({"__type": code, "message": msg}), CBOR_TYPE, [PROTOCOL_HEADER]


def _error_from(out):
    text = out.decode("utf-8", "replace") if isinstance(out, (bytes, bytearray)) else str(out)
    try:
        j = json.loads(text)
        code = j.get("__type") or j.get("code") or j.get("Code") or "InternalFailure"
        code = code.split("#")[-1].split(":")[0]
        return code, j.get("message") or j.get("Message") or ""
    except ValueError:
        c = re.search(r"<Code>([^<]*)</Code>", text)
        mm = re.search(r"<Message>([^<]*)</Message>", text)
        return (c.group(1) if c else "InternalFailure"), (mm.group(1) if mm else text[:200])


def response_to_cbor(status, headers, out):
    """Turn moto's JSON answer back into an RPC v2 CBOR answer."""
    prefix, op = getattr(_LOCAL, "op", (None, None))
    code = int(status.split()[0])
    headers = [(k, v) for (k, v) in headers if k.lower() not in ("content-type", "content-length", "x-amzn-errortype")]
    if code >= 400:
        ecode, msg = _error_from(out)
        body, ctype, extra = error_body(ecode, msg)
        return status, headers + [("Content-Type", ctype)] + extra, body
    shape = None
    model = _model(prefix) if prefix else None
    if model is not None and op:
        try:
            shape = model.operation_model(op).output_shape
        except Exception:
            shape = None
    text = out.decode("utf-8", "replace").strip() if out else ""
    data = json.loads(text) if text else {}
    body = _dumps(_to_cbor(data, shape) if shape is not None else data)
    return status, headers + [("Content-Type", CBOR_TYPE), PROTOCOL_HEADER], body
