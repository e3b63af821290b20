"""A client resuming is replayed from the events table while the relay's feed may still be behind
that table (after a database restart it back-fills its gap): an event the replay sent must not be
sent again when the feed offers it after go_live, and events past the replay must all arrive."""
from __future__ import annotations

import uuid

from pyapp.realtime.frames import PreparedEvent
from pyapp.realtime.sinks import Sink, SseSink, VisitorSink

TENANT = uuid.uuid4()
CONV = uuid.uuid4()


def _event(event_id: int, message_id: int | None = None) -> PreparedEvent:
    data = {"id": event_id, "kind": "message_added", "conversation_id": str(CONV)}
    frame = {"type": "message", "message": {"id": message_id}} if message_id else None
    return PreparedEvent(TENANT, data, frame)


def _sink(cls) -> tuple[Sink, list]:
    sent: list = []

    async def send(item):
        sent.append(item)

    async def close(_code, _reason):
        return None

    return cls(TENANT, send, close, conversation_id=CONV), sent


async def test_an_event_replayed_then_offered_late_is_sent_once():
    for cls in (Sink, SseSink):
        sink, sent = _sink(cls)
        sink.offer(_event(4))  # held during the replay, and replayed too
        sink.replayed.update({4, 5, 6})
        sink.go_live()
        sink.offer(_event(5))  # the feed, behind the table, reaches what the replay sent
        sink.offer(_event(6))
        sink.offer(_event(7))  # past the replay
        sink.offer(_event(8))
        await sink.flush()
        ids = [ev for ev in (4, 5, 6, 7, 8) if any(f'"id":{ev}' in str(s).replace(" ", "") for s in sent)]
        assert ids == [7, 8], (cls.__name__, sent)
        assert sink.replayed == set()  # forgotten once the feed passed the replay


async def test_a_visitor_gets_each_replayed_message_once():
    sink, sent = _sink(VisitorSink)
    sink.replayed.update({10, 11})  # message ids the visitor's resume sent
    sink.go_live()
    sink.offer(_event(20, message_id=11))
    sink.offer(_event(21, message_id=12))
    await sink.flush()
    assert [s for s in sent if '"id":11' in s.replace(" ", "")] == []
    assert len([s for s in sent if '"id":12' in s.replace(" ", "")]) == 1
