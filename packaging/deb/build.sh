#!/usr/bin/env bash
# Builds the Debian package of Baton from a `baton` binary that is already built:
#
#   bash packaging/deb/build.sh [--bin PATH] [--out DIR] [--version V]
#
# --bin      the binary to package (default: $CARGO_TARGET_DIR/dist/baton; build it with
#            `cargo build --profile dist --bin baton`: stripped, fat LTO; see Cargo.toml)
# --out      where the .deb goes (default: $CARGO_TARGET_DIR/deb)
# --version  the package version (default: what `baton --version` prints)
# --compress xz (default, for releases) or none (tests: a debug binary is 130 MB)
#
# Prints the path of the .deb on its last line.
#
# The package is staged as a directory tree and built with dpkg-deb (Debian's own tool,
# on every Debian system): no Rust build is needed to package a binary (CI packages its
# debug build), and every file, mode and maintainer script is in this directory to read.
#
# Contents:
#   /usr/bin/baton                                   the binary (agent, CLI, witness)
#   /lib/systemd/system/baton.service                node-agent/systemd/baton.service, ExecStart /usr/bin/baton
#   /lib/systemd/system/baton-witness.service        packaging/deb/baton-witness.service
#   /etc/baton/ (0755)   agent.env, witness.env      conffiles: never overwritten on upgrade once edited
#   /usr/share/doc/baton/                            copyright, README.md, an example baton.toml
#   shell completions and man pages                  only when the binary can generate them:
#       `baton completions bash|zsh|fish` printing the script, and `baton man` printing
#       baton(1) in roff, or `baton man --dir DIR` writing a page per command (the build
#       says which it found)
# Neither unit is enabled or started on install; an upgrade does not restart the agent
# (a restart moves its groups): `systemctl restart baton` when that may happen.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
bin="$target/dist/baton"
out="$target/deb"
version=""
compress=xz
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    --compress) compress="$2"; shift 2 ;;
    *) echo "usage: $0 [--bin PATH] [--out DIR] [--version V] [--compress xz|none]" >&2; exit 2 ;;
  esac
done
[ -x "$bin" ] || { echo "no baton binary at $bin: build it first (cargo build --profile dist --bin baton)" >&2; exit 1; }
for tool in dpkg-deb dpkg-shlibdeps; do
  command -v "$tool" >/dev/null || { echo "$tool is needed (apt-get install dpkg-dev)" >&2; exit 1; }
done
if [ -z "$version" ]; then
  version="$("$bin" --version | awk '{print $2}')"
fi
arch="$(dpkg --print-architecture)"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
root="$stage/root"
install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/baton" \
  "$root/usr/share/doc/baton/examples"

install -m 0755 "$bin" "$root/usr/bin/baton"

# The agent's unit, as in the repository, but for the packaged binary's path.
sed 's#/usr/local/bin/baton#/usr/bin/baton#g' "$repo/node-agent/systemd/baton.service" \
  >"$root/lib/systemd/system/baton.service"
grep -q '^ExecStart=/usr/bin/baton agent ' "$root/lib/systemd/system/baton.service" \
  || { echo "baton.service: ExecStart is not /usr/bin/baton agent after the path change" >&2; exit 1; }
install -m 0644 "$here/baton-witness.service" "$root/lib/systemd/system/baton-witness.service"
chmod 0644 "$root/lib/systemd/system/baton.service"

install -m 0644 "$here/agent.env" "$root/etc/baton/agent.env"
install -m 0644 "$here/witness.env" "$root/etc/baton/witness.env"
printf '/etc/baton/agent.env\n/etc/baton/witness.env\n' >"$root/DEBIAN/conffiles"

install -m 0644 "$repo/README.md" "$root/usr/share/doc/baton/README.md"
install -m 0644 "$here/baton.toml.example" "$root/usr/share/doc/baton/examples/baton.toml"
cat >"$root/usr/share/doc/baton/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: baton

Files: *
License: Apache-2.0
 On Debian systems, the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF

# Shell completions and the man page, when this binary can generate them.
extras=()
if "$bin" completions bash >/dev/null 2>&1; then
  install -d -m 0755 "$root/usr/share/bash-completion/completions" \
    "$root/usr/share/zsh/vendor-completions" "$root/usr/share/fish/vendor_completions.d"
  "$bin" completions bash >"$root/usr/share/bash-completion/completions/baton"
  "$bin" completions zsh >"$root/usr/share/zsh/vendor-completions/_baton"
  "$bin" completions fish >"$root/usr/share/fish/vendor_completions.d/baton.fish"
  chmod 0644 "$root/usr/share/bash-completion/completions/baton" \
    "$root/usr/share/zsh/vendor-completions/_baton" "$root/usr/share/fish/vendor_completions.d/baton.fish"
  extras+=(completions)
fi
if "$bin" man >/dev/null 2>&1; then
  man1="$root/usr/share/man/man1"
  install -d -m 0755 "$man1"
  if "$bin" man --help 2>/dev/null | grep -q -- '--dir'; then
    # baton.1 and one baton-COMMAND.1 per command.
    "$bin" man --dir "$man1"
  else
    "$bin" man >"$man1/baton.1"
  fi
  gzip -9n "$man1"/*.1
  chmod 0644 "$man1"/*.1.gz
  extras+=("man ($(find "$man1" -name '*.1.gz' | wc -l) pages)")
fi
echo "packaging baton $version ($arch) from $bin; generated by the binary: ${extras[*]:-none (it has no completions or man command)}" >&2

for script in postinst prerm postrm; do
  install -m 0755 "$here/$script" "$root/DEBIAN/$script"
done

# Library dependencies, as Debian's own packaging computes them.
mkdir -p "$stage/debian"
printf 'Source: baton\n\nPackage: baton\nArchitecture: any\n' >"$stage/debian/control"
depends="$(cd "$stage" && dpkg-shlibdeps -O -eroot/usr/bin/baton 2>/dev/null | sed -n 's/^shlibs:Depends=//p')"
[ -n "$depends" ] || { echo "dpkg-shlibdeps found no dependencies for the binary" >&2; exit 1; }
# A binary linked with packed relative relocations (node-agent/build.rs) needs the loader
# of glibc 2.36 or later (its GLIBC_ABI_DT_RELR version), which dpkg-shlibdeps does not
# count: it maps the symbols a binary uses, and that version has none.
if LC_ALL=C readelf -V "$root/usr/bin/baton" 2>/dev/null | grep -q 'GLIBC_ABI_DT_RELR'; then
  depends="$(printf '%s' "$depends" | sed -E 's/libc6 \(>= 2\.([0-9]|[12][0-9]|3[0-5])(\.[0-9]+)?\)/libc6 (>= 2.36)/')"
  case "$depends" in
    *"libc6 (>= 2.36)"* | *"libc6 (>= 2.3"[6-9]* | *"libc6 (>= 2."[4-9]*) ;;
    *) echo "the binary needs glibc 2.36 (packed relocations) but Depends says: $depends" >&2; exit 1 ;;
  esac
fi

installed_size="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
cat >"$root/DEBIAN/control" <<EOF
Package: baton
Version: $version
Architecture: $arch
Maintainer: Baton developers <baton@localhost>
Installed-Size: $installed_size
Depends: $depends
Recommends: iproute2, iputils-ping
Suggests: nftables, qemu-utils
Section: admin
Priority: optional
Description: high-availability cluster for the cloud
 Baton keeps a service available by running it on one server of a cluster and
 moving it, with its address, DNS name and data, to a healthy server when
 anything fails. One binary carries the node agent (baton.service), the
 operator CLI and the quorum witness (baton-witness.service).
EOF

(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
  >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums" "$root/DEBIAN/conffiles" "$root/DEBIAN/control"

mkdir -p "$out"
deb="$out/baton_${version}_${arch}.deb"
dpkg-deb --root-owner-group "-Z$compress" --build "$root" "$deb" >&2
echo "$deb"
