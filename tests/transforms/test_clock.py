"""The event-time clock (transforms/clock.py): named instants, the wall clock injected."""

from tests.builders import T0
from transforms.clock import END_OF_TIME, EventClock, replay_clock, source_partition
from transforms.model import Origin
from transforms.settings import MINUTE, SECOND, CoreSettings

SETTINGS = CoreSettings()
OOO = SETTINGS.max_out_of_orderness
MAX_FUTURE = SETTINGS.max_future
IDLE = 2 * SECOND
LATER = T0 + 30 * 24 * 3600 * SECOND    # a wall clock far after the data (a replay of history)


def clock(idleness: int = IDLE, **kw: object) -> EventClock:
    return EventClock(SETTINGS, idleness, **kw)  # type: ignore[arg-type]


def test_one_partition_is_max_seen_minus_out_of_orderness():
    c = clock(0)
    assert c.watermark is None and c.partition_watermark("file") is None
    c.observe("file", T0, LATER)
    c.observe("file", T0 - 5 * SECOND, LATER)              # out of order: never moves back
    assert c.watermark == c.partition_watermark("file") == T0 - OOO - 1


def test_a_gap_in_historical_data_is_not_the_future():
    # A replay: the wall clock is far ahead of the data, however long the data's quiet spells.
    c = clock(0)
    c.observe("file", T0, LATER)
    assert not c.future(T0 + 16 * 3600 * SECOND, LATER)
    c.observe("file", T0 + 16 * 3600 * SECOND, LATER)
    assert c.watermark == T0 + 16 * 3600 * SECOND - OOO - 1


def test_future_is_judged_against_the_wall_clock_at_receipt_and_moves_nothing():
    c = clock(0)
    now = T0
    c.observe("p", T0 - SECOND, now)
    assert c.future(now + MAX_FUTURE + 1, now) and not c.future(now + MAX_FUTURE, now)
    c.observe("p", now + MAX_FUTURE + 1, now)
    assert c.partition_watermark("p") == T0 - SECOND - OOO - 1


def test_an_event_ahead_of_the_wall_clock_moves_its_partition_at_most_to_the_wall_clock():
    # Issue 16: one event stamped 290 s ahead must not make other customers' events late.
    c = clock(0)
    now = T0
    c.observe("p", now - SECOND, now)
    c.observe("p", now + 290 * SECOND, now)               # accepted (inside max_future)
    assert c.partition_watermark("p") == now - OOO - 1
    following = now + 200                                  # another customer's, on time
    assert following > c.partition_watermark("p")          # not late
    c.observe("p", following, now + 300)
    assert c.partition_watermark("p") == following - OOO - 1


def test_the_combined_watermark_is_held_by_the_lagging_partition_and_by_partitions_not_read():
    c = clock()
    c.expect([0, 1], LATER)
    c.observe(0, T0 + 3600 * SECOND, LATER)
    assert c.watermark is None                             # 1 not read yet
    c.observe(1, T0, LATER)
    assert c.watermark == T0 - OOO - 1                     # the minimum of both


def test_a_record_is_judged_by_the_watermark_of_its_own_partition():
    c = clock()
    c.expect([0, 1], LATER)
    c.observe(0, T0 + 300 * SECOND, LATER)
    c.observe(1, T0 + 7200 * SECOND, LATER)
    assert c.partition_watermark(0) == T0 + 300 * SECOND - OOO - 1   # 1 ahead: no matter
    assert c.partition_watermark(1) == T0 + 7200 * SECOND - OOO - 1


def test_an_idle_partition_stops_holding_the_clock():
    c = clock()
    c.expect([0, 1], LATER)
    c.observe(1, T0, LATER)
    c.observe(0, T0 + MINUTE, LATER + 100)
    assert c.watermark == T0 - OOO - 1
    c.tick(LATER + IDLE)                                      # 1 silent for `idleness`
    assert c.watermark == T0 + MINUTE - OOO - 1
    c.observe(1, T0 + 10 * SECOND, LATER + IDLE + 1)          # back: holds again, never backwards
    assert c.watermark == T0 + MINUTE - OOO - 1


def test_idleness_zero_never_idles():
    c = clock(0)
    c.expect([0, 1], LATER)
    c.observe(1, T0, T0)
    c.observe(0, T0 + MINUTE, T0 + 3600 * SECOND)
    assert c.watermark == T0 - OOO - 1


def test_with_every_partition_idle_a_live_read_follows_the_wall_clock_a_bounded_one_not():
    live = clock(follow_wall_clock=True)
    live.observe(0, T0, T0)
    live.tick(T0 + IDLE - 1)
    assert live.watermark == T0 - OOO - 1
    live.tick(T0 + 5 * SECOND)
    assert live.watermark == T0 + 5 * SECOND - OOO - 1     # a deadline fires about when due
    assert live.partition_watermark(0) == T0 - OOO - 1     # lateness is not moved by it
    replay = clock()
    replay.observe(0, T0, T0)
    replay.tick(T0 + 5 * SECOND)
    assert replay.watermark == T0 - OOO - 1                # the newest data


def test_a_bounded_read_holds_each_partition_until_its_last_record_whatever_the_wall_clock():
    c = clock()
    c.expect([0, 1], LATER, start={0: 0, 1: 0}, end={0: 3, 1: 1}, bounded=True)
    c.observe(0, T0 + 3600 * SECOND, LATER, offset=0)
    c.observe(0, T0 + 3660 * SECOND, LATER + 60 * IDLE, offset=1)        # 1 fetched late
    assert c.watermark is None
    c.observe(1, T0, LATER + 60 * IDLE, offset=0)                        # 1's only record
    assert c.watermark == T0 + 3660 * SECOND - OOO - 1                  # 1 is done
    c.observe(0, T0 + 3700 * SECOND, LATER + 60 * IDLE, offset=2)
    assert c.watermark == T0 + 3700 * SECOND - OOO - 1
    c.finish()
    assert c.watermark == END_OF_TIME


def test_an_unbounded_backlog_holds_past_idleness_but_a_caught_up_partition_not():
    c = clock(hold=30 * IDLE)
    c.expect([0, 1, 2], LATER, start={0: 0, 1: 0, 2: 7}, end={0: 9, 1: 5, 2: 8})
    c.observe(0, T0 + 60 * SECOND, LATER + 3 * IDLE, offset=0)
    assert c.watermark is None              # 1 has records left: it holds past idleness
    c.observe(1, T0, LATER + 4 * IDLE, offset=0)
    assert c.watermark == T0 - OOO - 1      # 2 (one offset left: a commit marker) does not
    c.set_ends({1: 1})                      # the broker: 1 was read to its end
    c.observe(0, T0 + 90 * SECOND, LATER + 6 * IDLE, offset=1)
    assert c.watermark == T0 + 90 * SECOND - OOO - 1
    c.set_ends({1: 50})                     # 1 has records again but delivers none
    c.observe(0, T0 + 95 * SECOND, LATER + 20 * IDLE, offset=2)
    assert c.watermark == T0 + 90 * SECOND - OOO - 1
    c.observe(0, T0 + 99 * SECOND, LATER + 35 * IDLE, offset=3)         # ... for `hold`
    assert c.watermark == T0 + 99 * SECOND - OOO - 1


def test_after_a_restore_a_partition_read_to_its_end_stops_holding_with_its_committed_offset():
    c = clock()
    c.expect([0, 1], LATER, start={0: 10, 1: 3}, end={0: 12, 1: 5}, bounded=True)
    c.observe(0, T0, LATER, offset=10)
    assert c.waiting() == [1] and c.watermark is None
    c.set_starts({1: 5})                     # a checkpoint of the restored job committed
    assert c.waiting() == []
    c.observe(0, T0 + 60 * SECOND, LATER + 10, offset=11)
    assert c.watermark == T0 + 60 * SECOND - OOO - 1


def test_file_items_are_spread_over_partitions_as_kafka_spreads_their_keys():
    from kafka.partitioner.default import murmur2

    for n in (1, 3, 4, 7):
        for cid in ("500000001", "c", "ab", "abc", "customer-42", "é-ü"):
            key = cid.encode()
            assert source_partition(None, cid, n) == (murmur2(key) & 0x7FFFFFFF) % n
    assert source_partition(Origin("events", 2, 9), "c", 4) == ("events", 2)
    assert source_partition(Origin("file.csv", -1, 9), "c", 0) is None


def test_a_replay_over_partitions_is_held_until_every_partition_delivered():
    settings = CoreSettings()
    settings.replay_partitions = 3
    c = replay_clock(settings, LATER)
    c.observe(0, T0 + MINUTE, LATER)
    c.observe(2, T0 + MINUTE, LATER)
    assert c.watermark is None                   # 1 has not delivered: its customers wait
    c.observe(1, T0, LATER + 3600 * SECOND)      # no idleness in a replay
    assert c.watermark == T0 - OOO - 1


def test_a_replays_profiles_count_in_a_partition_of_their_own_that_moves_no_clock():
    # Kafka keeps profiles in a topic of their own: a CRM update stamped a minute ahead of
    # the stream makes none of the events of its customer's partition late (the 2026-12-06
    # cluster defect: the reference counted them in one partition, the Kafka job not).
    settings = CoreSettings()
    settings.replay_partitions = 1
    c = replay_clock(settings, LATER)
    events = source_partition(None, "c", 1)
    profiles = source_partition(None, "c", 1, profile=True)
    assert events == 0 and profiles != events
    assert source_partition(None, "c", 1, profile=True) == profiles     # one key per partition
    assert source_partition(None, "c", 0, profile=True) is None         # a file: one stream
    assert source_partition(Origin("profiles", 2, 9), "c", 4, profile=True) == ("profiles", 2)
    c.observe(events, T0, LATER)
    c.observe(profiles, T0 + MINUTE, LATER)
    assert c.partition_watermark(events) == T0 - OOO - 1        # a view at T0 - OOO is on time
    assert c.watermark == T0 - OOO - 1                           # nor do timers move ahead
    assert c.partition_watermark(profiles) == T0 + MINUTE - OOO - 1  # profiles judged by theirs
    c.observe(events, T0 + SECOND, LATER)
    assert c.watermark == T0 + SECOND - OOO - 1


def test_a_replays_profile_partition_never_holds_the_clock():
    settings = CoreSettings()
    settings.replay_partitions = 1
    c = replay_clock(settings, LATER)
    c.observe(source_partition(None, "c", 1, profile=True), T0 - 30 * MINUTE, LATER)
    assert c.watermark is None                   # the events' partition has not delivered
    c.observe(source_partition(None, "c", 1), T0, LATER)
    assert c.watermark == T0 - OOO - 1           # not held back by the profiles' T0 - 30 min
