"""Price drop and back in stock through the real Kafka on the Flink local runner: catalog
changes produced into the catalog-changes topic (as `personalize catalog changes` does) reach
the product stage, and payloads come out on the payloads topic."""

from __future__ import annotations

import argparse

import pytest

from pipelines.flink_pipeline import run_kafka
from runners.catalog_traffic import change_record
from runners.services import kafka_connector_jar
from tests.builders import HOUR, MINUTE, T0, add, profile, purchase, view
from tests.pipelines.test_flink_pipeline import consume, kafka_settings, produce
from transforms.catalog_changes import CatalogChange
from transforms.codec import decode_payload
from transforms.settings import DAY

pytestmark = [pytest.mark.integration, pytest.mark.engine]

CHANGE_AT = T0 + 2 * DAY


def test_catalog_changes_from_kafka_fire_price_drop_and_back_in_stock_on_flink(kafka):
    from pipelines.connections import open_producer
    from runners.services import ensure_topics

    s = kafka_settings(kafka)
    tag = s.kafka.group_id
    fan, buyer, stock, carter = (f"{tag}-{n}" for n in ("fan", "buyer", "stock", "carter"))
    items = [profile(T0 - HOUR, cid=c, email=f"{c}@example.com")
             for c in (fan, buyer, stock, carter)]
    items += [view(T0, "p1", cid=fan), view(T0 + MINUTE, "p1", cid=buyer),
              purchase(T0 + 2 * MINUTE, "p1", cid=buyer), add(T0 + 3 * MINUTE, "p2", cid=stock),
              purchase(T0 + 4 * MINUTE, "p2", cid=stock), add(T0 + 5 * MINUTE, "p2", cid=carter)]
    changes = [
        # The known state, stated after the events (an earlier change arriving after them on
        # its own topic would be late at the product stage, which has passed their time).
        CatalogChange(f"{tag}-1", "p1", T0 + 10 * MINUTE, 100.0, True, "shoes"),
        CatalogChange(f"{tag}-2", "p2", T0 + 10 * MINUTE, 30.0, False, "shoes"),
        CatalogChange(f"{tag}-3", "p1", CHANGE_AT, 79.0, None, "shoes"),          # a drop
        CatalogChange(f"{tag}-4", "p2", CHANGE_AT + HOUR, None, True, "shoes"),   # a restock
        CatalogChange(f"{tag}-3", "p1", CHANGE_AT, 79.0, None, "shoes"),          # redelivered
    ]
    # The buyers bought after their interest: only the fan hears of the drop, only the carter
    # of the restock.
    n = produce(s, items)
    k = s.kafka
    ensure_topics(k, [k.catalog_changes_topic], 2)
    producer = open_producer(k)
    for change in changes:
        _, key, value = change_record(change)
        producer.send(k.catalog_changes_topic, key=key.encode(), value=value)
    producer.send(k.catalog_changes_topic, key=b"p9", value=b"\x02\x03garbage")
    producer.flush()
    producer.close()
    n += len(changes) + 1
    options = argparse.Namespace(runner="flink", max_events=n, until_idle=None,
                                 from_beginning=True, savepoint=None, detached=False)
    assert run_kafka(s, [kafka_connector_jar(s)], options) == 0
    payloads = [decode_payload(r.value) for r in consume(s, k.payloads_topic)]
    drops = sorted((p.customer_id, p.trigger.type, p.trigger.fired_at) for p in payloads
                   if p.trigger.type in ("price_drop", "back_in_stock"))
    assert drops == [(carter, "back_in_stock", CHANGE_AT + HOUR), (fan, "price_drop", CHANGE_AT)]
    (drop,) = [p for p in payloads if p.trigger.type == "price_drop"]
    assert "$79.00" in drop.text and "(was $100.00)" in drop.text
    dead = consume(s, k.dead_letters_topic, idle_ms=1000)
    assert any(b"decode_error" in r.value and k.catalog_changes_topic.encode() in r.value
               for r in dead)
