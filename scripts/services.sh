#!/usr/bin/env bash
# Make sure the machine's PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) are up; start them if stopped.
set -uo pipefail
say() { printf '\033[1m[services]\033[0m %s\n' "$*"; }
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  say "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || say "could not start PostgreSQL"
fi
if command -v redis-cli >/dev/null && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  say "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || say "could not start Redis"
fi
exit 0
