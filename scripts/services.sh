#!/usr/bin/env bash
# Bring up the services beam_etl's tests and examples use, on a Debian machine:
#   PostgreSQL on 127.0.0.1:5432 (trust for local test connections, wal_level=logical for CDC),
#   MariaDB on 127.0.0.1:3306 (local_infile, binlog in ROW format with full row images),
#   Debian's chromium (browser tests of the HTML report) and a Java 17+ runtime (Flink, Spark).
#
#   scripts/services.sh up [postgres|mariadb|chromium|java ...]   install, configure, start, wait
#   scripts/services.sh down [postgres|mariadb]                    stop the databases
#   scripts/services.sh status                                     say what answers; exit 1 if not all
#
# Idempotent: a second `up` installs nothing, rewrites nothing and restarts nothing.
# These are throw-away test servers: trust authentication on loopback, an empty MariaDB root
# password, fsync off. Never point this script at a machine whose databases matter.
set -euo pipefail

PG_PORT=5432
MY_PORT=3306
WAIT_SECONDS=${SERVICES_WAIT_SECONDS:-60}
MARK="# beam_etl services.sh"

say() { printf 'services: %s\n' "$*"; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

as_root() {  # run a command as root: directly, or through sudo when it needs no password
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        die "\`$*\` needs root: run \`sudo $0 up\` (or as root); the script installs Debian packages and writes /etc/postgresql and /etc/mysql"
    fi
}

APT_UPDATED=0
apt_install() {  # apt_install PKG...: install what is missing, with one `apt-get update` per run
    command -v apt-get >/dev/null || die "no apt-get here: install $* with this system's package manager"
    if [ "$APT_UPDATED" -eq 0 ]; then
        say "apt-get update"
        as_root apt-get update -qq >/dev/null
        APT_UPDATED=1
    fi
    say "installing $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
        >/dev/null
}

write_if_changed() {  # write_if_changed FILE: stdin -> FILE when different; exit 0 when written
    local file=$1 new
    new=$(cat)
    if [ -f "$file" ] && [ "$(cat "$file")" = "$new" ]; then return 1; fi
    printf '%s\n' "$new" | as_root tee "$file" >/dev/null
    return 0
}

wait_for() {  # wait_for NAME CHECK...: poll for up to WAIT_SECONDS
    local name=$1; shift
    for _ in $(seq 1 "$WAIT_SECONDS"); do
        if "$@" >/dev/null 2>&1; then say "$name answers"; return 0; fi
        sleep 1
    done
    die "$name does not answer on 127.0.0.1 after ${WAIT_SECONDS} s (see its log: $(log_of "$name"))"
}

log_of() {
    case $1 in
        PostgreSQL) ls /var/log/postgresql/postgresql-*-main.log 2>/dev/null | head -n1 ;;
        MariaDB) echo "/var/log/mysql/error.log or \`journalctl -u mariadb\`" ;;
    esac
}

# ---------------------------------------------------------------------------------- PostgreSQL
pg_version() { ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -n1; }
pg_answers() { pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; }
pg_sql() { psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "${2:-postgres}" -tAc "$1"; }

postgres_up() {
    local version conf_dir changed=0
    version=$(pg_version)
    if [ -z "$version" ] || [ ! -x "/usr/lib/postgresql/$version/bin/postgres" ]; then
        apt_install postgresql postgresql-contrib
        version=$(pg_version)
    fi
    conf_dir=/etc/postgresql/$version/main
    if [ ! -d "$conf_dir" ]; then
        say "creating PostgreSQL cluster $version/main"
        as_root pg_createcluster "$version" main >/dev/null
    fi
    as_root mkdir -p "$conf_dir/conf.d"
    if write_if_changed "$conf_dir/conf.d/beam_etl.conf" <<EOF
$MARK: a local test server (loopback only, CDC enabled, durability traded for speed)
listen_addresses = '127.0.0.1'
port = $PG_PORT
wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    then changed=1; fi
    # conf.d is read only when postgresql.conf includes it (Debian's does; make sure).
    if ! grep -q "^include_dir = 'conf.d'" "$conf_dir/postgresql.conf"; then
        echo "include_dir = 'conf.d'" | as_root tee -a "$conf_dir/postgresql.conf" >/dev/null
        changed=1
    fi
    if ! grep -qF "$MARK" "$conf_dir/pg_hba.conf"; then
        # First match wins in pg_hba.conf: the trust lines go on top.
        local hba
        hba=$(printf '%s\n%s\n%s\n%s\n%s\n' "$MARK: trust local test connections" \
            "host all all 127.0.0.1/32 trust" "host all all ::1/128 trust" \
            "host replication all 127.0.0.1/32 trust" "local all postgres trust")
        { printf '%s\n' "$hba"; cat "$conf_dir/pg_hba.conf"; } | as_root tee "$conf_dir/pg_hba.conf.new" >/dev/null
        as_root mv "$conf_dir/pg_hba.conf.new" "$conf_dir/pg_hba.conf"
        as_root chown postgres:postgres "$conf_dir/pg_hba.conf"
        changed=1
    fi
    if pg_answers && [ "$changed" -eq 1 ]; then
        say "restarting PostgreSQL $version (configuration changed)"
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main restart
    elif ! pg_answers; then
        say "starting PostgreSQL $version"
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
    fi
    wait_for PostgreSQL pg_answers
    if [ "$(pg_sql "SELECT 1 FROM pg_database WHERE datname = 'test'")" != 1 ]; then
        say "creating database test"
        pg_sql "CREATE DATABASE test" >/dev/null
    fi
    [ "$(pg_sql "SHOW wal_level")" = logical ] || die "PostgreSQL wal_level is not logical"
}

postgres_down() {
    local version
    version=$(pg_version)
    if [ -n "$version" ] && pg_answers; then
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main stop
        say "PostgreSQL stopped"
    fi
}

# ---------------------------------------------------------------------------------- MariaDB
my_answers() { mariadb-admin --connect-timeout=2 -h 127.0.0.1 -P "$MY_PORT" -u root status; }
my_socket_sql() { as_root mariadb --protocol=socket -u root -NBe "$1"; }

mariadb_start() {
    as_root install -d -o mysql -g mysql /run/mysqld
    if [ -x /etc/init.d/mariadb ]; then
        as_root /etc/init.d/mariadb start >/dev/null 2>&1 && return 0
    fi
    # No init system to ask (a container): start the server the way its init script would.
    as_root sh -c 'nohup mariadbd-safe >/dev/null 2>&1 &'
}

mariadb_up() {
    local changed=0
    if ! command -v mariadbd >/dev/null && [ ! -x /usr/sbin/mariadbd ]; then
        apt_install mariadb-server mariadb-client
    fi
    if write_if_changed /etc/mysql/mariadb.conf.d/99-beam_etl.cnf <<EOF
$MARK: a local test server (loopback only, bulk loads from the client, binlog for CDC)
[mysqld]
bind-address = 127.0.0.1
port = $MY_PORT
skip-name-resolve = 1
local_infile = 1
log_bin = mysql-bin
binlog_format = ROW
binlog_row_image = FULL
binlog_row_metadata = FULL
server_id = 1
expire_logs_days = 2
max_connections = 300
innodb_flush_log_at_trx_commit = 2
sync_binlog = 0

[mysql]
local-infile = 1
EOF
    then changed=1; fi
    if my_answers >/dev/null 2>&1 && [ "$changed" -eq 1 ]; then
        say "restarting MariaDB (configuration changed)"
        as_root mariadb-admin --protocol=socket -u root shutdown 2>/dev/null || true
        for _ in $(seq 1 "$WAIT_SECONDS"); do my_answers >/dev/null 2>&1 || break; sleep 1; done
        mariadb_start
    elif ! my_answers >/dev/null 2>&1 && ! as_root mariadb-admin --protocol=socket -u root status >/dev/null 2>&1; then
        say "starting MariaDB"
        mariadb_start
    fi
    wait_for MariaDB as_root mariadb-admin --protocol=socket -u root status
    # root over TCP from loopback with an empty password (skip-name-resolve: matched by address).
    my_socket_sql "CREATE DATABASE IF NOT EXISTS test;
        CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
        GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
        CREATE USER IF NOT EXISTS 'root'@'::1' IDENTIFIED BY '';
        GRANT ALL PRIVILEGES ON *.* TO 'root'@'::1' WITH GRANT OPTION;"
    wait_for MariaDB my_answers
    [ "$(my_socket_sql "SELECT @@log_bin")" = 1 ] || die "MariaDB log_bin is not ON"
}

mariadb_down() {
    if as_root mariadb-admin --protocol=socket -u root status >/dev/null 2>&1; then
        as_root mariadb-admin --protocol=socket -u root shutdown
        say "MariaDB stopped"
    fi
}

# ---------------------------------------------------------------------------------- tools
chromium_up() {
    if ! command -v chromium >/dev/null; then apt_install chromium; fi
    say "chromium: $(chromium --version 2>/dev/null | head -n1)"
}

java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1; }

java_up() {
    local major
    major=$(java_major 2>/dev/null || true)
    if [ -z "$major" ] || [ "$major" -lt 17 ]; then
        apt_install openjdk-17-jre-headless
        major=$(java_major)
    fi
    [ "$major" -ge 17 ] || die "Java 17 or newer is needed for Flink and Spark (found ${major:-none})"
    say "java: $major"
}

status() {
    local ok=0
    if pg_answers 2>/dev/null; then
        say "PostgreSQL: up on 127.0.0.1:$PG_PORT, wal_level=$(pg_sql 'SHOW wal_level' 2>/dev/null)"
    else say "PostgreSQL: down"; ok=1; fi
    if my_answers >/dev/null 2>&1; then
        say "MariaDB: up on 127.0.0.1:$MY_PORT"
    else say "MariaDB: down"; ok=1; fi
    if command -v chromium >/dev/null; then say "chromium: installed"; else say "chromium: missing"; ok=1; fi
    if [ "$(java_major 2>/dev/null || echo 0)" -ge 17 ] 2>/dev/null; then say "java: $(java_major)"
    else say "java 17+: missing"; ok=1; fi
    return $ok
}

main() {
    local action=${1:-status}
    shift || true
    local targets=("$@")
    case $action in
        up)
            [ ${#targets[@]} -gt 0 ] || targets=(postgres mariadb chromium java)
            local start=$SECONDS
            # One apt transaction for everything missing is much faster than one per service.
            local missing=()
            for t in "${targets[@]}"; do
                case $t in
                    postgres) [ -n "$(pg_version)" ] && [ -x "/usr/lib/postgresql/$(pg_version)/bin/postgres" ] || missing+=(postgresql postgresql-contrib) ;;
                    mariadb) command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server mariadb-client) ;;
                    chromium) command -v chromium >/dev/null || missing+=(chromium) ;;
                    java) [ "$(java_major 2>/dev/null || echo 0)" -ge 17 ] 2>/dev/null || missing+=(openjdk-17-jre-headless) ;;
                    *) die "unknown service \`$t\` (postgres, mariadb, chromium, java)" ;;
                esac
            done
            [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
            for t in "${targets[@]}"; do
                case $t in
                    postgres) postgres_up ;;
                    mariadb) mariadb_up ;;
                    chromium) chromium_up ;;
                    java) java_up ;;
                esac
            done
            say "up in $((SECONDS - start)) s"
            ;;
        down)
            [ ${#targets[@]} -gt 0 ] || targets=(postgres mariadb)
            for t in "${targets[@]}"; do
                case $t in
                    postgres) postgres_down ;;
                    mariadb) mariadb_down ;;
                    chromium | java) ;;
                    *) die "unknown service \`$t\`" ;;
                esac
            done
            ;;
        status) status ;;
        *) die "usage: $0 up|down|status [postgres|mariadb|chromium|java ...]" ;;
    esac
}

main "$@"
