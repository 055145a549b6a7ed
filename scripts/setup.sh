#!/usr/bin/env bash
# Install everything rolegate, its lab and its tests need. Idempotent: quick when all is present.
#   Debian packages: slapd + ldap-utils (lab directory), nginx (bench anchor, forward-auth example),
#                    strace (the audit durability test watches fsync calls),
#                    caddy (forward-auth example, tests/security),
#                    wrk (load generator), chromium (UI tests), systemd (systemd-analyze checks deploy/systemd),
#                    samba + its DC modules (a real Active Directory DC for tests/directory)
#   Python: a virtualenv in .venv with rolegate installed editable, plus the test, bench and lint extras
#   npm: the lab IdP (oidc-provider) in deploy/lab/idp
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

APT_PACKAGES=(slapd ldap-utils nginx caddy wrk chromium systemd strace samba samba-dsdb-modules samba-vfs-modules samba-ad-provision
              podman buildah runc mmdebstrap uidmap fuse-overlayfs slirp4netns)  # tests/deploy/test_image.py
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq || { echo "apt-get update failed: check the package mirror" >&2; exit 1; }
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts a system slapd/nginx on install; the lab runs private instances on free ports.
pgrep -x slapd >/dev/null && [ -f /var/run/slapd/slapd.pid ] && { kill "$(cat /var/run/slapd/slapd.pid)" 2>/dev/null || true; }
# samba (the AD DC the directory tests provision into temp dirs) may start the system smbd/nmbd/samba-ad-dc:
# stop them and keep them off, so nothing listens beyond the tests' own DCs on 127.0.0.N.
for svc in samba-ad-dc smbd nmbd winbind; do
  command -v systemctl >/dev/null && systemctl disable --now "$svc" >/dev/null 2>&1 || true
  command -v update-rc.d >/dev/null && update-rc.d "$svc" disable >/dev/null 2>&1 || true
done
for pid in /run/samba/samba.pid /run/samba/smbd.pid /run/samba/nmbd.pid /run/samba/winbindd.pid; do
  [ -f "$pid" ] && { kill "$(cat "$pid")" 2>/dev/null || true; }
done

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.rolegate-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "installing rolegate and test dependencies into .venv"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[test,bench,lint]'   # lint: ruff, run by tests/test_lint.py
  touch "$stamp"
fi

if [ -f deploy/lab/idp/package.json ]; then
  idp_stamp=deploy/lab/idp/node_modules/.rolegate-installed
  if [ ! -f "$idp_stamp" ] || [ deploy/lab/idp/package.json -nt "$idp_stamp" ]; then
    say "installing the lab IdP (npm)"
    (cd deploy/lab/idp && { [ -f package-lock.json ] && npm ci --silent --no-audit --no-fund || npm install --silent --no-audit --no-fund; }) >/dev/null
    touch "$idp_stamp"
  fi
fi
say "ready"
