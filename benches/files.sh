#!/usr/bin/env bash
# benches/files.sh — benchmark cellar's files profile against the shell
# pipeline it replaces and against restic. Not a test: run it by hand on an
# otherwise idle host.
#
# Usage: benches/files.sh
#
# It generates two data sets once, before any timing, in a temporary folder
# under /tmp (deleted at the end):
#   A  SMALL_FILES small files (default 100,000) of 1-8 KiB, spread over
#      SMALL_DIRS folders (default 1,000), in groups of RSS_FILES files
#      (small/g00, small/g01, ...);
#   B  LARGE_FILES large files (default 4) of SIZE_MB MiB each (default 256).
# Every file is about 3/4 text (words, numbers) and 1/4 random bytes, so it
# compresses about 2x with zstd -3. It makes a key with `cellar keygen k` and
# a signing key with `cellar keygen --sign host` in a config dir of its own,
# imports k.pub.asc into a private GNUPGHOME, writes files profiles (zstd,
# level 3, THREADS threads, store "file://store") and measures, alternating
# the variants in every repetition, for each data set:
#   tar     tar -cf - -C / PATH | zstd -T$THREADS -3 | gpg -z 0 -e -r KEY > out
#   cellar  cellar backup PROFILE         (a fresh store folder every time)
#   restic  restic backup PATH            (a fresh repository every time, untimed
#                                          `restic init`; skipped if restic is
#                                          not installed)
# with /usr/bin/time: wall seconds, CPU seconds and peak RSS (the largest
# single process of the pipeline), plus the output size. Without
# /usr/bin/time it measures wall time only.
# Then, for "memory flat in the number of files", it runs `cellar backup`
# once on RSS_FILES small files (small/g00) and once on all SMALL_FILES, and
# prints both peak RSS values.
#
# It prints the median per variant, the ratios cellar/tar and cellar/restic,
# and whether the targets hold:
#   cellar <= 1.20 x the tar pipeline, for both data sets
#   cellar's peak RSS on SMALL_FILES <= 1.25 x its peak RSS on RSS_FILES (flat)
#
# Environment:
#   REPS=3            repetitions               THREADS=2     compression threads
#   SMALL_FILES=100000  SMALL_DIRS=1000         RSS_FILES=10000
#   LARGE_FILES=4     SIZE_MB=256 (per large file)
#   SKIP_SMALL=1      skip data set A           SKIP_LARGE=1  skip data set B
#   CELLAR=PATH       use this binary instead of `cargo build --release --locked`
#   BENCH_DIR=PATH    work folder (default: a new /tmp/cellar-files-bench.XXXXXX);
#                     its contents are deleted at the end
#   RESULTS=FILE      also write the summary to FILE
#   STRICT=1          exit 1 when a target fails
set -euo pipefail

REPS=${REPS:-3}
THREADS=${THREADS:-2}
SMALL_FILES=${SMALL_FILES:-100000}
SMALL_DIRS=${SMALL_DIRS:-1000}
RSS_FILES=${RSS_FILES:-10000}
LARGE_FILES=${LARGE_FILES:-4}
SIZE_MB=${SIZE_MB:-256}
SKIP_SMALL=${SKIP_SMALL:-0}
SKIP_LARGE=${SKIP_LARGE:-0}
STRICT=${STRICT:-0}
RESULTS=${RESULTS:-}
ZSTD_LEVEL=3

die() { printf 'files.sh: %s\n' "$*" >&2; exit 1; }
note() { printf '%s\n' "$*"; }
posint() { [[ "$2" =~ ^[0-9]+$ && "$2" -ge 1 ]] || die "$1 must be a positive number, got '$2'"; }

posint REPS "$REPS"
posint THREADS "$THREADS"
posint SMALL_FILES "$SMALL_FILES"
posint SMALL_DIRS "$SMALL_DIRS"
posint RSS_FILES "$RSS_FILES"
posint LARGE_FILES "$LARGE_FILES"
posint SIZE_MB "$SIZE_MB"
[[ "$SMALL_DIRS" -le "$SMALL_FILES" ]] || die "SMALL_DIRS ($SMALL_DIRS) must be <= SMALL_FILES ($SMALL_FILES)"
[[ "$SKIP_SMALL" == 1 && "$SKIP_LARGE" == 1 ]] && die "SKIP_SMALL=1 and SKIP_LARGE=1 leave nothing to measure"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# --- tools ---------------------------------------------------------------------
for t in tar zstd gpg gpgconf python3; do
    command -v "$t" >/dev/null 2>&1 || die "$t not found (run ./install.sh --no-build as root; python3 generates the data)"
done
HAVE_TIME=0
[[ -x /usr/bin/time ]] && HAVE_TIME=1
HAVE_RESTIC=0
command -v restic >/dev/null 2>&1 && HAVE_RESTIC=1

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

# --- work folder and cleanup -----------------------------------------------------
if [[ -n "${BENCH_DIR:-}" ]]; then
    case "$BENCH_DIR" in /*) ;; *) BENCH_DIR="$PWD/$BENCH_DIR" ;; esac
    mkdir -p "$BENCH_DIR"
    OWN_BENCH_DIR=0
else
    BENCH_DIR=$(mktemp -d /tmp/cellar-files-bench.XXXXXX)
    OWN_BENCH_DIR=1
fi
DATA="$BENCH_DIR/data"
WORK="$BENCH_DIR/work"
CONF="$BENCH_DIR/config"
STORE="$CONF/store"
GNUPGHOME_BENCH="$BENCH_DIR/gnupg"
RESTIC_REPO="$BENCH_DIR/restic"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -d "$GNUPGHOME_BENCH" ]]; then
        gpgconf --homedir "$GNUPGHOME_BENCH" --kill all >/dev/null 2>&1 || true
    fi
    if [[ "$OWN_BENCH_DIR" == 1 ]]; then
        rm -rf -- "$BENCH_DIR"
    else
        rm -rf -- "$DATA" "$WORK" "$CONF" "$GNUPGHOME_BENCH" "$RESTIC_REPO"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rm -rf -- "$DATA" "$WORK" "$CONF" "$GNUPGHOME_BENCH" "$RESTIC_REPO"
mkdir -p "$DATA" "$WORK" "$CONF/profiles" "$CONF/secrets" "$STORE"
chmod 0700 "$CONF/secrets"

# --- data ----------------------------------------------------------------------
note "work folder: $BENCH_DIR"
gen_start=$SECONDS
note "generating data: $([[ "$SKIP_SMALL" == 1 ]] || echo "$SMALL_FILES small files in $SMALL_DIRS folders; ")$([[ "$SKIP_LARGE" == 1 ]] || echo "$LARGE_FILES x $SIZE_MB MiB")"
python3 - "$DATA" "$([[ "$SKIP_SMALL" == 1 ]] && echo 0 || echo "$SMALL_FILES")" "$SMALL_DIRS" "$RSS_FILES" \
    "$([[ "$SKIP_LARGE" == 1 ]] && echo 0 || echo "$LARGE_FILES")" "$SIZE_MB" <<'PY'
import os, random, sys

root = sys.argv[1]
n_small, n_dirs, group, n_large, size_mb = (int(a) for a in sys.argv[2:7])
rng = random.Random(20261123)

vocab = ("the of and to a in is it you that was for on are with as be at this have from or had by not but what "
         "all were we when your can said there use an each which she do how their if will up other about out many "
         "then them these so some her would make like him into time has look two more write go see number no way "
         "could people my than first water been call who its now find long down day did get come made may part "
         "order delivery package arrived quickly great quality price invoice payment account address customer "
         "service support report config server client request response error warning info debug status value "
         "London Berlin Paris Madrid Warsaw Tokyo Zürich København Kraków café naïve résumé über grüße niño año "
         "smörgås Øresund łódź").split()
# A pool of text (words, numbers, ids) bigger than zstd -3's window, so that
# slices of it repeat only far apart.
lines = []
size = 0
while size < 48 << 20:
    ws = rng.choices(vocab, k=rng.randint(6, 16))
    ws.insert(rng.randrange(len(ws)), str(rng.randrange(10 ** rng.randint(1, 9))))
    if rng.random() < 0.3:
        ws.append("%016x" % rng.getrandbits(64))
    line = " ".join(ws) + "\n"
    lines.append(line)
    size += len(line)
pool = "".join(lines).encode()
del lines
pool_len = len(pool)

def text(n):
    o = rng.randrange(pool_len - n)
    return pool[o:o + n]

def chunk(n):
    r = n // 4
    return text(n - r) + os.urandom(r)

if n_small:
    per_dir = -(-n_small // n_dirs)
    for i in range(n_small):
        g, d = i // group, i // per_dir
        if i % per_dir == 0:
            folder = os.path.join(root, "small", "g%02d" % g, "d%04d" % d)
            os.makedirs(folder, exist_ok=True)
        elif i % group == 0:
            folder = os.path.join(root, "small", "g%02d" % g, "d%04d" % d)
            os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "f%06d.dat" % i), "wb") as f:
            f.write(chunk(rng.randint(1024, 8192)))

if n_large:
    os.makedirs(os.path.join(root, "large"), exist_ok=True)
    block = 1 << 20
    for j in range(n_large):
        with open(os.path.join(root, "large", "big%d.dat" % j), "wb") as f:
            for _ in range(size_mb):
                f.write(chunk(block))
PY
sync
SMALL_N=0; SMALL_BYTES=0; RSS_N=0; LARGE_BYTES=0
if [[ "$SKIP_SMALL" != 1 ]]; then
    SMALL_N=$(find "$DATA/small" -type f | wc -l)
    SMALL_BYTES=$(find "$DATA/small" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
    RSS_N=$(find "$DATA/small/g00" -type f | wc -l)
fi
if [[ "$SKIP_LARGE" != 1 ]]; then
    LARGE_BYTES=$(find "$DATA/large" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
fi
note "generated in $((SECONDS - gen_start)) s"
# Warm the page cache the same way for every variant (GNU tar skips reading
# when it writes to /dev/null itself, hence the cat).
tar -cf - -C "$DATA" . | cat >/dev/null

# --- keys and profiles ---------------------------------------------------------
(cd "$CONF" && "$CELLAR" --config-dir "$CONF" keygen k) >"$WORK/keygen.log" 2>&1 \
    || { cat "$WORK/keygen.log" >&2; die "cellar keygen k failed"; }
(cd "$CONF" && "$CELLAR" --config-dir "$CONF" keygen --sign host) >"$WORK/keygen.log" 2>&1 \
    || { cat "$WORK/keygen.log" >&2; die "cellar keygen --sign host failed"; }
mkdir -m 0700 "$GNUPGHOME_BENCH"
GPG=(gpg --homedir "$GNUPGHOME_BENCH" --batch --quiet)
"${GPG[@]}" --import "$CONF/secrets/k.pub.asc" 2>/dev/null
FPR=$("${GPG[@]}" --with-colons --list-keys | awk -F: '$1 == "fpr" { print $10; exit }')
[[ -n "$FPR" ]] || die "gpg could not import $CONF/secrets/k.pub.asc"

write_profile() { # NAME PATH
    cat >"$CONF/profiles/$1.toml" <<EOF
# written by benches/files.sh
kind = "files"

[source]
paths = ["$2"]

[store]
url = "file://store"

[encryption]
recipients = ["secrets/k.pub.asc"]
identity = "secrets/k.key.asc"
signer = "secrets/host.sign.key.asc"

[compression]
algorithm = "zstd"
level = $ZSTD_LEVEL
threads = $THREADS
EOF
}
PROFILES=()
if [[ "$SKIP_SMALL" != 1 ]]; then
    write_profile small "$DATA/small"
    write_profile small_g00 "$DATA/small/g00"
    PROFILES+=(small small_g00)
fi
if [[ "$SKIP_LARGE" != 1 ]]; then
    write_profile large "$DATA/large"
    PROFILES+=(large)
fi
if ! "$CELLAR" --config-dir "$CONF" check "${PROFILES[@]}" >"$WORK/check.log" 2>&1; then
    cat "$WORK/check.log" >&2
    die "cellar check failed for the bench profiles in $CONF/profiles"
fi

# --- variants ------------------------------------------------------------------
q() { printf '%q' "$1"; }
CELLAR_Q=$(q "$CELLAR")
CONF_Q=$(q "$CONF")
GPG_E="gpg --homedir $(q "$GNUPGHOME_BENCH") --batch --quiet --trust-model always -z 0 -e -r $FPR"
export RESTIC_PASSWORD=bench

declare -A LABEL CMD OUT
for ds in small large; do
    s=${ds:0:1}  # s or l
    rel=${DATA#/}/$ds
    LABEL[${s}_tar]="tar | zstd -T$THREADS -$ZSTD_LEVEL | gpg -e -z0"
    CMD[${s}_tar]="tar -cf - -C / $(q "$rel") | zstd -q -T$THREADS -$ZSTD_LEVEL | $GPG_E > $(q "$WORK/out.tar.zst.gpg")"
    OUT[${s}_tar]="file:$WORK/out.tar.zst.gpg"
    LABEL[${s}_cellar]="cellar backup (zstd -$ZSTD_LEVEL, $THREADS threads)"
    CMD[${s}_cellar]="$CELLAR_Q --config-dir $CONF_Q backup $ds"
    OUT[${s}_cellar]="store:$ds"
    LABEL[${s}_restic]="restic backup (compression auto)"
    CMD[${s}_restic]="restic --repo $(q "$RESTIC_REPO") --no-cache -q --compression auto backup $(q "$DATA/$ds")"
    OUT[${s}_restic]="dir:$RESTIC_REPO"
done
LABEL[rss_g00]="cellar backup, $RSS_N files (small/g00)"
CMD[rss_g00]="$CELLAR_Q --config-dir $CONF_Q backup small_g00"
OUT[rss_g00]="store:small_g00"
LABEL[rss_all]="cellar backup, $SMALL_N files (small)"
CMD[rss_all]="${CMD[s_cellar]}"
OUT[rss_all]="store:small"

VARIANTS=()
if [[ "$SKIP_SMALL" != 1 ]]; then
    VARIANTS+=(s_tar s_cellar)
    [[ "$HAVE_RESTIC" == 0 ]] || VARIANTS+=(s_restic)
fi
if [[ "$SKIP_LARGE" != 1 ]]; then
    VARIANTS+=(l_tar l_cellar)
    [[ "$HAVE_RESTIC" == 0 ]] || VARIANTS+=(l_restic)
fi

SAMPLES="$WORK/samples.tsv"
: >"$SAMPLES"
declare -A FAILED=()

prepare() { # untimed set-up before a variant
    case "${OUT[$1]}" in
        file:*) rm -f -- "${OUT[$1]#file:}" ;;
        store:*) rm -rf -- "$STORE/${OUT[$1]#store:}" ;;
        dir:*)
            rm -rf -- "$RESTIC_REPO"
            restic --repo "$RESTIC_REPO" --no-cache -q init --repository-version 2 >/dev/null
            ;;
    esac
    sync
}

output_bytes() {
    local o=${OUT[$1]}
    case "$o" in
        file:*) stat -c %s "${o#file:}" ;;
        store:*) find "$STORE/${o#store:}" -type f -name '*.pgp' -printf '%s\n' 2>/dev/null | awk '{ s += $1 } END { print s + 0 }' ;;
        dir:*) du -sb "${o#dir:}" | cut -f1 ;;
    esac
}

finish() { # untimed clean-up after a variant
    case "${OUT[$1]}" in
        file:*) rm -f -- "${OUT[$1]#file:}" ;;
        store:*) rm -rf -- "$STORE/${OUT[$1]#store:}" ;;
        dir:*) rm -rf -- "$RESTIC_REPO" ;;
    esac
}

measure() { # ID REP
    local id=$1 rep=$2 tf="$WORK/time.$1" log="$WORK/log.$1" wall rss user sys cpu bytes t0 t1 ok=1
    prepare "$id"
    if [[ "$HAVE_TIME" == 1 ]]; then
        /usr/bin/time -f '%e %M %U %S' -o "$tf" bash -o pipefail -c "${CMD[$id]}" >"$log" 2>&1 || ok=0
        [[ "$ok" == 0 ]] || read -r wall rss user sys <<<"$(tail -n 1 "$tf")"
        cpu=$(awk -v u="${user:-0}" -v s="${sys:-0}" 'BEGIN { printf "%.2f", u + s }')
    else
        t0=$(date +%s.%N)
        bash -o pipefail -c "${CMD[$id]}" >"$log" 2>&1 || ok=0
        t1=$(date +%s.%N)
        wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
        rss="" cpu=""
    fi
    if [[ "$ok" == 1 ]]; then
        bytes=$(output_bytes "$id")
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$rep" "$wall" "$cpu" "$rss" "$bytes" >>"$SAMPLES"
        printf '  %-9s %-40s %8.2f s %9s MB RSS\n' "$id" "${LABEL[$id]}" "$wall" \
            "$(awk -v k="$rss" 'BEGIN { if (k == "") print "-"; else printf "%.1f", k / 1024 }')"
    else
        FAILED[$id]=1
        printf '  %-9s %-40s FAILED; last lines of its output:\n' "$id" "${LABEL[$id]}"
        tail -n 8 "$log" | sed 's/^/      /'
    fi
    finish "$id"
}

mb() { awk -v b="$1" 'BEGIN { if (b == "") print "-"; else printf "%.1f", b / 1e6 }'; }
note ""
[[ "$SKIP_SMALL" == 1 ]] || note "data set A: $SMALL_N small files, $(mb "$SMALL_BYTES") MB, in $SMALL_DIRS folders"
[[ "$SKIP_LARGE" == 1 ]] || note "data set B: $LARGE_FILES large files, $(mb "$LARGE_BYTES") MB"
note "variants: ${VARIANTS[*]}; $REPS repetitions, alternating"
[[ "$HAVE_RESTIC" == 1 ]] || note "(restic not installed: skipping the restic variants; apt-get install restic)"
[[ "$HAVE_TIME" == 1 ]] || note "(/usr/bin/time not found: wall time only, no CPU time or peak RSS; apt-get install time)"
for ((rep = 1; rep <= REPS; rep++)); do
    note "repetition $rep/$REPS (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    for id in "${VARIANTS[@]}"; do
        measure "$id" "$rep"
    done
done
RSS_VARIANTS=()
if [[ "$SKIP_SMALL" != 1 && "$HAVE_TIME" == 1 ]]; then
    RSS_VARIANTS=(rss_g00 rss_all)
    note "memory in the number of files (one run each)"
    for id in "${RSS_VARIANTS[@]}"; do
        measure "$id" 1
    done
fi

# --- report --------------------------------------------------------------------
note ""
median() { sort -g | awk 'NF { v[++n] = $1 } END { if (n == 0) exit; if (n % 2) print v[(n + 1) / 2]; else print (v[n / 2] + v[n / 2 + 1]) / 2 }'; }
column_of() { awk -F'\t' -v id="$1" -v c="$2" '$1 == id { print $c }' "$SAMPLES"; }
div() { awk -v x="$1" -v y="$2" 'BEGIN { if (x == "" || y == "" || y + 0 == 0) print "-"; else printf "%.2f", x / y }'; }
kb2mb() { awk -v k="$1" 'BEGIN { if (k == "") print "-"; else printf "%.1f", k / 1024 }'; }

declare -A WALL MINW CPU RSS BYTES
for id in "${VARIANTS[@]}" "${RSS_VARIANTS[@]}"; do
    WALL[$id]=$(column_of "$id" 3 | median)
    MINW[$id]=$(column_of "$id" 3 | sort -g | head -n 1)
    CPU[$id]=$(column_of "$id" 4 | median)
    RSS[$id]=$(column_of "$id" 5 | sort -g | tail -n 1)
    BYTES[$id]=$(column_of "$id" 6 | median)
done

{
    echo "cellar files benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores: $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "cellar: $CELLAR $("$CELLAR" --version 2>/dev/null | head -n 1)"
    echo "tools: $(tar --version | head -n 1); $(zstd --version | head -n 1 | tr -d "*" | sed "s/^ *//;s/, by .*//"); $(gpg --version | head -n 1)$( [[ "$HAVE_RESTIC" == 0 ]] || echo "; $(restic version | head -n 1 | sed 's/ compiled.*//')")"
    [[ "$SKIP_SMALL" == 1 ]] || echo "A small: $SMALL_N files of 1-8 KiB, $(mb "$SMALL_BYTES") MB in $SMALL_DIRS folders"
    [[ "$SKIP_LARGE" == 1 ]] || echo "B large: $LARGE_FILES files of $SIZE_MB MiB, $(mb "$LARGE_BYTES") MB"
    echo "zstd -$ZSTD_LEVEL, $THREADS threads; $REPS reps, alternating, median wall"
    echo
    printf '%-9s %-40s %8s %8s %8s %8s %8s %6s %8s %8s\n' id variant wall_s min_s cpu_s rss_MB out_MB ratio x_tar x_restic
    for id in "${VARIANTS[@]}"; do
        if [[ -z "${WALL[$id]:-}" ]]; then
            printf '%-9s %-40s %8s\n' "$id" "${LABEL[$id]}" FAILED
            continue
        fi
        p=${id%%_*}
        raw=$SMALL_BYTES
        [[ "$p" == l ]] && raw=$LARGE_BYTES
        x_tar=- x_restic=-
        if [[ "$id" != *_tar ]]; then x_tar=$(div "${WALL[$id]}" "${WALL[${p}_tar]:-}"); fi
        if [[ "$id" == *_cellar ]]; then x_restic=$(div "${WALL[$id]}" "${WALL[${p}_restic]:-}"); fi
        printf '%-9s %-40s %8.2f %8.2f %8s %8s %8s %6s %8s %8s\n' "$id" "${LABEL[$id]}" "${WALL[$id]}" "${MINW[$id]}" \
            "$(awk -v c="${CPU[$id]:-}" 'BEGIN { if (c == "") print "-"; else printf "%.2f", c }')" "$(kb2mb "${RSS[$id]}")" "$(mb "${BYTES[$id]}")" "$(div "$raw" "${BYTES[$id]}")" "$x_tar" "$x_restic"
    done
    echo
    echo "s_: data set A (small files), l_: data set B (large files)"
    echo "x_tar, x_restic: wall time / the tar pipeline's, restic's on the same data set; ratio: input bytes / output size"
    echo "rss_MB: peak RSS of the largest single process of the pipeline, max over the repetitions"
    if [[ "${#RSS_VARIANTS[@]}" -gt 0 ]]; then
        echo
        echo "cellar peak RSS in the number of files (one run each):"
        for id in "${RSS_VARIANTS[@]}"; do
            printf '  %-40s %8s MB RSS  %8s s\n' "${LABEL[$id]}" "$(kb2mb "${RSS[$id]:-}")" "${WALL[$id]:--}"
        done
    fi
    echo
    echo "targets:"
    TARGET_FAIL=0
    target() { # TEXT RATIO LIMIT
        local verdict
        if [[ "$2" == - ]]; then
            printf '  %-52s SKIP (not measured)\n' "$1"
            return
        fi
        if awk -v r="$2" -v f="$3" 'BEGIN { exit !(r <= f) }'; then verdict=PASS; else verdict=FAIL; TARGET_FAIL=1; fi
        printf '  %-52s %5s (limit %s)  %s\n' "$1" "$2" "$3" "$verdict"
    }
    if [[ "$SKIP_SMALL" != 1 ]]; then
        target "A: cellar <= 1.20 x tar | zstd | gpg" "$(div "${WALL[s_cellar]:-}" "${WALL[s_tar]:-}")" 1.20
    fi
    if [[ "$SKIP_LARGE" != 1 ]]; then
        target "B: cellar <= 1.20 x tar | zstd | gpg" "$(div "${WALL[l_cellar]:-}" "${WALL[l_tar]:-}")" 1.20
    fi
    if [[ "${#RSS_VARIANTS[@]}" -gt 0 ]]; then
        target "memory flat: RSS($SMALL_N files) <= 1.25 x RSS($RSS_N files)" "$(div "${RSS[rss_all]:-}" "${RSS[rss_g00]:-}")" 1.25
    fi
    echo "$TARGET_FAIL" >"$WORK/target_fail"
    echo
    echo "samples (id rep wall_s cpu_s rss_KB out_bytes):"
    sed 's/^/  /' "$SAMPLES"
} | if [[ -n "$RESULTS" ]]; then tee "$RESULTS"; else cat; fi
[[ -z "$RESULTS" ]] || note "results saved to $RESULTS"
if [[ "${#FAILED[@]}" -gt 0 ]]; then
    note "failed variants: ${!FAILED[*]}"
fi
if [[ "$STRICT" == 1 ]] && { [[ "$(cat "$WORK/target_fail")" == 1 ]] || [[ "${#FAILED[@]}" -gt 0 ]]; }; then
    exit 1
fi
