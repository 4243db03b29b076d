"""What both stores share about topic epochs: the conflict they raise, worded alike."""

from __future__ import annotations

from claudemesh.errors import EpochConflict
from claudemesh.protocol.topic_epochs import TopicState

__all__ = ["epoch_conflict"]


def epoch_conflict(reason: str, state: TopicState) -> EpochConflict:
    """The refusal of a ``topic_epoch``, with the state the loser re-reads from."""
    return EpochConflict(f"epoch refused: {reason}", current_epoch=state.current_epoch,
                         membership_version=state.membership_version,
                         subscribers=sorted(state.subscribers))
