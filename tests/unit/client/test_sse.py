"""The event stream's parser: bytes -> lines -> events, as the HTML standard reads them."""

import pytest

from orthanc_jobs.client import ApiError, ServerSentEvent, SseDecoder, parse_sse, sse_lines


def decode(text: str) -> list[ServerSentEvent]:
    return list(parse_sse([text.encode()]))


def test_lines_end_with_crlf_lf_or_cr_even_across_chunks() -> None:
    chunks = [b"a\r", b"\nb\n", b"c\r", b"d\r\n\r", b"\n", b"tail without end"]
    assert list(sse_lines(chunks)) == ["a", "b", "c", "d", ""]


def test_unicode_line_separators_stay_inside_a_line() -> None:
    text = 'data: {"Description": "a\u2028b\u0085c"}\n\n'
    [event] = decode(text)
    assert event.json() == {"Description": "a\u2028b\u0085c"}


def test_a_line_too_long_is_refused() -> None:
    with pytest.raises(ApiError):
        list(sse_lines([b"x" * 100, b"y" * 100], max_line=150))


def test_the_job_service_messages() -> None:
    stream = (
        ": connected\n\n"
        'id: 7\nevent: job\ndata: {"ID": "x"}\n\n'
        ": keepalive\n\n"
        'id: 8\nevent: removed\ndata: {"ID": "x"}\n\n'
        "event: reset\ndata: {}\n\n"
    )
    events = decode(stream)
    assert [(e.event, e.id, e.json()) for e in events] == [
        ("job", "7", {"ID": "x"}),
        ("removed", "8", {"ID": "x"}),
        ("reset", "8", {}),  # an event without id keeps the last one
    ]


def test_the_standard_s_parsing_rules() -> None:
    stream = "\ufeffdata:no space\ndata:  two spaces\ndata\n\nevent: ignored\n\nid: 3\0\ndata: x\n\n"
    first, second = decode(stream)
    assert first == ServerSentEvent("message", "no space\n two spaces\n", "")
    # an event without data is not dispatched (and its type is forgotten); an id with NUL is ignored
    assert second == ServerSentEvent("message", "x", "")


def test_retry_and_unknown_fields() -> None:
    decoder = SseDecoder(last_event_id="5")
    for line in ["retry: 2500", "retry: soon", "unknown: field", "data: y"]:
        assert decoder.feed(line) is None
    assert decoder.feed("") == ServerSentEvent("message", "y", "5")
    assert decoder.retry == 2500
