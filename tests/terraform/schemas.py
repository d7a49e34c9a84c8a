"""Provider schemas for the Terraform checks, without the providers.

Terraform providers cannot be downloaded on the project's machines, so `terraform validate`
cannot run here. The schemas of the providers are in the npm registry all the same: the
CDK for Terraform's prebuilt provider packages (@cdktf/provider-aws, ...) are generated
from `terraform providers schema` of one provider version each, and their jsii assembly
(`package/.jsii`) lists every resource and data source with its arguments and blocks,
which are required, and the Terraform name of each (in its documentation link).

`load(cache)` fetches the pinned packages with `npm pack` once, reduces each assembly to
{"resource"|"data": {TYPE: {NAME: {"required": bool, "block": {...} | None}}}}, and caches
that as JSON. `check(files, schemas)` reports, for every resource and data block of the
modules, arguments and blocks the schema does not know and required arguments that are
missing: what `terraform validate` would say about names, not about values or types.
"""

import json
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

import hcl2

# Provider -> (npm package, version): the last versions of the prebuilt packages, and the
# provider version each was generated from (inside the pins of the modules'
# required_providers).
PACKAGES = {
    "aws": ("@cdktf/provider-aws", "21.9.1"),  # hashicorp/aws 6.11.0
    "azurerm": ("@cdktf/provider-azurerm", "14.23.1"),  # hashicorp/azurerm 4.55.0
    "google": ("@cdktf/provider-google", "16.12.1"),  # hashicorp/google 6.50.0
    "random": ("@cdktf/provider-random", "12.0.1"),  # hashicorp/random 3.7.2
}

META = {"count", "for_each", "provider", "depends_on", "lifecycle", "connection", "provisioner"}


def _snake(camel):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()


def _tf_name(prop):
    docs = prop.get("docs", {})
    text = f"{docs.get('summary', '')} {docs.get('remarks', '')}"
    m = re.search(r"#([A-Za-z0-9_]+)\s", text)
    return m.group(1) if m else _snake(prop["name"])


def _fqns(t):
    """Every struct type named inside a jsii type reference."""
    if not isinstance(t, dict):
        return []
    if "fqn" in t:
        return [t["fqn"]]
    out = []
    if "collection" in t:
        out += _fqns(t["collection"].get("elementtype"))
    if "union" in t:
        for u in t["union"]["types"]:
            out += _fqns(u)
    return out


def _reduce(assembly, prefix):
    types = assembly["types"]

    def struct(fqn, depth=0):
        t = types.get(fqn)
        if t is None or depth > 12:
            return {}
        out = {}
        for p in t.get("properties", []):
            block = None
            for f in _fqns(p.get("type")):
                if f.startswith(prefix) and types.get(f, {}).get("datatype"):
                    block = struct(f, depth + 1)
                    break
            out[_tf_name(p)] = {"required": not p.get("optional", False), "block": block}
        return out

    schema = {"resource": {}, "data": {}}
    for fqn, t in types.items():
        if t.get("kind") != "class" or not fqn.startswith(prefix):
            continue
        m = re.search(r"docs/(resources|data-sources)/\S+ ([a-z0-9_]+)\}", t.get("docs", {}).get("summary", ""))
        if not m:
            continue
        params = t.get("initializer", {}).get("parameters", [])
        config = next((p for p in params if p["name"] == "config"), None)
        if config is None or "fqn" not in config["type"]:
            continue
        kind = "resource" if m.group(1) == "resources" else "data"
        schema[kind][m.group(2)] = struct(config["type"]["fqn"])
    return schema


def load(cache):
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    schemas = {}
    for provider, (package, version) in PACKAGES.items():
        path = cache / f"{provider}-{version}.schema.json"
        if not path.exists():
            with tempfile.TemporaryDirectory() as tmp:
                r = subprocess.run(["npm", "pack", "--silent", f"{package}@{version}", "--pack-destination", tmp],
                                   capture_output=True, text=True)
                if r.returncode != 0:
                    raise RuntimeError(f"npm pack {package}@{version} failed: {r.stderr.strip()}")
                tgz = next(Path(tmp).glob("*.tgz"))
                with tarfile.open(tgz) as tar:
                    assembly = json.load(tar.extractfile("package/.jsii"))
            reduced = _reduce(assembly, f"{package}.")
            del assembly
            tmp_path = path.with_suffix(".tmp")
            tmp_path.write_text(json.dumps(reduced))
            tmp_path.rename(path)
        schemas[provider] = json.loads(path.read_text())
    return schemas


def _body_problems(body, schema, where):
    problems = []
    given = set()
    for key, value in body.items():
        if key.startswith("__") or key in META:
            continue
        if key == "dynamic":
            for dyn in value:
                for name, spec in dyn.items():
                    given.add(name)
                    entry = schema.get(name)
                    if entry is None or entry["block"] is None:
                        problems.append(f"{where}: no block `{name}` (dynamic)")
                        continue
                    for content in spec.get("content", []):
                        problems += _body_problems(content, entry["block"], f"{where}.{name}")
            continue
        given.add(key)
        entry = schema.get(key)
        if entry is None:
            close = sorted(schema)[:0]
            problems.append(f"{where}: unknown argument or block `{key}`" + (f" (known: {', '.join(close)})" if close else ""))
            continue
        # A nested block is parsed as a list of bodies; an attribute holding an object is not.
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value) and entry["block"] is not None:
            for v in value:
                problems += _body_problems(v, entry["block"], f"{where}.{key}")
    for name, entry in schema.items():
        if entry["required"] and name not in given and name not in ("id",):
            problems.append(f"{where}: required argument or block `{name}` is missing")
    return problems


def check(files, schemas):
    """{file: [problems]} for every resource and data block whose provider has a schema."""
    out = {}
    for f in files:
        with open(f) as fh:
            doc = hcl2.load(fh)
        problems = []
        for kind in ("resource", "data"):
            for block in doc.get(kind, []):
                for rtype, named in block.items():
                    provider = rtype.split("_", 1)[0]
                    if provider not in schemas:
                        continue
                    schema = schemas[provider][kind].get(rtype)
                    if schema is None:
                        problems.append(f"{kind} type {rtype} does not exist in the {provider} provider")
                        continue
                    for rname, body in named.items():
                        problems += _body_problems(body, schema, f"{rtype}.{rname}")
        out[f] = problems
    return out
