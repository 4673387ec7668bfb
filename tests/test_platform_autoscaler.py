"""The autoscaler's decisions from samples and a fake clock: up at once, down after a quiet delay, to zero only when idle."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fermion.platform.autoscaler import Autoscaler
from fermion.platform.gateway.routes import RouteTable
from fermion.platform.store.records import DeploymentRecord

TICK = 0.5


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def deployment(name: str = "svc", *, low: int = 1, high: int = 3, target: float = 1.0) -> DeploymentRecord:
    now = datetime.now(UTC)
    return DeploymentRecord(
        id=1,
        name=name,
        source="app.py",
        options={},
        env={},
        min_replicas=low,
        max_replicas=high,
        target_in_flight=target,
        public=True,
        revision=1,
        state="active",
        created_at=now,
        updated_at=now,
    )


class Rig:
    """A route table, a fake clock and an autoscaler; `run` ticks with a given load."""

    def __init__(self, delay: float = 10.0, window: float = 1.0) -> None:
        self.routes = RouteTable()
        self.clock = Clock()
        self.scaler = Autoscaler(self.routes, clock=self.clock, scale_down_delay_s=delay, window_s=window)
        self.current: dict[str, int] = {}

    def load(self, d: DeploymentRecord, in_flight: int) -> None:
        if self.routes.get(d.name) is None:
            self.routes.set(d.name, ["http://127.0.0.1:1"], public=True, cold_start=d.min_replicas == 0)
        route = self.routes.get(d.name)
        assert route is not None
        route.upstreams[0].outstanding = in_flight

    def run(self, d: DeploymentRecord, in_flight: int, seconds: float = TICK) -> list[int]:
        """Tick every TICK for `seconds` under this load; the reconciler is assumed to follow at once."""
        self.load(d, in_flight)
        answers = []
        for _ in range(max(1, round(seconds / TICK))):
            self.clock.now += TICK
            answer = self.scaler.desired(d, self.current.get(d.name, d.min_replicas))
            self.current[d.name] = answer
            answers.append(answer)
        return answers


def test_a_fixed_size_is_just_min():
    rig = Rig()
    d = deployment(low=2, high=2)
    assert rig.run(d, 50) == [2]
    assert rig.run(d, 0, seconds=60)[-1] == 2


def test_a_burst_scales_up_at_once_to_the_need_within_max():
    rig = Rig()
    d = deployment(low=1, high=5, target=2)
    assert rig.run(d, 1) == [1]
    assert rig.run(d, 5) == [3]  # ceil(5 / 2)
    assert rig.run(d, 40) == [5]  # capped at max_replicas
    assert rig.scaler.load("svc") == 40


def test_scaling_down_waits_for_a_quiet_delay_then_keeps_what_the_quiet_period_needed():
    rig = Rig(delay=10)
    d = deployment(low=1, high=4, target=1)
    rig.run(d, 4)
    answers = rig.run(d, 2, seconds=9.5)  # needs 2 now, but 4 were needed within the delay
    assert set(answers) == {4}
    assert rig.run(d, 2, seconds=1)[-1] == 2  # the peak left the window: down to what the quiet period needed
    assert set(rig.run(d, 1, seconds=9)) == {2}
    assert rig.run(d, 1, seconds=2)[-1] == 1


def test_a_spike_during_the_quiet_period_starts_the_wait_again():
    rig = Rig(delay=10)
    d = deployment(low=1, high=3, target=1)
    rig.run(d, 3)
    rig.run(d, 0, seconds=8)
    assert rig.run(d, 3) == [3]  # back at the peak: stays
    assert set(rig.run(d, 0, seconds=9)) == {3}
    assert rig.run(d, 0, seconds=2)[-1] == 1


def test_scale_to_zero_needs_min_zero_and_no_request_for_the_whole_delay():
    rig = Rig(delay=10)
    d = deployment(low=0, high=2, target=1)
    rig.current["svc"] = 1
    assert set(rig.run(d, 0, seconds=9.5)) == {1}  # observed for less than the delay: keep it
    assert rig.run(d, 0, seconds=1)[-1] == 0

    route = rig.routes.get("svc")
    assert route is not None
    route.waiting = 1  # a request waits for a cold start
    assert rig.run(d, 0) == [1]
    route.waiting = 0
    for _ in range(30):  # short requests, never seen in flight by a sample, keep one replica
        route.arrivals += 1
        assert rig.run(d, 0) == [1]
    assert rig.run(d, 0, seconds=11)[-1] == 0


def test_min_one_never_goes_to_zero():
    rig = Rig(delay=2)
    d = deployment(low=1, high=3)
    assert set(rig.run(d, 0, seconds=30)) == {1}


def test_float_noise_does_not_add_a_replica():
    rig = Rig()
    d = deployment(low=1, high=100, target=0.1)
    assert rig.run(d, 6) == [60]


def test_the_first_answer_keeps_what_runs_and_later_ones_ignore_crashes():
    rig = Rig(delay=10)
    d = deployment(low=1, high=4)
    rig.load(d, 0)
    rig.clock.now += TICK
    assert rig.scaler.desired(d, 3) == 3  # adopted after a restart: not dropped before a quiet delay
    rig.clock.now += TICK
    assert rig.scaler.desired(d, 1) == 3  # two crashed: still wanted
    assert rig.run(d, 0, seconds=11)[-1] == 1


def test_new_limits_apply_at_once():
    rig = Rig(delay=30)
    d = deployment(low=1, high=4)
    assert rig.run(d, 4) == [4]
    assert rig.run(deployment(low=1, high=2), 4) == [2]
    assert rig.run(deployment(low=3, high=5), 0) == [4]  # the peak of the last second still counts
    assert rig.run(deployment(low=3, high=3), 0) == [3]
    assert rig.run(deployment(low=3, high=5), 0, seconds=2)[-1] == 3  # a raised min, never below it


def test_forget_starts_afresh():
    rig = Rig(delay=10)
    d = deployment(low=0, high=3)
    rig.run(d, 3)
    rig.scaler.forget("svc")
    assert rig.scaler.load("svc") == 0.0
    rig.current["svc"] = 0
    rig.routes.remove("svc")
    assert rig.run(d, 0) == [0]


def test_no_route_yet_is_no_load():
    scaler = Autoscaler(RouteTable(), clock=Clock(), scale_down_delay_s=1)
    assert scaler.desired(deployment(low=0, high=2), 0) == 0


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="scale_down_delay_s"):
        Autoscaler(RouteTable(), scale_down_delay_s=-1)
