"""Admin changes as desired settings: what each one asks, and how a delivery state takes it.

An admin command never edits a subscription's delivery state itself: it records what it asks in
the subscription's ``Control`` record (``leadstream.store.base.Control``: a revision that rises,
the revision each kind of change was last asked at, and a replay's target), and the node that
delivers the subscription brings its state up to every change asked after the revision that
state reflects, in the order asked — at once when the change is asked on that node, otherwise
when it next looks (``leadstream.delivery.engine``). Views on any other node show the saved state
with the same changes laid over it (``pending_change``), so every node answers alike.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import msgspec

from leadstream.clock import now_ms
from leadstream.store.base import Control
from leadstream.subscriptions import state as rules
from leadstream.subscriptions.state import DeliveryState

Op = Literal["pause", "resume", "replay", "patch", "delete"]
OPS: tuple[Op, ...] = ("pause", "resume", "replay", "patch", "delete")


def asked(control: Control, op: Op, *, replay_to: int = 0) -> Control:
    """``control`` with ``op`` asked now. The revision rises by at least one, and is the wall
    clock when that is later, so revisions asked on different nodes still rise."""
    rev = max(control.rev + 1, now_ms())
    changes: dict[str, int] = {op: rev, "rev": rev}
    if op == "replay":
        changes["replay_to"] = replay_to
    return replace(control, **changes)


def created(at_ms: int) -> Control:
    """The control record of a subscription created at ``at_ms``: nothing asked, but its revision
    is the creation time, so nodes that follow the revisions see the new subscription."""
    return Control(rev=at_ms)


def asked_after(control: Control, applied: int) -> list[Op]:
    """The changes asked after revision ``applied``, in the order asked."""
    revisions = {op: getattr(control, op) for op in OPS}
    return sorted((op for op in OPS if revisions[op] > applied), key=revisions.__getitem__)


@dataclass(frozen=True, slots=True)
class Change:
    """A delivery state brought up to a control record."""

    state: DeliveryState
    patched: bool  # the settings changed: the sender takes the stored ones
    reread: bool  # what was read ahead (and the batch in flight) is read again from the cursor


def pending_change(state: DeliveryState, control: Control, applied: int) -> Change | None:
    """``state`` with every change asked after ``applied`` applied in order; None if there is none."""
    if control.rev <= applied:
        return None
    patched = reread = False
    for op in asked_after(control, applied):
        if state.state == rules.DEPROVISIONED:
            break  # for good: nothing asked later applies
        if op == "patch":  # the batch in flight is rebuilt with the new settings (same id), and tried at once
            patched = reread = True
            state = msgspec.structs.replace(state, nextAttemptAt=None)
        elif op == "pause":
            state = rules.paused_by_hand(state)
        elif op == "resume":
            state = rules.resumed(state)
        elif op == "replay":
            cursor = min(control.replay_to, state.cursor)
            state = msgspec.structs.replace(state, cursor=cursor, inflight=None, nextAttemptAt=None)
            reread = True
        elif op == "delete":
            state = rules.deprovisioned(state)
            reread = True
    return Change(state, patched, reread)
