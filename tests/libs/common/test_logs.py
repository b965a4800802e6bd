"""Log redaction masks phone numbers wherever they appear, and leaves ids alone."""

from __future__ import annotations

import logging

import pytest

from libs.common.logs import RedactingFilter, redact


@pytest.mark.parametrize(
    "text",
    [
        "from whatsapp:+15550001111",
        "number +44 20 7946 0958 refused",
        "call (415) 555-0100 now",
        "to 14155550100",
    ],
)
def test_phone_numbers_are_masked(text: str) -> None:
    masked = redact(text)
    assert "[redacted]" in masked
    assert "555" not in masked and "7946" not in masked


@pytest.mark.parametrize(
    "text",
    [
        "answered SM0057efa4ac45219876cbb9209a1a6b2a",
        "user u_9dbdd10f88a52b20bc8299ab8a7f348fc31a671e",
        "reply f9bdbd4a54d12345678adbe87bc37b1 took 12 ms",
        "indexed 1139 files, 31000 symbols",
    ],
)
def test_ids_and_counts_are_left_alone(text: str) -> None:
    assert redact(text) == text


def test_filter_masks_formatted_arguments() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "sending to %s", ("whatsapp:+15550001111",), None)
    RedactingFilter().filter(record)
    assert "15550001111" not in record.getMessage()


def test_lines_logged_in_a_trace_carry_its_ids_and_stay_redacted() -> None:
    import io
    import json

    from opentelemetry.sdk.trace import TracerProvider

    from libs.common.logs import JsonFormatter, TextFormatter, TraceContextFilter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("processor"))
    handler.addFilter(RedactingFilter())
    handler.addFilter(TraceContextFilter())
    logger = logging.getLogger("test.trace-ids")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("outside any trace")
        with TracerProvider().get_tracer("test").start_as_current_span("turn") as span:
            logger.warning("reply to %s sent", "whatsapp:+15550001111")
    finally:
        logger.removeHandler(handler)
    outside, inside = (json.loads(line) for line in stream.getvalue().splitlines())
    ctx = span.get_span_context()
    assert "trace_id" not in outside and outside["service"] == "processor"
    assert inside["trace_id"] == f"{ctx.trace_id:032x}" and inside["span_id"] == f"{ctx.span_id:016x}"
    assert "15550001111" not in inside["msg"]
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    record.trace_id, record.span_id = "ab" * 16, "cd" * 8
    assert TextFormatter("%(message)s").format(record) == f"hello [trace={'ab' * 16} span={'cd' * 8}]"
