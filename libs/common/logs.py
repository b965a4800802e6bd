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


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
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
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.app.log_level.upper())
    for noisy in ("celery", "kombu", "amqp", "httpx", "urllib3", "twilio", "uvicorn.access", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    _configured = True
