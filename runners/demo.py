"""`personalize demo`: the whole job end to end on this machine, in one command.

    1. start the local services (Kafka KRaft, Redis)           personalize services up
    2. train the recommender and segments, load the catalog     personalize train / catalog
    3. replay the shipped real clickstream into Kafka           personalize replay --to kafka
    4. run the topology until the input is idle                 personalize run --runner direct
    5. deliver the payloads to a local SMTP server (loopback)   personalize deliver
    6. print a summary, sample emails, and write a report       personalize report

Each run uses its own topics (`demo-<time>-...`) and Redis keys, so demos never see each
other's data. The
replayed data is from 2019, so delivery runs with the connector's clock set inside the data's
day (time as data): quiet-hour payloads held until 08:00 UTC go out, none has expired.
Delivered messages are written as .eml files under the output directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from runners import SHIPPED_DATA as DATA
from transforms.settings import Settings

# 2019-10-01 08:05 UTC: after the quiet hours of the data's night, before any payload expires.
DELIVERY_CLOCK_MS = 1569917100000


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add `demo` to the CLI."""
    p = sub.add_parser(
        "demo",
        parents=parents,
        help="run the job end to end on local services",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--input",
        type=Path,
        default=DATA,
        metavar="CSV",
        help=f"rees46 clickstream to replay (default: {DATA})",
    )
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N rows")
    p.add_argument(
        "--out",
        type=Path,
        default=Path(".state/demo"),
        metavar="DIR",
        help="where the report, payloads and delivered .eml files go",
    )
    p.add_argument(
        "--idle",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="stop the topology and the connector after this long without input",
    )
    p.set_defaults(func=run)


def _say(step: str) -> None:
    print(f"\n== {step}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """The demo (see the module docstring)."""
    from runners import services
    from runners.kafka_io import quiet_client_logs

    if not args.verbose:
        quiet_client_logs()
    if not args.input.is_file():
        print(f"demo: no such file {args.input} (pass --input a rees46 CSV)", file=sys.stderr)
        return 2
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    run_id = time.strftime("demo-%Y%m%d-%H%M%S")
    settings = _demo_settings(settings, run_id, out)

    _say("1/6 local services: Kafka and Redis")
    try:
        services.up(settings, only=["kafka", "redis"])
    except services.ServiceError as exc:
        print(f"demo: services did not start:\n{exc}", file=sys.stderr)
        return 1

    _say("2/6 recommender model and catalog (from the replayed data)")
    _train_and_load_catalog(args, settings, out)

    _say(f"3/6 replay {args.input.name} into Kafka ({run_id}-* topics)")
    produced = _replay(args, settings)
    print(json.dumps(produced), file=sys.stderr)

    _say(f"4/6 the topology (Beam DirectRunner) until the input is idle for {args.idle:g} s")
    started = time.monotonic()
    job = _run_topology(args, settings)
    job_seconds = time.monotonic() - started

    _say("5/6 deliver the payloads to a local SMTP server")
    delivered = _deliver(args, settings, out)

    _say("6/6 results")
    collected = _collect(settings, out)
    from runners.report import write_report

    report = write_report(out)
    summary = {
        "run": run_id,
        "produced": produced,
        "topology": job,
        "topology_seconds": round(job_seconds, 1),
        "delivery": delivered,
        **collected,
        "report": str(report),
    }
    (out / "demo-summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    _print_summary(summary, out)
    return 0


def _demo_settings(settings: Settings, run_id: str, out: Path) -> Settings:
    k = dataclasses.replace(
        settings.kafka,
        events_topic=f"{run_id}-events",
        profiles_topic=f"{run_id}-profiles",
        payloads_topic=f"{run_id}-payloads",
        dead_letters_topic=f"{run_id}-dead-letters",
        audit_topic=f"{run_id}-audit",
        outcomes_topic=f"{run_id}-outcomes",
        group_id=f"{run_id}-job",
    )
    # Its own Redis keys too: the delivery ledger remembers message ids (a replay of the same
    # data yields the same ids), so a second demo would otherwise deliver nothing.
    r = dataclasses.replace(settings.redis, key_prefix=f"{settings.redis.key_prefix}{run_id}:")
    paths = dataclasses.replace(settings.paths, model=str(out / "model.npz"))
    return dataclasses.replace(settings, kafka=k, redis=r, paths=paths)


def _train_and_load_catalog(args: argparse.Namespace, settings: Settings, out: Path) -> None:
    import itertools

    from pipelines.connections import redis_client
    from pipelines.redis_catalog import load_catalog
    from runners.train import fit_customer_segments
    from transforms.catalog import catalog_from_events, write_catalog_jsonl
    from transforms.model import BehaviourEvent
    from transforms.readers import read_rees46
    from transforms.recommend import train

    events = [
        i
        for i in itertools.islice(read_rees46(args.input, synthesize_profiles=False), args.limit)
        if isinstance(i, BehaviourEvent)
    ]
    model = train(events)
    fit = fit_customer_segments(events, settings, model.trained_until)  # 4 clusters
    dataclasses.replace(model, segments=fit.model).save(settings.paths.model)
    items = catalog_from_events(events)
    write_catalog_jsonl(items, out / "catalog.jsonl")
    r = settings.redis
    client = redis_client(r)
    try:
        loaded = load_catalog(client, items, r.key_prefix)
    finally:
        client.close()
    print(f"model: {settings.paths.model}; catalog: {loaded} products into Redis", file=sys.stderr)


def _replay(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    import itertools

    from runners.progress import Progress
    from runners.replay import produce, read_items

    items = read_items(args.input, "rees46", True, settings.core)
    if args.limit is not None:
        items = itertools.islice(items, args.limit)
    return produce(items, settings, Progress("replay"))


def _run_topology(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from runners.run import run_engine

    options = argparse.Namespace(
        runner="direct",
        max_events=None,
        until_idle=args.idle,
        from_beginning=True,
        savepoint=None,
        detached=False,
    )
    return run_engine(settings, options)


def _deliver(args: argparse.Namespace, settings: Settings, out: Path) -> dict[str, Any]:
    from runners.deliver import deliver_once
    from runners.smtp_sink import MaildirSink

    outbox = out / "outbox"
    for old in outbox.glob("*.eml"):
        old.unlink()
    with MaildirSink(outbox) as smtp:
        cfg = dataclasses.replace(
            settings.deliver,
            smtp_host=smtp.host,
            smtp_port=smtp.port,
            group_id=f"{settings.kafka.group_id}-deliver",
        )
        summary = deliver_once(
            dataclasses.replace(settings, deliver=cfg),
            now_ms=DELIVERY_CLOCK_MS,
            until_idle=args.idle,
            audit=out / "delivery-audit.jsonl",
        )
    summary["outbox"] = str(outbox)
    summary["eml_files"] = len(list(outbox.glob("*.eml")))
    return summary


def _collect(settings: Settings, out: Path) -> dict[str, Any]:
    """Read the job's output topics back into out/*.jsonl (the report's input)."""
    from kafka import KafkaConsumer

    from pipelines.connections import kafka_client_config
    from pipelines.outputs import OutputFiles
    from transforms.codec import decode_dead_letter, decode_payload
    from transforms.jsonl import audit_from_json
    from transforms.model import AUDIT, DEAD_LETTER, PAYLOAD

    k = settings.kafka
    decoders = {
        k.payloads_topic: (PAYLOAD, decode_payload),
        k.audit_topic: (AUDIT, lambda raw: audit_from_json(json.loads(raw))),
        k.dead_letters_topic: (DEAD_LETTER, decode_dead_letter),
    }
    consumer = KafkaConsumer(
        *decoders,
        **kafka_client_config(k),
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        consumer_timeout_ms=3000,
        enable_auto_commit=False,
    )
    files = OutputFiles(out)
    try:
        for msg in consumer:
            kind, decode = decoders[msg.topic]
            files.write((kind, decode(msg.value)))
    finally:
        consumer.close()
    files.close()
    s = files.summary
    return {
        "payloads": s["payloads"],
        "decisions": s["decisions"],
        "dead_letters": s["dead_letters"],
    }


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    print(json.dumps({k: v for k, v in summary.items() if k != "report"}, indent=1, default=str))
    payloads = [json.loads(line) for line in (out / "payloads.jsonl").open()][:5]
    if payloads:
        print("\nSample payloads:")
    for p in payloads:
        when = p["send_after"] or p["trigger"]["fired_at"]
        print(
            f"  {p['trigger']['type']:<17} customer {p['customer_id']:<10} "
            f"send after {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(when / 1000))}: "
            f"{p['subject']}"
        )
    print(f"\nDelivered emails (.eml): {summary['delivery'].get('outbox')}")
    print(f"Report: {summary['report']}")
