"""Times raw librdkafka transactions against a broker: the floor under
sparklet's Kafka sink for a small batch.

Each transaction: begin, MESSAGES records (10 unless the environment says
otherwise) of 300 bytes, keyed k0, k1, ..., to TOPIC (txprobe unless the
environment says otherwise) and one marker record to txprobe-m,
send_offsets_to_transaction, commit; 40 transactions back to back, the first
5 not counted. Prints the median and max of each step.

    bash tests/kafka/broker start /tmp/probe-kafka        # or any broker
    # create txprobe and txprobe-m (1 partition each), e.g. with
    #   bash tests/kafka/broker tool /tmp/probe-kafka org.apache.kafka.tools.TopicCommand \
    #     --bootstrap-server HOST:PORT --create --topic txprobe --partitions 1
    python3 -m venv /tmp/probe && /tmp/probe/bin/pip install 'confluent-kafka==2.12.*'
    /tmp/probe/bin/python benches/kafka_txn_probe.py HOST:PORT enable.idempotence=true acks=all
    # a batch's worth: 900 messages to a 16-partition topic
    TOPIC=txprobe16 MESSAGES=900 /tmp/probe/bin/python benches/kafka_txn_probe.py HOST:PORT \
      enable.idempotence=true acks=all batch.num.messages=10000

confluent-kafka's wheels bundle librdkafka: 2.12.* is the version sparklet's
rdkafka-sys bundles. Warm the broker first (one run not counted): a broker
just started takes several times longer per transaction until its JIT has
warmed. Extra arguments are librdkafka settings (key=value).
"""
import os
import statistics
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition, libversion

TOPIC = os.environ.get("TOPIC", "txprobe")
MESSAGES = int(os.environ.get("MESSAGES", "10"))


def main() -> None:
    bootstrap = sys.argv[1]
    extra = dict(kv.split("=", 1) for kv in sys.argv[2:])
    producer = Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": f"probe-{time.time()}", "linger.ms": 5, **extra}
    )
    producer.init_transactions(30)
    group = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe-g", "enable.auto.commit": False})
    steps = []
    for i in range(40):
        t0 = time.perf_counter()
        producer.begin_transaction()
        for j in range(MESSAGES):
            producer.produce(TOPIC, value=b"x" * 300, key=f"k{j}".encode())
        producer.produce("txprobe-m", value=b"m", key=b"q")
        producer.flush(10)
        t1 = time.perf_counter()
        producer.send_offsets_to_transaction([TopicPartition(TOPIC, 0, i)], group.consumer_group_metadata(), 10)
        t2 = time.perf_counter()
        producer.commit_transaction(10)
        t3 = time.perf_counter()
        steps.append(((t1 - t0) * 1000, (t2 - t1) * 1000, (t3 - t2) * 1000))
    print(f"librdkafka {libversion()[0]}")
    for k, name in enumerate(["send+delivered", "send_offsets", "commit"]):
        values = [s[k] for s in steps[5:]]
        print(f"{name:15s} median {statistics.median(values):6.1f} ms  max {max(values):6.1f} ms")


if __name__ == "__main__":
    main()
