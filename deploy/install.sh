#!/usr/bin/env bash
# Installs hafleet on a host without dpkg, as the Debian packages would, under /usr/local.
# Run it again to upgrade: it is idempotent. See --help.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: deploy/install.sh [--controller] [--from DIR] [--uninstall | --purge]

Installs hafleet-agent (with --controller: the hafleet controller) from a bundle built by
'npm run bundle' (DIR, default: dist/bundle of this checkout):
  /usr/local/lib/hafleet/COMPONENT/   the bundle (runs with node >= 18.20 alone)
  /usr/local/bin/hafleet-agent        (hafleet) a wrapper running it with this host's node
  /etc/systemd/system/UNIT            the same hardened unit as the Debian package's
  /etc/hafleet/agent.yaml             (controller.yaml) the default settings, if absent
and, as the package's postinst does, the service user, its state dir, and when systemd runs,
the unit enabled and started (restarted when it was running, on an upgrade).

  --uninstall   stop and remove the program and its unit; settings, state and user stay
  --purge       --uninstall, and remove the settings, the state dir and the user too
USAGE
}

component=agent
from=
action=install
while [ $# -gt 0 ]; do
  case "$1" in
    --controller) component=controller ;;
    --from) from=${2:?--from needs a DIR}; shift ;;
    --uninstall) action=uninstall ;;
    --purge) action=purge ;;
    -h | --help) usage; exit 0 ;;
    *) echo "install.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

here=$(cd "$(dirname "$0")" && pwd)
vars="$here/package/$component.vars"
# shellcheck source=package/agent.vars
. "$vars"
lib=/usr/local/lib/hafleet/$component
wrapper=/usr/local/bin/$HAFLEET_PROGRAM
unit=/etc/systemd/system/$HAFLEET_UNIT

if [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (it creates a system user and a systemd unit)" >&2
  exit 1
fi
if command -v dpkg-query >/dev/null && dpkg-query -W -f='${Status}' "$HAFLEET_PACKAGE" 2>/dev/null | grep -q ' installed$'; then
  echo "install.sh: $HAFLEET_PACKAGE is installed as a Debian package: upgrade or remove it with apt" >&2
  exit 1
fi

# The package's own maintainer scripts, so both ways of installing do the same.
maintainer() {
  local script=$1
  shift
  { printf 'set -e\n'; cat "$vars" "$here/package/maintainer/$script"; } | sh -s -- "$@"
}

if [ "$action" != install ]; then
  maintainer prerm remove
  rm -f "$unit" "$wrapper"
  rm -rf "$lib"
  rmdir /usr/local/lib/hafleet 2>/dev/null || true
  maintainer postrm remove
  if [ "$action" = purge ]; then
    rm -f "$HAFLEET_CONFIG"
    maintainer postrm purge
    echo "install.sh: $HAFLEET_PACKAGE purged: program, unit, settings, state and user removed"
  else
    echo "install.sh: $HAFLEET_PACKAGE uninstalled; $HAFLEET_CONFIG, $HAFLEET_STATE_DIR and user $HAFLEET_USER stay (--purge removes them)"
  fi
  exit 0
fi

bundle=${from:-$here/../dist/bundle}
if [ ! -f "$bundle/$HAFLEET_PROGRAM.mjs" ]; then
  echo "install.sh: no $bundle/$HAFLEET_PROGRAM.mjs: run 'npm run bundle' first, or give --from DIR" >&2
  exit 1
fi
node=$(command -v node || true)
if [ -z "$node" ] || ! "$node" -e 'const [major, minor] = process.versions.node.split(".").map(Number); process.exit(major > 18 || (major === 18 && minor >= 20) ? 0 : 1)'; then
  echo "install.sh: hafleet needs Node.js 18.20 or later as 'node' on the PATH" >&2
  exit 1
fi

previous=
if [ -f "$lib/package.json" ]; then previous=$("$node" -p "require('$lib/package.json').version"); fi
install -d -m 0755 "$lib" /usr/local/bin /etc/hafleet /etc/systemd/system
install -m 0644 "$bundle/$HAFLEET_PROGRAM.mjs" "$bundle/hafleet.proto" "$bundle/package.json" "$bundle/THIRD-PARTY-LICENSES" "$lib/"
# The node found now, not whichever comes first on the service's PATH.
printf '#!/bin/sh\nexec %s %s/%s.mjs "$@"\n' "$node" "$lib" "$HAFLEET_PROGRAM" > "$wrapper"
chmod 0755 "$wrapper"
sed -e "s#/usr/bin/$HAFLEET_PROGRAM #$wrapper #" -e '/^Documentation=/d' "$here/systemd/$HAFLEET_UNIT" > "$unit"
chmod 0644 "$unit"
if [ ! -e "$HAFLEET_CONFIG" ]; then install -m 0640 "$here/config/$component.yaml" "$HAFLEET_CONFIG"; fi
maintainer postinst configure ${previous:+"$previous"}
echo "install.sh: $HAFLEET_PACKAGE $("$node" -p "require('$lib/package.json').version") installed; settings: $HAFLEET_CONFIG"
