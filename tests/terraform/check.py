#!/usr/bin/env python3
"""The Terraform checks that run without Terraform (tests/run-all.sh runs them in CI).

    python tests/terraform/check.py --hcltool PATH --baton PATH [--fix-docs]

1. every .tf file parses (bc-python-hcl2, the parser checkov uses);
2. every .tf file is canonically formatted (hcltool fmt: hclwrite.Format, the formatter
   `terraform fmt` applies);
3. references resolve and declarations are used (hcltool refs): variables, locals,
   module calls and their outputs, resources, data sources, template variables;
4. every module and example pins Terraform and its providers (a lower and an upper bound);
5. each README's inputs/outputs table is the one hcltool doc generates (--fix-docs
   rewrites them);
6. checkov passes, and every suppression says why;
7. for each example (and further input sets of each module): the user data of every
   server is rendered from the inputs (hcltool eval), the baton.toml its cloud-init writes
   passes `baton config check` with no warning and is the same on every server, the
   cluster key is fetched at boot and never rendered into user data, and the IAM policy
   (AWS) or custom role (Azure, Google Cloud) the module grants is what
   `baton cloud iam-policy` prints for that configuration;
8. the validation blocks refuse bad inputs with their messages;
9. every resource and data block uses only arguments and blocks its provider's schema
   has, and all the required ones (tests/terraform/schemas.py: the schemas come from the
   npm registry's prebuilt CDK for Terraform provider packages, one provider version
   each): what `terraform validate` says about names, without the providers.

Prints one line per check and closes with "terraform: N passed, N failed".
"""

import argparse
import atexit
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import hcl2
import yaml

import schemas

REPO = Path(__file__).resolve().parents[2]
TF = REPO / "terraform"
HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- BEGIN_TF_DOCS -->", "<!-- END_TF_DOCS -->"

passed = 0
failed = 0


def ok(name):
    global passed
    passed += 1
    print(f"ok     {name}", flush=True)


def bad(name, why):
    global failed
    failed += 1
    print(f"FAILED {name}", flush=True)
    for line in str(why).rstrip().splitlines():
        print(f"       {line}")


def check(name, cond, why=""):
    if cond:
        ok(name)
    else:
        bad(name, why)


def rel(p):
    return str(Path(p).resolve().relative_to(REPO))


def tf_files():
    return sorted(p for p in TF.rglob("*.tf") if ".terraform" not in p.parts)


def module_dirs():
    return sorted({p.parent for p in tf_files()})


def run(cmd, cwd=None, ok_codes=(0,)):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr


# ---------------------------------------------------------------------------- 1-5


def check_parse():
    for f in tf_files():
        try:
            with open(f) as fh:
                hcl2.load(fh)
            ok(f"parses: {rel(f)}")
        except Exception as e:  # noqa: BLE001 - the parser's error is the message
            bad(f"parses: {rel(f)}", e)


def check_fmt(hcltool):
    files = [str(f) for f in tf_files()]
    code, out, err = run([hcltool, "fmt", *files])
    problems = {line.split(":")[0]: line for line in out.splitlines()}
    if code not in (0, 1):
        bad("hcltool fmt runs", err)
        return
    for f in files:
        check(f"canonically formatted: {rel(f)}", f not in problems,
              problems.get(f, "") + "\n(fix: tests/terraform/hcltool fmt -w FILE, or terraform fmt)")


def check_terraform_fmt():
    """Where a terraform binary happens to be installed, its own fmt must agree too."""
    import shutil
    tf = shutil.which("terraform")
    if tf is None:
        print("note   no terraform binary here: the terraform fmt cross-check does not run (hcltool fmt above does)")
        return
    env = dict(os.environ, TF_CLI_CONFIG_FILE=os.devnull)
    r = subprocess.run([tf, "fmt", "-check", "-recursive", str(TF)], capture_output=True, text=True, env=env)
    check(f"terraform fmt -check agrees ({tf})", r.returncode == 0, r.stdout + r.stderr)


def check_refs(hcltool):
    for d in module_dirs():
        code, out, err = run([hcltool, "refs", "."], cwd=d)
        check(f"references resolve, declarations used: {rel(d)}", code == 0, out + err)


def block_list(v):
    return v if isinstance(v, list) else [v]


def check_schemas(cache):
    try:
        loaded = schemas.load(cache)
    except (RuntimeError, OSError, KeyError, StopIteration) as e:
        bad("provider schemas load (npm pack of the pinned @cdktf/provider-* packages)", e)
        return
    versions = ", ".join(f"{p} {v}" for p, (_, v) in schemas.PACKAGES.items())
    by_file = schemas.check(tf_files(), loaded)
    for d in module_dirs():
        problems = [f"{rel(f)}: {p}" for f, ps in by_file.items() if Path(f).parent == d for p in ps]
        check(f"arguments and blocks exist in the provider schemas, required ones given: {rel(d)}",
              not problems, "\n".join(problems) + f"\n(schemas of the packages {versions})")


def check_pins():
    for d in module_dirs():
        merged = {}
        for f in sorted(d.glob("*.tf")):
            with open(f) as fh:
                doc = hcl2.load(fh)
            for t in doc.get("terraform", []):
                merged.update(t)
        name = f"Terraform and providers pinned: {rel(d)}"
        if "required_version" not in merged:
            bad(name, "no terraform { required_version }")
            continue
        problems = []
        for rp in block_list(merged.get("required_providers", [])):
            for prov, spec in rp.items():
                if isinstance(spec, list) and len(spec) == 1:
                    spec = spec[0]
                if not isinstance(spec, dict) or "source" not in spec or "version" not in spec:
                    problems.append(f"{prov}: needs source and version")
                elif ">=" not in spec["version"] or "<" not in spec["version"].replace("<=", "<"):
                    problems.append(f"{prov}: version {spec['version']!r} needs a lower and an upper bound")
        if not merged.get("required_providers"):
            problems.append("no required_providers")
        check(name, not problems, "\n".join(problems))


def check_docs(hcltool, fix):
    for d in module_dirs():
        readme = d / "README.md"
        name = f"README's inputs and outputs are current: {rel(d)}"
        if not readme.exists():
            bad(name, "no README.md")
            continue
        code, table, err = run([hcltool, "doc", "."], cwd=d)
        if code != 0:
            bad(name, err)
            continue
        text = readme.read_text()
        if BEGIN not in text or END not in text:
            bad(name, f"README.md has no {BEGIN} ... {END} section")
            continue
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        want = f"{head}{BEGIN}\n{table}{END}{tail}"
        if want == text:
            ok(name)
        elif fix:
            readme.write_text(want)
            ok(name + " (rewritten)")
        else:
            bad(name, "stale: python tests/terraform/check.py --fix-docs (or hcltool doc DIR)")


# ---------------------------------------------------------------------------- 6 checkov


def check_checkov(checkov):
    skips = []
    for f in tf_files():
        for n, line in enumerate(f.read_text().splitlines(), 1):
            m = re.search(r"checkov:skip=([A-Z0-9_]+)(?::(.*))?", line)
            if m:
                skips.append((rel(f), n, m.group(1), (m.group(2) or "").strip()))
    unjustified = [f"{f}:{n}: {c}" for f, n, c, why in skips if len(why) < 20]
    check(f"every checkov suppression says why ({len(skips)} suppressions)", not unjustified,
          "a suppression needs a reason after the check id: #checkov:skip=CKV_AWS_1:why\n" + "\n".join(unjustified))
    code, out, err = run([checkov, "-d", str(TF), "--framework", "terraform", "--output", "json",
                          "--compact", "--skip-download", "--download-external-modules", "false"])
    try:
        reports = json.loads(out)
    except json.JSONDecodeError:
        bad("checkov runs", err[-3000:] or out[-3000:])
        return
    if isinstance(reports, dict):
        reports = [reports]
    fails, npass = [], 0
    for r in reports:
        results = r.get("results", {})
        npass += len(results.get("passed_checks", []))
        for c in results.get("failed_checks", []):
            fails.append(f"{c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']}:{c['file_line_range'][0]})")
    check(f"checkov: no failed check ({npass} passed, {len(skips)} suppressed with a reason)", not fails and npass > 0,
          "\n".join(fails) or "checkov ran no check")


# ---------------------------------------------------------------------------- 7-8 rendering


class Renderer:
    def __init__(self, hcltool, baton):
        self.hcltool, self.baton = hcltool, baton
        self.tmp = Path(tempfile.mkdtemp(prefix="baton-tf-"))
        # The rendered configurations and input files are only for this run.
        atexit.register(shutil.rmtree, self.tmp, ignore_errors=True)

    def eval(self, directory, exprs, var_files=(), mocks=None, inputs=None):
        """Evaluates EXPRS in DIRECTORY; returns (values, None) or (None, validation messages)."""
        cmd = [self.hcltool, "eval"]
        for vf in var_files:
            cmd += ["-var-file", str(vf)]
        if inputs is not None:
            vf = self.tmp / f"inputs-{abs(hash(json.dumps(inputs, sort_keys=True)))}.json"
            vf.write_text(json.dumps(inputs))
            cmd += ["-var-file", str(vf)]
        if mocks:
            cmd += ["-mocks", str(mocks)]
        code, out, err = run(cmd + [".", *exprs], cwd=directory)
        if code == 3:
            return None, out.strip()
        if code != 0:
            raise RuntimeError(f"hcltool eval failed in {rel(directory)}: {err.strip()}")
        return json.loads(out), None

    def config_check(self, toml_text, name):
        f = self.tmp / f"{name}.toml"
        f.write_text(toml_text)
        code, out, err = run([self.baton, "config", "check", "--json", str(f)])
        try:
            res = json.loads(out)
        except json.JSONDecodeError:
            return f, f"config check printed no JSON (exit {code}): {out}{err}"
        if code != 0 or not res.get("ok"):
            return f, json.dumps(res, indent=1)
        if res.get("warnings"):
            return f, "warnings: " + json.dumps(res["warnings"], indent=1)
        return f, None

    def printed_policy(self, toml_file, cloud):
        code, out, err = run([self.baton, "cloud", "iam-policy", "--cloud", cloud, "--json", "-c", str(toml_file)])
        if code != 0:
            raise RuntimeError(f"baton cloud iam-policy failed: {out}{err}")
        return out


def cloud_init_files(user_data):
    """The files a cloud-config writes: {path: text}."""
    assert user_data.startswith("#cloud-config\n"), "user data is not a #cloud-config document"
    doc = yaml.safe_load(user_data)
    files = {}
    for wf in doc.get("write_files", []):
        content = wf.get("content", "")
        if wf.get("encoding") in ("b64", "base64"):
            content = base64.b64decode(content).decode()
        files[wf["path"]] = content
    return doc, files


def check_rendering(r, label, directory, prefix, cloud, var_files=(), mocks=None, inputs=None, policy_from=None):
    """Renders one input set and checks its configuration, user data and policy."""
    name = f"{label}"
    exprs = [f"{prefix}baton_toml", f"{prefix}user_data", f"{prefix}{policy_from}"]
    try:
        vals, invalid = r.eval(directory, exprs, var_files, mocks, inputs)
    except RuntimeError as e:
        bad(f"{name}: renders", e)
        return
    if invalid:
        bad(f"{name}: renders", "the inputs were refused:\n" + invalid)
        return
    ok(f"{name}: renders")
    toml_text = vals[exprs[0]]
    user_data = vals[exprs[1]]
    servers = re.findall(r'^\[\[server\]\]\nname = "([^"]+)"', toml_text, re.M)
    problems = []
    for i, ud in enumerate(user_data):
        try:
            doc, files = cloud_init_files(ud)
        except Exception as e:  # noqa: BLE001
            problems.append(f"server {i + 1}: {e}")
            continue
        if files.get("/etc/baton/baton.toml") != toml_text:
            problems.append(f"server {i + 1}: its cloud-init writes another baton.toml than the module's")
        dropin = files.get("/etc/systemd/system/baton.service.d/server.conf", "")
        if i >= len(servers) or f"Environment=BATON_SERVER={servers[i]}\n" not in dropin:
            problems.append(f"server {i + 1}: BATON_SERVER is not its name in baton.toml")
        boot = files.get("/usr/local/sbin/baton-bootstrap", "")
        if not re.search(r"(secretsmanager get-secret-value|ssm get-parameter|vault\.azure\.net/secrets/cluster-key\?api-version=|secretmanager\.googleapis\.com/v1/.*/versions/latest:access)", boot):
            problems.append(f"server {i + 1}: the boot script does not fetch the cluster key from a secret store")
        if "systemctl enable --now baton.service" not in boot or "baton config check" not in boot:
            problems.append(f"server {i + 1}: the boot script does not check the configuration and start the agent")
    check(f"{name}: each server's cloud-init writes the module's baton.toml and its own name "
          f"({len(user_data)} servers)", not problems and len(user_data) == len(servers) > 0, "\n".join(problems))
    toml_file, why = r.config_check(toml_text, re.sub(r"[^A-Za-z0-9_.-]", "_", name))
    check(f"{name}: baton config check accepts it, no warning", why is None, why)
    if why is not None:
        return
    try:
        printed = json.loads(r.printed_policy(toml_file, cloud))
    except (RuntimeError, json.JSONDecodeError) as e:
        bad(f"{name}: baton cloud iam-policy", e)
        return
    granted = vals[exprs[2]]
    granted = json.loads(granted) if isinstance(granted, str) else granted
    what = {"aws": "the instance role's baton policy", "azure": "the custom role's actions",
            "gcp": "the custom role's permissions"}[cloud]
    if cloud == "azure":
        printed = {"actions": sorted(printed["Actions"]), "scopes": sorted(printed["AssignableScopes"])}
    if cloud == "gcp":
        printed = sorted(printed["includedPermissions"])
    check(f"{name}: {what} is what baton cloud iam-policy --cloud {cloud} prints", granted == printed,
          "module:  " + json.dumps(granted, sort_keys=True) + "\nprinted: " + json.dumps(printed, sort_keys=True))


def check_no_key_in_user_data(module_dir, secret_resources):
    """The generated key is referenced only by the secret store's resources."""
    users = []
    for f in sorted(module_dir.glob("*.tf")):
        with open(f) as fh:
            doc = hcl2.load(fh)
        for block in doc.get("resource", []):
            for rtype, named in block.items():
                for rname, body in named.items():
                    if "random_password" in json.dumps(body):
                        users.append(f"{rtype}.{rname}")
        for block in doc.get("locals", []):
            for lname, expr in block.items():
                if "random_password" in json.dumps(expr):
                    users.append(f"local.{lname}")
        for block in doc.get("output", []):
            for oname, body in block.items():
                if "random_password" in json.dumps(body):
                    users.append(f"output.{oname}")
    check(f"the cluster key reaches only the secret store ({rel(module_dir)}: {', '.join(sorted(set(users)))})",
          sorted(set(users)) == sorted(secret_resources), f"used by {users}, expected {secret_resources}")


def check_terraform_renders_the_same(r, label, directory, cloud_mocks, inputs):
    """Where a terraform binary is installed: Terraform's own templatefile renders the
    module's baton.toml template, with the variables hcltool computed for it, to the
    same text as hcltool (a cross-check of the evaluator on the real template)."""
    import shutil
    tf = shutil.which("terraform")
    if tf is None:
        return
    name = f"{label}: terraform's templatefile renders the same baton.toml as hcltool"
    src = (directory / "main.tf").read_text()
    m = re.search(r'templatefile\("\$\{path\.module\}/templates/baton\.toml\.tftpl", (\{\n.*?\n  \})\)', src, re.S)
    if not m:
        bad(name, "main.tf has no templatefile(\"${path.module}/templates/baton.toml.tftpl\", {...}) to compare")
        return
    try:
        vals, invalid = r.eval(directory, [m.group(1), "local.baton_toml"], mocks=cloud_mocks, inputs=inputs)
    except RuntimeError as e:
        bad(name, e)
        return
    if invalid:
        bad(name, invalid)
        return
    env = dict(os.environ, TF_CLI_CONFIG_FILE=os.devnull, TF_IN_AUTOMATION="1")
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "vars.json").write_text(json.dumps(vals[m.group(1)]))
        template = (directory / "templates" / "baton.toml.tftpl").resolve()
        (t / "main.tf").write_text(
            f'output "out" {{\n  value = templatefile("{template}", jsondecode(file("${{path.module}}/vars.json")))\n}}\n')
        steps = [[tf, "init", "-input=false", "-no-color"], [tf, "apply", "-auto-approve", "-input=false", "-no-color"],
                 [tf, "output", "-json", "out"]]
        for cmd in steps:
            res = subprocess.run(cmd, cwd=t, capture_output=True, text=True, env=env)
            if res.returncode != 0:
                bad(name, f"{' '.join(cmd[1:])}: {res.stdout[-1500:]}{res.stderr[-1500:]}")
                return
        rendered = json.loads(res.stdout)
    check(name, rendered == vals["local.baton_toml"], "terraform and hcltool differ")


def check_policy_wiring(module_dir, resource, attribute, local_name, output):
    """The role/policy resource and the output both use the local the test compares."""
    found_res = found_out = None
    for f in sorted(module_dir.glob("*.tf")):
        with open(f) as fh:
            doc = hcl2.load(fh)
        for block in doc.get("resource", []):
            rtype, rname = resource.split(".")
            if rtype in block and rname in block[rtype]:
                found_res = json.dumps(block[rtype][rname].get(attribute))
        for block in doc.get("output", []):
            if output in block:
                found_out = json.dumps(block[output].get("value"))
    want = f"local.{local_name}"
    check(f"{rel(module_dir)}: {resource}.{attribute} and output {output} are both {want}",
          found_res is not None and want in found_res and found_out is not None and want in found_out,
          f"{resource}.{attribute} = {found_res}; output {output} = {found_out}")


def check_validation(r, directory, mocks, base, cases):
    for label, change, message in cases:
        inputs = dict(base, **change)
        try:
            vals, invalid = r.eval(directory, ["local.baton_toml"], mocks=mocks, inputs=inputs)
        except RuntimeError as e:
            bad(f"validation: {label}", e)
            continue
        check(f"validation refuses {label}", invalid is not None and message in invalid,
              f"expected a refusal containing {message!r}; got: {invalid or 'accepted'}")


AWS_BASE = {"name": "orders", "pattern": "vip", "vip_address": "10.200.0.10",
            "package_url": "https://example.com/baton_0.1.0_amd64.deb"}

AWS_CASES = [
    ("an even server count without a witness", {"server_count": 2}, "an even number of servers needs a witness"),
    ("an unknown pattern", {"pattern": "anycast"}, 'pattern must be "vip", "eip" or "dns"'),
    ("a VIP pattern without a VIP", {"vip_address": None}, 'pattern "vip" needs vip_address'),
    ("a cluster name AWS cannot use", {"name": "Orders_1"}, "name must be 2 to 32 lower-case"),
    ("an existing VPC without subnets", {"vpc_id": "vpc-0a1b2c3d4e5f60718", "route_table_ids": ["rtb-0a11111111111111a"]},
     "subnet_ids must list server_count different subnets"),
    ("a VIP in an existing VPC without route tables",
     {"vpc_id": "vpc-0a1b2c3d4e5f60718", "subnet_ids": ["subnet-1", "subnet-2", "subnet-3"]}, "needs route_table_ids"),
    ("an API open to the Internet", {"admin_cidrs": ["0.0.0.0/0"]}, "not 0.0.0.0/0"),
    ("a package that is not a .deb", {"package_url": "https://example.com/baton.tar.gz"}, "package_url must be"),
    ("a DNS record outside the zone", {"pattern": "dns", "dns_zone_name": "orders.internal",
                                       "dns_record_name": "db.example.com."}, "must lie in dns_zone_name"),
    ("a service port that is Baton's", {"service_ports": [7421]}, "not Baton's own ports"),
    ("an HTTP witness without its URL", {"witness": "http"}, 'witness "http" needs witness_url'),
]

AWS_SETS = [
    ("aws-cluster, existing VPC, vip, s3 witness, 4 servers, admin network",
     {"vpc_id": "vpc-0a1b2c3d4e5f60718", "server_count": 4, "witness": "s3",
      "subnet_ids": ["subnet-0aaa1111111111111", "subnet-0bbb2222222222222", "subnet-0ccc3333333333333", "subnet-0ddd4444444444444"],
      "route_table_ids": ["rtb-0c33333333333333c"], "admin_cidrs": ["192.0.2.0/24"]}),
    ("aws-cluster, eip with a given allocation, http witness, 2 servers, ssm, no alerts or metrics",
     {"pattern": "eip", "eip_allocation_id": "eipalloc-0fedcba9876543210", "server_count": 2, "witness": "http",
      "witness_url": "http://10.9.0.5:7430", "key_store": "ssm", "notifications": False, "metrics": False}),
    ("aws-cluster, dns in a given public zone, 5 servers, extra configuration",
     {"pattern": "dns", "dns_zone_id": "/hostedzone/Z9876543210ZYXWVUTSRQ", "dns_record_name": "app.example.com.",
      "server_count": 5, "extra_config": '[[monitor]]\nkind = "tcp"\nname = "app-port"\ngroup = "service"\nhost = "127.0.0.1"\nport = 8080\n'}),
    ("aws-cluster, eip, dynamodb witness, 2 servers, alerts and metrics",
     {"pattern": "eip", "server_count": 2, "witness": "dynamodb"}),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hcltool", required=True)
    ap.add_argument("--baton", required=True)
    ap.add_argument("--checkov", default=str(Path(sys.executable).parent / "checkov"))
    ap.add_argument("--fix-docs", action="store_true")
    ap.add_argument("--no-checkov", action="store_true", help="for quick hand runs only")
    ap.add_argument("--schema-cache", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/baton-target")), "tf-schemas"))
    a = ap.parse_args()

    check_parse()
    check_fmt(a.hcltool)
    check_terraform_fmt()
    check_refs(a.hcltool)
    check_pins()
    check_schemas(a.schema_cache)
    check_docs(a.hcltool, a.fix_docs)
    if not a.no_checkov:
        check_checkov(a.checkov)

    r = Renderer(a.hcltool, a.baton)
    aws = TF / "modules" / "aws-cluster"
    mocks_aws = HERE / "mocks-aws.json"
    for ex in ("aws-vip", "aws-eip", "aws-dns"):
        d = TF / "examples" / ex
        check_rendering(r, f"examples/{ex}", d, "module.cluster.", "aws",
                        var_files=[d / "terraform.tfvars.example"], mocks=mocks_aws, policy_from="iam_policy_json")
    for label, inputs in AWS_SETS:
        check_rendering(r, label, aws, "local.", "aws", mocks=mocks_aws,
                        inputs=dict(AWS_BASE, **inputs), policy_from="baton_policy")
    check_terraform_renders_the_same(r, AWS_SETS[0][0], aws, mocks_aws, dict(AWS_BASE, **AWS_SETS[0][1]))
    check_policy_wiring(aws, "aws_iam_role_policy.baton", "policy", "baton_policy", "iam_policy_json")
    check_no_key_in_user_data(aws, ["aws_secretsmanager_secret_version.key", "aws_ssm_parameter.key"])
    check_validation(r, aws, mocks_aws, AWS_BASE, AWS_CASES)

    for cloud_check in EXTRA_CLOUDS:
        cloud_check(r)

    print(f"terraform: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


AZURE_BASE = {"name": "orders", "location": "westeurope", "pattern": "lb-probe", "service_ports": [5432],
              "admin_ssh_public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKbaton operator",
              "package_url": "https://example.blob.core.windows.net/pkg/baton_0.1.0_amd64.deb"}

AZURE_SETS = [
    ("azure-cluster, lb-probe, 3 servers, PostgreSQL", {"app_unit": "postgresql.service"}),
    ("azure-cluster, vip, given resource group, admin network", {"pattern": "vip", "vip_address": "10.9.0.10",
                                                                 "resource_group_name": "rg-platform",
                                                                 "admin_cidrs": ["192.0.2.0/24"]}),
    ("azure-cluster, dns, 2 servers and an HTTP witness", {"pattern": "dns", "dns_zone_name": "orders.internal",
                                                           "server_count": 2, "witness_url": "http://10.1.0.5:7430"}),
]

AZURE_CASES = [
    ("an even server count without a witness (azure)", {"server_count": 4}, "an even number of servers needs a witness"),
    ("a name too long for a key vault (azure)", {"name": "orders-production-eu"}, "name must be 2 to 16"),
    ("a VIP pattern without a VIP (azure)", {"pattern": "vip"}, 'pattern "vip" needs vip_address'),
    ("a DNS pattern without a zone (azure)", {"pattern": "dns"}, 'pattern "dns" needs dns_zone_name'),
    ("a package URL that is not https (azure)", {"package_url": "http://example.com/baton.deb"}, "package_url must be"),
    ("a load balancer without service ports (azure)", {"service_ports": []}, 'pattern "lb-probe" needs service_ports'),
]


def check_azure(r):
    d = TF / "modules" / "azure-cluster"
    mocks = HERE / "mocks-azure.json"
    for label, inputs in AZURE_SETS:
        check_rendering(r, label, d, "local.", "azure", mocks=mocks,
                        inputs=dict(AZURE_BASE, **inputs), policy_from="custom_role")
    check_terraform_renders_the_same(r, AZURE_SETS[1][0], d, mocks, dict(AZURE_BASE, **AZURE_SETS[1][1]))
    check_policy_wiring(d, "azurerm_role_definition.baton", "permissions", "custom_role", "custom_role")
    check_no_key_in_user_data(d, ["azurerm_key_vault_secret.cluster_key"])
    check_validation(r, d, mocks, AZURE_BASE, AZURE_CASES)


GCP_BASE = {"name": "orders", "project": "orders-prod", "region": "us-central1",
            "zones": ["us-central1-a", "us-central1-b", "us-central1-c"], "pattern": "dns",
            "dns_name": "orders.internal.", "package_url": "https://storage.googleapis.com/pkg/baton_0.1.0_amd64.deb"}

GCP_SETS = [
    ("gcp-cluster, dns, 3 servers", {"service_ports": [5432]}),
    ("gcp-cluster, vip route, PostgreSQL, admin network", {"pattern": "vip", "vip_address": "10.200.0.10",
                                                           "app_unit": "postgresql.service", "admin_cidrs": ["192.0.2.0/24"]}),
    ("gcp-cluster, lb-probe, 2 servers and an HTTP witness", {"pattern": "lb-probe", "service_ports": [443],
                                                              "server_count": 2, "witness_url": "http://10.1.0.5:7430"}),
]

GCP_CASES = [
    ("an even server count without a witness (gcp)", {"server_count": 2}, "an even number of servers needs a witness"),
    ("a DNS pattern without a zone name (gcp)", {"dns_name": None}, 'pattern "dns" needs dns_name'),
    ("a VIP pattern without a VIP (gcp)", {"pattern": "vip"}, 'pattern "vip" needs vip_address'),
    ("no zones (gcp)", {"zones": []}, "zones must name at least one zone"),
    ("a load balancer without service ports (gcp)", {"pattern": "lb-probe"}, 'pattern "lb-probe" needs service_ports'),
]


def check_gcp(r):
    d = TF / "modules" / "gcp-cluster"
    mocks = HERE / "mocks-gcp.json"
    for label, inputs in GCP_SETS:
        check_rendering(r, label, d, "local.", "gcp", mocks=mocks,
                        inputs=dict(GCP_BASE, **inputs), policy_from="role_permissions")
    check_terraform_renders_the_same(r, GCP_SETS[0][0], d, mocks, dict(GCP_BASE, **GCP_SETS[0][1]))
    check_policy_wiring(d, "google_project_iam_custom_role.baton", "permissions", "role_permissions", "role_permissions")
    check_no_key_in_user_data(d, ["google_secret_manager_secret_version.cluster_key"])
    check_validation(r, d, mocks, GCP_BASE, GCP_CASES)


# Azure and Google Cloud modules register their checks here.
EXTRA_CLOUDS = [check_azure, check_gcp]

if __name__ == "__main__":
    sys.exit(main())
