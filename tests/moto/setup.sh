#!/usr/bin/env bash
# Installs the Python tools the tests use (moto server, cbor2, aiosmtpd, the cloud fakes'
# validators: openapi-schema-validator, jsonschema, cryptography, and google-api-python-client
# for its discovery documents) into a local venv.
# Idempotent: does nothing when the venv already has exactly tests/moto/requirements.txt.
# Prints the venv's python on the last line.
#
# With --iac it makes the second venv instead, "$BATON_VENV-iac", for the Terraform checks
# (tests/terraform/requirements.txt: checkov and the HCL2 parser), and prints its python:
# checkov pins boto3/botocore to versions that would downgrade moto's.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${BATON_VENV:-$HOME/.cache/baton-venv}"
reqs="$here/requirements.txt"
if [ "${1:-}" = "--iac" ]; then
  venv="$venv-iac"
  reqs="$here/../terraform/requirements.txt"
fi
stamp="$venv/.baton-requirements"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$stamp" "$reqs"; then
  echo "$venv/bin/python"
  exit 0
fi
command -v python3 >/dev/null || { echo "python3 is needed for the AWS emulator" >&2; exit 1; }
if ! python3 -m venv "$venv" >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  else
    echo "python3 -m venv failed (install python3-venv)" >&2; exit 1
  fi
fi
"$venv/bin/pip" install -q --disable-pip-version-check -r "$reqs" >&2
cp "$reqs" "$stamp"
echo "$venv/bin/python"
