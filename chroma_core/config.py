"""Settings of a Chroma service, from ``CHROMA_*`` environment variables and flags.

The core's own settings are the fields of :class:`Settings`. A plugin declares its own
through the ``chroma_settings`` hook, as :class:`Setting` entries; the core reads each from
``CHROMA_<NAME>`` or an override of the same name, converts and checks it as it does its
own, and hands the typed values to plugins as :class:`PluginSettings`. A bad value stops the
start, naming its variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from chroma_wire.errors import InvalidInput

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")
#: the types a setting may have; a tuple is a comma-separated list of words
TYPES = (str, int, float, bool, tuple, Path)
#: what a secret setting's value shows as in ``GET /-/plugins``
MASK = "********"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


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
    #: seconds a client may take to send a request's head, between two parts of its body,
    #: or to take a part of its reply, before it is dropped
    client_timeout_seconds: float = 30.0
    #: connections (and requests under way) at once; beyond, a new one is answered 503
    max_connections: int = 512
    #: bearer tokens the HTTP API accepts; none configured means no authentication
    auth_tokens: tuple[str, ...] = ()
    auth_token_file: str | None = None
    #: directories whose image files the explorer page may show (comma-separated); none by
    #: default, so it serves no file
    explorer_files: tuple[str, ...] = ()
    #: clients on this machine may hand requests and replies over in shared memory
    shared_memory: bool = True
    #: the directory of the shared-memory files; None for ``/dev/shm``
    shared_memory_dir: str | None = None
    #: every CHROMA_* variable (lower-cased, without the prefix) and every override that is
    #: no field above: where the plugins' declared settings are read from
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> Settings:
        """Settings from ``env`` (default ``os.environ``), then ``overrides`` not None.

        Overrides naming no field here are kept in ``extra`` for the plugins' settings."""
        env = os.environ if env is None else env
        extra: dict[str, Any] = {
            k[7:].lower(): v for k, v in env.items() if k.startswith("CHROMA_")
        }
        own = {f.name: f for f in fields(cls) if f.name != "extra"}
        given = {k: v for k, v in overrides.items() if v is not None}
        extra.update({k: v for k, v in given.items() if k not in own})
        values: dict = {"extra": extra}
        for name, f in own.items():
            if name in extra:
                values[name] = convert(name, extra[name], _kind(f.default), f.default)
        values.update({k: v for k, v in given.items() if k in own})
        settings = cls(**values)
        for name, least in _LEAST.items():
            value = getattr(settings, name)
            if value < least:
                flag = " (--max-body-bytes)" if name == "max_body_bytes" else ""
                raise InvalidInput(
                    f"CHROMA_{name.upper()}{flag} must be at least {least:g}, got {value!r:.40}"
                )
        return replace(settings, path=Path(settings.path))


#: the least value of each numeric core setting (a timeout of 0 would drop every client)
_LEAST = {"max_body_bytes": 1, "client_timeout_seconds": 0.001, "max_connections": 1}


@dataclass(frozen=True)
class Setting:
    """One setting a plugin reads, declared through the ``chroma_settings`` hook.

    Its value comes from an override named ``name`` (a flag, a test's ``Settings``), else
    the environment variable ``CHROMA_<NAME>``, else ``default``."""

    #: lower-case letters, digits and ``_``; unique among every plugin's settings
    name: str
    #: str, int, float, bool, Path, or tuple (a comma-separated list of words)
    type: type
    default: Any
    #: one line for the docs and ``GET /-/plugins``
    doc: str
    #: shown masked in ``GET /-/plugins`` (passwords, URLs holding a token)
    secret: bool = False
    #: the values allowed (for a tuple, of each word); empty for any
    choices: tuple[str, ...] = ()
    #: inclusive bounds of a number
    minimum: float | None = None
    maximum: float | None = None
    #: a regular expression a text value must match whole
    pattern: str | None = None

    @property
    def variable(self) -> str:
        """The environment variable it is read from."""
        return f"CHROMA_{self.name.upper()}"

    def read(self, value: Any) -> Any:
        """``value`` (text from the environment, or an override) converted and checked."""
        value = convert(self.name, value, self.type, self.default)
        if value is None:
            return None
        shown = "" if self.secret else f"={value!r:.80}"
        words = value if isinstance(value, tuple) else (value,)
        if self.choices and any(word not in self.choices for word in words):
            raise InvalidInput(
                f"{self.variable}{shown} is not valid: use "
                f"{'words of ' if self.type is tuple else ''}{', '.join(self.choices)}"
            )
        if self.minimum is not None and value < self.minimum:
            raise InvalidInput(f"{self.variable}{shown} is below its minimum, {self.minimum:g}")
        if self.maximum is not None and value > self.maximum:
            raise InvalidInput(f"{self.variable}{shown} is above its maximum, {self.maximum:g}")
        if self.pattern is not None and not re.fullmatch(self.pattern, str(value)):
            raise InvalidInput(f"{self.variable}{shown} is not valid: {self.doc}")
        return value

    def describe(self, value: Any) -> dict:
        """What ``GET /-/plugins`` shows of it, with its current ``value``."""
        if self.secret and value not in (None, ""):
            value = MASK
        return {
            "name": self.name,
            "variable": self.variable,
            "type": "list" if self.type is tuple else self.type.__name__.lower(),
            "default": _json(self.default),
            "value": _json(value),
            "doc": self.doc,
            "secret": self.secret,
        }


class PluginSettings(Mapping[str, Any]):
    """The typed value of every setting the plugins declare, by name
    (``plugin_settings["similarity_ef"]``), and which plugin declared which."""

    def __init__(self, declared: Mapping[str, Sequence[Setting]], values: Mapping[str, Any]):
        self._declared = {plugin: tuple(settings) for plugin, settings in declared.items()}
        self._values = dict(values)

    @classmethod
    def read(cls, declared: Mapping[str, Sequence[Setting]], settings: Settings) -> PluginSettings:
        """Each plugin's declared settings (by plugin name) read from ``settings``; raises
        ``InvalidInput`` naming the variable of a bad value, or a name declared twice."""
        owners: dict[str, str] = {}
        core = {f.name for f in fields(Settings)}
        values: dict[str, Any] = {}
        for plugin, entries in declared.items():
            for setting in entries:
                _check_declaration(plugin, setting)
                if setting.name in core:
                    raise InvalidInput(
                        f"plugin {plugin!r} declares the setting {setting.name!r}, which is "
                        "one of the core's own"
                    )
                if setting.name in owners:
                    raise InvalidInput(
                        f"plugins {owners[setting.name]!r} and {plugin!r} both declare the "
                        f"setting {setting.name!r} ({setting.variable})"
                    )
                owners[setting.name] = plugin
                given = settings.extra.get(setting.name)
                values[setting.name] = setting.default if given is None else setting.read(given)
        return cls(declared, values)

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def declared(self, plugin: str) -> tuple[Setting, ...]:
        """The settings plugin ``plugin`` declares."""
        return self._declared.get(plugin, ())

    def describe(self, plugin: str) -> list[dict]:
        """What ``GET /-/plugins`` shows of ``plugin``'s settings, secrets masked."""
        return [s.describe(self._values[s.name]) for s in self.declared(plugin)]


def convert(name: str, value: Any, kind: type, default: Any = None) -> Any:
    """``value`` as a ``kind``: text as read from ``CHROMA_<NAME>``, or an override already
    typed. Empty text is None for a setting whose default is None. Raises ``InvalidInput``
    naming the variable."""
    variable = f"CHROMA_{name.upper()}"
    if isinstance(value, str):
        text = value.strip()
        if text == "" and default is None:
            return None
        try:
            if kind is bool:
                if text.lower() not in TRUE + FALSE:
                    raise ValueError(text)
                return text.lower() in TRUE
            if kind is int:
                return int(text)
            if kind is float:
                number = float(text)
                if number != number or number in (float("inf"), float("-inf")):
                    raise ValueError(text)
                return number
            if kind is tuple:
                return tuple(part.strip() for part in text.split(",") if part.strip())
            if kind is Path:
                return Path(text)
        except ValueError:
            raise InvalidInput(
                f"{variable}={value!r:.80} is not a valid {name}: it takes {_kind_name(kind)}"
            ) from None
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is tuple and isinstance(value, list):
        return tuple(value)
    if kind is Path and isinstance(value, str | os.PathLike):
        return Path(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidInput(
            f"{variable} must be {_kind_name(kind)}, got {type(value).__name__} {value!r:.40}"
        )
    return value


def _kind(default: Any) -> type:
    """The type of a core setting, from its default (None defaults hold text)."""
    if default is None:
        return str
    if isinstance(default, Path):
        return Path
    return type(default)


def _kind_name(kind: type) -> str:
    return {
        bool: "true or false (1, true, yes, on or 0, false, no, off)",
        int: "an integer",
        float: "a finite number",
        tuple: "a comma-separated list",
        Path: "a path",
    }.get(kind, "text")


def _check_declaration(plugin: str, setting: Setting) -> None:
    if not isinstance(setting, Setting):
        raise InvalidInput(
            f"plugin {plugin!r}: chroma_settings must return Setting entries, "
            f"got {type(setting).__name__}"
        )
    if not _NAME.match(setting.name):
        raise InvalidInput(
            f"plugin {plugin!r} declares the setting {setting.name!r}: a name is lower-case "
            "letters, digits and _, starting with a letter"
        )
    if setting.type not in TYPES:
        raise InvalidInput(
            f"plugin {plugin!r} declares {setting.name!r} of type {setting.type!r}; "
            "use str, int, float, bool, Path or tuple"
        )


def _json(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return value
