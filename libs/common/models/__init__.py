"""Every table, one module per concern; importing this package registers them all on Base.metadata."""

from libs.common.models import access, analytics, code_index, conversations, messaging  # noqa: F401
from libs.common.models.access import AllowedUser, ApiKey
from libs.common.models.ai_usage import AIUsage  # noqa: F401
from libs.common.models.code_index import IndexedFile, IndexProgress, Repository
from libs.common.models.conversations import ChatSession, Turn
from libs.common.models.messaging import InboundMessage, OutboundMessage, OutboxEvent, User

__all__ = [
    "AllowedUser",
    "ApiKey",
    "ChatSession",
    "InboundMessage",
    "IndexProgress",
    "IndexedFile",
    "OutboundMessage",
    "OutboxEvent",
    "Repository",
    "Turn",
    "User",
]
