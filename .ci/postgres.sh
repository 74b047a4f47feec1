#!/usr/bin/env bash
# Install (Debian's postgresql), start a server on loopback and create the test database.
# Prints the SQLAlchemy URL on its last line. Idempotent; needs root.
set -euo pipefail
if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi
ver=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -q "^$ver main$"; then
  pg_createcluster "$ver" main >&2
fi
pg_ctlcluster "$ver" main start >&2 2>/dev/null || true
for _ in $(seq 1 30); do
  su postgres -c "pg_isready -q -h 127.0.0.1 -p 5432" && break
  sleep 1
done
su postgres -c "psql -q -p 5432 -tc \"SELECT 1 FROM pg_roles WHERE rolname='biotune'\"" | grep -q 1 \
  || su postgres -c "psql -q -p 5432 -c \"CREATE ROLE biotune LOGIN PASSWORD 'biotune' CREATEDB\"" >&2
su postgres -c "psql -q -p 5432 -tc \"SELECT 1 FROM pg_database WHERE datname='biotune_test'\"" | grep -q 1 \
  || su postgres -c "psql -q -p 5432 -c \"CREATE DATABASE biotune_test OWNER biotune\"" >&2
echo "postgresql+psycopg://biotune:biotune@127.0.0.1:5432/biotune_test"
