"""What both stores share about topic epochs: the conflict they raise, worded alike."""

from __future__ import annotations

from claudemesh.errors import EpochConflict, StaleEpoch
from claudemesh.protocol.topic_epochs import TopicState

__all__ = ["epoch_conflict", "stale_epoch"]


def epoch_conflict(reason: str, state: TopicState) -> EpochConflict:
    """The refusal of a ``topic_epoch``, with the state the loser re-reads from."""
    return EpochConflict(f"epoch refused: {reason}", current_epoch=state.current_epoch,
                         membership_version=state.membership_version,
                         subscribers=sorted(state.subscribers))


def stale_epoch(topic: str, epoch: int, *, made_for: int, membership_version: int,
                current_epoch: int) -> StaleEpoch | None:
    """The refusal of a post sealed under ``epoch`` (made for membership ``made_for``) now
    that the topic is at ``membership_version``; None when they agree."""
    if made_for == membership_version:
        return None
    return StaleEpoch(f"#{topic}: epoch {epoch} was made for membership version {made_for},"
                      f" the topic is at {membership_version}; seal under a new epoch",
                      epoch=epoch, current_epoch=current_epoch,
                      membership_version=membership_version)
