"""Settings of a Chroma service, from ``CHROMA_*`` environment variables and flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from chroma_wire.errors import InvalidInput


@dataclass(frozen=True)
class Settings:
    store: str = "sqlite"
    path: Path = Path("chroma_data")
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    #: one JSON line on stderr per HTTP request
    log_requests: bool = False
    max_body_bytes: int = 1 << 30
    trigger_handlers: tuple[str, ...] = ("manifest", "webhook")
    webhook_url: str | None = None
    webhook_timeout: float = 5.0
    webhook_retries: int = 3
    #: bearer tokens the HTTP API accepts; none configured means no authentication
    auth_tokens: tuple[str, ...] = ()
    auth_token_file: str | None = None
    #: directories whose image files the explorer page may show (comma-separated); none by
    #: default, so it serves no file
    explorer_files: tuple[str, ...] = ()
    #: every CHROMA_* variable, lower-cased without the prefix, for plugins' own settings
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> Settings:
        """Settings from ``env`` (default ``os.environ``), then ``overrides`` not None."""
        env = os.environ if env is None else env
        extra = {k[7:].lower(): v for k, v in env.items() if k.startswith("CHROMA_")}
        values: dict = {"extra": extra}
        for f in fields(cls):
            if f.name == "extra" or f.name not in extra:
                continue
            values[f.name] = _convert(f.name, extra[f.name], f.default)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        return replace(settings, path=Path(settings.path))


def _convert(name: str, text: str, default):
    try:
        if isinstance(default, bool):
            return text.lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, tuple):
            return tuple(part.strip() for part in text.split(",") if part.strip())
        if isinstance(default, Path):
            return Path(text)
    except ValueError:
        raise InvalidInput(f"CHROMA_{name.upper()}={text!r} is not a valid {name}") from None
    return text
