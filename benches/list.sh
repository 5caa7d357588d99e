#!/usr/bin/env bash
# benches/list.sh — how long `cellar list` takes over many signed backups of
# one profile (issue 9: under 2 s for 10,000, on a local store and on an
# S3-compatible server). Not a test: run it by hand on an otherwise idle host.
#
# Usage: benches/list.sh [COUNT]        (default 10000)
#
# It makes a config dir of its own (`cellar keygen k`, `cellar keygen --sign
# host`), a files profile over a small folder, and one real backup. Then it
# copies that backup COUNT-1 times under new ids, one hour apart going back
# from the real one, rewriting the manifest's id and payload name and
# signing each manifest with gpg (the host signing key imported into a
# private GNUPGHOME): COUNT backups that all verify, as a store would hold
# after COUNT runs. Setting them up takes about a minute (gpg signs).
# It then times, REPS times each (median and range of wall seconds, and
# peak RSS with /usr/bin/time):
#   local   cellar list P        first list: nothing remembered, every
#                                 signature verified (state/P.verified.json
#                                 deleted before each run)
#   local   cellar list P        as every later list, prune and run: the
#                                 signatures verified before are remembered
#   local   cellar list P --json
#   s3      cellar list P        first and later, on moto (the same objects
#                                 uploaded to a bucket; skipped when moto is
#                                 not installed)
# and prints whether the target holds (every median < 2 s; the first list
# is reported, not held to it: it downloads and verifies every manifest).
#
# Environment:
#   REPS=5              repetitions
#   CELLAR=PATH         use this binary instead of `cargo build --release --locked`
#   MOTO=PATH           moto_server (default /opt/cellar-moto/bin/moto_server);
#                       SKIP_S3=1 skips the S3 part
#   BENCH_DIR=PATH      work folder (default: a new /tmp/cellar-list-bench.XXXXXX);
#                       its contents are deleted at the end (KEEP=1 keeps them)
#   STRICT=1            exit 1 when the target fails
set -euo pipefail

COUNT=${1:-10000}
REPS=${REPS:-5}
STRICT=${STRICT:-0}
SKIP_S3=${SKIP_S3:-0}
MOTO=${MOTO:-/opt/cellar-moto/bin/moto_server}

die() { printf 'list.sh: %s\n' "$*" >&2; exit 1; }
note() { printf '%s\n' "$*"; }
[[ "$COUNT" =~ ^[0-9]+$ && "$COUNT" -ge 1 ]] || die "COUNT must be a positive number, got '$COUNT'"
[[ "$REPS" =~ ^[0-9]+$ && "$REPS" -ge 1 ]] || die "REPS must be a positive number, got '$REPS'"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for t in gpg gpgconf python3 xargs; do
    command -v "$t" >/dev/null 2>&1 || die "$t not found (run ./install.sh --no-build as root)"
done
HAVE_TIME=0
[[ -x /usr/bin/time ]] && HAVE_TIME=1
if [[ "$SKIP_S3" != 1 && ! -x "$MOTO" ]]; then
    note "moto not found at $MOTO (scripts/test-setup.sh installs it): skipping the S3 part"
    SKIP_S3=1
fi

if [[ -n "${CELLAR:-}" ]]; then
    command -v "$CELLAR" >/dev/null 2>&1 || die "CELLAR=$CELLAR is not an executable"
    CELLAR=$(command -v "$CELLAR")
    case "$CELLAR" in /*) ;; *) CELLAR="$PWD/$CELLAR" ;; esac
else
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust or set CELLAR=/path/to/cellar"
    note "building: cargo build --release --locked"
    (cd "$ROOT" && cargo build --release --locked)
    CELLAR="$ROOT/target/release/cellar"
fi

if [[ -n "${BENCH_DIR:-}" ]]; then
    case "$BENCH_DIR" in /*) ;; *) BENCH_DIR="$PWD/$BENCH_DIR" ;; esac
    mkdir -p "$BENCH_DIR"
    OWN_BENCH_DIR=0
else
    BENCH_DIR=$(mktemp -d /tmp/cellar-list-bench.XXXXXX)
    OWN_BENCH_DIR=1
fi
CONF="$BENCH_DIR/config"
CONF_S3="$BENCH_DIR/config-s3"
STORE="$CONF/store"
WORK="$BENCH_DIR/work"
GNUPGHOME_BENCH="$BENCH_DIR/gnupg"
MOTO_PID=

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [[ -n "$MOTO_PID" ]] && kill "$MOTO_PID" 2>/dev/null && wait "$MOTO_PID" 2>/dev/null
    if [[ -d "$GNUPGHOME_BENCH" ]]; then
        gpgconf --homedir "$GNUPGHOME_BENCH" --kill all >/dev/null 2>&1 || true
    fi
    if [[ "${KEEP:-0}" == 1 ]]; then
        note "kept: $BENCH_DIR"
    elif [[ "$OWN_BENCH_DIR" == 1 ]]; then
        rm -rf -- "$BENCH_DIR"
    else
        rm -rf -- "$CONF" "$CONF_S3" "$WORK" "$GNUPGHOME_BENCH"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rm -rf -- "$CONF" "$CONF_S3" "$WORK" "$GNUPGHOME_BENCH"
mkdir -p "$CONF/profiles" "$CONF/secrets" "$STORE" "$WORK/data"
chmod 0700 "$CONF/secrets"
note "work folder: $BENCH_DIR"

# --- one real backup -------------------------------------------------------------
printf 'a small file\n' >"$WORK/data/a.txt"
(cd "$CONF" && "$CELLAR" --config-dir "$CONF" keygen k && "$CELLAR" --config-dir "$CONF" keygen --sign host) \
    >"$WORK/keygen.log" 2>&1 || { cat "$WORK/keygen.log" >&2; die "cellar keygen failed"; }
write_profile() { # CONFIG-DIR STORE-TOML
    cat >"$1/profiles/many.toml" <<EOF
# written by benches/list.sh
kind = "files"

[source]
paths = ["$WORK/data"]

$2

[encryption]
recipients = ["secrets/k.pub.asc"]
identity = "secrets/k.key.asc"
signer = "secrets/host.sign.key.asc"

[compression]
algorithm = "zstd"
level = 3
EOF
}
write_profile "$CONF" $'[store]\nurl = "file://store"'
"$CELLAR" --config-dir "$CONF" backup many >"$WORK/backup.log" 2>&1 \
    || { cat "$WORK/backup.log" >&2; die "cellar backup many failed"; }

# --- COUNT-1 copies, each signed ---------------------------------------------------
mkdir -m 0700 "$GNUPGHOME_BENCH"
GPG=(gpg --homedir "$GNUPGHOME_BENCH" --batch --quiet --pinentry-mode loopback --passphrase '')
"${GPG[@]}" --import "$CONF/secrets/host.sign.key.asc" 2>/dev/null \
    || die "gpg could not import $CONF/secrets/host.sign.key.asc"
setup_start=$SECONDS
python3 - "$STORE/many" "$COUNT" <<'PY'
import datetime, json, os, sys
folder, count = sys.argv[1], int(sys.argv[2])
manifests = [n for n in os.listdir(folder) if n.endswith(".manifest.json")]
assert len(manifests) == 1, manifests
orig = manifests[0][: -len(".manifest.json")]
with open(os.path.join(folder, manifests[0])) as f:
    text = f.read()
payloads = [n for n in os.listdir(folder) if n.startswith(orig + ".") and n.endswith(".pgp")]
blobs = {n: open(os.path.join(folder, n), "rb").read() for n in payloads}
t = datetime.datetime.strptime(orig.split("-")[0], "%Y%m%dT%H%M%SZ")
with open(os.path.join(folder, "..", "..", "..", "work", "to-sign"), "w") as out:
    for i in range(1, count):
        new = (t - datetime.timedelta(hours=i)).strftime("%Y%m%dT%H%M%SZ")
        for n, b in blobs.items():
            with open(os.path.join(folder, new + n[len(orig):]), "wb") as f:
                f.write(b)
        m = os.path.join(folder, new + ".manifest.json")
        # The manifest's signature is written first; the manifest itself
        # is renamed into place after it is signed (below).
        with open(m + ".unsigned", "w") as f:
            f.write(text.replace(orig, new))
        out.write(m + "\n")
PY
# shellcheck disable=SC2016
xargs -P 2 -n 200 sh -c 'home=$1; shift; for m; do "$0" --homedir "$home" --lock-never --batch --quiet --pinentry-mode loopback --passphrase "" \
        --detach-sign -o "${m%.manifest.json}.manifest.json.sig" "$m.unsigned" && mv "$m.unsigned" "$m" || exit 255; done' \
    gpg "$GNUPGHOME_BENCH" <"$WORK/to-sign" || die "signing the copies failed"
SIGS=$(find "$STORE/many" -name '*.manifest.json.sig' | wc -l)
[[ "$SIGS" == "$COUNT" ]] || die "$SIGS signatures written, expected $COUNT"
note "$COUNT signed backups set up in $((SECONDS - setup_start)) s ($(find "$STORE/many" -type f | wc -l) objects)"
ok=$("$CELLAR" --config-dir "$CONF" list many --json | python3 -c 'import json,sys; r=json.load(sys.stdin); print(sum(1 for x in r if x["trusted"]), len(r))')
[[ "$ok" == "$COUNT $COUNT" ]] || die "cellar list: trusted/total = $ok, expected $COUNT $COUNT"

# --- S3 ------------------------------------------------------------------------------
if [[ "$SKIP_S3" != 1 ]]; then
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$MOTO" -H 127.0.0.1 -p "$PORT" >"$WORK/moto.log" 2>&1 &
    MOTO_PID=$!
    for _ in $(seq 100); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 1)" 2>/dev/null && break
        sleep 0.2
    done
    up_start=$SECONDS
    "$(dirname "$MOTO")/python" - "$PORT" "$STORE" <<'PY' || die "uploading to moto failed"
import os, sys, boto3
from concurrent.futures import ThreadPoolExecutor
port, store = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                  aws_access_key_id="bench", aws_secret_access_key="bench")
s3.create_bucket(Bucket="bench")
names = sorted(os.listdir(os.path.join(store, "many")))
def put(n):
    with open(os.path.join(store, "many", n), "rb") as f:
        s3.put_object(Bucket="bench", Key="cellar/many/" + n, Body=f.read())
with ThreadPoolExecutor(8) as ex:
    list(ex.map(put, names))
PY
    note "uploaded to moto in $((SECONDS - up_start)) s"
    # A second config dir with the same keys: the profile must be named
    # "many" too (the manifests name it).
    mkdir -p "$CONF_S3/profiles"
    ln -s "$CONF/secrets" "$CONF_S3/secrets"
    write_profile "$CONF_S3" "[store]
url = \"s3://bench/cellar\"
[store.s3]
region = \"us-east-1\"
endpoint = \"http://127.0.0.1:$PORT\"
path_style = true
access_key_id = \"bench\"
secret_access_key = \"bench\""
fi

# --- timing ------------------------------------------------------------------------
measure() { # LABEL ARGS...
    local label=$1; shift
    local times=() rss=()
    for _ in $(seq "$REPS"); do
        [[ "${COLD:-0}" == 1 ]] && rm -f -- "$CONF/state/many.verified.json"
        if [[ "$HAVE_TIME" == 1 ]]; then
            /usr/bin/time -f '%e %M' -o "$WORK/time" "$CELLAR" --config-dir "$CONF" "$@" >"$WORK/out" 2>"$WORK/err" \
                || { cat "$WORK/err" >&2; die "cellar $* failed"; }
            read -r t m <"$WORK/time"
        else
            local s; s=$(date +%s.%N)
            "$CELLAR" --config-dir "$CONF" "$@" >"$WORK/out" 2>"$WORK/err" || { cat "$WORK/err" >&2; die "cellar $* failed"; }
            t=$(python3 -c "import time; print(round(time.time() - $s, 2))"); m=0
        fi
        times+=("$t"); rss+=("$m")
    done
    python3 - "$label" "$(wc -l <"$WORK/out")" "${times[*]}" "${rss[*]}" <<'PY'
import statistics, sys
label, lines, times, rss = sys.argv[1], int(sys.argv[2]), [float(x) for x in sys.argv[3].split()], [int(x) for x in sys.argv[4].split()]
med = statistics.median(times)
exempt = label.startswith("*")
verdict = ("OK" if med < 2 else "OVER") + " (< 2 s)" if not exempt else "(not held to the target)"
print(f"{label.lstrip('*'):<34} median {med:6.2f} s  (min {min(times):.2f}, max {max(times):.2f})  peak RSS {max(rss) / 1024:.0f} MiB  {lines} lines  {verdict}")
PY
    [[ "$label" == \** ]] && return 0
    awk -v t="$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (REPS + 1) / 2 ))p")" 'BEGIN { exit !(t < 2) }' || FAILED=1
}
FAILED=0
note ""
note "cellar list over $COUNT signed backups, $REPS runs each:"
COLD=1 measure "*local: first list (nothing known)" list many
measure "local: list" list many
measure "local: list --json" list many --json
if [[ "$SKIP_S3" != 1 ]]; then
    CONF="$CONF_S3" COLD=1 measure "*s3 (moto): first list" list many
    CONF="$CONF_S3" measure "s3 (moto): list" list many
fi
if [[ "$FAILED" == 1 ]]; then
    note "target: NOT met (every median < 2 s)"
    [[ "$STRICT" == 1 ]] && exit 1
else
    note "target: met (every median < 2 s)"
fi
exit 0
