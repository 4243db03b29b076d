"""Topics and groups (``/v1/topic/*``, ``/v1/group/*``) as :class:`~.wire.Call` values.

Answers stay plain dicts, as the daemon documents them (docs/api.md): send one with
``Client.run`` or ``AsyncClient.run``, or use the clients' methods of the same names.
"""

from __future__ import annotations

from typing import Any

from claudemesh.sdk.wire import Call, as_object, drop_none, with_query

__all__ = ["group_join", "group_leave", "group_list", "topic_history", "topic_list",
           "topic_post", "topic_subscribe", "topic_unsubscribe"]


def topic_subscribe(topic: str, *, mesh: str | None = None,
                    backfill: int | None = None) -> Call[dict[str, Any]]:
    return Call("POST", "/v1/topic/subscribe", as_object,
                drop_none(topic=topic, mesh=mesh, backfill=backfill))


def topic_unsubscribe(topic: str, *, mesh: str | None = None) -> Call[dict[str, Any]]:
    return Call("POST", "/v1/topic/unsubscribe", as_object, drop_none(topic=topic, mesh=mesh))


def topic_list(mesh: str | None = None) -> Call[dict[str, Any]]:
    return Call("GET", with_query("/v1/topic/list", mesh=mesh), as_object)


def topic_post(topic: str, message: str, *, mesh: str | None = None,
               priority: str | None = None, client_message_id: str | None = None,
               reply_to: str | None = None, meta: dict[str, Any] | None = None,
               session: str | None = None) -> Call[dict[str, Any]]:
    return Call("POST", "/v1/topic/post", as_object, drop_none(
        topic=topic, message=message, mesh=mesh, priority=priority,
        client_message_id=client_message_id, reply_to=reply_to, meta=meta, session=session))


def topic_history(topic: str, *, mesh: str | None = None, before: str | None = None,
                  limit: int | None = None) -> Call[dict[str, Any]]:
    return Call("GET", with_query("/v1/topic/history", topic=topic, mesh=mesh, before=before,
                                  limit=limit), as_object)


def group_join(group: str, *, role: str | None = None,
               mesh: str | None = None) -> Call[dict[str, Any]]:
    return Call("POST", "/v1/group/join", as_object, drop_none(group=group, role=role, mesh=mesh))


def group_leave(group: str, *, mesh: str | None = None) -> Call[dict[str, Any]]:
    return Call("POST", "/v1/group/leave", as_object, drop_none(group=group, mesh=mesh))


def group_list(mesh: str | None = None) -> Call[dict[str, Any]]:
    return Call("GET", with_query("/v1/group/list", mesh=mesh), as_object)
