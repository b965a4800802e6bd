"""The providers of the chain, in order, from the settings."""

from __future__ import annotations

from libs.common.settings import AISettings
from services.ai_engine import pricing
from services.ai_engine.provider import ANTHROPIC, LOCAL, OPENAI, Provider

# The SDKs are imported (in ``_build``) only for a provider that is configured: together they weigh
# ~70 MB of RSS, which a worker answering offline (or through one provider) should not carry.
DEFAULT_ORDER = (OPENAI, ANTHROPIC, LOCAL)


def order(ai: AISettings) -> list[str]:
    """AI_PROVIDERS as a list of names (the default order when empty). Raises ValueError on an unknown name."""
    if not ai.providers.strip():
        return list(DEFAULT_ORDER)
    names: list[str] = []
    for raw in ai.providers.split(","):
        name = raw.strip().lower()
        if not name:
            continue
        if name not in DEFAULT_ORDER:
            raise ValueError(f"AI_PROVIDERS: unknown provider {name!r} (known: {', '.join(DEFAULT_ORDER)})")
        if name not in names:
            names.append(name)
    return names


def is_configured(name: str, ai: AISettings) -> bool:
    if name == OPENAI:
        return bool(ai.openai_api_key)
    if name == ANTHROPIC:
        return bool(ai.anthropic_api_key)
    return bool(ai.local_base_url)


def _build(name: str, ai: AISettings) -> Provider:
    from services.ai_engine.openai_provider import OpenAIProvider

    if name == OPENAI:
        return OpenAIProvider(
            name=OPENAI, api_key=ai.openai_api_key, model=ai.openai_model, base_url=ai.openai_base_url,
            timeout=ai.openai_timeout or ai.timeout, max_output_tokens=ai.max_output_tokens, prices=ai.prices,
        )
    if name == ANTHROPIC:
        from services.ai_engine.anthropic_provider import AnthropicProvider

        return AnthropicProvider(
            api_key=ai.anthropic_api_key, model=ai.anthropic_model, base_url=ai.anthropic_base_url,
            timeout=ai.anthropic_timeout or ai.timeout, max_output_tokens=ai.max_output_tokens, prices=ai.prices,
        )
    return OpenAIProvider(
        name=LOCAL, api_key=ai.local_api_key, model=ai.local_model, base_url=ai.local_base_url,
        timeout=ai.local_timeout or ai.timeout, max_output_tokens=ai.max_output_tokens, prices=ai.prices,
    )


def configured(ai: AISettings) -> list[Provider]:
    """The chain: every configured provider of AI_PROVIDERS, in that order (empty: offline only)."""
    return [_build(name, ai) for name in order(ai) if is_configured(name, ai)]


def check(ai: AISettings) -> list[str]:
    """Validate the chain's configuration (raises ValueError); returns warnings worth logging at start."""
    pricing.parse_prices(ai.prices)
    warnings = []
    for name in order(ai):
        if ai.providers.strip() and not is_configured(name, ai):
            what = "LOCAL_LLM_BASE_URL" if name == LOCAL else f"{name.upper()}_API_KEY"
            warnings.append(f"AI_PROVIDERS names {name} but {what} is not set: it is skipped")
    return warnings
