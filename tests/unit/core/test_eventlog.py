"""The event stream's window: resuming from Last-Event-ID, slow subscribers, the end of the service."""

import asyncio

import orjson

from orthanc_jobs.core.eventlog import SUBSCRIBER_BACKLOG, Event, EventLog


def test_events_are_numbered_and_encoded_as_server_sent_events() -> None:
    log = EventLog(first_id=1)
    log.publish("job", b'{"ID":"x"}')
    log.publish("server", b'{"Name":"orthanc-1"}')
    assert log.last_id == 2
    assert [e.encode() for e in log.since(0)] == [
        b'id: 1\nevent: job\ndata: {"ID":"x"}\n\n',
        b'id: 2\nevent: server\ndata: {"Name":"orthanc-1"}\n\n',
    ]


def test_resuming_inside_the_window_gets_what_was_missed_and_outside_it_a_reset() -> None:
    log = EventLog(window=5, first_id=1)
    for n in range(8):
        log.publish("job", orjson.dumps({"n": n}))
    assert [e.id for e in log.since(5)] == [6, 7, 8]
    assert [e.id for e in log.since(3)] == [4, 5, 6, 7, 8]  # the oldest kept is 4
    assert log.since(2) is None  # 3 is gone: the client must reload
    assert log.since(8) == []
    assert log.since(100) is None  # from before a restart of another numbering: reload


async def test_subscribers_get_every_event_and_a_slow_one_is_dropped_not_waited_for() -> None:
    log = EventLog()
    fast = log.subscribe()
    slow = log.subscribe()
    for n in range(SUBSCRIBER_BACKLOG + 1):
        log.publish("job", b"{}")
        if n % 100 == 0:
            while not fast.empty():
                fast.get_nowait()
    items = [slow.get_nowait() for _ in range(slow.qsize())]
    assert items[-1] is None  # the end mark: this client reconnects and resumes from its last id
    log.publish("job", b"{}")
    assert slow.empty()  # no longer subscribed
    assert fast.get_nowait() is not None


async def test_closing_ends_every_stream() -> None:
    log = EventLog()
    queue = log.subscribe()
    log.close_all()
    assert await asyncio.wait_for(queue.get(), 1) is None


def test_ids_go_on_growing_across_restarts() -> None:
    before = EventLog()
    before.publish("job", b"{}")
    after = EventLog()  # the service restarted
    after.publish("job", b"{}")
    assert after.last_id > before.last_id
    assert after.since(before.last_id) is None  # what happened in between is unknown: reload


def test_replicas_publish_under_the_change_logs_numbers_which_may_skip() -> None:
    log = EventLog(window=3)
    log.start_at(10, horizon=7, recent=[Event(8, "job", b"{}"), Event(10, "job", b"{}")])
    log.publish("job", b"{}", event_id=12)
    log.skip_to(14)  # changes not shown on the stream (a server seen)
    log.publish("job", b"{}", event_id=15)

    assert log.last_id == 15
    assert [e.id for e in log.since(9)] == [10, 12, 15]  # 8 left the window; 9 was never an event
    assert [e.id for e in log.since(14)] == [15]
    assert log.since(7) is None  # 8 is gone
    assert log.since(15) == []
