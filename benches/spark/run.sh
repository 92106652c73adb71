#!/usr/bin/env bash
# The Spark baseline sparklet is compared with: the classic Spark Structured
# Streaming 3.5 job (PySpark, benches/spark/seed_job.py), with Spark's own
# Kafka source and sink (spark-sql-kafka-0-10) and the JDBC writer, run with
# spark-submit on local[2] and trigger availableNow over a backlog.
#
# What it measures: the job's per-batch time (Spark's triggerExecution) and
# output rows (campaigns x subscribers), the query's time from start() to its
# end and its output rows/s, the wall time of the whole spark-submit (JVM
# start, session, caching subscribers_restaurants, the query, shutdown), and
# peak memory: the largest RSS of the Spark JVM, of the whole process tree
# (JVM + Python driver, sampled every 0.2 s from /proc) and /usr/bin/time -v's
# "Maximum resident set size" of spark-submit (when /usr/bin/time exists;
# spark-submit execs the JVM, and Linux reports the largest RSS of it and its
# reaped children, i.e. the JVM's, not a sum).
#
# The backlog (with --produce N): schema SCHEMA in the database is dropped and
# recreated with sql/schema.sql's two tables; subscribers_restaurants gets
# 1,000 restaurants x 10 subscribers (client-<n>, restaurant-<n/10>); the input
# topic (16 partitions) and output topic (16 partitions) are created, and
# produce_backlog.py writes N campaigns for restaurant-<i % 1000>, valid
# around now except every tenth (expired). All of that happens before
# spark-submit starts and is not measured. Afterwards the output topic and
# subscribers_feedback are checked to hold (N - N/10) x 10 rows.
#
# Needs: Java 17, Python 3.11 (with venv), Maven; reaches PyPI and Maven
# Central only. Installs into ~/.cache: a venv sparklet-spark-venv (pyspark,
# confluent-kafka, psycopg) and the jars sparklet-spark-jars/<version> (the
# Kafka connector and its runtime dependencies minus what pyspark ships, and
# the Postgres driver; benches/spark/pom.xml). A Kafka broker and Postgres
# must be running.
#
# Usage:
#   bash benches/spark/run.sh --bootstrap-servers HOST:PORT [options]
#     --produce N                  set up the schema and topics, produce N campaigns first
#     --input-topic NAME           default spark-bench-in-<time>  (new names: each run its own backlog)
#     --output-topic NAME          default spark-bench-out-<time>
#     --database-url URL           default postgresql://postgres@127.0.0.1:5432/test
#     --schema NAME                default spark_bench (recreated by --produce)
#     --checkpoint-dir DIR         default a new folder under the results folder
#     --max-offsets-per-trigger N  default 100000
#     --input-partitions N         default 16 (when --produce creates the topic)
#     --output-partitions N        default 16
#     --master M                   default local[2]
#     --driver-memory SIZE         default Spark's (1g)
#     --conf KEY=VALUE             extra Spark setting, repeatable
#     --results DIR                default /tmp/sparklet-spark-bench.<time>
#     --explain                    print the last batch's physical plan
#     --setup-only                 install the venv and jars, then exit
#
# The full comparison (on a quiet machine; Kafka from this repo):
#   bash tests/kafka/broker start /tmp/spark-kafka      # prints SPARKLET_TEST_KAFKA=127.0.0.1:PORT
#   bash benches/spark/run.sh --bootstrap-servers 127.0.0.1:PORT --produce 1200000   # 12 batches of 100k
#   bash benches/spark/run.sh --bootstrap-servers 127.0.0.1:PORT --produce 100000    # one batch of 100k
#   bash tests/kafka/broker stop /tmp/spark-kafka
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# pyspark and spark-sql-kafka-0-10_2.12 must be the same Spark release. PyPI
# serves pyspark 3.5.0-3.5.9, but Maven Central serves the connector only at
# 3.5.1, 3.5.3 and 3.5.7 here: 3.5.7 is the newest both have.
spark_version="${SPARK_VERSION:-3.5.7}"
venv="${SPARKLET_SPARK_VENV:-$HOME/.cache/sparklet-spark-venv}"
jars_cache="${SPARKLET_SPARK_JARS:-$HOME/.cache/sparklet-spark-jars}"

die() { echo "benches/spark/run.sh: $*" >&2; exit 1; }
say() { echo "run.sh: $*" >&2; }

stamp="$(date +%Y%m%d-%H%M%S)"
bootstrap=""
produce=""
input_topic="spark-bench-in-$stamp"
output_topic="spark-bench-out-$stamp"
database_url="postgresql://postgres@127.0.0.1:5432/test"
schema="spark_bench"
checkpoint=""
max_offsets=100000
input_partitions=16
output_partitions=16
master="local[2]"
driver_memory=""
results="${TMPDIR:-/tmp}/sparklet-spark-bench.$stamp"
setup_only=""
explain=()
confs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --bootstrap-servers) bootstrap="$2"; shift 2 ;;
    --produce) produce="$2"; shift 2 ;;
    --input-topic) input_topic="$2"; shift 2 ;;
    --output-topic) output_topic="$2"; shift 2 ;;
    --database-url) database_url="$2"; shift 2 ;;
    --schema) schema="$2"; shift 2 ;;
    --checkpoint-dir) checkpoint="$2"; shift 2 ;;
    --max-offsets-per-trigger) max_offsets="$2"; shift 2 ;;
    --input-partitions) input_partitions="$2"; shift 2 ;;
    --output-partitions) output_partitions="$2"; shift 2 ;;
    --master) master="$2"; shift 2 ;;
    --driver-memory) driver_memory="$2"; shift 2 ;;
    --conf) confs+=(--conf "$2"); shift 2 ;;
    --results) results="$2"; shift 2 ;;
    --setup-only) setup_only=1; shift ;;
    --explain) explain=(--explain); shift ;;
    -h|--help) sed -n '2,55p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (--help)" ;;
  esac
done

command -v java >/dev/null || die "java not found: install a JDK 17 (apt-get install openjdk-17-jdk-headless)"
command -v mvn >/dev/null || die "mvn not found: install Maven (apt-get install maven)"
command -v python3 >/dev/null || die "python3 not found"

# --- the venv: pyspark, and the clients for setup and checks -----------------
if ! "$venv/bin/python" -c "import pyspark, confluent_kafka, psycopg, sys; sys.exit(pyspark.__version__ != '$spark_version')" 2>/dev/null; then
  say "installing pyspark==$spark_version, confluent-kafka, psycopg into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "pyspark==$spark_version" "confluent-kafka>=2.3" "psycopg[binary]>=3.1"
fi
py="$venv/bin/python"
spark_home="$("$py" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"

# --- the jars: the Kafka connector and the Postgres driver --------------------
jars_dir="$jars_cache/$spark_version-$(sha256sum "$here/pom.xml" | cut -c1-12)"
if [ ! -f "$jars_dir/.complete" ]; then
  say "fetching spark-sql-kafka-0-10_2.12:$spark_version and the Postgres driver into $jars_dir"
  rm -rf "$jars_dir" && mkdir -p "$jars_dir"
  for try in 1 2; do
    mvn -q -B -Dstyle.color=never -f "$here/pom.xml" -Dspark.version="$spark_version" \
      org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$jars_dir" >&2 && break
    [ "$try" = 2 ] && die "fetching the jars with Maven failed (twice)"
  done
  # No second copy of anything pyspark ships (Spark, Scala, Hadoop, ...):
  # drop a collected jar whose artifact name is in pyspark's jars/.
  artifact() { sed -E 's/-[0-9]+\.[0-9][^-]*(-[0-9A-Za-z.]+)?\.jar$//' <<<"$1"; }
  declare -A shipped=()
  for j in "$spark_home"/jars/*.jar; do shipped["$(artifact "$(basename "$j")")"]=1; done
  for j in "$jars_dir"/*.jar; do
    name="$(artifact "$(basename "$j")")"
    if [ -n "${shipped[$name]:-}" ]; then say "dropping $(basename "$j"): pyspark ships $name"; rm -f "$j"; fi
  done
  touch "$jars_dir/.complete"
fi
jars="$(ls "$jars_dir"/*.jar | paste -sd, -)"
say "pyspark $spark_version ($spark_home); jars: $(ls "$jars_dir" | paste -sd' ' -)"
[ -n "$setup_only" ] && exit 0

[ -n "$bootstrap" ] || die "--bootstrap-servers is required (--help)"
mkdir -p "$results"
checkpoint="${checkpoint:-$results/checkpoint}"
IFS=$'\t' read -r jdbc_url jdbc_user jdbc_password < <("$py" "$here/bench_tools.py" jdbc "$database_url")

# --- the backlog (not measured) -----------------------------------------------
if [ -n "$produce" ]; then
  "$py" "$here/bench_tools.py" setup-db "$database_url" "$schema" --restaurants 1000 --per-restaurant 10
  "$py" "$here/bench_tools.py" create-topic "$bootstrap" "$output_topic" "$output_partitions"
  "$py" "$here/produce_backlog.py" --bootstrap-servers "$bootstrap" --topic "$input_topic" \
    --count "$produce" --partitions "$input_partitions"
fi

# --- the job, measured ----------------------------------------------------------
submit=(
  "$spark_home/bin/spark-submit" --master "$master" --jars "$jars"
  --conf spark.sql.streaming.numRecentProgressUpdates=100000
)
[ -n "$driver_memory" ] && submit+=(--driver-memory "$driver_memory")
submit+=("${confs[@]}")
submit+=(
  "$here/seed_job.py"
  --bootstrap-servers "$bootstrap" --input-topic "$input_topic" --output-topic "$output_topic"
  --jdbc-url "$jdbc_url" --jdbc-user "$jdbc_user" --jdbc-password "$jdbc_password" --schema "$schema"
  --checkpoint-dir "$checkpoint" --max-offsets-per-trigger "$max_offsets" --trigger availableNow
  --summary-file "$results/summary.json" "${explain[@]}"
)
timer=()
[ -x /usr/bin/time ] && timer=(/usr/bin/time -v -o "$results/time.txt")
export PYSPARK_PYTHON="$py" PYSPARK_DRIVER_PYTHON="$py"
# Spark on this machine only: bind the driver (and its UI) to loopback.
export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"
say "spark-submit on $master: $input_topic -> $output_topic and $schema.subscribers_feedback; results in $results"
started="$(date +%s.%N)"
"${timer[@]}" "${submit[@]}" >"$results/stdout.txt" 2>"$results/stderr.txt" &
job=$!
"$py" "$here/bench_tools.py" watch-rss "$job" "$results/rss.json" &
watcher=$!
tail -n +1 -f --pid="$job" "$results/stdout.txt" | grep -v '^SUMMARY ' || true
status=0
wait "$job" || status=$?
ended="$(date +%s.%N)"
wait "$watcher" || true
if [ "$status" != 0 ]; then
  tail -30 "$results/stderr.txt" >&2
  die "spark-submit exited with $status (logs in $results)"
fi

# --- the report -------------------------------------------------------------------
time_kib=""
[ -f "$results/time.txt" ] && time_kib="$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$results/time.txt")"
"$py" - "$results" "$started" "$ended" "${time_kib:-0}" "${produce:-}" <<'EOF'
import json, sys
results, started, ended, time_kib, produce = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
s = json.load(open(f"{results}/summary.json"))
rss = json.load(open(f"{results}/rss.json"))
report = {k: s[k] for k in ("engine", "master", "batches", "input_rows", "output_rows", "seconds", "output_rows_per_s", "startup_seconds")}
report["per_batch"] = [{k: b[k] for k in ("batch_id", "input_rows", "output_rows", "seconds", "output_rows_per_s")} for b in s["per_batch"]]
report["wall_seconds"] = round(ended - started, 3)
report["peak_rss_mib"] = {
    "java": round(rss["peak_java_kib"] / 1024, 1),
    "process_tree": round(rss["peak_tree_kib"] / 1024, 1),
    "python_driver": round(rss["peak_python_kib"] / 1024, 1),
}
if time_kib:
    report["peak_rss_mib"]["time_v_max_rss"] = round(time_kib / 1024, 1)
json.dump(report, open(f"{results}/report.json", "w"), indent=1)
print(json.dumps(report, indent=1))
EOF

if [ -n "$produce" ]; then
  expected=$(( (produce - produce / 10) * 10 ))
  in_db="$("$py" "$here/bench_tools.py" count-db "$database_url" "$schema")"
  in_topic="$("$py" "$here/bench_tools.py" count-topic "$bootstrap" "$output_topic")"
  say "expected $expected output rows; subscribers_feedback: $in_db; $output_topic: $in_topic messages"
  rows="$("$py" -c 'import json,sys; print(json.loads(sys.argv[1])["rows"])' "$in_db")"
  [ "$rows" = "$expected" ] && [ "$in_topic" = "$expected" ] || die "row counts differ from $expected"
  say "check passed"
fi
