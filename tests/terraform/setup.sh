#!/usr/bin/env bash
# Builds hcltool (tests/terraform/hcltool) with Debian's Go and Debian's packages of
# HashiCorp's HCL and go-cty (no module download), installing them when missing (root).
# Rebuilds only when the source changed. Prints the binary's path on the last line.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${BATON_HCLTOOL_DIR:-${CARGO_TARGET_DIR:-$HOME/.cache/baton-target}/hcltool}"
gocode=/usr/share/gocode
need=()
command -v go >/dev/null 2>&1 || need+=(golang-go)
[ -d "$gocode/src/github.com/hashicorp/hcl/v2" ] || need+=(golang-github-hashicorp-hcl-v2-dev)
[ -d "$gocode/src/github.com/zclconf/go-cty" ] || need+=(golang-github-zclconf-go-cty-dev)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
  else
    echo "hcltool needs ${need[*]} (apt-get install, as root)" >&2
    exit 1
  fi
fi
mkdir -p "$out"
sum="$(cat "$here/hcltool/main.go" | sha256sum | cut -c1-16)"
if [ -x "$out/hcltool" ] && [ "$(cat "$out/hcltool.sum" 2>/dev/null)" = "$sum" ]; then
  echo "$out/hcltool"
  exit 0
fi
(cd "$here/hcltool" && GOPATH="$gocode" GO111MODULE=off GOFLAGS= GOCACHE="$out/go-cache" \
  go build -o "$out/hcltool" .) >&2
echo "$sum" >"$out/hcltool.sum"
echo "$out/hcltool"
