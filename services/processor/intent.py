"""Is a message a question about code, or a greeting, thanks or small talk?

Small talk gets a short, natural reply without a search (no hits to cite, no model call to pay for).
The rules are deliberately conservative: anything that might be about code — an identifier, a path,
a code word, a question beyond a pleasantry — is treated as a question.
"""

from __future__ import annotations

import re
from enum import StrEnum


class Intent(StrEnum):
    QUESTION = "question"
    GREETING = "greeting"
    THANKS = "thanks"
    ABOUT_ME = "about_me"  # who are you / what can you do
    OFF_TOPIC = "off_topic"  # clearly not about code


_GREETING_WORDS = frozenset(
    "hi hello hey heya hiya howdy yo hola hallo bonjour ciao morning good afternoon evening day there all "
    "everyone team repotalk bot again sup greetings oi".split()
)
_THANKS_WORDS = frozenset(
    "thanks thank you thx ty tysm cheers much so very a lot great perfect awesome nice cool ok okay got it "
    "helpful that was that's thats brilliant excellent super merci gracias danke appreciated many ta".split()
)
_THANKS_MARKERS = frozenset("thanks thank thx ty tysm cheers merci gracias danke appreciated ta".split())
_ABOUT_ME = re.compile(
    r"^(who|what) are you|^what can you do|^what do you do|^how (do|does) (this|it|you) work|^are you (a )?(bot|human)"
    r"|^how are you|^how's it going|^what'?s up",
)
_OFF_TOPIC = re.compile(
    r"\b(weather|joke|recipe|horoscope|lottery|football|soccer|movie|song|poem|dating|stock price)\b"
)
# Signals that a message is about code even when it opens with a pleasantry.
_CODE_SIGNAL = re.compile(
    r"[`/\\_.:()\[\]{}<>=#]|\b(code|function|method|class|file|module|repo|error|bug|exception|trace|"
    r"test|api|endpoint|webhook|config|where|how does|how do we|how is|why does|which|implement|defined|call|"
    r"import|variable|query|database|table|schema|deploy|build|handler|service|signature|session)\b",
    re.IGNORECASE,
)
_CAMEL_CASE = re.compile(r"[a-z][A-Z]")  # case-sensitive on purpose: processWebhook, SessionStore
_WORD = re.compile(r"[a-z']+")


def classify(text: str) -> Intent:
    stripped = text.strip()
    lowered = stripped.lower()
    words = _WORD.findall(lowered)
    if not words:
        return Intent.QUESTION
    if (_CODE_SIGNAL.search(stripped) or _CAMEL_CASE.search(stripped)) and not _ABOUT_ME.search(lowered):
        return Intent.QUESTION
    if len(words) <= 6 and set(words) <= _THANKS_WORDS and set(words) & _THANKS_MARKERS:
        return Intent.THANKS
    if len(words) <= 5 and set(words) <= _GREETING_WORDS and set(words) - {"good", "day", "all", "there", "again"}:
        return Intent.GREETING
    if len(words) <= 8 and _ABOUT_ME.search(lowered):
        return Intent.ABOUT_ME
    if _OFF_TOPIC.search(lowered):
        return Intent.OFF_TOPIC
    return Intent.QUESTION
