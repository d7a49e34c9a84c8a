#!/usr/bin/env bash
# Installs the browser test's npm packages (tests/browser/package-lock.json: playwright-core
# and axe-core, pinned) into a cache directory outside the clone, with `npm ci`. No
# browser is downloaded: the test drives Debian's /usr/bin/chromium.
# Idempotent: does nothing when the cache already has exactly this lock file.
# Prints the directory holding node_modules on the last line.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${BATON_BROWSER_NODE:-$HOME/.cache/baton-browser-node}"
mkdir -p "$dir"
if [ -d "$dir/node_modules/playwright-core" ] && cmp -s "$dir/package-lock.json" "$here/package-lock.json"; then
  echo "$dir"
  exit 0
fi
command -v npm >/dev/null || { echo "npm is needed for the browser test" >&2; exit 1; }
cp "$here/package.json" "$here/package-lock.json" "$dir/"
# --ignore-scripts: nothing runs at install (playwright-core has no browser download of its
# own anyway); PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD for good measure.
(cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
echo "$dir"
