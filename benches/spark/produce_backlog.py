"""Produces the benchmark's backlog of campaigns to a Kafka topic.

Campaign i is for restaurant-{i % restaurants} (default 1,000), in the job's
input format (the same shape as sparklet's own bench_e2e generator): valid
around now (start = now - 60 s, end = now + --valid-for) except every tenth
(i % 10 == 9), which ended a second before now. Key `message_{i}`.
Uses confluent-kafka (librdkafka). Creates the topic first with --partitions
if it does not exist (the test broker does not create topics on use).

    python produce_backlog.py --bootstrap-servers 127.0.0.1:9092 --topic campaigns --count 5000
"""

import argparse
import sys
import time
import uuid

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic


def campaign(i, restaurants, campaign_id, now, valid_for):
    end = now - 1 if i % 10 == 9 else now + valid_for
    return (
        f'{{"restaurant_id": "restaurant-{i % restaurants}","adv_campaign_id": "{campaign_id}",'
        '"adv_campaign_content": "first campaign","adv_campaign_owner": "Ivanov Ivan Ivanovich",'
        '"adv_campaign_owner_contact": "iiivanov@restaurant.ru",'
        f'"adv_campaign_datetime_start": {now - 60},"adv_campaign_datetime_end": {end},'
        '"datetime_created": 1659131516}'
    )


def ensure_topic(bootstrap, topic, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    if topic in admin.list_topics(timeout=30).topics:
        return False
    future = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic]
    try:
        future.result(timeout=60)
    except KafkaException as e:
        if e.args[0].name() != "TOPIC_ALREADY_EXISTS":
            raise
    return True


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap-servers", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--count", type=int, required=True, help="campaigns to produce")
    p.add_argument("--restaurants", type=int, default=1000)
    p.add_argument("--valid-for", type=int, default=86400, help="seconds a valid campaign stays valid (default a day)")
    p.add_argument("--partitions", type=int, default=16, help="partitions if the topic is created")
    p.add_argument("--no-create", action="store_true", help="do not create the topic")
    args = p.parse_args(argv)

    if not args.no_create and ensure_topic(args.bootstrap_servers, args.topic, args.partitions):
        print(f"created topic {args.topic} with {args.partitions} partitions", file=sys.stderr)

    failed = []

    def delivered(err, _msg):
        if err is not None:
            failed.append(err)

    producer = Producer(
        {
            "bootstrap.servers": args.bootstrap_servers,
            "linger.ms": 5,
            "compression.type": "none",
            "queue.buffering.max.messages": 500_000,
        }
    )
    now = int(time.time())
    started = time.monotonic()
    for i in range(args.count):
        value = campaign(i, args.restaurants, f"campaign-{i}-{uuid.uuid4().hex}", now, args.valid_for)
        while True:
            try:
                producer.produce(args.topic, value=value, key=f"message_{i}", on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
        if i % 10_000 == 0:
            producer.poll(0)
        if failed:
            break
    remaining = producer.flush(120)
    if failed or remaining:
        print(f"produce failed: {remaining} undelivered, first error: {failed[:1]}", file=sys.stderr)
        return 1
    valid = args.count - args.count // 10
    print(
        f"produced {args.count} campaigns ({valid} valid, {args.count - valid} expired) to {args.topic} "
        f"in {time.monotonic() - started:.1f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
