"""Every table, imported here so the metadata knows them all."""

from chatlens.models.api_key import ApiKey
from chatlens.models.conversation import Conversation, ConversationStatus
from chatlens.models.conversation_metrics import ConversationMetrics
from chatlens.models.feedback import Feedback, FeedbackKind
from chatlens.models.message import Message, MessageRole, MessageStatus
from chatlens.models.request_stat import RequestStat
from chatlens.models.runtime_setting import RuntimeSetting
from chatlens.models.user import User

__all__ = [
    "ApiKey",
    "Conversation",
    "ConversationMetrics",
    "ConversationStatus",
    "Feedback",
    "FeedbackKind",
    "Message",
    "MessageRole",
    "MessageStatus",
    "RequestStat",
    "RuntimeSetting",
    "User",
]
