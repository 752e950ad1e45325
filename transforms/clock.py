"""The event-time clock of a source, engine free (DESIGN.md sections 3 and 8), time injected.

    clock = EventClock(settings, idleness=0, hold=BACKLOG_HOLD, follow_wall_clock=False)
    clock.expect(partitions, now, start, end, bounded)   partitions to read, where they start / end
    clock.future(t, now)             -> bool: a dead letter (`future_timestamp`), moves nothing
    clock.partition_watermark(p)     -> int | None: judge a record of p against this, before...
    clock.observe(p, t, now, offset)    ... it moves the clock
    clock.watermark                  -> int | None: the combined watermark timers fire on
    clock.tick(now)                  re-evaluate without a record (idleness, the wall clock)
    clock.finish()                   end of a bounded input: the watermark is END_OF_TIME
    replay_clock(settings, now)      a file replay's clock; source_partition(origin, key, n)
    receipt(record_timestamp, now)   the wall clock at receipt of a Kafka record

The rules (the reference runner, Beam and Flink all apply these):
- Receipt: the wall clock at receipt of a Kafka record is its record timestamp (the producer's
  clock with CreateTime, the broker's with LogAppendTime), so a backlog read later is judged
  as it was live and every engine judges it alike; a record without one (and a file's items)
  takes the wall clock when it is read.
- Future: a record more than `max_future` ahead of the wall clock at receipt is a dead letter.
- Partition watermark: max over the partition's records of min(event time, wall clock at
  receipt), - max_out_of_orderness - 1 (None before its first record). One skewed event moves
  it at most to the wall clock.
- Lateness: a record is late when its event time is <= its own partition's watermark before it
  (or its customer was already processed past it): never because another partition ran ahead
  or had not delivered yet, so a replay's verdicts do not depend on how partitions interleave.
- Combined watermark (timers): the minimum over the partitions that hold it, never moving back.
  A partition holds it, in a bounded read, until its last record (stop offset) was read; else
  while it delivered a record less than `idleness` ms (wall clock) ago (always, if idleness is
  0), or while it is known to have more than one record left (end offsets), for at most `hold`
  ms without one. Expected partitions not read yet hold it the same way. When none holds it,
  it is the newest partition's; with `follow_wall_clock` (unbounded live reads) and every
  partition idle, it follows the wall clock: now - max_out_of_orderness - 1.
- Profiles of a replay over partitions count in a ProfilePartition of their own, as on Kafka
  (the profiles topic, apart from the events'): CRM time, not stream time, so they never move
  nor hold the combined watermark nor any events' partition watermark; a profile is judged
  against its own ProfilePartition's watermark only.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from transforms.model import Origin
from transforms.settings import CoreSettings

# Beyond any watermark an engine can send (Flink's MAX_WATERMARK is 2**63 - 1).
END_OF_TIME = (1 << 63) - 1
# Unbounded reads: a partition known to have records left holds the clock at most this long
# without delivering one (a stall, e.g. offsets taken by aborted transactions).
BACKLOG_HOLD = 60_000

Partition = Hashable


class EventClock:
    """Per-partition and combined watermarks of what one source (or source subtask) reads."""

    def __init__(self, settings: CoreSettings, idleness: int = 0, hold: int = BACKLOG_HOLD,
                 follow_wall_clock: bool = False) -> None:
        self.ooo = settings.max_out_of_orderness
        self.max_future = settings.max_future
        self.idleness = idleness
        self.hold = hold
        self.follow_wall_clock = follow_wall_clock
        self.bounded = False
        self.max_seen: dict[Partition, int] = {}     # max of min(event time, wall clock)
        self.last_read: dict[Partition, int] = {}    # wall ms of the last record (or expect())
        self.next_offset: dict[Partition, int] = {}  # where the read of a partition stands
        self.end: dict[Partition, int] = {}          # where its records end (stop or broker end)
        self.watermark: int | None = None

    # ------------------------------------------------------------------ what is read

    def expect(self, partitions: Iterable[Partition], now: int,
               start: dict[Partition, int] | None = None, end: dict[Partition, int] | None = None,
               bounded: bool = False) -> None:
        """Partitions to read (they hold the clock), where their read starts and where their
        records end, if known; `bounded`: the ends are stop offsets."""
        self.bounded = bounded
        for p in partitions:
            self.last_read.setdefault(p, now)
            if start and p in start:
                self.next_offset.setdefault(p, start[p])
        if end:
            self.end.update(end)

    def set_ends(self, end: dict[Partition, int]) -> None:
        """The partitions' end offsets, as the broker now knows them (unbounded reads)."""
        self.end.update(end)

    def set_starts(self, start: dict[Partition, int]) -> None:
        """Where the read of partitions that delivered nothing yet stands (e.g. the group's
        committed offsets, which catch up with a restored job's position)."""
        for p, offset in start.items():
            at = self.next_offset.get(p)
            if p not in self.max_seen and (at is None or offset > at):
                self.next_offset[p] = offset

    def waiting(self) -> list[Partition]:
        """Expected partitions that delivered nothing yet and have records left to read."""
        return [p for p in self.last_read if p not in self.max_seen
                and p in self.end and self.next_offset.get(p, self.end[p]) < self.end[p]]

    # ------------------------------------------------------------------ records

    def future(self, t: int, now: int) -> bool:
        """Whether event time t is more than max_future ahead of the wall clock `now`."""
        return t > now + self.max_future

    def partition_watermark(self, partition: Partition) -> int | None:
        """The watermark of one partition (None before its first record)."""
        seen = self.max_seen.get(partition)
        return None if seen is None else seen - self.ooo - 1

    def observe(self, partition: Partition, t: int | None, now: int,
                offset: int | None = None, received: int | None = None) -> None:
        """A record of `partition` (at `offset`) with event time t (None: unreadable, or a
        dead letter) read at wall clock `now`, received at `received` (its Kafka record
        timestamp; default `now`)."""
        if isinstance(partition, ProfilePartition):   # its own watermark only (module doc)
            got = now if received is None else received
            if t is not None and t <= got + self.max_future:
                capped, seen = min(t, got), self.max_seen.get(partition)
                if seen is None or capped > seen:
                    self.max_seen[partition] = capped
            return
        self.last_read[partition] = now
        if offset is not None:
            at = self.next_offset.get(partition)
            if at is None or offset >= at:
                self.next_offset[partition] = offset + 1
        if received is None:
            received = now
        if t is not None and t <= received + self.max_future:
            capped = t if t < received else received
            seen = self.max_seen.get(partition)
            if seen is None or capped > seen:
                self.max_seen[partition] = capped
                if len(self.last_read) == 1 and not self.idleness and not self.bounded:
                    wm = capped - self.ooo - 1      # one partition that never idles (a file)
                    if self.watermark is None or wm > self.watermark:
                        self.watermark = wm
                    return
        self.tick(now)

    # ------------------------------------------------------------------ the combined watermark

    def holds(self, partition: Partition, now: int) -> bool:
        """Whether `partition` holds the combined watermark at `now` (see the module doc)."""
        end = self.end.get(partition)
        at = self.next_offset.get(partition)
        if self.bounded and end is not None:
            return at is None or at < end
        quiet = now - self.last_read[partition]
        if not self.idleness or quiet < self.idleness:
            return True
        return end is not None and at is not None and end - at > 1 and quiet < self.hold

    def tick(self, now: int) -> None:
        """Re-evaluate the combined watermark at wall clock `now`."""
        seen = self.max_seen
        holding = [p for p in self.last_read if self.holds(p, now)]
        if any(p not in seen for p in holding):
            return
        if holding:
            t: int | None = min(seen[p] for p in holding)
        elif self.follow_wall_clock and not self.bounded:
            t = now
        else:
            t = max((v for p, v in seen.items() if not isinstance(p, ProfilePartition)),
                    default=None)
        if t is not None:
            wm = t - self.ooo - 1
            if self.watermark is None or wm > self.watermark:
                self.watermark = wm

    def finish(self) -> None:
        """End of a bounded input: every pending deadline is due."""
        self.watermark = END_OF_TIME


def receipt(record_timestamp: int | None, now: int) -> int:
    """The wall clock at receipt of a Kafka record read at `now`: its record timestamp, never
    later than `now` (a producer's clock running fast gains nothing); `now` without one."""
    if record_timestamp is None or record_timestamp < 0:
        return now
    return record_timestamp if record_timestamp < now else now


def replay_clock(settings: CoreSettings, now: int) -> EventClock:
    """The clock of a file replay: no idleness; with core.replay_partitions N, the N partitions
    are expected from the start (each holds the combined watermark until its first record, so
    no customer is woken past a partition that has not delivered yet)."""
    clock = EventClock(settings)
    clock.expect(range(settings.replay_partitions), now)
    return clock


def kafka_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a record key (murmur2, positive, mod n)."""
    m, r = 0x5BD1E995, 24
    length = len(key)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(key[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = length % 4
    if tail:
        rest = key[length - tail:]
        if tail == 3:
            h ^= rest[2] << 16
        if tail >= 2:
            h ^= rest[1] << 8
        h ^= rest[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class ProfilePartition:
    """Partition `number` of a replay's profiles (Kafka: the profiles topic's): it has a
    watermark of its own and never moves nor holds the combined one (module doc)."""

    number: int


def source_partition(origin: Origin | None, customer_id: str, partitions: int,
                     profile: bool = False) -> Partition:
    """The partition a record counts in: its Kafka (topic, partition); for a file's items, the
    file itself (partitions 0: events and profiles in one stream), or the one of N that Kafka
    would give the customer's key (a `profile` in the ProfilePartition of that number, as
    Kafka keeps profiles in a topic of their own)."""
    if origin is not None and origin.partition >= 0:
        return origin.topic, origin.partition
    if partitions > 0:
        number = kafka_partition(customer_id.encode(), partitions)
        return ProfilePartition(number) if profile else number
    return None
