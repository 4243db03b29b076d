"""A tour of the claudemesh SDK, run on a machine that has joined a mesh (docs/sdk.md).

    python examples/sdk_quickstart.py bob 'the build is green' [--reply-within 30]

1. Connect to the daemon (``Client.connect`` starts one if none answers).
2. Register a session, so replies come back to this script: ``<you>/quickstart``.
3. List the peers, live from the broker.
4. Send ``bob`` a DM from the session; the id is minted first, so a retry is safe.
5. Wait for bob's daemon to store it: ``message_status`` follows the signed receipts.
6. Wait for a reply with the async client's ``events()``, mark it seen, end the session.

It prints one line per step and exits 0, or 1 when no reply came in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time

from claudemesh.sdk import AsyncClient, Client, InboxItem, errors


def wait_stored(client: Client, client_message_id: str, seconds: float) -> str:
    """The message's furthest step once the recipient's daemon stored it (or the time ran
    out): queued -> accepted (the broker has it) -> stored -> surfaced."""
    deadline = time.monotonic() + seconds
    while True:
        state = client.message_status(client_message_id).state
        if state in ("stored", "surfaced", "failed") or time.monotonic() > deadline:
            return state
        time.sleep(0.1)


async def wait_reply(session: str, after_seq: int, seconds: float) -> InboxItem | None:
    """The first message filed for ``session`` after ``after_seq``, from the live stream.

    ``events()`` resumes by Last-Event-ID by itself if the daemon restarts meanwhile.
    """
    client = AsyncClient()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds), contextlib.aclosing(
                client.events(last_event_id=after_seq)) as events:
            async for event in events:
                item = event.message
                if item is not None and item.session == session:
                    return item
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("to", help="a peer's display name, pubkey, or name/session")
    parser.add_argument("message", nargs="?", default="hello from the claudemesh SDK")
    parser.add_argument("--reply-within", type=float, default=30.0, metavar="SECONDS")
    args = parser.parse_args(argv)

    client = Client.connect()
    info = client.version()
    print(f"daemon {info.daemon_version} (pid {info.pid}),"
          f" meshes: {', '.join(m.slug for m in info.meshes)}")
    session = client.register_session("quickstart", harness="sdk", pid=os.getpid())
    print(f"session {session.name}: replies reach {session.address}")
    try:
        try:
            for peer in client.peers().peers:
                print(f"peer {peer.display_name}: {'online' if peer.online else 'offline'}")
        except errors.BrokerUnavailable as exc:
            print(f"peers unknown: {exc.detail}")
        newest = client.inbox(limit=1).items
        after = newest[0].seq if newest else 0
        sent = client.send(args.to, args.message, session=session.session_id)
        print(f"sent {sent.client_message_id}: {sent.status}")
        print(f"delivery: {wait_stored(client, sent.client_message_id, 15.0)}")
        reply = asyncio.run(wait_reply(session.name, after, args.reply_within))
        if reply is None:
            print(f"no reply within {args.reply_within:g}s")
            return 1
        print(f"reply from {reply.sender_name}: {reply.body}")
        marked = client.mark_seen(session.session_id, ids=[reply.id], path="poll")
        print(f"marked seen: {marked}")
        return 0
    finally:
        client.end_session(session.session_id)
        print("session ended")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except errors.ClaudemeshError as exc:
        sys.exit(f"error: {exc.detail} [{exc.code}]")
