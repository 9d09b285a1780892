# Shared helpers of the project's scripts (sourced, not run).

# Everything worth keeping between runs (cargo target dir, SDK virtualenvs) lives here, so a
# second run on the same machine skips the slow parts; a fresh machine just builds it all.
export PALAVER_CACHE="${PALAVER_CACHE:-$HOME/.cache/palaver}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PALAVER_CACHE/target}"
mkdir -p "$PALAVER_CACHE"

log() { printf '\n==> %s\n' "$*" >&2; }

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Postgres for the tests: 127.0.0.1:5432 with trust auth. Starts the local cluster when it is
# installed but stopped. Prints the admin URL; fails (never skips) when there is no Postgres.
ensure_postgres() {
  local url="${TEST_POSTGRES_URL:-}"
  if [ -n "$url" ]; then echo "$url"; return 0; fi
  for user in postgres root; do
    if psql "postgres://$user@127.0.0.1:5432/test" -Atqc 'select 1' >/dev/null 2>&1; then
      echo "postgres://$user@127.0.0.1:5432/test"; return 0
    fi
  done
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    log "starting the local Postgres cluster" 
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start >&2 || true
    for _ in $(seq 1 30); do
      for user in postgres root; do
        if psql "postgres://$user@127.0.0.1:5432/test" -Atqc 'select 1' >/dev/null 2>&1; then
          echo "postgres://$user@127.0.0.1:5432/test"; return 0
        fi
      done
      sleep 1
    done
  fi
  echo "error: Postgres is required on 127.0.0.1:5432 (trust auth, database 'test'); set TEST_POSTGRES_URL to use another" >&2
  return 1
}

# Creates a fresh database next to the admin URL's and prints its URL.
fresh_database() {
  local admin="$1" name="$2"
  psql "$admin" -Atqc "DROP DATABASE IF EXISTS $name" >/dev/null
  psql "$admin" -Atqc "CREATE DATABASE $name" >/dev/null
  echo "${admin%/*}/$name"
}

# Drops the databases the test suites created (their names start with palaver_t_).
# Each DROP DATABASE waits for a checkpoint; drops running side by side share them, so
# hundreds of leftovers go in seconds instead of minutes.
drop_test_databases() {
  local admin="$1"
  psql "$admin" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'palaver\_t\_%'" 2>/dev/null |
    xargs -r -P 16 -I{} psql "$admin" -Atqc 'DROP DATABASE IF EXISTS "{}" WITH (FORCE)' >/dev/null 2>&1 || true
}

# Sum of the numbers in front of WORD ("12 passed") in FILE; 0 when there are none.
count_word() {
  { grep -Eo "[0-9]+ $1" "$2" || true; } | awk '{s+=$1} END {print s+0}'
}

# The code_interpreter tests' interpreter: Debian's python3 with numpy, pandas and matplotlib,
# the very packages the runtime image ships. Not a virtualenv under $PALAVER_CACHE: run as
# root, the sandbox runs code as `nobody`, which cannot enter /root. Installs bubblewrap too,
# for the `bwrap` mode's tests. Prints the interpreter's path; fails when it cannot be had.
ensure_sandbox_python() {
  local python=/usr/bin/python3
  if ! "$python" -c 'import numpy, pandas, matplotlib' >/dev/null 2>&1 || ! command -v bwrap >/dev/null 2>&1; then
    log "installing python3-numpy, python3-pandas, python3-matplotlib and bubblewrap"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      python3 python3-numpy python3-pandas python3-matplotlib bubblewrap >&2
  fi
  "$python" -c 'import numpy, pandas, matplotlib' >&2 || {
    echo "error: $python cannot import numpy, pandas and matplotlib" >&2
    return 1
  }
  echo "$python"
}

# A local S3 stand-in for the S3 blob-store test: moto in server mode on a free port, from a
# virtualenv cached per requirements file. Sets PALAVER_TEST_S3_URL and MOTO_PID; returns
# non-zero when moto cannot be installed or started (the S3 test then fails in CI).
start_moto() {
  local req="tests/s3/requirements.txt" hash dir port
  hash=$(sha256sum "$req" | cut -c1-16)
  dir="$PALAVER_CACHE/s3/venv-moto-$hash"
  if [ ! -x "$dir/bin/moto_server" ]; then
    log "creating $dir"
    rm -rf "$dir"
    python3 -m venv "$dir" >&2 && "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2 || return 1
  fi
  port=$(free_port)
  "$dir/bin/moto_server" -H 127.0.0.1 -p "$port" > "$PALAVER_CACHE/moto.log" 2>&1 &
  MOTO_PID=$!
  for _ in $(seq 1 100); do
    if curl -fs "http://127.0.0.1:$port/" >/dev/null 2>&1; then
      export PALAVER_TEST_S3_URL="http://127.0.0.1:$port"
      return 0
    fi
    sleep 0.1
  done
  cat "$PALAVER_CACHE/moto.log" >&2
  stop_moto
  return 1
}

stop_moto() {
  if [ -n "${MOTO_PID:-}" ]; then kill "$MOTO_PID" 2>/dev/null || true; wait "$MOTO_PID" 2>/dev/null || true; fi
  MOTO_PID=""
}
