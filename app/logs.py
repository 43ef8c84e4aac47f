"""Structured logs: one JSON object per line on stderr, the call id on every call line."""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import sys
import time
from typing import Any

from loguru import logger as loguru_logger

from api.context import current_request_id
from calls.events import current_call_id

_STANDARD = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


#: Phone numbers, masked in every log line: E.164 (``+`` and 7-15 digits) anywhere, also
#: written with separators (``+33 1 85 00 12 34``), and quoted runs of 7-15 bare digits
#: (carriers that drop the ``+``), quoted once or inside a JSON string (``\"``).
_PHONE = re.compile(r'(?<![\w+])\+\d(?:[ .\-()]{0,2}\d){6,14}(?!\d)|(?<=")\d{7,15}(?=\\?")')


#: IPv4 addresses (a browser caller is one), masked to their first two bytes (``203.0.…``),
#: and IPv6 ones (with ``::`` or all eight groups) to their first group; loopback and the
#: unspecified address are the platform's own and stay.
_IPV4 = re.compile(r"(?<![\w.])(\d{1,3})\.(\d{1,3})\.\d{1,3}\.\d{1,3}(?!\w)(?!\.\d)")
_IPV6 = re.compile(
    r"(?<![\w:])(?:[0-9A-Fa-f:]*::[0-9A-Fa-f:.]*|(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4})(?![\w:])"
)


def _ipv4(m: re.Match[str]) -> str:
    whole = m.group(0)
    return whole if whole.startswith("127.") or whole == "0.0.0.0" else f"{m[1]}.{m[2]}.…"


def _ipv6(m: re.Match[str]) -> str:
    whole = m.group(0)
    try:
        ip = ipaddress.IPv6Address(whole)
    except ValueError:
        return whole
    return whole if ip.is_loopback or ip.is_unspecified else whole.split(":", 1)[0] + ":…"


def redact(text: str) -> str:
    """``text`` with phone numbers (``+…42``) and IP addresses (``203.0.…``) masked.

    Logs are append-only files that outlive a data subject's erasure and a tenant's
    offboarding, so personal data never enters them: no numbers, no addresses, and no words
    of a call.
    """
    text = _PHONE.sub(lambda m: "+…" + m.group(0)[-2:], text)
    return _IPV6.sub(_ipv6, _IPV4.sub(_ipv4, text))


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON line; ``extra`` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record``."""
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        call_id = getattr(record, "call_id", None) or current_call_id.get()
        if call_id:
            out["call_id"] = call_id
        request_id = current_request_id.get()
        if request_id:
            out["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(out, default=str))


def _loguru_sink(message: Any) -> None:
    """Route pipecat's loguru messages through the same JSON formatter."""
    rec = message.record
    record = logging.LogRecord(
        name=f"pipecat.{rec['name']}",
        level=rec["level"].no,
        pathname=rec["file"].path,
        lineno=rec["line"],
        msg=rec["message"],
        args=(),
        exc_info=None,
    )
    record.levelname = rec["level"].name if rec["level"].name != "SUCCESS" else "INFO"
    record.created = rec["time"].timestamp()
    logging.getLogger(record.name).handle(record)


def configure(level: str = "INFO", pipecat_level: str = "WARNING") -> None:
    """Install the JSON handler on the root logger and bridge loguru (pipecat) into it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiortc's and aioice's lines name the browsers' addresses (personal data): warnings only.
    noisy_loggers = ("httpx", "httpx2", "httpcore", "openai", "uvicorn.access", "websockets")
    for noisy in (*noisy_loggers, "aiortc", "aioice"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    loguru_logger.remove()
    # pipecat logs every frame at DEBUG; only warnings and worse are worth a line.
    loguru_logger.add(_loguru_sink, level=pipecat_level.upper())
    logging.Formatter.converter = time.gmtime
