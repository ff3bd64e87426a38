from sync.hlc import HybridLogicalClock, pack, physical_ms


class ManualClock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_timestamps_strictly_increase_when_the_wall_clock_stands_still():
    clock = HybridLogicalClock(clock=ManualClock(1_000))
    stamps = [clock.now() for _ in range(1000)]
    assert stamps == sorted(set(stamps))
    assert physical_ms(stamps[0]) == 1_000


def test_clock_never_goes_back_when_the_wall_clock_does():
    wall = ManualClock(5_000)
    clock = HybridLogicalClock(clock=wall)
    before = clock.now()
    wall.ms = 1_000  # a Pi without RTC booting with an old time
    assert clock.now() > before


def test_seed_from_persisted_value_survives_a_restart_with_an_old_wall_clock():
    persisted = pack(9_000_000, 7)
    clock = HybridLogicalClock(seed=persisted, clock=ManualClock(1_000))
    assert clock.now() > persisted


def test_observing_a_peer_timestamp_orders_our_next_event_after_it():
    clock = HybridLogicalClock(clock=ManualClock(1_000))
    remote = pack(2_000, 3)
    clock.observe(remote)
    assert clock.now() > remote
    clock.observe(pack(10, 0))  # an older one changes nothing
    assert clock.now() > remote


def test_tick_is_the_one_hlc_step_of_devices_and_hq():
    """HQ's outbox and every device's clock take the same step: strictly after the previous
    timestamp, never behind the wall clock."""
    from sync.hlc import pack, tick

    assert tick(0, 1000) == pack(1000)
    assert tick(pack(1000, 5), 1000) == pack(1000, 6)   # same millisecond: the counter moves
    assert tick(pack(2000), 1000) == pack(2000) + 1     # the wall clock went back: never we
