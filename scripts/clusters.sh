#!/usr/bin/env bash
# A local Flink cluster, a local Spark cluster and Beam's job servers for them, on loopback only.
#
#   scripts/clusters.sh jars                        fetch Beam's runner jars with mvn, write job-server jars
#   scripts/clusters.sh up [flink|spark|flink-job-server|spark-job-server ...]   start (default: flink spark)
#   scripts/clusters.sh down [...]                  stop what `up` started, by PID (default: everything)
#   scripts/clusters.sh status                      say what runs where; exit 1 if something is down
#   scripts/clusters.sh env                         print BEAM_ETL_* assignments for a shell (`eval`)
#
# Flink 1.19.3 comes from PyPI (`apache-flink` wheel + `apache-flink-libraries` sdist, downloaded with
# `pip download --no-deps`, never installed), Spark 3.5.7 from the `pyspark` sdist, the job servers
# from Maven Central: Beam publishes no job-server jar here that mvn can fetch, so `jars` resolves
# `beam-runners-flink-1.19` and `beam-runners-spark-3` with their dependencies into a folder and
# writes a small launcher jar (manifest Main-Class + Class-Path) that Beam's FlinkRunner and
# SparkRunner start with `java -jar` (`--flink_job_server_jar`, `--spark_job_server_jar`).
#
# Everything lives under $BEAM_ETL_CACHE (default ~/.cache/beam_etl): downloads/, flink-1.19.3/,
# spark-3.5.7/, jobserver/, and run/<name>/ with each instance's configuration, logs and PIDs.
# Ports are chosen free at `up` and kept in run/<name>/ports.env. Idempotent: `up` on a running
# instance checks it and returns; `down` on a stopped one says so.
set -euo pipefail

CACHE=${BEAM_ETL_CACHE:-$HOME/.cache/beam_etl}
FLINK_VERSION=1.19.3
FLINK_MINOR=1.19
SPARK_VERSION=3.5.7
# The newest Beam release whose Flink and Spark runners resolve with all their dependencies from
# Maven Central here (2.77.0's are not served; 2.70.0 lacks beam-runners-java-job-service).
BEAM_JOB_SERVER_VERSION=${BEAM_ETL_JOB_SERVER_VERSION:-2.62.0}
WAIT_SECONDS=${CLUSTERS_WAIT_SECONDS:-90}
HOST=127.0.0.1

DOWNLOADS=$CACHE/downloads
FLINK_HOME_DIR=$CACHE/flink-$FLINK_VERSION
SPARK_HOME_DIR=$CACHE/spark-$SPARK_VERSION
JOBSERVER_DIR=$CACHE/jobserver
RUN=$CACHE/run

say() { printf 'clusters: %s\n' "$*"; }
die() { printf 'clusters: error: %s\n' "$*" >&2; exit 1; }

need_java() {
    if [ -z "${JAVA_HOME:-}" ]; then
        command -v java >/dev/null || die "no \`java\` on PATH: run \`scripts/services.sh up java\` (OpenJDK 17)"
        JAVA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")
    fi
    [ -x "$JAVA_HOME/bin/java" ] || die "JAVA_HOME=$JAVA_HOME has no bin/java"
    export JAVA_HOME
}

need_mvn() {  # Maven fetches the job servers; installed from Debian's packages when missing
    command -v mvn >/dev/null && return
    command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ] \
        || die "no \`mvn\` on PATH: install Maven (\`apt-get install maven\`); it fetches Beam's job server from Maven Central"
    say "installing maven (Debian package)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends maven >/dev/null || die "\`apt-get install maven\` failed"
}

python_with_pip() {  # the first python on PATH that has pip (the project's venv when active)
    local candidate
    for candidate in "${PYTHON:-}" python python3; do
        [ -n "$candidate" ] || continue
        if "$candidate" -m pip --version >/dev/null 2>&1; then echo "$candidate"; return; fi
    done
    die "no python with pip on PATH: activate the project's venv (. .venv/bin/activate)"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_answers() {  # port_answers PORT: something accepts TCP connections on 127.0.0.1:PORT
    python3 -c 'import socket, sys; s = socket.socket(); s.settimeout(1); sys.exit(s.connect_ex(("127.0.0.1", int(sys.argv[1]))))' "$1"
}

http_has() {  # http_has URL TEXT: the page answers within 2 s and contains TEXT
    python3 -c 'import sys, urllib.request; sys.exit(sys.argv[2] not in urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())' "$1" "$2" 2>/dev/null
}

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

stop_pid() {  # stop_pid NAME PID: TERM, wait up to 20 s, then KILL
    local name=$1 pid=$2
    pid_alive "$pid" || return 0
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do pid_alive "$pid" || { say "$name (pid $pid) stopped"; return 0; }; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
    say "$name (pid $pid) killed after 20 s"
}

wait_until() {  # wait_until WHAT LOG CHECK...: poll CHECK for WAIT_SECONDS
    local what=$1 log=$2; shift 2
    for _ in $(seq 1 $((WAIT_SECONDS * 2))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    die "$what did not come up within ${WAIT_SECONDS} s; see $log"
}

# ------------------------------------------------------------------------------------- downloads
pip_download() {  # pip_download SPEC FILE_GLOB: into $DOWNLOADS unless already there
    local spec=$1 glob=$2
    mkdir -p "$DOWNLOADS"
    if compgen -G "$DOWNLOADS/$glob" >/dev/null; then return; fi
    say "downloading $spec from PyPI into $DOWNLOADS"
    "$(python_with_pip)" -m pip download -q --no-deps -d "$DOWNLOADS" "$spec" \
        || die "pip could not download $spec (PyPI unreachable?)"
}

install_flink() {  # FLINK_HOME from the wheel's bin/ conf/ and the libraries sdist's deps/
    [ -f "$FLINK_HOME_DIR/.complete" ] && return
    pip_download "apache-flink==$FLINK_VERSION" "apache_flink-$FLINK_VERSION-*.whl"
    pip_download "apache-flink-libraries==$FLINK_VERSION" "apache-flink-libraries-$FLINK_VERSION.tar.gz"
    say "assembling Flink $FLINK_VERSION in $FLINK_HOME_DIR"
    local tmp
    tmp=$(mktemp -d "$CACHE/.flink.XXXXXX")
    python3 - "$tmp" "$DOWNLOADS"/apache_flink-"$FLINK_VERSION"-*.whl <<'EOF'
import sys, zipfile
target, wheel = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        if name.startswith(("pyflink/bin/", "pyflink/conf/")):
            archive.extract(name, target)
EOF
    tar xzf "$DOWNLOADS/apache-flink-libraries-$FLINK_VERSION.tar.gz" -C "$tmp" \
        "apache-flink-libraries-$FLINK_VERSION/deps"
    local deps=$tmp/apache-flink-libraries-$FLINK_VERSION/deps home=$tmp/home
    mkdir -p "$home"
    mv "$tmp/pyflink/bin" "$tmp/pyflink/conf" "$deps/lib" "$deps/opt" "$deps/plugins" "$home/"
    cp "$deps/bin/bash-java-utils.jar" "$home/bin/"
    chmod +x "$home"/bin/*.sh "$home/bin/flink"
    touch "$home/.complete"
    rm -rf "$FLINK_HOME_DIR"
    mv "$home" "$FLINK_HOME_DIR"
    rm -rf "$tmp"
}

install_spark() {  # SPARK_HOME from the pyspark sdist's deps/ (bin, sbin, jars)
    [ -f "$SPARK_HOME_DIR/.complete" ] && return
    pip_download "pyspark==$SPARK_VERSION" "pyspark-$SPARK_VERSION.tar.gz"
    say "assembling Spark $SPARK_VERSION in $SPARK_HOME_DIR"
    local tmp
    tmp=$(mktemp -d "$CACHE/.spark.XXXXXX")
    tar xzf "$DOWNLOADS/pyspark-$SPARK_VERSION.tar.gz" -C "$tmp" \
        "pyspark-$SPARK_VERSION/deps/bin" "pyspark-$SPARK_VERSION/deps/sbin" \
        "pyspark-$SPARK_VERSION/deps/jars"
    local home=$tmp/pyspark-$SPARK_VERSION/deps
    chmod +x "$home"/bin/* "$home"/sbin/*
    touch "$home/.complete"
    rm -rf "$SPARK_HOME_DIR"
    mv "$home" "$SPARK_HOME_DIR"
    rm -rf "$tmp"
}

# ----------------------------------------------------------------------------------- job servers
jobserver_jar() {  # jobserver_jar flink|spark: the launcher jar's path
    case $1 in
        flink) echo "$JOBSERVER_DIR/flink-$FLINK_MINOR-$BEAM_JOB_SERVER_VERSION/beam-runners-flink-$FLINK_MINOR-job-server-$BEAM_JOB_SERVER_VERSION.jar" ;;
        spark) echo "$JOBSERVER_DIR/spark-3-$BEAM_JOB_SERVER_VERSION/beam-runners-spark-3-job-server-$BEAM_JOB_SERVER_VERSION.jar" ;;
    esac
}

build_jobserver() {  # build_jobserver flink|spark: mvn resolves the runner, a launcher jar names it
    local kind=$1 jar dir artifact main extra=""
    jar=$(jobserver_jar "$kind")
    dir=$(dirname "$jar")
    [ -f "$jar" ] && return
    need_mvn
    case $kind in
        flink)
            artifact=beam-runners-flink-$FLINK_MINOR
            main=org.apache.beam.runners.flink.FlinkJobServerDriver
            extra='<dependency><groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>1.7.30</version></dependency>' ;;
        spark)
            install_spark  # Spark itself comes from the pyspark sdist's jars (the cluster's own)
            artifact=beam-runners-spark-3
            main=org.apache.beam.runners.spark.SparkJobServerDriver ;;
    esac
    say "resolving org.apache.beam:$artifact:$BEAM_JOB_SERVER_VERSION with mvn into $dir"
    mkdir -p "$dir"
    cat >"$dir/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>beam_etl.clusters</groupId>
  <artifactId>$artifact-job-server</artifactId>
  <version>$BEAM_JOB_SERVER_VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.beam</groupId><artifactId>$artifact</artifactId><version>$BEAM_JOB_SERVER_VERSION</version></dependency>
    $extra
  </dependencies>
</project>
EOF
    rm -rf "$dir/lib"
    if ! (cd "$dir" && mvn -B -q dependency:copy-dependencies -DincludeScope=runtime \
            -DoutputDirectory=lib >"$dir/mvn.log" 2>&1); then
        die "mvn could not fetch org.apache.beam:$artifact:$BEAM_JOB_SERVER_VERSION from Maven Central: $(grep -m1 -o 'Could not [^:]*: [^ ]*\|Could not find artifact [^ ]*' "$dir/mvn.log" || tail -n1 "$dir/mvn.log") (log: $dir/mvn.log)"
    fi
    local spark_jars=""
    [ "$kind" = spark ] && spark_jars=$SPARK_HOME_DIR/jars
    python3 - "$jar" "$main" "$dir/lib" "$spark_jars" <<'EOF'
"""Write a launcher jar: Main-Class plus a Class-Path of the resolved jars (and Spark's)."""
import os, re, sys, zipfile

jar, main, lib, spark_jars = sys.argv[1:]

def artifact(name):
    return re.sub(r"-\d[\w.+-]*\.jar$", "", name)

# Where both name the same library the cluster's Spark wins, except Guava: Spark itself uses a
# shaded copy, and its guava-14.0.1 breaks Beam's GCS options, which the job server loads at start.
BEAM_WINS = {"guava", "failureaccess"}
entries = []
provided = set()
if spark_jars:
    spark = [n for n in sorted(os.listdir(spark_jars)) if artifact(n) not in BEAM_WINS]
    provided = {artifact(n) for n in spark}
    entries += [os.path.join(spark_jars, n) for n in spark]
entries += [os.path.join(lib, n) for n in sorted(os.listdir(lib)) if artifact(n) not in provided]

def line(text):
    data = text.encode()
    parts = [data[:72]] + [b" " + data[i:i + 71] for i in range(72, len(data), 71)]
    return b"\r\n".join(parts) + b"\r\n"

class_path = " ".join("file:" + os.path.abspath(e) for e in entries)
manifest = (line("Manifest-Version: 1.0") + line(f"Main-Class: {main}")
            + line(f"Class-Path: {class_path}") + b"\r\n")
tmp = jar + ".tmp"
with zipfile.ZipFile(tmp, "w") as out:
    out.writestr("META-INF/MANIFEST.MF", manifest)
os.replace(tmp, jar)
EOF
    say "job server: $jar"
}

# ---------------------------------------------------------------------------------------- Flink
flink_pids() { cat "$RUN/flink/pids"/*.pid 2>/dev/null || true; }

flink_running() {
    [ -f "$RUN/flink/ports.env" ] || return 1
    local pid
    for pid in $(flink_pids); do pid_alive "$pid" || return 1; done
    [ -n "$(flink_pids)" ] || return 1
    # shellcheck disable=SC1091
    . "$RUN/flink/ports.env"
    http_has "http://$HOST:$FLINK_REST_PORT/taskmanagers" '"slotsNumber":2'
}

flink_up() {
    if flink_running; then say "flink already running (REST http://$HOST:$FLINK_REST_PORT)"; return; fi
    flink_down quiet
    need_java
    install_flink
    local dir=$RUN/flink rest rpc
    mkdir -p "$dir/conf" "$dir/log" "$dir/pids" "$dir/tmp"
    cp "$FLINK_HOME_DIR"/conf/log4j*.properties "$FLINK_HOME_DIR"/conf/logback*.xml "$dir/conf/"
    rest=$(free_port); rpc=$(free_port)
    # JVM options as the wheel's config.yaml has them (Java 17 needs the --add-opens).
    local java_opts
    java_opts=$(grep -m1 '^ *all: ' "$FLINK_HOME_DIR/conf/config.yaml" | sed 's/^ *all: //')
    cat >"$dir/conf/config.yaml" <<EOF
env:
  java:
    opts:
      all: $java_opts
jobmanager:
  bind-host: $HOST
  rpc: {address: $HOST, port: $rpc}
  memory: {process: {size: 1200m}}
  execution: {failover-strategy: region}
taskmanager:
  bind-host: $HOST
  host: $HOST
  numberOfTaskSlots: 2
  # Beam's gRPC data plane to the Python workers uses direct memory (Flink's default task
  # off-heap is 0: "OutOfMemoryError: Direct buffer memory" after a few jobs).
  memory: {process: {size: 3600m}, managed: {fraction: 0.2}, task: {off-heap: {size: 768m}},
           framework: {off-heap: {size: 256m}}}
parallelism: {default: 1}
rest: {address: $HOST, bind-address: $HOST, port: $rest}
blob: {server: {port: "0"}}
io: {tmp: {dirs: $dir/tmp}}
web: {tmpdir: $dir/tmp}
EOF
    echo "$HOST:$rest" >"$dir/conf/masters"
    echo "$HOST" >"$dir/conf/workers"
    say "starting Flink $FLINK_VERSION (JobManager, TaskManager with 2 slots; logs in $dir/log)"
    FLINK_CONF_DIR=$dir/conf FLINK_LOG_DIR=$dir/log FLINK_PID_DIR=$dir/pids \
        "$FLINK_HOME_DIR/bin/jobmanager.sh" start >"$dir/log/start.out" 2>&1
    FLINK_CONF_DIR=$dir/conf FLINK_LOG_DIR=$dir/log FLINK_PID_DIR=$dir/pids \
        "$FLINK_HOME_DIR/bin/taskmanager.sh" start >>"$dir/log/start.out" 2>&1
    printf 'FLINK_REST_PORT=%s\nFLINK_RPC_PORT=%s\n' "$rest" "$rpc" >"$dir/ports.env"
    wait_until "Flink" "$dir/log" flink_running
    say "flink up: REST http://$HOST:$rest (--flink_master=$HOST:$rest)"
}

flink_down() {
    local pid
    for pid in $(flink_pids); do stop_pid flink "$pid"; done
    rm -f "$RUN/flink/pids"/*.pid "$RUN/flink/ports.env"
    [ "${1:-}" = quiet ] || say "flink down"
}

# ---------------------------------------------------------------------------------------- Spark
spark_running() {
    [ -f "$RUN/spark/ports.env" ] || return 1
    pid_alive "$(cat "$RUN/spark/master.pid" 2>/dev/null)" || return 1
    pid_alive "$(cat "$RUN/spark/worker.pid" 2>/dev/null)" || return 1
    # shellcheck disable=SC1091
    . "$RUN/spark/ports.env"
    http_has "http://$HOST:$SPARK_MASTER_WEBUI_PORT/json/" '"aliveworkers" : 1'
}

spark_start() {  # spark_start NAME CLASS ARGS...: one Spark daemon in the background, PID kept
    local name=$1 dir=$RUN/spark; shift
    SPARK_HOME=$SPARK_HOME_DIR SPARK_LOCAL_IP=$HOST SPARK_LOG_DIR=$dir/log SPARK_NO_DAEMONIZE=1 \
        setsid nohup "$SPARK_HOME_DIR/bin/spark-class" "$@" >"$dir/log/$name.log" 2>&1 </dev/null &
    echo $! >"$dir/$name.pid"
}

spark_up() {
    if spark_running; then say "spark already running (spark://$HOST:$SPARK_MASTER_PORT)"; return; fi
    spark_down quiet
    need_java
    install_spark
    local dir=$RUN/spark port ui worker_ui
    mkdir -p "$dir/log" "$dir/work"
    rm -rf "$dir/work"/app-*  # each application left ~400 MB of jars here (no app is running)
    port=$(free_port); ui=$(free_port); worker_ui=$(free_port)
    say "starting Spark $SPARK_VERSION (master, worker with 2 cores; logs in $dir/log)"
    spark_start master org.apache.spark.deploy.master.Master \
        --host "$HOST" --port "$port" --webui-port "$ui"
    printf 'SPARK_MASTER_PORT=%s\nSPARK_MASTER_WEBUI_PORT=%s\n' "$port" "$ui" >"$dir/ports.env"
    wait_until "Spark master" "$dir/log/master.log" port_answers "$port"
    # Finished applications' folders removed after 10 minutes (checked every 5).
    export SPARK_WORKER_OPTS="-Dspark.worker.cleanup.enabled=true \
-Dspark.worker.cleanup.interval=300 -Dspark.worker.cleanup.appDataTtl=600"
    spark_start worker org.apache.spark.deploy.worker.Worker "spark://$HOST:$port" \
        --host "$HOST" --webui-port "$worker_ui" --cores 2 --memory 4g --work-dir "$dir/work"
    wait_until "Spark worker" "$dir/log/worker.log" spark_running
    say "spark up: spark://$HOST:$port (web UI http://$HOST:$ui)"
}

spark_down() {
    local name
    for name in worker master; do
        stop_pid "spark $name" "$(cat "$RUN/spark/$name.pid" 2>/dev/null || true)"
        rm -f "$RUN/spark/$name.pid"
    done
    rm -f "$RUN/spark/ports.env"
    [ "${1:-}" = quiet ] || say "spark down"
}

# ------------------------------------------------------ long-running job servers (PortableRunner)
jobserver_running() {  # jobserver_running flink|spark
    local dir=$RUN/$1-job-server
    [ -f "$dir/ports.env" ] && pid_alive "$(cat "$dir/pid" 2>/dev/null)" || return 1
    # shellcheck disable=SC1091
    . "$dir/ports.env"
    port_answers "$JOB_PORT"
}

jobserver_up() {  # jobserver_up flink|spark: a job server for --job_endpoint, on the local cluster
    local kind=$1 dir=$RUN/$1-job-server master job artifact
    if jobserver_running "$kind"; then say "$kind job server already running (--job_endpoint=localhost:$JOB_PORT)"; return; fi
    jobserver_down "$kind" quiet
    need_java
    build_jobserver "$kind"
    "${kind}_up"
    case $kind in
        flink) . "$RUN/flink/ports.env"; master=(--flink-master "$HOST:$FLINK_REST_PORT") ;;
        spark) . "$RUN/spark/ports.env"; master=(--spark-master-url "spark://$HOST:$SPARK_MASTER_PORT") ;;
    esac
    mkdir -p "$dir/artifacts"
    job=$(free_port); artifact=$(free_port)
    say "starting the $kind job server (log: $dir/job-server.log)"
    setsid nohup "$JAVA_HOME/bin/java" -jar "$(jobserver_jar "$kind")" "${master[@]}" \
        --job-host "$HOST" --job-port "$job" --artifact-port "$artifact" --expansion-port -1 \
        --artifacts-dir "$dir/artifacts" >"$dir/job-server.log" 2>&1 </dev/null &
    echo $! >"$dir/pid"
    printf 'JOB_PORT=%s\nARTIFACT_PORT=%s\n' "$job" "$artifact" >"$dir/ports.env"
    wait_until "$kind job server" "$dir/job-server.log" jobserver_running "$kind"
    say "$kind job server up: --runner=PortableRunner --job_endpoint=localhost:$job"
}

jobserver_down() {
    local dir=$RUN/$1-job-server
    stop_pid "$1 job server" "$(cat "$dir/pid" 2>/dev/null || true)"
    rm -f "$dir/pid" "$dir/ports.env"
    [ "${2:-}" = quiet ] || say "$1 job server down"
}

# ------------------------------------------------------------------------------------- commands
status() {
    local ok=0
    if flink_running; then say "flink: up, --flink_master=$HOST:$FLINK_REST_PORT (logs $RUN/flink/log)"
    else say "flink: down"; ok=1; fi
    if spark_running; then say "spark: up, --spark_master_url=spark://$HOST:$SPARK_MASTER_PORT (logs $RUN/spark/log)"
    else say "spark: down"; ok=1; fi
    local kind
    for kind in flink spark; do
        if jobserver_running "$kind"; then say "$kind job server: up, --job_endpoint=localhost:$JOB_PORT"
        else say "$kind job server: down"; fi
        if [ -f "$(jobserver_jar "$kind")" ]; then say "$kind job-server jar: $(jobserver_jar "$kind")"
        else say "$kind job-server jar: not built (run \`$0 jars\`)"; fi
    done
    return $ok
}

print_env() {
    echo "BEAM_ETL_FLINK_JOB_SERVER_JAR=$(jobserver_jar flink)"
    echo "BEAM_ETL_SPARK_JOB_SERVER_JAR=$(jobserver_jar spark)"
    if flink_running; then echo "BEAM_ETL_FLINK_MASTER=$HOST:$FLINK_REST_PORT"; fi
    if spark_running; then echo "BEAM_ETL_SPARK_MASTER_URL=spark://$HOST:$SPARK_MASTER_PORT"; fi
    if jobserver_running flink; then echo "BEAM_ETL_FLINK_JOB_ENDPOINT=localhost:$JOB_PORT"; fi
    if jobserver_running spark; then echo "BEAM_ETL_SPARK_JOB_ENDPOINT=localhost:$JOB_PORT"; fi
}

main() {
    local command=${1:-status}
    shift || true
    mkdir -p "$CACHE" "$RUN"
    case $command in
        jars) need_java; build_jobserver flink; build_jobserver spark ;;
        up)
            [ $# -gt 0 ] || set -- flink spark
            local what
            for what in "$@"; do
                case $what in
                    flink|spark) "${what}_up" ;;
                    flink-job-server) jobserver_up flink ;;
                    spark-job-server) jobserver_up spark ;;
                    *) die "unknown part \`$what\` (flink, spark, flink-job-server, spark-job-server)" ;;
                esac
            done ;;
        down)
            [ $# -gt 0 ] || set -- flink-job-server spark-job-server flink spark
            local what
            for what in "$@"; do
                case $what in
                    flink|spark) "${what}_down" ;;
                    flink-job-server) jobserver_down flink ;;
                    spark-job-server) jobserver_down spark ;;
                    *) die "unknown part \`$what\` (flink, spark, flink-job-server, spark-job-server)" ;;
                esac
            done ;;
        status) status ;;
        env) print_env ;;
        *) die "unknown command \`$command\` (jars, up, down, status, env)" ;;
    esac
}

main "$@"
