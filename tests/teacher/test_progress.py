"""Learning-progress trackers."""

from __future__ import annotations

import json

import pytest

from teacher.progress import EmaProgress, ProbeProgress, WindowSlope


def test_alp_is_absolute_difference_k_back() -> None:
    p = ProbeProgress(k=2)
    assert p.observe("a", 0.2) is None
    assert p.observe("a", 0.3) is None
    assert p.observe("a", 0.5) == pytest.approx(0.3)
    assert p.observe("a", 0.1) == pytest.approx(0.2)  # forgetting counts too
    assert p.progress("b") is None and p.last("a") == 0.1


def test_ema_progress_sign_follows_loss() -> None:
    e = EmaProgress(fast=0.5, slow=0.1)
    assert e.observe("a", 2.0) == 0.0
    for loss in (1.8, 1.6, 1.4):
        falling = e.observe("a", loss)
    assert falling < 0
    assert e.progress("missing") is None


def test_window_slope() -> None:
    w = WindowSlope(window=3)
    assert w.slope("a") == 1.0  # forced exploration
    assert w.observe("a", 0, 0.1) == 1.0
    for step in range(1, 6):
        w.observe("a", step, 0.1 + 0.05 * step)
    assert w.slope("a") == pytest.approx(0.05)
    assert w.count("a") == 3 and w.next_step("a") == 6.0


@pytest.mark.parametrize(
    "make", [lambda: ProbeProgress(k=1), lambda: EmaProgress(), lambda: WindowSlope()]
)
def test_state_round_trip(make) -> None:
    t = make()
    for i, v in enumerate([0.3, 0.5, 0.4]):
        t.observe("a", i, v) if isinstance(t, WindowSlope) else t.observe("a", v)
    state = json.loads(json.dumps(t.state_dict()))
    u = make()
    u.load_state_dict(state)
    assert u.state_dict() == t.state_dict()


def test_bad_settings() -> None:
    with pytest.raises(ValueError):
        ProbeProgress(k=0)
    with pytest.raises(ValueError):
        EmaProgress(fast=0.1, slow=0.5)
    with pytest.raises(ValueError):
        WindowSlope(window=1)
