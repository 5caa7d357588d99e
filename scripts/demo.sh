#!/usr/bin/env bash
# demo.sh — the README's setup-and-demo.
#
# Usage:
#   scripts/demo.sh          set up a throwaway PostgreSQL server with a sample
#                            database "shop" and a sample folder "www", then back
#                            both up with the example profiles and check them
#   scripts/demo.sh stop     stop the demo's PostgreSQL server
#   scripts/demo.sh clean    stop it and delete ${DEMO_DIR} (server, folder, store)
#
# Needs: cellar on PATH (install.sh puts it in /usr/local/bin) or CELLAR=/path/to/cellar,
# PostgreSQL 15 server binaries (postgresql-15) and psql.
# The config dir is the repository root: profiles/shop.toml and profiles/www.toml,
# keys in secrets/ (made by `cellar keygen demo` on the first run).
# The example profiles point at /tmp/cellar-demo, so keep DEMO_DIR at its default
# unless you edit them too.
set -euo pipefail

DEMO_DIR=${DEMO_DIR:-/tmp/cellar-demo}
DEMO_PORT=54329
CELLAR=${CELLAR:-cellar}
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
SANDBOX="$SCRIPT_DIR/pg-sandbox.sh"

step() { printf '\n==> %s\n' "$*"; }
run() {
    printf '$ %s\n' "$*"
    "$@"
}

case "${1:-}" in
    "") ;;
    stop)
        "$SANDBOX" stop "$DEMO_DIR/pg"
        echo "demo server stopped"
        exit 0
        ;;
    clean)
        "$SANDBOX" stop "$DEMO_DIR/pg"
        rm -rf -- "$DEMO_DIR"
        echo "removed $DEMO_DIR (the key in $ROOT/secrets/ is kept)"
        exit 0
        ;;
    -h|--help)
        sed -n '2,/^set -e/{/^set -e/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
        exit 0
        ;;
    *)
        echo "usage: scripts/demo.sh [stop|clean]" >&2
        exit 2
        ;;
esac

if ! command -v "$CELLAR" >/dev/null 2>&1; then
    echo "demo: '$CELLAR' not found: run ./install.sh (installs /usr/local/bin/cellar)" \
         "or set CELLAR=/path/to/target/release/cellar" >&2
    exit 1
fi
if [[ "$DEMO_DIR" != /tmp/cellar-demo ]]; then
    echo "demo: note: DEMO_DIR=$DEMO_DIR but profiles/shop.toml and profiles/www.toml" \
         "use /tmp/cellar-demo; edit them to match" >&2
fi

export PGHOST=127.0.0.1 PGPORT=$DEMO_PORT PGUSER=postgres PGCLIENTENCODING=UTF8
psql_q() { PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 "$@"; }

step "Starting a throwaway PostgreSQL 15 server in $DEMO_DIR/pg on 127.0.0.1:$DEMO_PORT"
mkdir -p "$DEMO_DIR"
chmod 0755 "$DEMO_DIR"
"$SANDBOX" start "$DEMO_DIR/pg" "$DEMO_PORT"

step "Creating the sample database 'shop' (customers, products, orders, a view, a sequence)"
psql_q -d postgres -c 'DROP DATABASE IF EXISTS shop' -c 'CREATE DATABASE shop'
psql_q -d shop <<'SQL'
CREATE TABLE customers (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL,
    email       text NOT NULL UNIQUE,
    country     char(2) NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE products (
    sku         text PRIMARY KEY,
    title       text NOT NULL,
    price       numeric(10,2) NOT NULL CHECK (price >= 0),
    attributes  jsonb NOT NULL DEFAULT '{}'
);

CREATE SEQUENCE invoice_number_seq START 10001;

CREATE TABLE orders (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers(id),
    invoice_no  bigint NOT NULL DEFAULT nextval('invoice_number_seq') UNIQUE,
    status      text NOT NULL CHECK (status IN ('pending', 'paid', 'shipped', 'cancelled')),
    ordered_at  timestamptz NOT NULL DEFAULT now(),
    note        text
);

CREATE TABLE order_items (
    order_id    bigint NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    sku         text NOT NULL REFERENCES products(sku),
    quantity    integer NOT NULL CHECK (quantity > 0),
    unit_price  numeric(10,2) NOT NULL,
    PRIMARY KEY (order_id, sku)
);
CREATE INDEX orders_customer_idx ON orders (customer_id);

INSERT INTO customers (name, email, country, created_at) VALUES
    ('Zoë Müller',        'zoe.mueller@example.de',    'DE', '2025-01-14 09:12:00+01'),
    ('José Álvarez',      'jose.alvarez@example.es',   'ES', '2025-02-03 18:40:00+01'),
    ('Łukasz Żółkiewski', 'lukasz.z@example.pl',       'PL', '2025-03-21 07:05:00+01'),
    ('Søren Kierkegård',  'soren@example.dk',          'DK', '2025-04-02 12:00:00+02'),
    ('山田 太郎',          'taro.yamada@example.jp',    'JP', '2025-05-19 22:31:00+09'),
    ('Amélie Poulain',    'amelie@example.fr',         'FR', '2025-06-30 15:45:00+02'),
    ('Ольга Петрова',     'olga.petrova@example.org',  'BG', '2025-07-07 10:10:00+03'),
    ('Sam O''Neill',      'sam.oneill@example.ie',     'IE', '2025-08-11 08:00:00+01');

INSERT INTO products (sku, title, price, attributes) VALUES
    ('TEA-001', 'Sencha green tea, 100 g',      7.90, '{"origin": "Shizuoka", "organic": true}'),
    ('TEA-002', 'Earl Grey, loose leaf, 250 g', 11.50, '{"origin": "Sri Lanka", "bergamot": "natural"}'),
    ('MUG-010', 'Stoneware mug «Café»',         14.00, '{"colour": "slate", "volume_ml": 350}'),
    ('POT-020', 'Cast-iron teapot 0.8 l',       39.00, '{"colour": "black", "volume_ml": 800}');

INSERT INTO orders (customer_id, status, ordered_at, note) VALUES
    (1, 'shipped',   '2025-09-01 10:00:00+02', 'Bitte beim Nachbarn abgeben'),
    (2, 'paid',      '2025-09-02 11:30:00+02', NULL),
    (5, 'pending',   '2025-09-03 09:15:00+09', 'ギフト包装をお願いします'),
    (6, 'cancelled', '2025-09-04 16:20:00+02', 'Commande annulée par la cliente'),
    (3, 'shipped',   '2025-09-05 13:45:00+02', NULL);

INSERT INTO order_items (order_id, sku, quantity, unit_price) VALUES
    (1, 'TEA-001', 2, 7.90), (1, 'MUG-010', 1, 14.00),
    (2, 'TEA-002', 1, 11.50),
    (3, 'POT-020', 1, 39.00), (3, 'TEA-001', 3, 7.90),
    (4, 'MUG-010', 4, 14.00),
    (5, 'TEA-002', 2, 11.50);

CREATE VIEW order_totals AS
    SELECT o.id, o.invoice_no, c.name AS customer, o.status,
           sum(i.quantity * i.unit_price) AS total
      FROM orders o
      JOIN customers c ON c.id = o.customer_id
      JOIN order_items i ON i.order_id = o.id
     GROUP BY o.id, o.invoice_no, c.name, o.status;

COMMENT ON TABLE customers IS 'People who ordered at least once';
SQL
psql -X -d shop -c 'SELECT * FROM order_totals ORDER BY id'

step "Creating the sample folder $DEMO_DIR/www"
WWW="$DEMO_DIR/www"
rm -rf -- "$WWW"
mkdir -p "$WWW/css" "$WWW/uploads/2025/09" "$WWW/cache"
cat >"$WWW/index.html" <<'HTML'
<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Teahouse</title><link rel="stylesheet" href="css/site.css"></head>
<body><h1>Teahouse — thé, Tee, お茶</h1><p>Fresh leaves every week.</p></body>
</html>
HTML
printf 'body { font-family: sans-serif; margin: 2rem; }\nh1 { color: #355e3b; }\n' >"$WWW/css/site.css"
printf 'Öffnungszeiten: Mo–Fr 9–18 Uhr\n' >"$WWW/café-menü.txt"
head -c 200000 /dev/urandom >"$WWW/uploads/2025/09/teapot.jpg"
head -c 50000 /dev/urandom >"$WWW/uploads/2025/09/receipt-10001.pdf"
printf 'temporary\n' >"$WWW/cache/page.tmp"
ln -sfn index.html "$WWW/home.html"
chmod 0640 "$WWW/café-menü.txt"
find "$WWW" | sort

cd "$ROOT"

step "Key pair (secrets/demo.pub.asc, secrets/demo.key.asc)"
if [[ -f secrets/demo.key.asc ]]; then
    echo "secrets/demo.key.asc exists; keeping it"
else
    run "$CELLAR" --config-dir . keygen demo
fi
step "Signing key (secrets/demo.sign.key.asc): signs every manifest"
if [[ -f secrets/demo.sign.key.asc ]]; then
    echo "secrets/demo.sign.key.asc exists; keeping it"
else
    run "$CELLAR" --config-dir . keygen --sign demo
fi

step "Checking the profiles, the server, the store and the keys"
run "$CELLAR" --config-dir . check

step "Backing up the database (profile shop)"
run "$CELLAR" --config-dir . backup shop

step "Backing up the folder (profile www)"
run "$CELLAR" --config-dir . backup www

step "Listing and verifying the database backups"
run "$CELLAR" --config-dir . list shop
run "$CELLAR" --config-dir . verify shop

step "Listing and verifying the folder backups"
run "$CELLAR" --config-dir . list www
run "$CELLAR" --config-dir . verify www

step "Done"
cat <<EOF
The store is $DEMO_DIR/store:
$(find "$DEMO_DIR/store" -type f 2>/dev/null | sort | sed 's/^/  /')

Try next:
  $CELLAR --config-dir . restore shop --to-database shop_copy
  $CELLAR --config-dir . restore www --to-dir /tmp/cellar-demo/www-restored
Stop the demo server with: scripts/demo.sh stop   (or remove everything: scripts/demo.sh clean)
EOF
