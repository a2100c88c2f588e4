from service.dedup import Seen, Verdicts, judge

W = 3_600_000
KEY = ("CODE1", "device1")


def ids(verdicts: Verdicts) -> tuple[dict[str, str], dict[str, str | None]]:
    return verdicts.repeats, verdicts.changed


def test_a_repeat_in_the_same_batch_points_at_the_first() -> None:
    new = {KEY: [Seen("b", 2_000), Seen("a", 1_000), Seen("c", 1_000 + W + 1)]}
    # b within the window of a; c past a's window is a first of its own
    assert ids(judge(new, {}, {}, W)) == ({"b": "a"}, {})


def test_a_stored_first_click_makes_a_repeat() -> None:
    new = {KEY: [Seen("b", 5_000)]}
    assert ids(judge(new, {KEY: [Seen("a", 1_000)]}, {}, W)) == ({"b": "a"}, {})
    assert ids(judge(new, {KEY: [Seen("a", 5_000 - W - 1)]}, {}, W)) == ({}, {})
    assert ids(judge(new, {KEY: [Seen("a", 5_000 - W)]}, {}, W)) == ({"b": "a"}, {})  # the window's edge is in


def test_other_devices_and_codes_do_not_count() -> None:
    new = {KEY: [Seen("b", 5_000)], ("CODE1", "device2"): [Seen("c", 5_000)]}
    stored = {("CODE2", "device1"): [Seen("a", 1_000)]}
    assert ids(judge(new, stored, {}, W)) == ({}, {})


def test_a_click_delivered_again_is_not_judged_again() -> None:
    assert ids(judge({KEY: [Seen("a", 1_000)]}, {KEY: [Seen("a", 1_000)]}, {}, W)) == ({}, {})


def test_an_earlier_click_arriving_late_becomes_the_first() -> None:
    # stored: b (valid), c and d repeats of b; a arrives late, before b
    stored = {KEY: [Seen("b", 10_000)]}
    repeats_of = {"b": [Seen("c", 20_000, "b"), Seen("d", 10_000 + W - 1, "b")]}
    verdicts = judge({KEY: [Seen("a", 5_000)]}, stored, repeats_of, W)
    # b and c now repeat a; d is past a's window, so it is a first of its own
    assert ids(verdicts) == ({}, {"b": "a", "c": "a", "d": None})


def test_within_a_millisecond_the_id_decides() -> None:
    new = {KEY: [Seen("y", 1_000), Seen("x", 1_000)]}
    assert ids(judge(new, {}, {}, W)) == ({"y": "x"}, {})
