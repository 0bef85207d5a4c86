#!/usr/bin/env bash
# Debian's own HAProxy builds of later branches, for the tests' version matrix, beside the
# machine's HAProxy (bookworm's 2.6) and without installing anything: each version's binary
# package and the shared libraries it links are unpacked into a private root under a cache
# folder, and run through a `haproxy` launcher that starts that root's own loader.
#
#   bash deploy/haproxy-versions.sh 3.0 3.2 3.4    # prints, per version, the launcher's folder
#
# A version comes from the Debian suite that ships that branch today (see SUITES). The
# machine's apt configuration is left alone: apt reads a private sources file, keeps its
# lists and caches in a temp folder, and nothing goes through dpkg's database.
# HAFLEET_HAPROXY_CACHE moves the cache (default /var/cache/hafleet-test); a version whose
# launcher already answers `-v` with its major.minor is not downloaded again.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

cache=${HAFLEET_HAPROXY_CACHE:-/var/cache/hafleet-test}

# Which suite ships which branch: when Debian moves a branch, the version check after the
# unpack says so rather than a launcher of the wrong branch being cached.
declare -A SUITES=([3.0]=trixie [3.2]=sid [3.4]=experimental)
# experimental holds only what differs from sid: its haproxy's libraries come from sid.
declare -A LIB_SUITES=([trixie]=trixie [sid]=sid [experimental]=sid)
LIBS=(libc6 libcrypt1 libjemalloc2 liblua5.4-0 libopentracing-c-wrapper0t64 libopentracing1
  libpcre2-8-0 libssl3t64 zlib1g libstdc++6 libgcc-s1 libzstd1)
# The launcher names the loader and library folders of this one architecture.
MULTIARCH=x86_64-linux-gnu
LOADER=ld-linux-x86-64.so.2

usage() {
  echo "usage: $0 VERSION... (of: ${!SUITES[*]}); HAFLEET_HAPROXY_CACHE=$cache" >&2
  exit 2
}
[ $# -gt 0 ] || usage
for version in "$@"; do
  [ -n "${SUITES[$version]:-}" ] || usage
done
if [ "$(dpkg --print-architecture)" != amd64 ]; then
  echo "haproxy-versions: only amd64 is supported (the launcher names $LOADER)" >&2
  exit 1
fi

launcher() { echo "$cache/haproxy-$1/bin/haproxy"; }

# "HAProxy version 3.2.26-1 2025/..." -> 3.2
running_branch() {
  "$1" -v 2>/dev/null | sed -n '1s/^HAProxy version \([0-9]*\.[0-9]*\)[.-].*/\1/p' || true
}

# Debian's main archive as this machine's own apt sources name it, so a mirror set up here is
# used for the other suites too.
debian_uri() {
  local uri
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
    awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }')
  if [ -z "$uri" ]; then
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\/.*\/debian\/?$/) { print $i; exit } }')
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

mkdir -p "$cache"
# Two runs at once (a developer and CI, or two shells) would unpack into the same root.
exec 9>"$cache/.haproxy-versions.lock"
if ! flock -w 1800 9; then
  echo "haproxy-versions: $cache is locked by another run for 30 minutes; giving up" >&2
  exit 1
fi

missing=()
for version in "$@"; do
  if [ "$(running_branch "$(launcher "$version")")" != "$version" ]; then missing+=("$version"); fi
done

if [ ${#missing[@]} -gt 0 ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # apt fetches as its sandbox user: the lists, the caches and the download folder are its.
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs"
  chown -R _apt "$work" 2>/dev/null || true

  # One sources file with every suite needed now, so one `update` fetches each index once.
  declare -A wanted=()
  for version in "${missing[@]}"; do
    suite=${SUITES[$version]}
    wanted[$suite]=1
    wanted[${LIB_SUITES[$suite]}]=1
  done
  cat >"$work/hafleet.sources" <<SOURCES
Types: deb
URIs: $(debian_uri)
Suites: ${!wanted[*]}
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  # Private everything: the machine's sources, pins, lists and package caches stay as they are.
  apt=(apt-get -q -o "Dir::Etc::sourcelist=$work/hafleet.sources" -o Dir::Etc::sourceparts=/dev/null
    -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
    -o Dir::Etc::preferences=/dev/null -o Dir::Etc::preferencesparts=/dev/null
    -o Acquire::Languages=none -o APT::Architectures=amd64)
  started=$SECONDS
  echo "haproxy-versions: apt-get update (${!wanted[*]}) into $work" >&2
  "${apt[@]}" -qq update >&2
  echo "haproxy-versions: indexes in $((SECONDS - started)) s" >&2

  for version in "${missing[@]}"; do
    started=$SECONDS
    suite=${SUITES[$version]}
    libs=${LIB_SUITES[$suite]}
    debs="$work/debs/$version"
    mkdir -p "$debs"
    chown _apt "$debs" 2>/dev/null || true
    (cd "$debs" && "${apt[@]}" -qq download "haproxy/$suite" "${LIBS[@]/%//$libs}" >&2)

    dest="$cache/haproxy-$version"
    root="$dest/root"
    # The launcher is written last, so a run stopped halfway leaves no launcher that passes
    # the check above, and the next run starts this version over.
    rm -rf "$dest"
    mkdir -p "$root" "$dest/bin"
    for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$root"; done
    lib="$root/usr/lib/$MULTIARCH"
    cat >"$dest/bin/haproxy" <<LAUNCHER
#!/bin/sh
# Debian's HAProxy $version ($suite), unpacked with its libraries by deploy/haproxy-versions.sh.
# Its own loader, so no library of the machine is mixed in; --argv0 so that a master-worker
# reload, which re-executes argv[0], comes back through this launcher.
exec "$lib/$LOADER" --library-path "$lib:$root/lib/$MULTIARCH" --argv0 "\$0" "$root/usr/sbin/haproxy" "\$@"
LAUNCHER
    chmod 0755 "$dest/bin/haproxy"

    # Every library from the private root: one resolved from the machine's folders, or not
    # found, means the LIBS list no longer matches what this build links.
    resolved=$("$lib/$LOADER" --library-path "$lib:$root/lib/$MULTIARCH" --list "$root/usr/sbin/haproxy")
    outside=$(echo "$resolved" | grep '=>' | grep -v "=> $root/" || true)
    branch=$(running_branch "$dest/bin/haproxy")
    if [ -n "$outside" ] || [ "$branch" != "$version" ]; then
      echo "haproxy-versions: $suite's haproxy in $dest is not a working $version (runs as '$branch'):" >&2
      echo "${outside:-$("$dest/bin/haproxy" -v 2>&1 | head -1)}" >&2
      rm -f "$dest/bin/haproxy"
      exit 1
    fi
    echo "haproxy-versions: $("$dest/bin/haproxy" -v | head -1) from $suite, downloaded and unpacked in $((SECONDS - started)) s" >&2
  done
fi

for version in "$@"; do dirname "$(launcher "$version")"; done
