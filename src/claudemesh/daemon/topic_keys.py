"""Topic epoch keys at the daemon: the keyring file, and getting a key to post with.

``<daemon dir>/topic_keys.json`` (0600, replaced atomically; R-IN-6) holds, per mesh and
topic, every epoch key this member was given or made, with the membership version each
was made for, and the broker's membership version as last heard (from ``topic_keys`` or
a ``topic_membership`` event). It plays the role of daemon-spec's ``key_epoch.json`` too:
one file, so a key and the version it belongs to are never out of step.

Posting (:meth:`TopicSender.key_for_post`): when the link is up and the newest key was
made for an older membership than the broker's (or there is none), the daemon reads
``topic_keys`` and, if still stale, starts the next epoch: a random key sealed to every
current subscriber, proposed with ``topic_epoch``; losing the race (``epoch_conflict``)
means re-reading and using the winner's epoch. With the link down it posts with the
newest key it has (so a post accepted offline may use the previous epoch); without any
key it refuses (503) a topic it knows is encrypted, and posts plain to one it knows
nothing of (the broker then refuses it if the topic has epochs, ``topic_encrypted``).
The broker has the last word: it refuses a post whose epoch was made for an older
membership than the topic's (``stale_epoch``: a subscribe or unsubscribe this daemon had
not heard of yet, or a post queued while offline), and the drain hands the row to
:meth:`TopicSender.reseal`, which seals the same plaintext under the current epoch; the
row goes out again with its ``client_message_id``. So no post is stored under a key a
leaver holds. The rules are :mod:`claudemesh.protocol.topic_epochs`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from claudemesh.config import MeshConfig
from claudemesh.crypto import BoxedBody, CryptoFailure, box_decrypt, box_encrypt, new_topic_key
from claudemesh.daemon.link import BrokerLink
from claudemesh.errors import BrokerUnavailable, DestinationNotFound, EpochConflict
from claudemesh.privatefs import write_private_file
from claudemesh.protocol.envelope import FrozenSend
from claudemesh.protocol.topic_epochs import key_from_plaintext, key_plaintext, needs_epoch
from claudemesh.sending import reseal

__all__ = ["FILE_NAME", "EpochKey", "TopicKeyring", "TopicSender"]

log = logging.getLogger(__name__)

FILE_NAME: Final = "topic_keys.json"
EPOCH_ATTEMPTS: Final = 5


@dataclass(frozen=True, slots=True)
class EpochKey:
    epoch: int
    membership_version: int
    key: bytes


class TopicKeyring:
    """The keys of every mesh's topics, kept in memory and in ``topic_keys.json``
    (``path`` None: in memory only)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._doc: dict[str, Any] = {"version": 1, "meshes": {}}
        if path is None:
            return
        try:
            doc = json.loads(path.read_text())
            if isinstance(doc, dict) and isinstance(doc.get("meshes"), dict):
                self._doc = doc
        except FileNotFoundError:
            pass
        except (OSError, ValueError):
            log.exception("topic_keys_unreadable; starting without topic keys",
                          extra={"path": str(path)})

    def _topic(self, mesh_id: str, topic: str, *, create: bool = False) -> dict[str, Any]:
        meshes: dict[str, Any] = self._doc["meshes"]
        if not create and topic not in meshes.get(mesh_id, {}):
            return {"membership_version": None, "current_epoch": 0, "epochs": {}}
        entry: dict[str, Any] = meshes.setdefault(mesh_id, {}).setdefault(
            topic, {"membership_version": None, "current_epoch": 0, "epochs": {}})
        return entry

    def _save(self) -> None:
        if self.path is not None:
            data = json.dumps(self._doc, indent=1, sort_keys=True).encode()
            write_private_file(self.path, data)

    def key(self, mesh_id: str, topic: str, epoch: int) -> bytes | None:
        entry = self._topic(mesh_id, topic)["epochs"].get(str(epoch))
        if entry is None:
            return None
        try:
            return base64.b64decode(entry["key"], validate=True)
        except (binascii.Error, KeyError, TypeError):
            return None

    def newest(self, mesh_id: str, topic: str) -> EpochKey | None:
        epochs = self._topic(mesh_id, topic)["epochs"]
        if not epochs:
            return None
        epoch = max(int(e) for e in epochs)
        key = self.key(mesh_id, topic, epoch)
        return None if key is None else EpochKey(
            epoch, int(epochs[str(epoch)]["membership_version"]), key)

    def epochs(self, mesh_id: str, topic: str) -> list[int]:
        return sorted(int(e) for e in self._topic(mesh_id, topic)["epochs"])

    def add(self, mesh_id: str, topic: str, key: EpochKey) -> None:
        epochs = self._topic(mesh_id, topic, create=True)["epochs"]
        if str(key.epoch) not in epochs:
            epochs[str(key.epoch)] = {"key": base64.b64encode(key.key).decode(),
                                      "membership_version": key.membership_version}
            self._save()

    def broker_version(self, mesh_id: str, topic: str) -> int | None:
        value = self._topic(mesh_id, topic)["membership_version"]
        return value if isinstance(value, int) else None

    def heard(self, mesh_id: str, topic: str, membership_version: int,
              current_epoch: int = 0) -> None:
        """The broker's membership version (and epoch) of the topic; never backwards."""
        entry = self._topic(mesh_id, topic, create=True)
        known = entry["membership_version"]
        changed = False
        if not isinstance(known, int) or membership_version > known:
            entry["membership_version"] = membership_version
            changed = True
        if current_epoch > int(entry.get("current_epoch") or 0):
            entry["current_epoch"] = current_epoch
            changed = True
        if changed:
            self._save()

    def encrypted(self, mesh_id: str, topic: str) -> bool:
        """This member knows the topic has key epochs (a key, or the broker said so)."""
        entry = self._topic(mesh_id, topic)
        return bool(entry["epochs"]) or int(entry.get("current_epoch") or 0) > 0

    def topics(self, mesh_id: str) -> list[str]:
        return sorted(self._doc["meshes"].get(mesh_id, {}))


class TopicSender:
    """One mesh's side of encrypted topics: keys to post with, and keys out of pushes."""

    def __init__(self, mesh: MeshConfig, link: BrokerLink, keyring: TopicKeyring) -> None:
        self.mesh = mesh
        self.link = link
        self.keyring = keyring

    def open_sealed(self, topic: str, epoch: int, membership_version: int, *, sealer: str,
                    nonce: str, ciphertext: str) -> bytes | None:
        """Open an epoch key sealed to this member, keep it, and return it (None: it
        does not open, or it is for another mesh, topic or epoch)."""
        try:
            raw = box_decrypt(BoxedBody(nonce, ciphertext), recipient_secret_hex=
                              self.mesh.secret_key, sender_pubkey_hex=sealer)
        except CryptoFailure:
            return None
        key = key_from_plaintext(raw, self.mesh.mesh_id, topic, epoch)
        if key is not None:
            self.keyring.add(self.mesh.mesh_id, topic, EpochKey(epoch, membership_version, key))
        return key

    def key_for(self, topic: str, epoch: int, sealed: dict[str, Any] | None) -> bytes | None:
        """The key of an epoch, from the keyring or the push's own sealed copy."""
        key = self.keyring.key(self.mesh.mesh_id, topic, epoch)
        if key is not None or sealed is None:
            return key
        return self.open_sealed(topic, epoch, int(sealed["membership_version"]),
                                sealer=str(sealed["sealer_pubkey"]), nonce=str(sealed["nonce"]),
                                ciphertext=str(sealed["ciphertext"]))

    async def refresh(self, topic: str) -> dict[str, Any]:
        """``topic_keys``: keep every key sealed to us and the broker's version.

        Raises:
            BrokerUnavailable, TimeoutError, DestinationNotFound (no such topic).
        """
        data = (await self.link.request({"type": "topic_keys", "topic": topic})).data
        for k in data.get("keys", []):
            if self.keyring.key(self.mesh.mesh_id, topic, int(k["epoch"])) is None:
                self.open_sealed(topic, int(k["epoch"]), int(k["membership_version"]),
                                 sealer=str(k["sealer_pubkey"]), nonce=str(k["nonce"]),
                                 ciphertext=str(k["ciphertext"]))
        self.keyring.heard(self.mesh.mesh_id, topic, int(data["membership_version"]),
                           int(data["current_epoch"]))
        return data

    async def refresh_known(self) -> None:
        """After (re)connecting: what changed while we were away, for topics we know."""
        for topic in self.keyring.topics(self.mesh.mesh_id):
            try:
                await self.refresh(topic)
            except (BrokerUnavailable, TimeoutError):
                return
            except DestinationNotFound:
                continue

    async def key_for_post(self, topic: str) -> EpochKey | None:
        """The epoch key to seal a post to ``#topic`` with; None: post it plain (the
        broker has no such topic, or the topic has no epoch and no subscriber, or the
        link is down and this member knows nothing of the topic: the broker refuses that
        post, ``topic_encrypted``, if the topic has epochs by the time it arrives).

        Raises:
            BrokerUnavailable: the link is down and this member knows the topic is
                encrypted but has no key for it.
        """
        mesh_id = self.mesh.mesh_id
        newest = self.keyring.newest(mesh_id, topic)
        if not self.link.is_open:
            if newest is None:
                if not self.keyring.encrypted(mesh_id, topic):
                    return None
                raise BrokerUnavailable(
                    f"no key for #{topic} yet and the link to mesh {self.mesh.slug!r} is down:"
                    " an encrypted topic's first post needs the broker", mesh=self.mesh.slug)
            return newest
        known = self.keyring.broker_version(mesh_id, topic)
        if newest is not None and known is not None and not needs_epoch(
                newest.membership_version, known):
            return newest
        try:
            return await self._current(topic)
        except (BrokerUnavailable, TimeoutError):
            if newest is not None:
                return newest
            if not self.keyring.encrypted(mesh_id, topic):
                return None
            raise BrokerUnavailable(f"the broker did not answer topic_keys for #{topic}",
                                    mesh=self.mesh.slug) from None

    async def reseal(self, payload: bytes) -> bytes | None:
        """A queued post the broker refused as ``stale_epoch``, sealed under the topic's
        current epoch (started here if the membership moved on); None when it cannot be
        (its own key is gone, or it does not open): the row is dead, not retried forever.

        Raises:
            BrokerUnavailable, TimeoutError, EpochConflict: try again later.
        """
        frozen = FrozenSend.from_bytes(payload)
        topic, epoch = frozen.destination_ref, frozen.body.get("epoch")
        old = None if not isinstance(epoch, int) else self.keyring.key(
            self.mesh.mesh_id, topic, epoch)
        if old is None:
            return None
        key = await self._current(topic)
        if key is None:
            return None
        if key.epoch == epoch:  # the broker has not moved on yet, as we see it: later
            raise EpochConflict(f"#{topic}: epoch {epoch} is still the current one")
        try:
            return reseal(payload, old, key.epoch, key.key)
        except CryptoFailure:
            return None

    async def _current(self, topic: str) -> EpochKey | None:
        mesh_id = self.mesh.mesh_id
        for _ in range(EPOCH_ATTEMPTS):
            try:
                data = await self.refresh(topic)
            except DestinationNotFound:
                return None
            version, current = int(data["membership_version"]), int(data["current_epoch"])
            subscribers = [str(p) for p in data.get("subscribers", [])]
            newest = self.keyring.newest(mesh_id, topic)
            if newest is not None and newest.epoch == current and not needs_epoch(
                    newest.membership_version, version):
                return newest
            if current == 0 and not subscribers:
                return None  # nobody to read it: stays plain until someone subscribes
            key = EpochKey(current + 1, version, new_topic_key())
            sealed = []
            for pubkey in subscribers:
                box = box_encrypt(key_plaintext(mesh_id, topic, key.epoch, key.key),
                                  sender_secret_hex=self.mesh.secret_key,
                                  recipient_pubkey_hex=pubkey)
                sealed.append({"pubkey": pubkey, "nonce": box.nonce,
                               "ciphertext": box.ciphertext})
            try:
                await self.link.request({"type": "topic_epoch", "topic": topic,
                                         "epoch": key.epoch, "membership_version": version,
                                         "keys": sealed})
            except EpochConflict:
                continue  # someone else's epoch, or the membership moved: read again
            self.keyring.add(mesh_id, topic, key)
            log.info("topic_epoch_started", extra={"mesh": self.mesh.slug, "topic": topic,
                                                   "epoch": key.epoch,
                                                   "membership_version": version})
            return key
        raise EpochConflict(f"#{topic}: the epoch kept changing; retry the post")
