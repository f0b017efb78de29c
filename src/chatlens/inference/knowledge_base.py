"""Knowledge base of the builtin bot: pydantic models, a validating YAML loader, helpers."""

from __future__ import annotations

import re
import unicodedata
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, model_validator

SUPPORTED_VERSIONS = frozenset({1})

_SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")


class KnowledgeBaseError(ValueError):
    """A knowledge base file is missing, unreadable or invalid; str() is one line."""


def _not_blank(value: str) -> str:
    """Reject empty or whitespace-only strings."""
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def _snake_case(value: str) -> str:
    """Reject intent names that are not snake_case."""
    if not _SNAKE_CASE.fullmatch(value):
        raise ValueError(f"intent name must be snake_case, got {value!r}")
    return value


def _at_least_one(phrases: list[str]) -> list[str]:
    """Reject an empty list of example phrases."""
    if not phrases:
        raise ValueError("needs at least 1 example phrase, got 0")
    return phrases


NonBlankStr = Annotated[str, AfterValidator(_not_blank)]
IntentName = Annotated[str, AfterValidator(_snake_case)]
Phrases = Annotated[list[NonBlankStr], AfterValidator(_at_least_one)]

# extra="forbid" turns a misspelt key ("exampels") into an error instead of a silently
# empty field; str_strip_whitespace makes "   " count as blank.
_MODEL_CONFIG = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class LocalizedText(BaseModel):
    """A text in every supported language."""

    model_config = _MODEL_CONFIG

    en: NonBlankStr
    ru: NonBlankStr


class IntentExamples(BaseModel):
    """Example user phrases of an intent, per language."""

    model_config = _MODEL_CONFIG

    en: Phrases
    ru: Phrases

    def all(self) -> list[str]:
        """Return the examples of every language, English first."""
        return [*self.en, *self.ru]


class IntentSpec(BaseModel):
    """One intent: what users say and what the bot answers."""

    model_config = _MODEL_CONFIG

    name: IntentName
    description: str = ""
    escalate: bool = False
    examples: IntentExamples
    answer: LocalizedText


class KnowledgeBase(BaseModel):
    """The whole knowledge base."""

    model_config = _MODEL_CONFIG

    version: int
    handoff: LocalizedText
    intents: list[IntentSpec]

    @model_validator(mode="after")
    def _check_consistency(self) -> KnowledgeBase:
        """Check the version, that there is an intent, and that intent names are unique."""
        if self.version not in SUPPORTED_VERSIONS:
            raise ValueError(
                f"version: unsupported version {self.version}, "
                f"expected one of {sorted(SUPPORTED_VERSIONS)}"
            )
        if not self.intents:
            raise ValueError("intents: needs at least 1 intent, got 0")
        first_seen: dict[str, int] = {}
        for index, intent in enumerate(self.intents):
            if intent.name in first_seen:
                raise ValueError(
                    f"intents[{index}].name: duplicate intent name {intent.name!r} "
                    f"(already used by intents[{first_seen[intent.name]}])"
                )
            first_seen[intent.name] = index
        return self

    def get(self, name: str) -> IntentSpec | None:
        """Return the intent with this name, or None."""
        # A linear scan over a few dozen intents costs about a microsecond; no index needed.
        return next((intent for intent in self.intents if intent.name == name), None)

    @property
    def intent_names(self) -> list[str]:
        """Return the intent names in file order."""
        return [intent.name for intent in self.intents]


def default_knowledge_base_path() -> Path:
    """Return the path of the knowledge base shipped inside the package."""
    resource = files("chatlens") / "data" / "knowledge_base.yaml"
    # The wheel is installed unpacked (and tests run from the source tree), so the resource
    # is a real file on disk; loading from a zipped package is not supported.
    return Path(str(resource))


def load_knowledge_base(path: Path) -> KnowledgeBase:
    """Read, parse and validate a knowledge base YAML file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise _error(path, f"file is not valid UTF-8 (byte offset {exc.start})") from exc
    except OSError as exc:
        raise _error(path, f"cannot read file: {exc.strerror or type(exc).__name__}") from exc

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _error(path, _describe_yaml_error(exc)) from exc

    if data is None:
        raise _error(path, "file is empty")
    if not isinstance(data, dict):
        raise _error(path, f"top level must be a mapping, got {_yaml_type(data)}")

    try:
        return KnowledgeBase.model_validate(data)
    except ValidationError as exc:
        raise _error(path, _describe_validation_error(exc, data)) from exc


def detect_language(text: str) -> Literal["en", "ru"]:
    """Return "ru" when Cyrillic letters outnumber Latin ones, else "en"."""
    cyrillic = latin = 0
    for char in text:
        if not char.isalpha():
            continue
        if "a" <= char.lower() <= "z":
            latin += 1
        elif "\u0400" <= char <= "\u04ff":
            cyrillic += 1
        elif not char.isascii() and unicodedata.name(char, "").startswith("LATIN"):
            latin += 1
    return "ru" if cyrillic > latin else "en"


def _error(path: Path, problem: str) -> KnowledgeBaseError:
    """Build the one-line error naming the file and the problem."""
    return KnowledgeBaseError(" ".join(f"knowledge base {path}: {problem}".split()))


def _describe_yaml_error(exc: yaml.YAMLError) -> str:
    """Summarise a YAML parse error with its position."""
    if isinstance(exc, yaml.MarkedYAMLError):
        problem = exc.problem or exc.context or "syntax error"
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"
        return f"invalid YAML: {problem}"
    return f"invalid YAML: {exc}"


def _describe_validation_error(exc: ValidationError, data: dict[Any, Any]) -> str:
    """Turn pydantic's first error into 'dotted.location: problem (+N more)'."""
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    message = str(first["msg"]).removeprefix("Value error, ")
    location = _dotted(first["loc"])
    intent_name = _intent_name_at(first["loc"], data)
    if intent_name is not None:
        location = f"{location} (intent {intent_name!r})"
    text = f"{location}: {message}" if location else message
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return text


def _dotted(loc: tuple[int | str, ...]) -> str:
    """Render ('intents', 3, 'examples', 'en') as 'intents[3].examples.en'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _intent_name_at(loc: tuple[int | str, ...], data: dict[Any, Any]) -> str | None:
    """Return the raw name of the intent an error location points into, if it has one."""
    if len(loc) < 3 or loc[0] != "intents" or not isinstance(loc[1], int) or loc[2] == "name":
        return None
    intents = data.get("intents")
    if not isinstance(intents, list) or not 0 <= loc[1] < len(intents):
        return None
    entry = intents[loc[1]]
    name = entry.get("name") if isinstance(entry, dict) else None
    return name if isinstance(name, str) and name.strip() else None


def _yaml_type(value: object) -> str:
    """Name a parsed YAML value's type the way a YAML author would."""
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__}"
