#!/usr/bin/env bash
# Set up everything `make test` and `make demo` need, idempotently; a warm run takes seconds.
#
#   .venv/           Python 3.11 virtualenv with `pip install -e '.[dev]'`
#                    (skipped while .venv/.bootstrap-pip matches the hash of pyproject.toml)
#   .jars/kafka/     Apache Kafka and its runtime dependencies   } fetched with Maven from
#   .jars/flink/     flink-sql-connector-kafka                   } runners/jars/pom.xml
#                    (skipped while .jars/.bootstrap-mvn matches the hash of that pom)
#   redis-server     the Debian package, installed with apt-get if missing
#   java, mvn        the Debian packages, installed with apt-get if missing
#   chromium         the Debian package (headless, for the email preview test), if missing
#
# Environment: PYTHON (default python3.11), JARS_DIR (default .jars). Needs root or sudo only
# for apt-get, and only when something is missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3.11}"
VENV="$ROOT/.venv"
JARS="${JARS_DIR:-$ROOT/.jars}"
POM="$ROOT/runners/jars/pom.xml"

say() { printf 'bootstrap: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

APT_UPDATED=0
apt_install() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "need root or sudo to apt-get install $*"
        sudo=(sudo -n)
    fi
    command -v apt-get >/dev/null || die "$* missing and no apt-get here: install it by hand"
    if [ "$APT_UPDATED" -eq 0 ]; then
        say "apt-get update"
        "${sudo[@]}" apt-get update -qq
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- system packages ---------------------------------------------------------------------------
if ! command -v redis-server >/dev/null; then
    apt_install redis-server
    # The package may start its own daemon on 6379 (where no policy-rc.d forbids it); ours
    # runs from .state/redis instead.
    if command -v service >/dev/null; then
        if [ "$(id -u)" -eq 0 ]; then service redis-server stop >/dev/null 2>&1 || true
        else sudo -n service redis-server stop >/dev/null 2>&1 || true; fi
    fi
fi
# Kafka 4.x needs Java 17 or newer.
java_major=0
if command -v java >/dev/null; then
    java_major="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
fi
if [ "${java_major:-0}" -lt 17 ]; then
    apt_install openjdk-17-jre-headless
fi
command -v mvn >/dev/null || apt_install maven
# Headless Chromium opens `personalize preview` output (tests/integration/test_preview_chromium.py).
command -v chromium >/dev/null || apt_install chromium

# --- Python ------------------------------------------------------------------------------------
command -v "$PYTHON" >/dev/null || die "$PYTHON not found (the project needs Python 3.11)"
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
fi
pip_key="$(hash_of pyproject.toml) $("$VENV/bin/python" -c 'import sys; print(sys.version)' | head -1)"
if [ "$(cat "$VENV/.bootstrap-pip" 2>/dev/null)" != "$pip_key" ]; then
    say "pip install -e '.[dev]' (a few minutes on a fresh machine)"
    if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]' \
        >"$VENV/bootstrap-pip.log" 2>&1; then
        tail -n 40 "$VENV/bootstrap-pip.log" >&2
        die "pip install failed; full log: $VENV/bootstrap-pip.log"
    fi
    printf '%s' "$pip_key" >"$VENV/.bootstrap-pip"
fi

# --- JVM jars ----------------------------------------------------------------------------------
mvn_key="$(hash_of "$POM")"
if [ "$(cat "$JARS/.bootstrap-mvn" 2>/dev/null)" != "$mvn_key" ]; then
    for profile in kafka flink; do
        say "fetching $profile jars with Maven into $JARS/$profile"
        rm -rf "$JARS/$profile.tmp"
        mkdir -p "$JARS"
        if ! mvn -B -Dstyle.color=never -f "$POM" -P "$profile" dependency:copy-dependencies \
            -DoutputDirectory="$JARS/$profile.tmp" >"$JARS/bootstrap-mvn.log" 2>&1; then
            tail -n 40 "$JARS/bootstrap-mvn.log" >&2
            die "mvn failed; full log: $JARS/bootstrap-mvn.log"
        fi
        rm -rf "$JARS/$profile"
        mv "$JARS/$profile.tmp" "$JARS/$profile"
    done
    printf '%s' "$mvn_key" >"$JARS/.bootstrap-mvn"
fi

say "ready ($(cd "$ROOT" && "$VENV/bin/python" --version), $(ls "$JARS/kafka" | wc -l) kafka jars, $(ls "$JARS/flink"))"
