"""`personalize catalog`: product data for rendering.

    personalize catalog derive --input data.csv --format rees46 --out catalog.jsonl
    personalize catalog load --input catalog.jsonl
    personalize catalog changes --input changes.jsonl [--confluent]

`derive` builds a catalog from clickstream events, for data that comes without one: per
product the latest price, brand and category seen, a stand-in name ("Lenovo notebook") and
synthetic shop URLs (transforms.catalog.catalog_from_events). One JSON object per line.
`load` puts such a file into Redis, a hash per product (<prefix>product:<id>, see
pipelines/redis_catalog.py), where the Kafka runs read it through a small local cache.
`changes` produces price and stock changes to kafka.catalog_changes_topic (Avro
avro_schemas/catalog_change.avsc, keyed by product_id), for price drop and back in stock: the
input is a JSONL file of changes, one object per line ({"change_id", "product_id",
"occurred_at" (epoch ms), "price", "in_stock", optional "category", "brand", "name"}; a
"kind": "catalog_change" is allowed, so a replay file's changes can be fed as they are). A
line that does not parse or validate is not sent: it is counted and reported (line number,
reason) on stderr. Prints the counts as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runners.train import FORMATS, read_items
from transforms.catalog_changes import CatalogChange
from transforms.model import R_INVALID, DeadLetter, Origin
from transforms.settings import Settings


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add `catalog` and its actions to the CLI."""
    p = sub.add_parser("catalog", parents=parents,
                       help="product catalog: derive from events, load into Redis",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    d = actions.add_parser("derive", parents=parents, help="derive a catalog JSONL from events")
    d.add_argument("--input", required=True, type=Path, metavar="PATH",
                   help="behaviour events file")
    d.add_argument("--format", choices=FORMATS, default="rees46",
                   help="input format (default: rees46)")
    d.add_argument("--out", required=True, type=Path, metavar="CATALOG.jsonl", help="output file")
    d.add_argument("--shop-url", default=None, metavar="URL",
                   help="base of the synthetic product URLs (default: https://shop.example.invalid)")
    d.set_defaults(func=derive)
    ld = actions.add_parser("load", parents=parents, help="load a catalog JSONL into Redis")
    ld.add_argument("--input", required=True, type=Path, metavar="CATALOG.jsonl",
                    help="a file written by `catalog derive` (or by hand, same fields)")
    ld.add_argument("--batch-size", type=int, default=1000, metavar="N",
                    help="products per pipelined round trip (default: 1000)")
    ld.set_defaults(func=load)
    ch = actions.add_parser("changes", parents=parents,
                            help="produce catalog changes (JSONL) to the catalog-changes topic")
    ch.add_argument("--input", required=True, type=Path, metavar="CHANGES.jsonl",
                    help="one catalog change per line")
    ch.add_argument("--confluent", action="store_true",
                    help="values in the Confluent wire format (schema id 6)")
    ch.set_defaults(func=produce_changes)


def derive(args: argparse.Namespace, settings: Settings) -> int:
    """Write the catalog derived from the input's events."""
    from transforms.catalog import DEFAULT_SHOP_URL, catalog_from_events, write_catalog_jsonl

    events = read_items(args.input, args.format)
    items = catalog_from_events(events, args.shop_url or DEFAULT_SHOP_URL)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    count = write_catalog_jsonl(items, args.out)
    print(f"catalog: {count} products from {args.input} -> {args.out}")
    return 0


def load(args: argparse.Namespace, settings: Settings) -> int:
    """Put every product of the file into Redis (settings.redis)."""
    import redis

    from pipelines.connections import redis_client
    from pipelines.redis_catalog import load_catalog
    from transforms.catalog import read_catalog_jsonl

    try:
        items = read_catalog_jsonl(args.input)
    except (OSError, ValueError) as exc:
        print(f"catalog load: {exc}", file=sys.stderr)
        return 2
    r = settings.redis
    client = redis_client(r)
    try:
        count = load_catalog(client, items, r.key_prefix, max(1, args.batch_size))
    except redis.AuthenticationError as exc:
        print(f"catalog load: Redis at {r.host}:{r.port}: {exc} (check redis.username, "
              "redis.password_env / redis.password_file)", file=sys.stderr)
        return 1
    except redis.RedisError as exc:
        print(f"catalog load: Redis at {r.host}:{r.port}: {exc} "
              "(start it with `personalize services up --only redis`)", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(f"catalog: {count} products from {args.input} -> redis {r.host}:{r.port}/{r.db} "
          f"({r.key_prefix}product:<id>)")
    return 0


def read_changes(path: Path, settings: Settings) -> Iterator[CatalogChange | DeadLetter]:
    """The catalog changes of a JSONL file in file order; bad lines as dead letters (their
    reason), lines of another kind (events, profiles) as `invalid_value` ones."""
    from transforms.readers import read_events_jsonl

    for item in read_events_jsonl(path, core=settings.core):
        if isinstance(item, CatalogChange | DeadLetter):
            yield item
        else:
            origin = item.origin or Origin(str(path))
            yield DeadLetter(b"", origin, R_INVALID, "not a catalog change", 0)


def produce_changes(args: argparse.Namespace, settings: Settings) -> int:
    """Produce every valid change of the file, keyed by product_id."""
    from pipelines.connections import open_producer
    from runners.catalog_traffic import change_record
    from runners.services._kafka import ensure_topics

    k = settings.kafka
    counts = {"produced": 0, "rejected": 0, "failed": 0}
    failures: list[BaseException] = []
    try:
        changes = list(read_changes(args.input, settings))
    except OSError as exc:
        print(f"catalog changes: {exc}", file=sys.stderr)
        return 2
    ensure_topics(k, [k.catalog_changes_topic], k.partitions)
    producer = open_producer(k)
    try:
        for item in changes:
            if isinstance(item, DeadLetter):
                counts["rejected"] += 1
                print(f"catalog changes: line {item.origin.offset}: {item.reason}: {item.error}",
                      file=sys.stderr)
                continue
            _, key, value = change_record(item, args.confluent)
            producer.send(k.catalog_changes_topic, key=key.encode(), value=value) \
                .add_errback(failures.append)
            counts["produced"] += 1
        producer.flush()
    finally:
        producer.close()
    counts["failed"] = len(failures)
    counts["produced"] -= len(failures)
    print(json.dumps({**counts, "topic": k.catalog_changes_topic}))
    return 1 if failures else 0
