"""The job sparklet replaces, as the classic Spark Structured Streaming 3.5 job
(PySpark), for the comparison in benches/spark/run.sh.

Every trigger: read the new campaign messages from Kafka (Spark's own source,
spark-sql-kafka-0-10), parse the JSON, keep the campaigns valid at the batch's
time (start <= now <= end), join on restaurant_id with the Postgres table
subscribers_restaurants (read once over JDBC and persisted), add client_id and
trigger_datetime_created (the batch's epoch seconds, int), and in foreachBatch
persist the result (computed once) and write it to BOTH the output topic
(key client_id, value a JSON object) and Postgres' subscribers_feedback (JDBC
writer, append, feedback NULL); then unpersist.

Prints one line per batch (batch id, input rows, output rows, seconds of the
whole trigger) and, at the end, a JSON summary on one line starting with
`SUMMARY `. Needs the Kafka connector and the Postgres driver on the
classpath (run.sh passes them with --jars); run it with spark-submit.
"""

import argparse
import json
import sys
import threading
import time

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.streaming import StreamingQueryListener

CAMPAIGN_SCHEMA = T.StructType(
    [
        T.StructField("restaurant_id", T.StringType()),
        T.StructField("adv_campaign_id", T.StringType()),
        T.StructField("adv_campaign_content", T.StringType()),
        T.StructField("adv_campaign_owner", T.StringType()),
        T.StructField("adv_campaign_owner_contact", T.StringType()),
        T.StructField("adv_campaign_datetime_start", T.LongType()),
        T.StructField("adv_campaign_datetime_end", T.LongType()),
        T.StructField("datetime_created", T.LongType()),
    ]
)

# The output message's fields, in this order.
OUTPUT_FIELDS = [
    "restaurant_id",
    "adv_campaign_id",
    "adv_campaign_content",
    "adv_campaign_owner",
    "adv_campaign_owner_contact",
    "adv_campaign_datetime_start",
    "adv_campaign_datetime_end",
    "client_id",
    "datetime_created",
    "trigger_datetime_created",
]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap-servers", required=True)
    p.add_argument("--input-topic", required=True)
    p.add_argument("--output-topic", required=True)
    p.add_argument("--jdbc-url", required=True, help="jdbc:postgresql://HOST:PORT/DB")
    p.add_argument("--jdbc-user", default="postgres")
    p.add_argument("--jdbc-password", default="")
    p.add_argument("--schema", default="spark_bench", help="Postgres schema holding both tables")
    p.add_argument("--checkpoint-dir", required=True)
    p.add_argument("--max-offsets-per-trigger", type=int, default=100_000)
    p.add_argument("--starting-offsets", default="earliest", choices=["earliest", "latest"])
    p.add_argument(
        "--trigger",
        default="availableNow",
        help="availableNow (the backlog in batches, then exit), once, or a processing-time interval such as '5 seconds'",
    )
    p.add_argument("--summary-file", help="also write the JSON summary here")
    p.add_argument("--explain", action="store_true", help="print the last batch's physical plan")
    return p.parse_args(argv)


class Progress(StreamingQueryListener):
    """Prints a line per finished batch as Spark reports its progress."""

    def __init__(self, output_rows):
        self.output_rows = output_rows
        self.printed = set()
        self.lock = threading.Lock()

    def onQueryStarted(self, event):
        pass

    def onQueryProgress(self, event):
        report(event.progress.batchId, event.progress.numInputRows, event.progress.durationMs, self)

    def onQueryIdle(self, event):
        pass

    def onQueryTerminated(self, event):
        pass


def report(batch_id, input_rows, duration_ms, listener):
    with listener.lock:
        if batch_id in listener.printed:
            return
        listener.printed.add(batch_id)
    seconds = duration_ms.get("triggerExecution", 0) / 1000.0
    out = listener.output_rows.get(batch_id, 0)
    rate = out / seconds if seconds > 0 else 0.0
    print(
        f"batch {batch_id}: input rows {input_rows}, output rows {out}, {seconds:.3f} s, {rate:.0f} output rows/s",
        flush=True,
    )


def main(argv):
    args = parse_args(argv)
    started = time.monotonic()
    spark = (
        SparkSession.builder.appName("sparklet-spark-baseline")
        # Keep every batch's progress for the summary (Spark keeps 100).
        .config("spark.sql.streaming.numRecentProgressUpdates", "100000")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")

    jdbc = {
        "url": args.jdbc_url,
        "user": args.jdbc_user,
        "password": args.jdbc_password,
        "driver": "org.postgresql.Driver",
    }

    # The subscribers, read once and kept (the classic job's persist()).
    subscribers = (
        spark.read.format("jdbc")
        .options(**jdbc)
        .option("dbtable", f"{args.schema}.subscribers_restaurants")
        .load()
        .select("client_id", "restaurant_id")
        .persist()
    )
    subscriber_rows = subscribers.count()
    loaded = time.monotonic()
    print(f"subscribers_restaurants: {subscriber_rows} rows cached in {loaded - started:.3f} s", flush=True)

    campaigns = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", args.bootstrap_servers)
        .option("subscribe", args.input_topic)
        .option("startingOffsets", args.starting_offsets)
        .option("maxOffsetsPerTrigger", args.max_offsets_per_trigger)
        .option("failOnDataLoss", "true")
        .load()
        .select(F.from_json(F.col("value").cast("string"), CAMPAIGN_SCHEMA).alias("c"))
        .select("c.*")
        # current_timestamp() is the micro-batch's timestamp in a streaming query.
        .withColumn("trigger_datetime_created", F.unix_timestamp(F.current_timestamp()).cast("int"))
        .where(
            (F.col("adv_campaign_datetime_start") <= F.col("trigger_datetime_created"))
            & (F.col("adv_campaign_datetime_end") >= F.col("trigger_datetime_created"))
        )
    )
    result = campaigns.join(subscribers, "restaurant_id", "inner").select(*OUTPUT_FIELDS)

    output_rows = {}

    def write_batch(df, batch_id):
        df.persist()
        rows = df.count()  # computes the batch once; both writes read the persisted copy
        output_rows[batch_id] = rows
        (
            df.withColumn("feedback", F.lit(None).cast(T.StringType()))
            .write.format("jdbc")
            .options(**jdbc)
            .option("dbtable", f"{args.schema}.subscribers_feedback")
            .mode("append")
            .save()
        )
        (
            df.select(
                F.col("client_id").alias("key"),
                F.to_json(F.struct(*[F.col(c) for c in OUTPUT_FIELDS])).alias("value"),
            )
            .write.format("kafka")
            .option("kafka.bootstrap.servers", args.bootstrap_servers)
            .option("topic", args.output_topic)
            .save()
        )
        df.unpersist()

    listener = Progress(output_rows)
    spark.streams.addListener(listener)

    writer = result.writeStream.foreachBatch(write_batch).option("checkpointLocation", args.checkpoint_dir)
    if args.trigger == "availableNow":
        writer = writer.trigger(availableNow=True)
    elif args.trigger == "once":
        writer = writer.trigger(once=True)
    else:
        writer = writer.trigger(processingTime=args.trigger)
    query_started = time.monotonic()
    query = writer.start()
    query.awaitTermination()
    query_seconds = time.monotonic() - query_started
    if args.explain:
        query.explain()  # the last batch's plan

    # The listener bus is asynchronous: print what it has not printed yet
    # from the query's own record of its progress.
    progress = [p for p in query.recentProgress if p["numInputRows"] > 0 or p["batchId"] in output_rows]
    for p in progress:
        report(p["batchId"], p["numInputRows"], p["durationMs"], listener)

    batches = []
    for p in progress:
        seconds = p["durationMs"].get("triggerExecution", 0) / 1000.0
        out = output_rows.get(p["batchId"], 0)
        batches.append(
            {
                "batch_id": p["batchId"],
                "input_rows": p["numInputRows"],
                "output_rows": out,
                "seconds": round(seconds, 3),
                "output_rows_per_s": round(out / seconds, 1) if seconds > 0 else None,
                "add_batch_seconds": p["durationMs"].get("addBatch", 0) / 1000.0,
            }
        )
    total_out = sum(output_rows.values())
    total_in = sum(b["input_rows"] for b in batches)
    batch_seconds = sum(b["seconds"] for b in batches)
    summary = {
        "engine": f"spark {spark.version} (pyspark, spark-sql-kafka-0-10, JDBC writer)",
        "master": spark.sparkContext.master,
        "max_offsets_per_trigger": args.max_offsets_per_trigger,
        "subscribers_rows": subscriber_rows,
        "batches": len(batches),
        "input_rows": total_in,
        "output_rows": total_out,
        # From start() to the query's end: planning, reading, writing, checkpoints.
        "seconds": round(query_seconds, 3),
        "output_rows_per_s": round(total_out / query_seconds, 1) if query_seconds > 0 else None,
        # The batches' own triggerExecution times, summed.
        "batch_seconds": round(batch_seconds, 3),
        # Session start and caching the subscribers, before the query.
        "startup_seconds": round(query_started - started, 3),
        "per_batch": batches,
    }
    if query.exception() is not None:
        summary["error"] = str(query.exception())
    line = json.dumps(summary)
    print("SUMMARY " + line, flush=True)
    if args.summary_file:
        with open(args.summary_file, "w") as f:
            f.write(line + "\n")
    spark.stop()
    return 1 if "error" in summary else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
