"""Logging that never writes phone numbers or message bodies.

A filter on the root handler masks anything shaped like a phone number or WhatsApp address, as a
last line of defence: code logs ids (user hash, MessageSid), counts and sizes, never content.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

from libs.common.settings import get_settings
from libs.common.telemetry import current_ids

# A number standing on its own: digit runs inside ids (MessageSids, hashes) are not phone numbers.
_PHONE = re.compile(r"(?<![\w+])(?:whatsapp:)?\+?\d[\d\s().-]{6,}\d(?![\w])")


def redact(text: str) -> str:
    return _PHONE.sub("[redacted]", text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[1] is not None:
            # Exception text can quote inputs; keep the type and location, mask digits runs.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


class TraceContextFilter(logging.Filter):
    """Stamps each record with the trace and span it was logged in (when a trace is being recorded), so a
    log line leads to its trace in Jaeger and back."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = current_ids()
        if ids is not None:
            record.trace_id, record.span_id = ids
        return True


class TextFormatter(logging.Formatter):
    """Readable lines for development; the trace and span ids close the line when there are some."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        trace_id = getattr(record, "trace_id", None)
        if trace_id:
            return f"{line} [trace={trace_id} span={getattr(record, 'span_id', '')}]"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line (production): what log pipelines index without parsing rules."""

    def __init__(self, service: str = "") -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self.service:
            entry["service"] = self.service
        for key in ("service", "correlation_id", "trace_id", "span_id"):
            value = getattr(record, key, None)
            if value:
                entry[key] = value
        if record.exc_text or record.exc_info:
            entry["exc"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(entry)


_configured = False


def configure_logging(service: str = "repotalk") -> None:
    global _configured
    if _configured:
        return
    settings = get_settings()
    handler = logging.StreamHandler(sys.stderr)
    fmt = settings.app.log_format
    if fmt == "json" or (fmt == "auto" and settings.app.env == "production"):
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(TextFormatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    handler.addFilter(TraceContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.app.log_level.upper())
    for noisy in ("celery", "kombu", "amqp", "httpx", "urllib3", "twilio", "uvicorn.access", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    _configured = True
