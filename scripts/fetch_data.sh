#!/usr/bin/env bash
# Fetches Debian packages' files (not their dependencies) into the ignored cache folder
# .cache/data/<package>/ (apt-get download + dpkg-deb -x), for the examples' real data
# (docs/examples.md). Idempotent: a package already extracted is left alone.
#   bash scripts/fetch_data.sh PACKAGE...        # e.g. emboss-test r-bioc-rcpi
#   EMBER_DATA=/path bash scripts/fetch_data.sh  # another cache folder
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=${EMBER_DATA:-$PWD/.cache/data}
mkdir -p "$root"
updated=0
for pkg in "$@"; do
  if [[ -f $root/$pkg/.extracted ]]; then
    echo "fetch_data: $pkg: cached in $root/$pkg"
    continue
  fi
  tmp=$(mktemp -d)
  chmod 755 "$tmp"  # apt-get download runs as _apt and writes here
  if ! (cd "$tmp" && apt-get download "$pkg" >/dev/null 2>&1); then
    if [[ $updated == 0 ]]; then
      apt-get update >/dev/null
      updated=1
    fi
    (cd "$tmp" && apt-get download "$pkg" >/dev/null) || { echo "fetch_data: cannot download $pkg" >&2; rm -rf "$tmp"; exit 1; }
  fi
  rm -rf "${root:?}/$pkg"
  mkdir -p "$root/$pkg"
  dpkg-deb -x "$tmp"/*.deb "$root/$pkg"
  touch "$root/$pkg/.extracted"
  rm -rf "$tmp"
  echo "fetch_data: $pkg: extracted into $root/$pkg"
done
