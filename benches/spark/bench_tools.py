"""Helpers for benches/spark/run.sh: the Postgres schema, topics, counts, and
the memory sampler. Uses psycopg and confluent-kafka (in run.sh's venv).

    python bench_tools.py setup-db DATABASE_URL SCHEMA [--restaurants 1000 --per-restaurant 10]
    python bench_tools.py count-db DATABASE_URL SCHEMA
    python bench_tools.py create-topic BOOTSTRAP TOPIC PARTITIONS
    python bench_tools.py count-topic BOOTSTRAP TOPIC
    python bench_tools.py jdbc DATABASE_URL        # prints: JDBC_URL USER PASSWORD (tab-separated)
    python bench_tools.py watch-rss PID OUTFILE    # samples until PID exits
"""

import json
import os
import pathlib
import sys
import time
import urllib.parse

HERE = pathlib.Path(__file__).resolve().parent
SCHEMA_SQL = HERE.parent.parent / "sql" / "schema.sql"

# The push service's tables (as sql/schema.sql), used when that file is not beside us.
TABLES = """
CREATE TABLE IF NOT EXISTS subscribers_restaurants (
    id serial4 NOT NULL, client_id varchar NOT NULL, restaurant_id varchar NOT NULL,
    CONSTRAINT pk_id PRIMARY KEY (id));
CREATE TABLE IF NOT EXISTS subscribers_feedback (
    id serial4 NOT NULL, restaurant_id text NOT NULL, adv_campaign_id text NOT NULL,
    adv_campaign_content text NOT NULL, adv_campaign_owner text NOT NULL,
    adv_campaign_owner_contact text NOT NULL, adv_campaign_datetime_start int8 NOT NULL,
    adv_campaign_datetime_end int8 NOT NULL, datetime_created int8 NOT NULL,
    client_id text NOT NULL, trigger_datetime_created int4 NOT NULL, feedback varchar NULL,
    CONSTRAINT id_pk PRIMARY KEY (id));
"""


def ident(name):
    return '"' + name.replace('"', '""') + '"'


def setup_db(url, schema, restaurants=1000, per_restaurant=10):
    import psycopg

    ddl = SCHEMA_SQL.read_text() if SCHEMA_SQL.exists() else TABLES
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(f"DROP SCHEMA IF EXISTS {ident(schema)} CASCADE")
        db.execute(f"CREATE SCHEMA {ident(schema)}")
        db.execute(f"SET search_path TO {ident(schema)}")
        db.execute(ddl)
        db.execute(
            "INSERT INTO subscribers_restaurants (client_id, restaurant_id) "
            "SELECT format('client-%%s', i), format('restaurant-%%s', i / %s) "
            "FROM generate_series(0, %s - 1) i",
            (per_restaurant, restaurants * per_restaurant),
        )
        db.execute("VACUUM ANALYZE subscribers_restaurants")
        n = db.execute("SELECT count(*) FROM subscribers_restaurants").fetchone()[0]
    print(f"schema {schema}: subscribers_restaurants {n} rows, subscribers_feedback empty", file=sys.stderr)


def count_db(url, schema):
    import psycopg

    with psycopg.connect(url) as db:
        row = db.execute(
            f"SELECT count(*), count(DISTINCT (adv_campaign_id, client_id)), count(feedback), "
            f"count(DISTINCT trigger_datetime_created) FROM {ident(schema)}.subscribers_feedback"
        ).fetchone()
    return {"rows": row[0], "distinct_campaign_client": row[1], "non_null_feedback": row[2], "trigger_times": row[3]}


def create_topic(bootstrap, topic, partitions):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    if topic in admin.list_topics(timeout=30).topics:
        print(f"topic {topic} exists", file=sys.stderr)
        return
    admin.create_topics([NewTopic(topic, num_partitions=int(partitions), replication_factor=1)])[topic].result(60)
    print(f"created topic {topic} with {partitions} partitions", file=sys.stderr)


def count_topic(bootstrap, topic):
    """Messages in the topic: the sum over partitions of high minus low watermark."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "sparklet-spark-bench-count", "enable.auto.commit": False})
    try:
        meta = c.list_topics(topic, timeout=30).topics[topic]
        if meta.error is not None:
            raise SystemExit(f"topic {topic}: {meta.error}")
        total = 0
        for p in meta.partitions:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            total += high - low
        return total
    finally:
        c.close()


def jdbc(url):
    """postgresql://user:pw@host:port/db?x=y -> jdbc:postgresql://host:port/db?x=y, user, password."""
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("postgres", "postgresql"):
        raise SystemExit(f"not a postgresql:// URL: {url}")
    host = u.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{u.port or 5432}"
    jdbc_url = f"jdbc:postgresql://{netloc}{u.path or '/postgres'}" + (f"?{u.query}" if u.query else "")
    user = urllib.parse.unquote(u.username or os.environ.get("PGUSER", "postgres"))
    password = urllib.parse.unquote(u.password or os.environ.get("PGPASSWORD", ""))
    return jdbc_url, user, password


def tree(root):
    """PIDs of root and its descendants."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def watch_rss(root, outfile, interval=0.2):
    """Samples the RSS of root's process tree until root exits; writes the peaks as JSON:
    peak_tree_kib (all processes summed: the JVM, the Python driver, any Python workers),
    peak_java_kib (the largest java process alone), peak_python_kib."""
    root = int(root)
    peak = {"peak_tree_kib": 0, "peak_java_kib": 0, "peak_python_kib": 0, "samples": 0}
    while os.path.exists(f"/proc/{root}"):
        pids = [p for p in tree(root) if p != root or comm(p) != "time"]
        rss = {p: rss_kib(p) for p in pids}
        names = {p: comm(p) for p in pids}
        if sum(rss.values()) > peak["peak_tree_kib"]:
            peak["peak_tree_kib"] = sum(rss.values())
            peak["at_tree_peak"] = sorted(f"{names[p]}[{p}]={r // 1024}MiB" for p, r in rss.items() if r)
        for p, r in rss.items():
            name = names[p]
            if name == "java":
                peak["peak_java_kib"] = max(peak["peak_java_kib"], r)
            elif name.startswith("python"):
                peak["peak_python_kib"] = max(peak["peak_python_kib"], r)
        peak["samples"] += 1
        with open(outfile, "w") as f:
            json.dump(peak, f)
        time.sleep(interval)


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "setup-db":
        opts = {"restaurants": 1000, "per_restaurant": 10}
        pos = []
        i = 0
        while i < len(rest):
            if rest[i] in ("--restaurants", "--per-restaurant"):
                opts[rest[i][2:].replace("-", "_")] = int(rest[i + 1])
                i += 2
            else:
                pos.append(rest[i])
                i += 1
        setup_db(pos[0], pos[1], **opts)
    elif cmd == "count-db":
        print(json.dumps(count_db(*rest)))
    elif cmd == "create-topic":
        create_topic(*rest)
    elif cmd == "count-topic":
        print(count_topic(*rest))
    elif cmd == "jdbc":
        print("\t".join(jdbc(*rest)))
    elif cmd == "watch-rss":
        watch_rss(*rest)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
