#!/usr/bin/env bash
# Start the machine's PostgreSQL 15 and create the role and database the tests use.
# Idempotent. Prints the URL to export as THIRDRING_TEST_POSTGRES_URL.
set -euo pipefail
PGUSER_NAME=${PGUSER_NAME:-thirdring}
PGPASS=${PGPASS:-thirdring}
PGDB=${PGDB:-thirdring_test}
# Only the URL goes to stdout (callers capture it); everything else to stderr.
exec 3>&1 1>&2

if ! command -v pg_ctlcluster >/dev/null; then
  echo "postgres-up: PostgreSQL is not installed (apt-get install postgresql)" >&2
  exit 1
fi
if ! pg_lsclusters -h | grep -q ' online '; then
  # 3>&-: the server must not inherit the caller's capture pipe, or $(...) never returns.
  pg_ctlcluster --skip-systemctl-redirect 15 main start 3>&-
fi
for _ in $(seq 1 30); do
  su postgres -c "psql -qtAc 'select 1'" >/dev/null 2>&1 && break
  sleep 1
done
su postgres -c "psql -qtAc \"select 1 from pg_roles where rolname='${PGUSER_NAME}'\"" | grep -q 1 ||
  su postgres -c "psql -qc \"create role ${PGUSER_NAME} login createdb password '${PGPASS}'\""
# The tests drop their databases WITH (FORCE); that must be able to end an autovacuum worker
# (a superuser's process) that has just started on one.
su postgres -c "psql -qc \"grant pg_signal_backend to ${PGUSER_NAME}\"" >/dev/null
su postgres -c "psql -qtAc \"select 1 from pg_database where datname='${PGDB}'\"" | grep -q 1 ||
  su postgres -c "psql -qc \"create database ${PGDB} owner ${PGUSER_NAME}\""
echo "postgresql+asyncpg://${PGUSER_NAME}:${PGPASS}@127.0.0.1:5432/${PGDB}" >&3
