"""Which click is a repeat of which: the rule the writer applies with Postgres as the last word.

Redis judges repeats on the buyer's path with its dedup marks; whatever it forgot or never saw
(a crash, a pause, clicks spooled meanwhile) makes it call a repeat valid. The writer judges
again every click Redis called valid, against the valid clicks already stored and those earlier
in the same batch: a valid click whose device already has a valid click on that code within the
window before it is a repeat of that one. A repeat Redis found is kept as Redis found it (its
buyer was sent to the first click's id). Valid clicks of one device and code are therefore
always more than a window apart; when a click arrives out of time order and becomes the first,
a stored valid click within the window after it becomes its repeat (and that one's repeats
follow it, or become firsts of their own when they are past the window).  (pure)
"""

from __future__ import annotations

from dataclasses import dataclass, field

Key = tuple[str, str]  # (code, device hash)


@dataclass
class Seen:
    """A click as the judgement needs it; `at` in ms."""

    click_id: str
    at: int
    original: str | None = None  # the first click's id for a repeat, else None


@dataclass
class Verdicts:
    repeats: dict[str, str] = field(default_factory=dict)  # new click id -> first click id
    # stored clicks whose verdict changes: click id -> new first click id (None: now valid)
    changed: dict[str, str | None] = field(default_factory=dict)


def judge(new: dict[Key, list[Seen]], valid: dict[Key, list[Seen]], repeats_of: dict[str, list[Seen]],
          window_ms: int) -> Verdicts:
    """`new`: the batch's clicks Redis called valid, per key; `valid`: the valid clicks stored
    for those keys around them; `repeats_of`: stored repeats by the id of their first click."""
    out = Verdicts()
    for key, clicks in new.items():
        if len(clicks) == 1 and key not in valid:
            continue  # the usual case, a device's only click in reach: valid, and nothing to move
        firsts = sorted((c for c in valid.get(key, []) if c.click_id not in out.changed), key=_order)
        stored = {c.click_id for c in firsts}
        for click in sorted(clicks, key=_order):
            if click.click_id in stored:
                continue  # delivered again: already judged when it was stored
            before = [f for f in firsts if _order(f) < _order(click)]
            if before and click.at - before[-1].at <= window_ms:
                out.repeats[click.click_id] = before[-1].click_id
                continue
            later = [f for f in firsts if _order(f) > _order(click) and f.at - click.at <= window_ms]
            for displaced in later:
                firsts.remove(displaced)
                out.changed[displaced.click_id] = click.click_id
                for follower in repeats_of.get(displaced.click_id, []):
                    if follower.at - click.at <= window_ms:
                        out.changed[follower.click_id] = click.click_id
                    else:
                        out.changed[follower.click_id] = None
            firsts.append(click)
            firsts.sort(key=_order)
    return out


def _order(click: Seen) -> tuple[int, str]:
    # ids begin with their time in ms, so within a millisecond the id orders them the same everywhere
    return click.at, click.click_id
