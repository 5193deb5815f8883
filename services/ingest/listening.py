"""The listening configuration (YAML): brands, their accounts, what to follow, and sources.

```yaml
brands:
  - name: acme
    accounts: {mastodon: ["@acme@mastodon.social"], bluesky: ["acme.bsky.social"]}
    keywords: ["acme broadband"]
    hashtags: [acme]
    languages: [en, it]
    vip: {mastodon: ["@bigcorp@mastodon.social"]}
sources:
  - name: mastodon-social
    type: mastodon
    brand: acme
    interval_seconds: 60
    settings: {instance: "https://mastodon.social"}
```

A source's ``settings`` are checked by its connector's own ``Config`` model, so a typo in
them is reported like any other: the file, then the field (``sources[0].settings.instance``).
Secrets (API tokens) never go in the file: connectors name an environment variable
(``token_env``) or a file (``token_file``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

NAME_PATTERN = r"^[a-z0-9_.-]+$"


class ListeningError(ValueError):
    """The listening file is unreadable or invalid; the message names the file and fields."""


def _clean_list(values: list[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        v = v.strip()
        if not v:
            raise ValueError("empty value")
        if v not in out:
            out.append(v)
    return out


class Brand(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    # Platform -> the brand's own accounts there (its posts and replies answer cases).
    accounts: dict[str, list[str]] = Field(default_factory=dict)
    keywords: list[str] = Field(default_factory=list)
    hashtags: list[str] = Field(default_factory=list)  # with or without "#"
    languages: list[str] = Field(default_factory=list)  # ISO 639-1; empty = all
    # Platform -> handles of VIP customers (their posts carry author.vip = true).
    vip: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("keywords", "languages")
    @classmethod
    def _lists(cls, v: list[str]) -> list[str]:
        return _clean_list(v)

    @field_validator("hashtags")
    @classmethod
    def _hashtags(cls, v: list[str]) -> list[str]:
        return _clean_list([h.strip().lstrip("#") for h in v])

    @field_validator("languages")
    @classmethod
    def _langs(cls, v: list[str]) -> list[str]:
        return [x.lower() for x in v]

    @field_validator("accounts", "vip")
    @classmethod
    def _handles(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        return {platform.lower(): _clean_list(handles) for platform, handles in v.items()}


class SourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=NAME_PATTERN)
    type: str = Field(min_length=1, pattern=NAME_PATTERN)
    brand: str
    interval_seconds: float = Field(default=60.0, gt=0)
    enabled: bool = True
    # Checked by the connector's Config model (see load_listening).
    settings: dict[str, Any] = Field(default_factory=dict)


class ListeningConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    brands: list[Brand] = Field(default_factory=list)
    sources: list[SourceSpec] = Field(default_factory=list)

    def brand(self, name: str) -> Brand:
        for b in self.brands:
            if b.name == name:
                return b
        raise KeyError(name)

    def source(self, name: str) -> SourceSpec:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(name)


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def _errors(exc: ValidationError, prefix: tuple[Any, ...] = ()) -> list[str]:
    return [f"{_loc(prefix + tuple(e['loc']))}: {e['msg']}" for e in exc.errors()]


def validate_listening(data: Any, origin: str = "<listening config>") -> ListeningConfig:
    """Validate a parsed document; every problem found is listed in one ListeningError."""
    if data is None:
        data = {}
    try:
        config = ListeningConfig.model_validate(data)
    except ValidationError as exc:
        raise ListeningError(_format(origin, _errors(exc))) from None

    problems: list[str] = []
    seen: set[str] = set()
    for i, b in enumerate(config.brands):
        if b.name in seen:
            problems.append(f"brands[{i}].name: duplicate brand {b.name!r}")
        seen.add(b.name)
    names: set[str] = set()
    for i, s in enumerate(config.sources):
        where = f"sources[{i}]"
        if s.name in names:
            problems.append(f"{where}.name: duplicate source {s.name!r}")
        names.add(s.name)
        if s.brand not in seen:
            problems.append(f"{where}.brand: unknown brand {s.brand!r} (known: {sorted(seen)})")
        try:
            connector = connector_class(s.type)
        except LookupError as exc:
            problems.append(f"{where}.type: {exc}")
            continue
        try:
            connector.Config.model_validate(s.settings)
        except ValidationError as exc:
            problems.extend(_errors(exc, ("sources", i, "settings")))
    if problems:
        raise ListeningError(_format(origin, problems))
    return config


def _format(origin: str, problems: list[str]) -> str:
    return f"invalid listening config {origin}:\n  " + "\n  ".join(problems)


def load_listening(path: str | Path) -> ListeningConfig:
    """Read and validate the listening file; errors name the file and the field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ListeningError(f"cannot read listening config {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ListeningError(f"invalid YAML in listening config {path}: {exc}") from None
    if data is not None and not isinstance(data, dict):
        raise ListeningError(
            f"invalid listening config {path}: expected a mapping with brands and sources"
        )
    return validate_listening(data, str(path))


def connector_class(type_: str) -> Any:
    """The connector for a source ``type``: module ``services.ingest.sources.<type>``.

    Returns the ``HttpSource`` subclass whose ``type`` matches; a new source is one module
    with one such class, found by name with no registry to edit.
    """
    import importlib
    import inspect

    from services.ingest.sources.http import HttpSource

    try:
        module = importlib.import_module(f"services.ingest.sources.{type_}")
    except ModuleNotFoundError as exc:
        if exc.name != f"services.ingest.sources.{type_}":
            raise  # the connector exists but lacks a dependency: say so, do not hide it
        raise LookupError(f"unknown source type {type_!r}") from None
    for _, obj in inspect.getmembers(module, inspect.isclass):
        if issubclass(obj, HttpSource) and obj is not HttpSource and obj.type == type_:
            return obj
    raise LookupError(f"module for source type {type_!r} defines no connector")


def build_sources(config: ListeningConfig, only: list[str] | None = None) -> list[Any]:
    """The enabled sources of ``config`` as connector instances (``only``: by name)."""
    if only:
        unknown = sorted(set(only) - {s.name for s in config.sources})
        if unknown:
            raise ListeningError(f"no source named {unknown} in the listening config")
    out = []
    for spec in config.sources:
        if only and spec.name not in only:
            continue
        if not only and not spec.enabled:
            continue
        try:
            out.append(connector_class(spec.type)(spec, config.brand(spec.brand)))
        except ValueError as exc:  # a missing token variable, an unreadable token file
            raise ListeningError(f"source {spec.name}: {exc}") from None
    return out
