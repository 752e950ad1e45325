"""Decode throughput: `decode_event` beside a bare `fastavro.schemaless_reader` loop, same run.

    bench_decode(n) -> {"records", "fastavro_per_s", "decode_event_per_s", "ratio", ...}
    personalize bench --only decode       (the `decode` scenario of the one benchmark harness)

Both loops decode the same n Avro events made by the traffic generator. Two bare baselines are
measured: the .avsc as published (fastavro turns timestamp-millis into datetimes) and the same
schema with logical types removed (what the codec reads with: longs stay ints). `ratio` is the
faster bare loop's throughput over decode_event's, so it counts everything decode_event adds:
framing checks, building the model records, validation. Each loop runs `rounds` times,
interleaved, and the best round counts (the least disturbed by other load on the machine).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from io import BytesIO
from typing import Any

from fastavro import parse_schema, schemaless_reader

from runners.traffic import Traffic, TrafficConfig
from transforms.codec import EVENT, decode_event, encode_event, load_contract, parsed_schema
from transforms.model import BehaviourEvent, DeadLetter, Origin
from transforms.settings import CoreSettings


def sample_events(n: int, seed: int = 0) -> tuple[list[bytes], int]:
    """n Avro-encoded valid events of generated traffic, and the latest event time among them."""
    # 100 events/s: the generator's warm-up (15 min of event time) stays small next to n.
    traffic = Traffic(TrafficConfig(events=n, customers=max(1, n // 20), rate=100.0, seed=seed))
    events = [item for item in traffic if isinstance(item, BehaviourEvent)]
    return [encode_event(ev) for ev in events], max((ev.occurred_at for ev in events), default=0)


def _best_rate(loop: Callable[[list[bytes]], None], raws: list[bytes], best: float) -> float:
    started = time.perf_counter()
    loop(raws)
    return max(best, len(raws) / (time.perf_counter() - started))


def bench_decode(n: int, rounds: int = 3) -> dict[str, Any]:
    """Records per second of decode_event and of bare schemaless_reader loops over n events."""
    raws, watermark = sample_events(n)  # the watermark passes all: the future check runs
    published = parse_schema(load_contract(EVENT))
    plain = parsed_schema(EVENT)
    core = CoreSettings()
    origin = Origin("bench", 0, 0)

    def bare_published(batch: list[bytes]) -> None:
        for raw in batch:
            schemaless_reader(BytesIO(raw), published, None)

    def bare_plain(batch: list[bytes]) -> None:
        for raw in batch:
            schemaless_reader(BytesIO(raw), plain, None)

    def codec(batch: list[bytes]) -> None:
        for raw in batch:
            decode_event(raw, origin, watermark, core, watermark)

    rates = {"published": 0.0, "plain": 0.0, "codec": 0.0}
    for _ in range(rounds):
        rates["published"] = _best_rate(bare_published, raws, rates["published"])
        rates["plain"] = _best_rate(bare_plain, raws, rates["plain"])
        rates["codec"] = _best_rate(codec, raws, rates["codec"])
    dead = sum(isinstance(decode_event(r, origin, watermark, core, 0), DeadLetter) for r in raws)
    bare = max(rates["published"], rates["plain"])
    return {
        "records": len(raws),
        "fastavro_per_s": round(rates["published"]),
        "fastavro_plain_longs_per_s": round(rates["plain"]),
        "decode_event_per_s": round(rates["codec"]),
        "ratio": round(bare / rates["codec"], 3),
        "dead_letters": dead,
    }
