#!/usr/bin/env bash
# benches/mariadb.sh — cellar's MariaDB backup and restore against the shell
# pipelines they replace. Not a test: run it by hand on an otherwise idle host.
#
# Usage: benches/mariadb.sh [SIZE_MB]        (default 300)
#
# It starts a private mariadbd in BENCH_DIR (never the system's), fills a
# database "bench" with about SIZE_MB of dump (customers, orders with JSON
# line items, free-text notes in several languages), makes keys and a zstd -3
# profile in a config dir of its own, then measures, alternating the
# variants in every repetition:
#   a  mariadb-dump ... | zstd -T$THREADS -3 | gpg -z 0 -e -r KEY > out
#   b  cellar backup bench_my
#   c  mariadb bench_restore < dump.sql            (a local plain dump)
#   d  cellar restore bench_my --to-database bench_restore --clean
# and prints the medians, the CPU seconds of each, and the ratios against the
# targets: backup b <= 1.05 x a, restore d <= 1.10 x c.
#
# Environment: REPS=5  THREADS=2  CELLAR=PATH (else cargo build --release)
#   BENCH_DIR=/tmp/cellar-bench-my  BENCH_PORT=33399  KEEP_RUNNING=1
set -euo pipefail

SIZE_MB=${1:-300}
REPS=${REPS:-5}
THREADS=${THREADS:-2}
BENCH_DIR=${BENCH_DIR:-/tmp/cellar-bench-my}
PORT=${BENCH_PORT:-33399}
KEEP_RUNNING=${KEEP_RUNNING:-0}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() { printf 'mariadb.sh: %s\n' "$*" >&2; exit 1; }
[[ "$SIZE_MB" =~ ^[0-9]+$ && "$SIZE_MB" -ge 1 ]] || die "SIZE_MB must be a number"
command -v mariadbd >/dev/null || [[ -x /usr/sbin/mariadbd ]] || die "install mariadb-server"

if [[ -z "${CELLAR:-}" ]]; then
    (cd "$ROOT" && cargo build --release --locked -q)
    CELLAR="$ROOT/target/release/cellar"
fi

mkdir -p "$BENCH_DIR"
DATA="$BENCH_DIR/data"; SOCK="$BENCH_DIR/sock"; CONF="$BENCH_DIR/conf"
M=(mariadb --no-defaults --socket="$SOCK" -uroot)
DUMP=(mariadb-dump --no-defaults --socket="$SOCK" -uroot --single-transaction --quick
      --routines --events --triggers --hex-blob --default-character-set=utf8mb4 --no-tablespaces)

start() {
    if "${M[@]}" -e 'SELECT 1' >/dev/null 2>&1; then return; fi
    if [[ ! -d "$DATA/mysql" ]]; then
        mariadb-install-db --user=mysql --datadir="$DATA" --auth-root-authentication-method=normal \
            --skip-test-db >/dev/null
    fi
    chown mysql:mysql "$BENCH_DIR"; chown -R mysql:mysql "$DATA"
    setsid -f /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DATA" --port="$PORT" \
        --bind-address=127.0.0.1 --socket="$SOCK" --pid-file="$BENCH_DIR/pid" \
        --log-error="$BENCH_DIR/err.log" --skip-name-resolve --skip-log-bin \
        --innodb-buffer-pool-size=1G --innodb-log-file-size=256M --max-allowed-packet=256M
    for _ in $(seq 100); do "${M[@]}" -e 'SELECT 1' >/dev/null 2>&1 && return; sleep 0.2; done
    die "mariadbd did not start: $(tail -5 "$BENCH_DIR/err.log")"
}
stop() { [[ "$KEEP_RUNNING" == 1 ]] || kill "$(cat "$BENCH_DIR/pid")" 2>/dev/null || true; }
trap stop EXIT
start

# About 230 bytes of dump per order, customers included.
rows=$((SIZE_MB * 1000000 / 230))
have=$("${M[@]}" -N -e "SELECT COUNT(*) FROM bench.orders" 2>/dev/null || echo 0)
if [[ "$have" != "$rows" ]]; then
    echo "generating about $SIZE_MB MB ($rows orders)..."
    "${M[@]}" --default-character-set=utf8mb4 <<SQL
DROP DATABASE IF EXISTS bench; CREATE DATABASE bench CHARACTER SET utf8mb4; USE bench;
CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(100), email VARCHAR(200), city VARCHAR(100),
  created DATETIME, notes TEXT) ENGINE=InnoDB;
CREATE TABLE orders (id INT PRIMARY KEY, customer INT NOT NULL, total DECIMAL(12,2), status VARCHAR(20),
  items JSON, placed DATETIME, KEY (customer), KEY (placed)) ENGINE=InnoDB;
INSERT INTO customers SELECT seq,
  CONCAT(ELT(1 + seq % 8, 'Anna', 'Björn', 'Chloé', 'Dmitri', 'Émile', 'Fatima', 'Günther', 'Hiroshi'), ' ',
         ELT(1 + (seq DIV 8) % 6, 'Müller', 'García', 'Nakamura', 'Okafor', 'Svensson', 'Rossi')),
  CONCAT('user', seq, '@example.com'),
  ELT(1 + seq % 7, 'Berlin', 'København', 'São Paulo', 'Zürich', 'Kraków', 'Lyon', 'Osaka'),
  '2020-01-01' + INTERVAL (seq % 1500) DAY,
  CONCAT(ELT(1 + seq % 5, 'Prefers delivery in the morning. ', 'Ruft bitte vorher an. ', 'Livraison au voisin possible. ',
         'Entrega en portería. ', 'Leave at the back door. '), LEFT(MD5(seq), 1 + seq % 16))
FROM seq_1_to_$((rows / 10 + 1));
INSERT INTO orders SELECT seq, 1 + seq % $((rows / 10 + 1)), (seq % 99991) / 100,
  ELT(1 + seq % 4, 'paid', 'shipped', 'delivered', 'returned'),
  JSON_ARRAY(JSON_OBJECT('sku', CONCAT('SKU-', seq % 5000), 'qty', 1 + seq % 3, 'price', (seq % 9973) / 100,
                         'name', ELT(1 + seq % 6, 'Kaffeebohnen 1 kg', 'Teekanne', 'Espresso cups', 'Moka pot', 'Grinder', 'Filter papers')),
             JSON_OBJECT('sku', CONCAT('SKU-', seq % 777), 'qty', 1, 'price', (seq % 4999) / 100, 'gift', seq % 2 = 0)),
  '2021-01-01' + INTERVAL (seq % 1400) DAY + INTERVAL (seq % 86400) SECOND
FROM seq_1_to_$rows;
SQL
fi
"${DUMP[@]}" bench > "$BENCH_DIR/dump.sql"
echo "dump: $(du -m "$BENCH_DIR/dump.sql" | cut -f1) MB"

# Keys and the profile.
mkdir -p "$CONF/profiles"
if [[ ! -f "$CONF/secrets/bench.pub.asc" ]]; then
    "$CELLAR" --config-dir "$CONF" keygen bench >/dev/null
    "$CELLAR" --config-dir "$CONF" keygen --sign host >/dev/null
fi
export GNUPGHOME="$BENCH_DIR/gnupg"; mkdir -p "$GNUPGHOME"; chmod 700 "$GNUPGHOME"
gpg -q --batch --import "$CONF/secrets/bench.pub.asc" 2>/dev/null
KEY=$(gpg --batch --with-colons --list-keys | awk -F: '/^fpr/ {print $10; exit}')
cat > "$CONF/profiles/bench_my.toml" <<TOML
kind = "mariadb"
[source]
socket = "$SOCK"
user = "root"
database = "bench"
globals = false
[store]
url = "file://$BENCH_DIR/store"
[encryption]
recipients = ["secrets/bench.pub.asc"]
identity = "secrets/bench.key.asc"
signer = "secrets/host.sign.key.asc"
[compression]
algorithm = "zstd"
level = 3
threads = $THREADS
[retention]
daily = 1
weekly = 0
monthly = 0
TOML

declare -A WALL CPU
run() { # name, command...
    local name=$1; shift
    /usr/bin/time -o "$BENCH_DIR/time" -f '%e %U %S' "$@" >/dev/null 2>"$BENCH_DIR/$name.err" \
        || die "$name failed: $(tail -3 "$BENCH_DIR/$name.err")"
    local t; t=$(tail -1 "$BENCH_DIR/time")
    WALL[$name]+="$(awk '{print $1}' <<<"$t") "
    CPU[$name]+="$(awk '{print $2 + $3}' <<<"$t") "
}
median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

for r in $(seq "$REPS"); do
    echo "repetition $r/$REPS"
    run a bash -c "$(printf '%q ' "${DUMP[@]}") bench | zstd -q -T$THREADS -3 | gpg -q --batch -z 0 --trust-model always -e -r $KEY > '$BENCH_DIR/a.out'"
    run b "$CELLAR" --config-dir "$CONF" backup bench_my
    "${M[@]}" -e 'DROP DATABASE IF EXISTS bench_restore; CREATE DATABASE bench_restore'
    run c bash -c "$(printf '%q ' "${M[@]}") bench_restore < '$BENCH_DIR/dump.sql'"
    run d "$CELLAR" --config-dir "$CONF" restore bench_my --to-database bench_restore --clean
    "$CELLAR" --config-dir "$CONF" prune bench_my >/dev/null 2>&1 || true
done

printf '\n%-4s %-58s %8s %8s\n' "" "variant (median of $REPS)" "wall s" "cpu s"
for v in a b c d; do
    case $v in
        a) d="mariadb-dump | zstd -T$THREADS -3 | gpg -z 0 -e" ;;
        b) d="cellar backup (zstd -3)" ;;
        c) d="mariadb < dump.sql" ;;
        d) d="cellar restore --to-database --clean" ;;
    esac
    printf '%-4s %-58s %8.2f %8.2f\n' "$v" "$d" "$(median "${WALL[$v]}")" "$(median "${CPU[$v]}")"
done
ratio() { awk -v x="$(median "${WALL[$1]}")" -v y="$(median "${WALL[$2]}")" 'BEGIN {printf "%.2f", x / y}'; }
echo
echo "backup:  b / a = $(ratio b a) x   (target <= 1.05)"
echo "restore: d / c = $(ratio d c) x   (target <= 1.10)"
