#!/usr/bin/env bash
# Builds dist/packages/hafleet-agent_VERSION_all.deb and hafleet-controller_VERSION_all.deb from
# dist/bundle (npm run bundle) with dpkg-deb alone: each holds its bundle under /usr/lib/hafleet/,
# a /usr/bin wrapper, its systemd unit, its default configuration (a conffile) and the maintainer
# scripts that make its user and state dir. `npm run package` runs both steps.
set -euo pipefail
cd "$(dirname "$0")/../.."

bundle=dist/bundle
out=dist/packages
if [ ! -f "$bundle/hafleet-agent.mjs" ] || [ ! -f "$bundle/hafleet.mjs" ]; then
  echo "build-debs: no bundle in $bundle: run 'npm run bundle' first (or 'npm run package')" >&2
  exit 1
fi
version=$(node -p 'require("./dist/bundle/package.json").version')
# The oldest Node the bundle is tested on: Debian bookworm's nodejs package (see bundle.mjs).
node_depends="nodejs (>= 18.20)"
mkdir -p "$out"

# build COMPONENT DEPENDS RECOMMENDS DESCRIPTION: one package, from deploy/package/COMPONENT.vars.
build() {
  local component=$1 depends=$2 recommends=$3 description=$4
  # shellcheck source=agent.vars
  . "deploy/package/$component.vars"
  local stage lib
  stage=$(mktemp -d)
  chmod 0755 "$stage"
  lib=/usr/lib/hafleet/$component

  install -d "$stage/DEBIAN" "$stage$lib" "$stage/usr/bin" "$stage/etc/hafleet" "$stage/lib/systemd/system" "$stage/usr/share/doc/$HAFLEET_PACKAGE"
  install -m 0644 "$bundle/$HAFLEET_PROGRAM.mjs" "$bundle/hafleet.proto" "$bundle/package.json" "$stage$lib/"
  # The Node the package depends on, not whichever `node` comes first on the PATH.
  printf '#!/bin/sh\nexec /usr/bin/node %s/%s.mjs "$@"\n' "$lib" "$HAFLEET_PROGRAM" > "$stage/usr/bin/$HAFLEET_PROGRAM"
  chmod 0755 "$stage/usr/bin/$HAFLEET_PROGRAM"
  install -m 0644 "deploy/config/$component.yaml" "$stage$HAFLEET_CONFIG"
  install -m 0644 "deploy/systemd/$HAFLEET_UNIT" "$stage/lib/systemd/system/"
  { printf 'hafleet, licensed under Apache-2.0.\n\n'; cat "$bundle/THIRD-PARTY-LICENSES"; } > "$stage/usr/share/doc/$HAFLEET_PACKAGE/copyright"

  for script in postinst prerm postrm; do
    { printf '#!/bin/sh\nset -e\n'; cat "deploy/package/$component.vars" "deploy/package/maintainer/$script"; } > "$stage/DEBIAN/$script"
    chmod 0755 "$stage/DEBIAN/$script"
  done
  echo "$HAFLEET_CONFIG" > "$stage/DEBIAN/conffiles"
  (cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) > "$stage/DEBIAN/md5sums"
  {
    echo "Package: $HAFLEET_PACKAGE"
    echo "Version: $version"
    echo "Architecture: all"
    echo "Maintainer: hafleet <hafleet@localhost>"
    echo "Installed-Size: $(du -sk --exclude=DEBIAN "$stage" | cut -f1)"
    echo "Depends: $depends"
    if [ -n "$recommends" ]; then echo "Recommends: $recommends"; fi
    echo "Section: net"
    echo "Priority: optional"
    echo "Description: $description"
  } > "$stage/DEBIAN/control"

  dpkg-deb --root-owner-group -Zxz --build "$stage" "$out/${HAFLEET_PACKAGE}_${version}_all.deb" >/dev/null
  rm -rf "$stage"
  echo "$out/${HAFLEET_PACKAGE}_${version}_all.deb"
}

build agent "$node_depends, passwd" "haproxy" "hafleet agent: HAProxy backend servers from service discovery, without reloads
 Runs on each HAProxy host: applies the backend servers the hafleet controller streams
 through HAProxy's Runtime API, stores them to apply again after a restart, and reports
 what really runs. Also: one-shot apply, show, and hybrid mode (a haproxy.cfg that always
 holds what runs)."
build controller "$node_depends, passwd" "" "hafleet controller: streams service discovery to HAProxy agents
 Watches Consul (or a catalog file) and streams each hafleet agent the backend servers it
 should run, over gRPC, tracking every agent's acks."
