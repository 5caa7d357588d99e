#!/usr/bin/env bash
# benches/backup.sh — benchmark cellar's backup and restore against the shell
# pipelines it replaces. Not a test: run it by hand on an otherwise idle host.
#
# Usage: benches/backup.sh [SIZE_MB]        (default 1000)
#
# It starts a throwaway PostgreSQL server (scripts/pg-sandbox.sh), fills a
# database "bench" with about SIZE_MB of realistic data (customers, orders with
# jsonb line items, web events with jsonb payloads, free-text reviews; names and
# words in several languages; it compresses ~7x with xz, ~5x with zstd), makes a
# key with `cellar keygen bench` and two profiles (bench_xz, bench_zstd) in a
# config dir of its own, then measures, alternating the variants in every
# repetition:
#   a  pg_dump -Fc -Z0 > /dev/null                       (baseline)
#   b  pg_dump -Fc -Z0 | xz -T$THREADS -$PRESET > out
#   c  pg_dump -Fc -Z0 | xz ... | gpg -e -z0 -r KEY > out  (the shell pipeline cellar replaces)
#   d  cellar backup bench_xz
#   e  pg_dump -Fc -Z0 | zstd -T$THREADS -3 > out
#   e2 pg_dump -Fc -Z0 | zstd ... | gpg -e -z0 -r KEY > out (the zstd shell pipeline)
#   f  cellar backup bench_zstd
#   g1 pg_restore -j$THREADS -d DB dump.pgdump         (from a local -Z0 dump)
#   g2 cellar restore bench_zstd --to-database DB      (spool, pg_restore -j, swap)
#   k1 gpg -d PAYLOAD.zst.pgp | zstd -d > out && sync out
#   k2 cellar restore bench_zstd --to-file out
#   l1 gpg -d PAYLOAD.xz.pgp | xz -d -T$THREADS > out && sync out   (not with SKIP_XZ)
#   l2 cellar restore bench_xz --to-file out
#   h1 pg_dump | restic backup --stdin (zstd auto)       (only when restic is installed)
#   h2 pg_dump | borg create --compression zstd,3 -      (only when borg is installed)
#   i  cellar backup bench_s3   (zstd, to a moto S3 server on loopback)
#   j  cellar backup bench_sftp (zstd, to a private sshd on loopback)
#      (i and j need moto in /opt/cellar-moto, see .ci/run, and /usr/sbin/sshd; STORES=0 skips them)
#   s  cellar backup bench_swift (zstd, to a private OpenStack Swift all-in-one on loopback:
#      Debian's swift-* servers with tempauth and memcached; SWIFT=0 skips it). The Swift
#      servers' own CPU seconds during s are reported beside it, as they share the cores.
# with /usr/bin/time: wall seconds, CPU seconds and peak RSS (the largest single
# process of the pipeline), plus the output size. It prints the median per
# variant and whether the targets hold:
#   cellar xz   <= 1.05 x (b) xz alone        cellar xz <= 1.03 x (c) gpg pipeline
#   cellar zstd <= 1.00 x (e2) zstd|gpg       cellar zstd <= 1.25 x (a) raw pg_dump
#   cellar restore <= 1.10 x (g1) pg_restore -j
#   cellar restore --to-file <= 1.25 x (k1) and (l1), the gpg | zstd/xz pipelines
#   cellar to S3, to SFTP <= 1.10 x (f) the same backup to a folder
#   cellar to Swift <= 1.15 x (f) the same backup to a folder
#
# Environment:
#   PRESET=6        xz preset for b, c, d          REPS=2      repetitions
#   THREADS=2       compression threads            SKIP_XZ=1   skip b, c, d (slow)
#   CELLAR=PATH     use this binary instead of `cargo build --release`
#   SHELL_ONLY=1    no cellar at all: only the shell variants (key made by gpg)
#   BENCH_DIR=/tmp/cellar-bench   BENCH_PORT=54339
#   REGEN=1         regenerate the data even if BENCH_DIR holds a database of that size
#   KEEP_RUNNING=1  leave the server running at the end   CLEAN=1  delete BENCH_DIR at the end
#   STRICT=1        exit 1 when a target fails
#   ONLY="f s"      measure only these variants (ids as above)
#
# The generated database stays in BENCH_DIR/pg and is reused by the next run
# with the same SIZE_MB. Results go to BENCH_DIR/results-<time>.txt too.
set -euo pipefail

SIZE_MB=${1:-1000}
PRESET=${PRESET:-6}
REPS=${REPS:-2}
THREADS=${THREADS:-2}
SKIP_XZ=${SKIP_XZ:-0}
SHELL_ONLY=${SHELL_ONLY:-0}
REGEN=${REGEN:-0}
KEEP_RUNNING=${KEEP_RUNNING:-0}
CLEAN=${CLEAN:-0}
STRICT=${STRICT:-0}
BENCH_DIR=${BENCH_DIR:-/tmp/cellar-bench}
PORT=${BENCH_PORT:-54339}
ZSTD_LEVEL=3
GEN_VERSION=1

die() { printf 'backup.sh: %s\n' "$*" >&2; exit 1; }
note() { printf '%s\n' "$*"; }

[[ "$SIZE_MB" =~ ^[0-9]+$ && "$SIZE_MB" -ge 1 ]] || die "SIZE_MB must be a positive number of megabytes, got '$SIZE_MB'"
[[ "$PRESET" =~ ^[0-9]$ ]] || die "PRESET must be 0-9, got '$PRESET'"
[[ "$REPS" =~ ^[0-9]+$ && "$REPS" -ge 1 ]] || die "REPS must be >= 1, got '$REPS'"
[[ "$THREADS" =~ ^[0-9]+$ && "$THREADS" -ge 1 ]] || die "THREADS must be >= 1, got '$THREADS'"
case "$BENCH_DIR" in /*) ;; *) BENCH_DIR="$PWD/$BENCH_DIR" ;; esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SANDBOX="$ROOT/scripts/pg-sandbox.sh"
PGDIR="$BENCH_DIR/pg"
WORK="$BENCH_DIR/work"
CONF="$BENCH_DIR/config"
GNUPGHOME_BENCH="$BENCH_DIR/gnupg"
STORE="$BENCH_DIR/store"
DB=bench

export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres PGCLIENTENCODING=UTF8
PSQL=(psql -X -q -v ON_ERROR_STOP=1)
export PGOPTIONS='-c client_min_messages=warning'

# --- tools ---------------------------------------------------------------------
for t in pg_dump pg_restore psql createdb dropdb xz zstd gpg; do
    command -v "$t" >/dev/null 2>&1 || die "$t not found (run ./install.sh --no-build as root)"
done
if [[ ! -x /usr/bin/time ]]; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        note "installing GNU time (/usr/bin/time)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null; }
    fi
    [[ -x /usr/bin/time ]] || die "GNU time is missing: apt-get install -y time"
fi

if [[ "$SHELL_ONLY" == 1 ]]; then
    CELLAR=""
elif [[ -n "${CELLAR:-}" ]]; then
    command -v "$CELLAR" >/dev/null 2>&1 || die "CELLAR=$CELLAR is not an executable"
    CELLAR=$(command -v "$CELLAR")
else
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust, set CELLAR=/path/to/cellar, or SHELL_ONLY=1"
    note "building: cargo build --release"
    (cd "$ROOT" && cargo build --release)
    CELLAR="$ROOT/target/release/cellar"
fi
HAVE_RESTIC=0; command -v restic >/dev/null 2>&1 && HAVE_RESTIC=1
HAVE_BORG=0; command -v borg >/dev/null 2>&1 && HAVE_BORG=1

# --- cleanup -------------------------------------------------------------------
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    jobs -p | xargs -r kill 2>/dev/null || true
    [[ -z "${SWIFT_PIDS[*]:-}" ]] || kill "${SWIFT_PIDS[@]}" 2>/dev/null || true
    if [[ -d "$GNUPGHOME_BENCH" ]]; then
        gpgconf --homedir "$GNUPGHOME_BENCH" --kill all >/dev/null 2>&1 || true
    fi
    if "$SANDBOX" status "$PGDIR" 2>/dev/null; then
        "${PSQL[@]}" -d postgres -c 'DROP DATABASE IF EXISTS restore_pg' -c 'DROP DATABASE IF EXISTS restore_cellar' \
            >/dev/null 2>&1 || true
        if [[ "$KEEP_RUNNING" != 1 || "$CLEAN" == 1 ]]; then
            "$SANDBOX" stop "$PGDIR" || true
        fi
    fi
    rm -rf -- "$WORK" "$STORE" "$BENCH_DIR/restic" "$BENCH_DIR/borg" "$BENCH_DIR/borg-home"
    if [[ "$CLEAN" == 1 ]]; then
        rm -rf -- "$BENCH_DIR"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$BENCH_DIR"
chmod 0755 "$BENCH_DIR"
rm -rf -- "$WORK" "$STORE"
mkdir -p "$WORK" "$STORE"

# --- server and data -----------------------------------------------------------
note "starting PostgreSQL in $PGDIR on 127.0.0.1:$PORT"
"$SANDBOX" start "$PGDIR" "$PORT"

have=$("${PSQL[@]}" -At -d "$DB" -c "SELECT size_mb || ' ' || version FROM bench_meta" 2>/dev/null || true)
if [[ "$REGEN" != 1 && "$have" == "$SIZE_MB $GEN_VERSION" ]]; then
    note "reusing database '$DB' (about $SIZE_MB MB, generated earlier; REGEN=1 to redo)"
else
    note "generating database '$DB' with about $SIZE_MB MB of table data"
    gen_start=$SECONDS
    "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
    "${PSQL[@]}" -d "$DB" -f - <<'SQL'
CREATE OR REPLACE FUNCTION bench_vocab() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$ SELECT ARRAY[
'the','of','and','to','a','in','is','it','you','that','was','for','on','are','with','as','be','at','this','have','from','or','had','by','not','but','what','all','were','we','when','your','can','said','there','use','an','each','which','she','do','how','their','if','will','up','other','about','out','many','then','them','these','so','some','her','would','make','like','him','into','time','has','look','two','more','write','go','see','number','no','way','could','people','my','than','first','water','been','call','who','its','now','find','long','down','day','did','get','come','made','may','part','order','delivery','package','arrived','quickly','great','quality','price','cheap','expensive','broken','replacement','refund','customer','service','support','helpful','slow','fast','shipping','box','damaged','perfect','recommend','again','never','always','product','colour','size','small','large','medium','fits','well','returned','exchange','warranty','battery','charger','cable','screen','keyboard','mouse','laptop','phone','tablet','headphones','speaker','camera','lens','tripod','bag','jacket','shoes','boots','socks','shirt','trousers','dress','coffee','tea','mug','kettle','pan','knife','board','garden','hose','chair','table','lamp','shelf','drawer','bed','pillow','blanket','towel','soap','brush','paint','hammer','drill','screw','nail','glue','tape','paper','pen','notebook','book','novel','story','author','chapter','page','cover','edition','print','gift','birthday','christmas','holiday','weekend','morning','evening','night','week','month','year','yesterday','today','tomorrow','Monday','Friday','Saturday','London','Berlin','Paris','Madrid','Warsaw','Tokyo','Zürich','København','Kraków','São','Paulo','café','naïve','résumé','über','grüße','niño','año','smörgås','Øresund','łódź','very','really','quite','too','also','just','only','still','even','much','well','good','bad','nice','happy','sad','sorry','thanks','please','hello','problem','issue','question','answer','account','password','login','email','address','invoice','payment','card','bank','transfer','discount','coupon','code','offer','sale','stock','available','unavailable','backorder','tracking','courier','parcel','signature','door','neighbour','collect','pickup','store','branch','manager','team','staff','friendly','rude','polite','waited','minutes','hours','days','weeks','finally','eventually','immediately','unfortunately','luckily','however','because','although','since','until','while','after','before','during','without','within','between','against'] $$;
CREATE OR REPLACE FUNCTION bench_first_names() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$ SELECT ARRAY[
'James','Mary','Robert','Patricia','John','Jennifer','Michael','Linda','David','Elizabeth','William','Barbara','Richard','Susan','Joseph','Jessica','Thomas','Sarah','Charles','Karen','Daniel','Lisa','Matthew','Nancy','Anthony','Sandra','Mark','Ashley','Paul','Emily','Lukas','Anna','Jonas','Lea','Léa','Chloé','Zoë','José','María','Lucía','Pablo','Łukasz','Agnieszka','Wojciech','Søren','Mette','Björn','Åsa','Jürgen','Käthe','François','Hélène','Giulia','Marco','Aoife','Siobhán','Ольга','Иван','陽翔','さくら','Mohammed','Fatima','Ahmed','Aisha','Wei','Li','Priya','Arjun'] $$;
CREATE OR REPLACE FUNCTION bench_last_names() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$ SELECT ARRAY[
'Smith','Johnson','Williams','Brown','Jones','Garcia','Miller','Davis','Rodriguez','Martinez','Hernandez','Lopez','Gonzalez','Wilson','Anderson','Thomas','Taylor','Moore','Jackson','Martin','Lee','Thompson','White','Harris','Clark','Lewis','Müller','Schmidt','Schneider','Fischer','Weber','Meyer','Wagner','Becker','Dubois','Lefèvre','Moreau','Fernández','Pérez','Sánchez','Nowak','Kowalski','Wiśniewski','Wójcik','Jensen','Nielsen','Hansen','Johansson','Andersson','Rossi','Russo','Ferrari','O''Brien','Murphy','Kelly','Иванов','Петрова','佐藤','鈴木','Yamamoto','Kim','Park','Nguyen','Singh','Patel','Khan','Ali'] $$;
CREATE OR REPLACE FUNCTION bench_cities() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$ SELECT ARRAY[
'London','Manchester','Birmingham','Leeds','Glasgow','Dublin','Cork','Berlin','Hamburg','München','Köln','Frankfurt am Main','Düsseldorf','Wien','Zürich','Genève','Paris','Lyon','Marseille','Toulouse','Bruxelles','Antwerpen','Amsterdam','Rotterdam','Utrecht','København','Aarhus','Stockholm','Göteborg','Malmö','Oslo','Helsinki','Warszawa','Kraków','Łódź','Wrocław','Gdańsk','Praha','Brno','Madrid','Barcelona','Valencia','Sevilla','Lisboa','Porto','Roma','Milano','Napoli','Torino','Athína','New York','Chicago','Toronto','Montréal','São Paulo','Tokyo','Ōsaka'] $$;
CREATE OR REPLACE FUNCTION bench_products() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$ SELECT ARRAY[
'Wireless mouse','Mechanical keyboard','USB-C charger 65 W','Noise-cancelling headphones','27" monitor','Laptop stand','HDMI cable 2 m','Phone case','Screen protector','Bluetooth speaker','Coffee grinder','French press 1 l','Espresso cups (set of 4)','Cast-iron pan 28 cm','Chef''s knife 20 cm','Cutting board, oak','Electric kettle','Tea infuser','Linen shirt','Merino socks (3 pairs)','Rain jacket','Leather boots','Running shoes','Wool blanket','Down pillow','Bath towel set','Desk lamp','Bookshelf, pine','Garden hose 25 m','Cordless drill','Screwdriver set','Wood glue 250 ml','Notebook A5, dotted','Fountain pen','Paperback novel','Board game','Jigsaw puzzle 1000 pcs','Yoga mat','Water bottle 750 ml','Backpack 30 l'] $$;
CREATE OR REPLACE FUNCTION bench_agents() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$ SELECT ARRAY[
'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36',
'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15',
'Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0',
'Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1',
'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36',
'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0',
'curl/8.5.0','python-requests/2.31.0'] $$;

CREATE OR REPLACE FUNCTION bench_pick(a text[]) RETURNS text LANGUAGE sql VOLATILE AS
$$ SELECT a[1 + floor(cardinality(a) * random() ^ 2)::int] $$;
CREATE OR REPLACE FUNCTION bench_words(n int) RETURNS text LANGUAGE sql VOLATILE AS
$$ SELECT string_agg(bench_pick(bench_vocab()), ' ') FROM generate_series(1, n) $$;
CREATE OR REPLACE FUNCTION bench_cap(t text) RETURNS text LANGUAGE sql IMMUTABLE AS
$$ SELECT upper(left(t, 1)) || substr(t, 2) $$;
CREATE OR REPLACE FUNCTION bench_sentences(n int) RETURNS text LANGUAGE sql VOLATILE AS
$$ SELECT string_agg(bench_cap(bench_words(4 + (random() * 14)::int)) || (ARRAY['.','.','.','.',',','!','?'])[1 + (random() * 6)::int], ' ')
     FROM generate_series(1, n) $$;

CREATE TABLE customers (
    id bigint NOT NULL, first_name text NOT NULL, last_name text NOT NULL, email text NOT NULL,
    phone text, street text, city text, postcode text, country char(2) NOT NULL,
    created_at timestamptz NOT NULL, tier text NOT NULL, balance numeric(12,2) NOT NULL,
    marketing_opt_in boolean NOT NULL, notes text);
CREATE TABLE orders (
    id bigint NOT NULL, customer_id bigint NOT NULL, ordered_at timestamptz NOT NULL,
    status text NOT NULL, currency char(3) NOT NULL, total numeric(12,2) NOT NULL,
    shipping jsonb NOT NULL, items jsonb NOT NULL, comment text);
CREATE TABLE events (
    id bigint NOT NULL, occurred_at timestamptz NOT NULL, customer_id bigint, session_id text NOT NULL,
    kind text NOT NULL, path text NOT NULL, ip inet, user_agent text, payload jsonb NOT NULL);
CREATE TABLE reviews (
    id bigint NOT NULL, customer_id bigint NOT NULL, product text NOT NULL, rating smallint NOT NULL,
    title text NOT NULL, body text NOT NULL, created_at timestamptz NOT NULL, helpful_votes integer NOT NULL);

-- One batch: n events, n/4 orders, n/4 reviews, n/20 customers; ids derived from b.
CREATE OR REPLACE FUNCTION bench_fill(b int, n int) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    nc int := greatest(n / 20, 1); no int := greatest(n / 4, 1); nr int := greatest(n / 4, 1);
    c0 bigint := b::bigint * nc; o0 bigint := b::bigint * no; r0 bigint := b::bigint * nr; e0 bigint := b::bigint * n;
    cmax bigint := (b::bigint + 1) * nc;
BEGIN
    INSERT INTO customers
    SELECT c0 + g, fn, ln,
           lower(translate(fn || '.' || ln, ' ''', '')) || (g % 97)::text || '@' ||
               (ARRAY['gmail.com','outlook.com','yahoo.com','web.de','orange.fr','example.org','proton.me','icloud.com'])[1 + (random() * 7)::int],
           '+' || (ARRAY['44','49','33','34','48','45','1','81'])[1 + (random() * 7)::int] || ' ' || (100000000 + (random() * 899999999)::bigint)::text,
           (1 + (random() * 250)::int)::text || ' ' || bench_cap(bench_words(2)) || ' ' || (ARRAY['Street','Road','Avenue','Straße','Lane','Rue','Calle','ulica'])[1 + (random() * 7)::int],
           bench_pick(bench_cities()),
           lpad((random() * 99999)::int::text, 5, '0'),
           (ARRAY['GB','DE','FR','ES','PL','DK','US','JP','IE','IT','NL','SE'])[1 + (random() * 11)::int],
           timestamptz '2018-01-01' + random() * interval '2500 days',
           (ARRAY['standard','standard','standard','silver','gold','platinum'])[1 + (random() * 5)::int],
           round((random() * 5000)::numeric, 2),
           random() < 0.35,
           CASE WHEN random() < 0.3 THEN bench_sentences(1 + (random() * 3)::int) END
      FROM (SELECT g, bench_pick(bench_first_names()) fn, bench_pick(bench_last_names()) ln
              FROM generate_series(1, nc) g) s;

    INSERT INTO orders
    SELECT o0 + g, 1 + (random() * (cmax - 1))::bigint,
           timestamptz '2019-01-01' + random() * interval '2400 days',
           (ARRAY['pending','paid','paid','shipped','shipped','shipped','delivered','delivered','delivered','cancelled','refunded'])[1 + (random() * 10)::int],
           (ARRAY['EUR','EUR','EUR','GBP','USD','PLN','DKK','JPY'])[1 + (random() * 7)::int],
           round((5 + random() * 400)::numeric, 2),
           jsonb_build_object('name', bench_pick(bench_first_names()) || ' ' || bench_pick(bench_last_names()),
                              'street', (1 + (random() * 250)::int)::text || ' ' || bench_cap(bench_words(2)) || ' Street',
                              'city', bench_pick(bench_cities()),
                              'postcode', lpad((random() * 99999)::int::text, 5, '0'),
                              'method', (ARRAY['standard','express','pickup','locker'])[1 + (random() * 3)::int],
                              'instructions', CASE WHEN random() < 0.25 THEN bench_words(3 + (random() * 10)::int) END),
           (SELECT jsonb_agg(jsonb_build_object('sku', 'SKU-' || lpad((random() * 9999)::int::text, 5, '0'),
                                                 'name', bench_pick(bench_products()),
                                                 'qty', 1 + (random() * random() * 5)::int,
                                                 'unit_price', round((2 + random() * 150)::numeric, 2),
                                                 'options', jsonb_build_object('colour', (ARRAY['black','white','grey','navy','red','green','oak','natural'])[1 + (random() * 7)::int],
                                                                               'size', (ARRAY['XS','S','M','L','XL','one size'])[1 + (random() * 5)::int]),
                                                 'gift_wrap', random() < 0.1))
              FROM generate_series(1, 1 + (random() * random() * 6)::int + (g % 1) )),
           CASE WHEN random() < 0.15 THEN bench_sentences(1) END
      FROM generate_series(1, no) g;

    INSERT INTO events
    SELECT e0 + g, timestamptz '2023-01-01' + random() * interval '700 days',
           CASE WHEN random() < 0.7 THEN 1 + (random() * (cmax - 1))::bigint END,
           md5((e0 + g / 12)::text),
           k,
           CASE k WHEN 'search' THEN '/search?q=' || replace(bench_words(1 + (random() * 3)::int), ' ', '+')
                  WHEN 'view_product' THEN '/p/SKU-' || lpad((random() * 9999)::int::text, 5, '0')
                  WHEN 'checkout' THEN '/checkout/step-' || (1 + (random() * 3)::int)::text
                  ELSE (ARRAY['/','/account','/cart','/help/shipping','/help/returns','/blog'])[1 + (random() * 5)::int] END,
           ('10.' || (random() * 255)::int || '.' || (random() * 255)::int || '.' || (random() * 255)::int)::inet,
           bench_pick(bench_agents()),
           jsonb_build_object('referrer', (ARRAY['direct','google','newsletter','facebook','instagram','partner'])[1 + (random() * 5)::int],
                              'screen', (ARRAY['1920x1080','1440x900','390x844','412x915','2560x1440'])[1 + (random() * 4)::int],
                              'cart_value', round((random() * 300)::numeric, 2),
                              'ab', jsonb_build_object('checkout_v2', random() < 0.5, 'banner', (ARRAY['A','B','C'])[1 + (random() * 2)::int]),
                              'terms', CASE WHEN k = 'search' THEN to_jsonb(string_to_array(bench_words(1 + (random() * 4)::int), ' ')) END,
                              'latency_ms', (20 + random() * random() * 900)::int)
      FROM (SELECT g, (ARRAY['page_view','page_view','page_view','view_product','view_product','search','add_to_cart','checkout','login','logout'])[1 + (random() * 9)::int] k
              FROM generate_series(1, n) g) s;

    INSERT INTO reviews
    SELECT r0 + g, 1 + (random() * (cmax - 1))::bigint, bench_pick(bench_products()),
           (ARRAY[5,5,5,4,4,3,2,1])[1 + (random() * 7)::int],
           bench_cap(bench_words(2 + (random() * 6)::int)),
           bench_sentences(1 + (random() * 7)::int),
           timestamptz '2020-01-01' + random() * interval '2000 days',
           (random() * random() * 50)::int
      FROM generate_series(1, nr) g;
END
$fn$;
SQL
    target=$((SIZE_MB * 1000000))
    # About 700 bytes of table data per event row (with its share of orders,
    # reviews, customers): aim for >= 16 batches, 500..20000 events each.
    n=$((SIZE_MB * 1000000 / 700 / 16))
    (( n < 500 )) && n=500
    (( n > 20000 )) && n=20000
    size_q="SELECT coalesce(sum(pg_table_size(oid)), 0) FROM pg_class
             WHERE relkind = 'r' AND relname IN ('customers', 'orders', 'events', 'reviews')"
    b=0
    size=0
    next_report=25
    while (( size < target )); do
        # Two sessions at a time: generation is CPU-bound inside the server.
        "${PSQL[@]}" -d "$DB" -c "SELECT bench_fill($b, $n)" >/dev/null &
        p1=$!
        "${PSQL[@]}" -d "$DB" -c "SELECT bench_fill($((b + 1)), $n)" >/dev/null &
        p2=$!
        wait "$p1" || die "data generation failed (batch $b)"
        wait "$p2" || die "data generation failed (batch $((b + 1)))"
        b=$((b + 2))
        size=$("${PSQL[@]}" -At -d "$DB" -c "$size_q")
        if (( size * 100 / target >= next_report && size < target )); then
            note "  ... $((size / 1000000)) MB"
            next_report=$((next_report + 25))
        fi
    done
    note "  loaded $((size / 1000000)) MB in $((SECONDS - gen_start)) s; adding keys and indexes, vacuuming"
    "${PSQL[@]}" -d "$DB" <<'SQL'
ALTER TABLE customers ADD PRIMARY KEY (id);
ALTER TABLE orders ADD PRIMARY KEY (id);
ALTER TABLE events ADD PRIMARY KEY (id);
ALTER TABLE reviews ADD PRIMARY KEY (id);
CREATE INDEX orders_customer_idx ON orders (customer_id);
CREATE INDEX events_occurred_at_idx ON events (occurred_at);
CREATE INDEX reviews_product_idx ON reviews (product, rating);
CREATE VIEW order_revenue_by_month AS
    SELECT date_trunc('month', ordered_at) AS month, currency, count(*) AS orders, sum(total) AS revenue
      FROM orders WHERE status NOT IN ('cancelled', 'refunded') GROUP BY 1, 2;
DROP FUNCTION bench_fill(int, int), bench_sentences(int), bench_cap(text), bench_words(int), bench_pick(text[]),
    bench_vocab(), bench_first_names(), bench_last_names(), bench_cities(), bench_products(), bench_agents();
SQL
    "${PSQL[@]}" -d "$DB" -c 'VACUUM (FREEZE, ANALYZE)'
    "${PSQL[@]}" -d "$DB" -c "CREATE TABLE bench_meta AS SELECT $SIZE_MB AS size_mb, $GEN_VERSION AS version, now() AS generated_at"
    note "  generated in $((SECONDS - gen_start)) s"
fi

TABLE_BYTES=$("${PSQL[@]}" -At -d "$DB" -c "SELECT coalesce(sum(pg_table_size(oid)), 0) FROM pg_class
    WHERE relkind = 'r' AND relname IN ('customers', 'orders', 'events', 'reviews')")
DB_BYTES=$("${PSQL[@]}" -At -d postgres -c "SELECT pg_database_size('$DB')")
ROW_COUNTS_Q="SELECT string_agg(t || '=' || n, ' ' ORDER BY t) FROM (
    SELECT 'customers' t, count(*) n FROM customers UNION ALL SELECT 'orders', count(*) FROM orders
    UNION ALL SELECT 'events', count(*) FROM events UNION ALL SELECT 'reviews', count(*) FROM reviews) s"
ROW_COUNTS=$("${PSQL[@]}" -At -d "$DB" -c "$ROW_COUNTS_Q")

note "writing a reference dump (pg_dump -Fc -Z0) to $WORK/raw.pgdump"
pg_dump -Fc -Z0 -f "$WORK/raw.pgdump" "$DB"
RAW_BYTES=$(stat -c %s "$WORK/raw.pgdump")

# --- keys and profiles ---------------------------------------------------------
mkdir -p "$CONF/profiles" "$CONF/secrets"
chmod 0700 "$CONF/secrets"
rm -rf -- "$GNUPGHOME_BENCH"
mkdir -m 0700 "$GNUPGHOME_BENCH"
GPG=(gpg --homedir "$GNUPGHOME_BENCH" --batch --quiet)
if [[ -z "$CELLAR" ]]; then
    note "making a key with gpg (SHELL_ONLY)"
    "${GPG[@]}" --passphrase '' --quick-gen-key 'cellar bench <bench@cellar.invalid>' default default never 2>/dev/null
else
    if [[ ! -f "$CONF/secrets/bench.key.asc" ]]; then
        note "making a key: cellar keygen bench"
        (cd "$CONF" && "$CELLAR" --config-dir "$CONF" keygen bench) >"$WORK/keygen.log" 2>&1 \
            || { cat "$WORK/keygen.log" >&2; die "cellar keygen failed"; }
    fi
    if [[ ! -f "$CONF/secrets/bench.sign.key.asc" ]]; then
        (cd "$CONF" && "$CELLAR" --config-dir "$CONF" keygen --sign bench) >"$WORK/keygen.log" 2>&1 \
            || { cat "$WORK/keygen.log" >&2; die "cellar keygen --sign failed"; }
    fi
    "${GPG[@]}" --import "$CONF/secrets/bench.pub.asc" 2>/dev/null
    # The secret key too, for the gpg side of the restore-to-file variants.
    "${GPG[@]}" --import "$CONF/secrets/bench.key.asc" 2>/dev/null || true
fi
FPR=$("${GPG[@]}" --with-colons --list-keys | awk -F: '$1 == "fpr" { print $10; exit }')
[[ -n "$FPR" ]] || die "no key in $GNUPGHOME_BENCH"

write_profile() { # NAME ALGORITHM LEVEL
    cat >"$CONF/profiles/$1.toml" <<EOF
# written by benches/backup.sh
kind = "postgres"

[source]
host = "127.0.0.1"
port = $PORT
user = "postgres"
database = "$DB"

[store]
url = "file://$STORE"

[encryption]
recipients = ["secrets/bench.pub.asc"]
identity = "secrets/bench.key.asc"
signer = "secrets/bench.sign.key.asc"

[compression]
algorithm = "$2"
level = $3
threads = $THREADS
EOF
}
# Remote stores on loopback: a moto S3 server and a private sshd, each given
# the zstd profile, compared with the same backup to a folder.
STORES=${STORES:-1}
MOTO=${CELLAR_MOTO_SERVER:-/opt/cellar-moto/bin/moto_server}
HAVE_STORES=0
if [[ -n "$CELLAR" && "$STORES" == 1 && -x "$MOTO" && -x /usr/sbin/sshd ]]; then
    HAVE_STORES=1
    free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
    MOTO_PORT=$(free_port)
    "$MOTO" -H 127.0.0.1 -p "$MOTO_PORT" >"$WORK/moto.log" 2>&1 &
    SSH_DIR="$WORK/ssh"
    mkdir -p "$SSH_DIR/root" /run/sshd
    ssh-keygen -q -t ed25519 -N '' -f "$SSH_DIR/host_key"
    ssh-keygen -q -t ed25519 -N '' -f "$SSH_DIR/client_key"
    cp "$SSH_DIR/client_key.pub" "$SSH_DIR/authorized_keys"
    SSH_PORT=$(free_port)
    printf '%s\n' "Port $SSH_PORT" "ListenAddress 127.0.0.1" "HostKey $SSH_DIR/host_key" \
        "PidFile $SSH_DIR/sshd.pid" "AuthorizedKeysFile $SSH_DIR/authorized_keys" \
        "PasswordAuthentication no" "KbdInteractiveAuthentication no" \
        "PermitRootLogin prohibit-password" "UsePAM no" "StrictModes no" \
        "Subsystem sftp internal-sftp" >"$SSH_DIR/sshd_config"
    echo "[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1,2 "$SSH_DIR/host_key.pub")" >"$SSH_DIR/known_hosts"
    /usr/sbin/sshd -D -e -f "$SSH_DIR/sshd_config" >"$WORK/sshd.log" 2>&1 &
    for _ in $(seq 100); do
        (echo >"/dev/tcp/127.0.0.1/$MOTO_PORT") 2>/dev/null && (echo >"/dev/tcp/127.0.0.1/$SSH_PORT") 2>/dev/null && break
        sleep 0.1
    done
    "$(dirname "$MOTO")/python" -c "import boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:$MOTO_PORT', region_name='us-east-1', aws_access_key_id='b', aws_secret_access_key='b').create_bucket(Bucket='bench')"
fi

# OpenStack Swift on loopback: a private all-in-one (rings of one device in
# $WORK/swift, tempauth user test:tester, memcached for its tokens).
SWIFT=${SWIFT:-1}
HAVE_SWIFT=0
if [[ -n "$CELLAR" && "$SWIFT" == 1 ]] && command -v swift-proxy-server >/dev/null 2>&1 && command -v memcached >/dev/null 2>&1; then
    HAVE_SWIFT=1
    sfree_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
    SW="$WORK/swift"
    mkdir -p "$SW/devs/d1"
    chmod 0755 "$WORK" "$SW"
    SW_USER=$(id -un)
    SWIFT_PIDS=()
    for server in account container object; do
        port=$(sfree_port)
        (cd "$SW" && swift-ring-builder $server.builder create 6 1 1 >/dev/null \
            && swift-ring-builder $server.builder add "r1z1-127.0.0.1:$port/d1" 1 >/dev/null; \
            swift-ring-builder $server.builder rebalance >/dev/null || true)
        printf '%s\n' "[DEFAULT]" "devices = $SW/devs" "mount_check = false" "bind_ip = 127.0.0.1" \
            "bind_port = $port" "workers = 0" "swift_dir = $SW" "user = $SW_USER" "log_level = WARNING" \
            "[pipeline:main]" "pipeline = $server-server" "[app:$server-server]" "use = egg:swift#$server" >"$SW/$server.conf"
        (cd "$SW" && exec swift-$server-server $server.conf >"$SW/$server.log" 2>&1) &
        SWIFT_PIDS+=($!)
    done
    MC_PORT=$(sfree_port)
    memcached -l 127.0.0.1 -p "$MC_PORT" -U 0 $( [[ "$SW_USER" == root ]] && echo "-u nobody") >/dev/null 2>&1 &
    SWIFT_PIDS+=($!)
    SWIFT_PORT=$(sfree_port)
    printf '%s\n' "[DEFAULT]" "bind_ip = 127.0.0.1" "bind_port = $SWIFT_PORT" "workers = 0" "swift_dir = $SW" \
        "user = $SW_USER" "log_level = WARNING" "[pipeline:main]" \
        "pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk tempauth copy slo dlo proxy-logging proxy-server" \
        "[app:proxy-server]" "use = egg:swift#proxy" "account_autocreate = true" \
        "[filter:tempauth]" "use = egg:swift#tempauth" "user_test_tester = testing .admin" \
        "[filter:catch_errors]" "use = egg:swift#catch_errors" "[filter:gatekeeper]" "use = egg:swift#gatekeeper" \
        "[filter:healthcheck]" "use = egg:swift#healthcheck" "[filter:proxy-logging]" "use = egg:swift#proxy_logging" \
        "[filter:cache]" "use = egg:swift#memcache" "memcache_servers = 127.0.0.1:$MC_PORT" \
        "[filter:listing_formats]" "use = egg:swift#listing_formats" "[filter:bulk]" "use = egg:swift#bulk" \
        "[filter:copy]" "use = egg:swift#copy" "[filter:slo]" "use = egg:swift#slo" "[filter:dlo]" "use = egg:swift#dlo" >"$SW/proxy.conf"
    (cd "$SW" && exec swift-proxy-server proxy.conf >"$SW/proxy.log" 2>&1) &
    SWIFT_PIDS+=($!)
    swift_ok=0
    for _ in $(seq 300); do
        token=$(curl -s -D - -o /dev/null -H 'X-Auth-User: test:tester' -H 'X-Auth-Key: testing' \
            "http://127.0.0.1:$SWIFT_PORT/auth/v1.0" 2>/dev/null | tr -d '\r' | awk -F': ' 'tolower($1) == "x-auth-token" { print $2 }') || token=""
        if [[ -n "$token" ]] && curl -sf -o /dev/null -X PUT -H "X-Auth-Token: $token" \
            "http://127.0.0.1:$SWIFT_PORT/v1/AUTH_test/bench"; then
            swift_ok=1
            break
        fi
        sleep 0.2
    done
    [[ "$swift_ok" == 1 ]] || die "the Swift all-in-one in $SW did not start; see $SW/*.log"
fi
# CPU seconds (user + system) the Swift servers have used so far.
swift_cpu() {
    local pid t=0
    for pid in "${SWIFT_PIDS[@]}"; do
        t=$(awk -v t="$t" '{ sub(/.*\) /, ""); split($0, f, " "); print t + (f[12] + f[13]) / 100 }' "/proc/$pid/stat" 2>/dev/null || echo "$t")
    done
    echo "$t"
}

if [[ -n "$CELLAR" ]]; then
    write_profile bench_xz xz "$PRESET"
    write_profile bench_zstd zstd "$ZSTD_LEVEL"
    CHECK=(bench_xz bench_zstd)
    if [[ "$HAVE_STORES" == 1 ]]; then
        write_profile bench_s3 zstd "$ZSTD_LEVEL"
        sed -i "s|^url = \"file://$STORE\"|url = \"s3://bench/cellar\"\\n[store.s3]\\nendpoint = \"http://127.0.0.1:$MOTO_PORT\"\\npath_style = true\\nregion = \"us-east-1\"\\naccess_key_id = \"b\"\\nsecret_access_key = \"b\"|" "$CONF/profiles/bench_s3.toml"
        write_profile bench_sftp zstd "$ZSTD_LEVEL"
        sed -i "s|^url = \"file://$STORE\"|url = \"sftp://$(id -un)@127.0.0.1:$SSH_PORT$SSH_DIR/root\"\\n[store.sftp]\\nidentity_file = \"$SSH_DIR/client_key\"\\nknown_hosts = \"$SSH_DIR/known_hosts\"|" "$CONF/profiles/bench_sftp.toml"
        CHECK+=(bench_s3 bench_sftp)
    fi
    if [[ "$HAVE_SWIFT" == 1 ]]; then
        write_profile bench_swift zstd "$ZSTD_LEVEL"
        sed -i "s|^url = \"file://$STORE\"|url = \"swift://bench/cellar\"\\n[store.swift]\\nauth_url = \"http://127.0.0.1:$SWIFT_PORT/auth/v1.0\"\\nusername = \"test:tester\"\\npassword = \"testing\"|" "$CONF/profiles/bench_swift.toml"
        CHECK+=(bench_swift)
    fi
    if ! "$CELLAR" --config-dir "$CONF" check "${CHECK[@]}" >"$WORK/check.log" 2>&1; then
        cat "$WORK/check.log" >&2
        die "cellar check failed for the bench profiles in $CONF/profiles"
    fi
fi

# --- variants ------------------------------------------------------------------
q() { printf '%q' "$1"; }
CELLAR_Q=$(q "${CELLAR:-cellar}")
CONF_Q=$(q "$CONF")
DUMP="pg_dump -Fc -Z0 $DB"
export RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench BORG_BASE_DIR="$BENCH_DIR/borg-home"
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes

declare -A LABEL CMD REF OUT
LABEL[a]="pg_dump -Fc -Z0 > /dev/null";       CMD[a]="$DUMP > /dev/null"
LABEL[b]="pg_dump | xz -T$THREADS -$PRESET";    CMD[b]="$DUMP | xz -T$THREADS -$PRESET > $(q "$WORK/out.xz")"
LABEL[c]="pg_dump | xz | gpg -e -z0";          CMD[c]="$DUMP | xz -T$THREADS -$PRESET | gpg --homedir $(q "$GNUPGHOME_BENCH") --batch --quiet --trust-model always -z 0 -e -r $FPR > $(q "$WORK/out.xz.gpg")"
LABEL[d]="cellar backup (xz -$PRESET)";         CMD[d]="$CELLAR_Q --config-dir $CONF_Q backup bench_xz"
LABEL[e]="pg_dump | zstd -T$THREADS -$ZSTD_LEVEL"; CMD[e]="$DUMP | zstd -q -T$THREADS -$ZSTD_LEVEL > $(q "$WORK/out.zst")"
LABEL[e2]="pg_dump | zstd | gpg -e -z0";        CMD[e2]="$DUMP | zstd -q -T$THREADS -$ZSTD_LEVEL | gpg --homedir $(q "$GNUPGHOME_BENCH") --batch --quiet --trust-model always -z 0 -e -r $FPR > $(q "$WORK/out.zst.gpg")"
LABEL[f]="cellar backup (zstd -$ZSTD_LEVEL)";   CMD[f]="$CELLAR_Q --config-dir $CONF_Q backup bench_zstd"
LABEL[g1]="pg_restore -j$THREADS (local -Z0 dump)"; CMD[g1]="pg_restore -j$THREADS -d restore_pg $(q "$WORK/raw.pgdump")"
LABEL[g2]="cellar restore (zstd)";             CMD[g2]="$CELLAR_Q --config-dir $CONF_Q restore bench_zstd --to-database restore_cellar"
GPG_D="gpg --homedir $(q "$GNUPGHOME_BENCH") --batch --quiet -d"
LABEL[k1]="gpg -d | zstd -d > file && sync";   CMD[k1]="$GPG_D $(q "$STORE")/bench_zstd/*.pgdump.*.pgp | zstd -q -d > $(q "$WORK/k.out") && sync $(q "$WORK/k.out")"
LABEL[k2]="cellar restore --to-file (zstd)";   CMD[k2]="$CELLAR_Q --config-dir $CONF_Q restore bench_zstd --to-file $(q "$WORK/k.out")"
LABEL[l1]="gpg -d | xz -d -T$THREADS > file && sync"; CMD[l1]="$GPG_D $(q "$STORE")/bench_xz/*.pgdump.*.pgp | xz -q -d -T$THREADS > $(q "$WORK/k.out") && sync $(q "$WORK/k.out")"
LABEL[l2]="cellar restore --to-file (xz)";     CMD[l2]="$CELLAR_Q --config-dir $CONF_Q restore bench_xz --to-file $(q "$WORK/k.out")"
LABEL[h1]="pg_dump | restic (zstd auto)";      CMD[h1]="$DUMP | restic --repo $(q "$BENCH_DIR/restic") --no-cache --compression auto -q backup --stdin --stdin-filename $DB.pgdump"
LABEL[h2]="pg_dump | borg (zstd,$ZSTD_LEVEL)"; CMD[h2]="$DUMP | borg create --compression zstd,$ZSTD_LEVEL $(q "$BENCH_DIR/borg")::$DB -"
LABEL[i]="cellar backup (zstd) to S3 (moto)"; CMD[i]="$CELLAR_Q --config-dir $CONF_Q backup bench_s3"
LABEL[j]="cellar backup (zstd) to SFTP";      CMD[j]="$CELLAR_Q --config-dir $CONF_Q backup bench_sftp"
LABEL[s]="cellar backup (zstd) to Swift";     CMD[s]="$CELLAR_Q --config-dir $CONF_Q backup bench_swift"
REF=([c]=b [d]=c [f]=e2 [e2]=e [g2]=g1 [h1]=e [h2]=e [i]=f [j]=f [s]=f [k2]=k1 [l2]=l1)
OUT=([a]="raw" [b]="$WORK/out.xz" [c]="$WORK/out.xz.gpg" [d]="store:bench_xz" [e]="$WORK/out.zst" [e2]="$WORK/out.zst.gpg"
     [f]="store:bench_zstd" [g1]="" [g2]="" [h1]="dir:$BENCH_DIR/restic" [h2]="dir:$BENCH_DIR/borg"
     [i]="" [j]="dir:${SSH_DIR:-/nonexistent}/root/bench_sftp" [s]="" [k1]="" [k2]="" [l1]="" [l2]="")

VARIANTS=(a)
[[ "$SKIP_XZ" == 1 ]] || VARIANTS+=(b c)
[[ "$SKIP_XZ" == 1 || -z "$CELLAR" ]] || VARIANTS+=(d)
VARIANTS+=(e e2)
[[ -z "$CELLAR" ]] || VARIANTS+=(f)
VARIANTS+=(g1)
[[ -z "$CELLAR" ]] || VARIANTS+=(g2 k1 k2)
[[ "$SKIP_XZ" == 1 || -z "$CELLAR" ]] || VARIANTS+=(l1 l2)
[[ "$HAVE_RESTIC" == 0 ]] || VARIANTS+=(h1)
[[ "$HAVE_BORG" == 0 ]] || VARIANTS+=(h2)
[[ "$HAVE_STORES" == 0 ]] || VARIANTS+=(i j)
[[ "$HAVE_SWIFT" == 0 ]] || VARIANTS+=(s)
if [[ -n "${ONLY:-}" ]]; then
    kept=()
    for id in "${VARIANTS[@]}"; do
        [[ " $ONLY " == *" $id "* ]] && kept+=("$id")
    done
    VARIANTS=("${kept[@]}")
fi

SAMPLES="$WORK/samples.tsv"
: >"$SAMPLES"
declare -A FAILED=()

prepare() { # untimed set-up before a variant
    case "$1" in
        b|c|e|e2) rm -f -- "${OUT[$1]}" ;;
        d) rm -rf -- "$STORE/bench_xz" ;;
        f) rm -rf -- "$STORE/bench_zstd" ;;
        j) rm -rf -- "$SSH_DIR/root/bench_sftp" ;;
        s) SWIFT_CPU_BEFORE=$(swift_cpu) ;;
        k1|k2|l1|l2) rm -f -- "$WORK/k.out"; sync ;;
        g1|g2)
            local target=restore_pg
            [[ "$1" == g2 ]] && target=restore_cellar
            "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $target" -c "CREATE DATABASE $target"
            ;;
        h1) rm -rf -- "$BENCH_DIR/restic"
            restic --repo "$BENCH_DIR/restic" --no-cache -q init --repository-version 2 >/dev/null ;;
        h2) rm -rf -- "$BENCH_DIR/borg"
            borg init -e repokey "$BENCH_DIR/borg" >/dev/null 2>&1 ;;
    esac
}

output_bytes() {
    local o=${OUT[$1]}
    case "$o" in
        "") echo "" ;;
        raw) echo "$RAW_BYTES" ;;
        store:*) find "$STORE/${o#store:}" -type f -name '*.pgp' -printf '%s\n' 2>/dev/null | awk '{ s += $1 } END { print s + 0 }' ;;
        dir:*) du -sb "${o#dir:}" | cut -f1 ;;
        *) stat -c %s "$o" ;;
    esac
}

finish() { # untimed checks and clean-up after a variant
    local counts
    case "$1" in
        g1|g2)
            local target=restore_pg
            [[ "$1" == g2 ]] && target=restore_cellar
            counts=$("${PSQL[@]}" -At -d "$target" -c "$ROW_COUNTS_Q" 2>/dev/null || true)
            if [[ "$counts" != "$ROW_COUNTS" ]]; then
                note "  WARNING: ${LABEL[$1]}: restored rows differ: '$counts' vs '$ROW_COUNTS'"
            fi
            "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $target"
            ;;
        b|c|e|e2) rm -f -- "${OUT[$1]}" ;;
        k1|k2|l1|l2) rm -f -- "$WORK/k.out" ;;
        s) awk -v a="$(swift_cpu)" -v b="$SWIFT_CPU_BEFORE" 'BEGIN { printf "%.2f\n", a - b }' >>"$WORK/swift_cpu" ;;
    esac
}

measure() { # ID REP
    local id=$1 rep=$2 tf="$WORK/time.$1" log="$WORK/log.$1" line wall rss user sys bytes
    prepare "$id"
    if /usr/bin/time -f '%e %M %U %S' -o "$tf" bash -o pipefail -c "${CMD[$id]}" >"$log" 2>&1; then
        line=$(tail -n 1 "$tf")
        read -r wall rss user sys <<<"$line"
        bytes=$(output_bytes "$id")
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$rep" "$wall" "$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')" \
            "$rss" "$bytes" >>"$SAMPLES"
        printf '  %-3s %-34s %8.2f s %8.1f MB RSS\n' "$id" "${LABEL[$id]}" "$wall" "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')"
    else
        FAILED[$id]=1
        printf '  %-3s %-34s FAILED; last lines of its output:\n' "$id" "${LABEL[$id]}"
        tail -n 8 "$log" | sed 's/^/      /'
    fi
    finish "$id"
}

note ""
note "data: $((TABLE_BYTES / 1000000)) MB of tables, $((DB_BYTES / 1000000)) MB with indexes, raw dump $((RAW_BYTES / 1000000)) MB ($ROW_COUNTS)"
note "variants: ${VARIANTS[*]}; $REPS repetitions, alternating"
[[ "$HAVE_RESTIC" == 1 ]] || note "(restic not installed: skipping h1)"
[[ "$HAVE_BORG" == 1 ]] || note "(borg not installed: skipping h2)"
for ((rep = 1; rep <= REPS; rep++)); do
    note "repetition $rep/$REPS"
    for id in "${VARIANTS[@]}"; do
        measure "$id" "$rep"
    done
done

# --- report --------------------------------------------------------------------
note ""
median() { sort -g | awk 'NF { v[++n] = $1 } END { if (n == 0) exit; if (n % 2) print v[(n + 1) / 2]; else print (v[n / 2] + v[n / 2 + 1]) / 2 }'; }
column_of() { awk -F'\t' -v id="$1" -v c="$2" '$1 == id { print $c }' "$SAMPLES"; }
div() { awk -v x="$1" -v y="$2" 'BEGIN { if (x == "" || y == "" || y + 0 == 0) print "-"; else printf "%.2f", x / y }'; }
mb() { awk -v b="$1" 'BEGIN { if (b == "") print "-"; else printf "%.1f", b / 1e6 }'; }

declare -A WALL MINW CPU RSS BYTES
for id in "${VARIANTS[@]}"; do
    WALL[$id]=$(column_of "$id" 3 | median)
    MINW[$id]=$(column_of "$id" 3 | sort -g | head -n 1)
    CPU[$id]=$(column_of "$id" 4 | median)
    RSS[$id]=$(column_of "$id" 5 | sort -g | tail -n 1)
    BYTES[$id]=$(column_of "$id" 6 | median)
done

RESULTS="$BENCH_DIR/results-$(date -u +%Y%m%dT%H%M%SZ).txt"
{
    echo "cellar backup benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores: $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "cellar: ${CELLAR:-none (SHELL_ONLY)} $( [[ -n "$CELLAR" ]] && "$CELLAR" --version 2>/dev/null | head -n 1)"
    echo "tools: $(pg_dump --version | head -n 1); $(xz --version | head -n 1); $(zstd --version | head -n 1 | tr -d "*" | sed "s/^ *//;s/, by .*//"); $(gpg --version | head -n 1)"
    echo "data: $((TABLE_BYTES / 1000000)) MB of tables ($((DB_BYTES / 1000000)) MB with indexes), raw dump $(mb "$RAW_BYTES") MB; xz -$PRESET, zstd -$ZSTD_LEVEL, $THREADS threads; $REPS reps, median wall"
    echo
    printf '%-3s %-34s %8s %8s %8s %7s %-10s %8s %9s %6s\n' id variant wall_s min_s cpu_s x_raw x_ref rss_MB out_MB ratio
    for id in "${VARIANTS[@]}"; do
        if [[ -z "${WALL[$id]}" ]]; then
            printf '%-3s %-34s %8s\n' "$id" "${LABEL[$id]}" FAILED
            continue
        fi
        x_raw=-
        [[ "$id" == [gkl]* ]] || x_raw=$(div "${WALL[$id]}" "${WALL[a]:-}")
        x_ref=-
        if [[ -n "${REF[$id]:-}" ]]; then
            x_ref="$(div "${WALL[$id]}" "${WALL[${REF[$id]}]:-}") (${REF[$id]})"
        fi
        ratio=-
        [[ -z "${BYTES[$id]}" ]] || ratio=$(div "$RAW_BYTES" "${BYTES[$id]}")
        printf '%-3s %-34s %8.2f %8.2f %8.2f %7s %-10s %8.1f %9s %6s\n' "$id" "${LABEL[$id]}" "${WALL[$id]}" "${MINW[$id]}" \
            "${CPU[$id]}" "$x_raw" "$x_ref" "$(awk -v k="${RSS[$id]}" 'BEGIN { print k / 1024 }')" "$(mb "${BYTES[$id]}")" "$ratio"
    done
    echo
    echo "x_raw: wall time / (a) raw pg_dump; x_ref: wall time / the variant in brackets; ratio: raw dump size / output size"
    echo "rss_MB: peak RSS of the largest single process of the pipeline, max over the repetitions"
    echo
    echo "targets:"
    TARGET_FAIL=0
    target() { # TEXT NUM DEN FACTOR
        local r verdict
        if [[ -z "${WALL[$2]:-}" || -z "${WALL[$3]:-}" ]]; then
            printf '  %-46s %-12s SKIP (not measured)\n' "$1" "$2/$3"
            return
        fi
        r=$(div "${WALL[$2]}" "${WALL[$3]}")
        if awk -v r="$r" -v f="$4" 'BEGIN { exit !(r <= f) }'; then verdict=PASS; else verdict=FAIL; TARGET_FAIL=1; fi
        printf '  %-46s %-12s %5s (limit %s)  %s\n' "$1" "$2/$3" "$r" "$4" "$verdict"
    }
    target "cellar xz <= 1.05 x xz alone (issue 14)" d b 1.05
    target "cellar xz <= 1.03 x xz|gpg pipeline (issue 14)" d c 1.03
    target "cellar zstd <= 1.00 x zstd|gpg pipeline (issue 14)" f e2 1.00
    target "cellar zstd <= 1.25 x raw pg_dump" f a 1.25
    target "cellar restore <= 1.10 x pg_restore -j" g2 g1 1.10
    target "cellar --to-file (zstd) <= 1.25 x gpg|zstd" k2 k1 1.25
    target "cellar --to-file (xz) <= 1.25 x gpg|xz" l2 l1 1.25
    target "cellar to S3 <= 1.10 x to a folder" i f 1.10
    target "cellar to SFTP <= 1.10 x to a folder" j f 1.10
    target "cellar to Swift <= 1.15 x to a folder" s f 1.15
    if [[ -s "$WORK/swift_cpu" ]]; then
        echo "  (Swift's servers used $(median <"$WORK/swift_cpu") CPU s during s, median; cellar itself ${CPU[s]:-?} s)"
    fi
    echo "$TARGET_FAIL" >"$WORK/target_fail"
    echo
    echo "samples (id rep wall_s cpu_s rss_KB out_bytes):"
    sed 's/^/  /' "$SAMPLES"
} | tee "$RESULTS"
note "results saved to $RESULTS"
if [[ "${#FAILED[@]}" -gt 0 ]]; then
    note "failed variants: ${!FAILED[*]}"
fi
if [[ "$STRICT" == 1 ]] && { [[ "$(cat "$WORK/target_fail")" == 1 ]] || [[ "${#FAILED[@]}" -gt 0 ]]; }; then
    exit 1
fi
