"""The constrained types every request field is built from: text, days, JSON numbers and flags.

One definition each, so that SQLite and PostgreSQL see the same accepted input and the
OpenAPI description states what is refused (a client generated from it never sends it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, GetJsonSchemaHandler, Strict
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

# PostgreSQL refuses NUL in text (SQLite stores it): refused before either sees it. Lone
# surrogates, which neither can encode, are refused by pydantic itself (`string_unicode`).
NO_NUL = "^[^\\x00]*$"
# White space, as every JSON Schema validator and pydantic read it alike (`\\s` differs
# between regex engines beyond ASCII).
BLANKS = " \t\n\r\f\v"
# Text with something besides white space in it.
NOT_BLANK = "^[^\\x00]*[^\\x00 \\t\\n\\r\\f\\v][^\\x00]*$"
# A name: no white space at either end, one line.
NAME = "^[^\\x00 \\t\\n\\r\\f\\v]([^\\x00\\n\\r]*[^\\x00 \\t\\n\\r\\f\\v])?$"
# Every text field's JSON schema says so; a test walks the description for it.
TEXT_MARKER = "x-chatlens-text"


@dataclass(frozen=True, slots=True)
class TextSchema:
    """Marks a text field in its JSON schema, with a pattern that excludes NUL unless the
    field has its own (which must exclude it too: a test checks every schema)."""

    pattern: str = NO_NUL

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        if self.pattern == NO_NUL:
            schema.setdefault("pattern", NO_NUL)  # a field's own pattern stays
        else:
            schema["pattern"] = self.pattern
        schema[TEXT_MARKER] = True
        return schema


TEXT_SCHEMA = TextSchema()
# Free text: a message, a title, a comment. A pattern (not a validator) so that the length
# limits a field adds stay plain string constraints; the error handler words a refused NUL.
Text = Annotated[str, Field(pattern=NO_NUL), TEXT_SCHEMA]


def _json_integer(value: Any) -> Any:
    # JSON's integers: `5` and `5.0` (JSON Schema counts both), never `"5"` or `false`.
    if isinstance(value, bool | str | bytes):
        raise ValueError("Input should be a JSON integer")
    return value


# A JSON client sends a number or a boolean as one: `"5"` or `false` for a score, `0` for a
# flag, is refused rather than coerced.
# Last in a field's Annotated, after its bounds, so that they stay in its JSON schema.
JSON_INTEGER = BeforeValidator(_json_integer)
StrictBool = Annotated[bool, Strict()]

# Days the analytics handle: a report reaches back a month and 28 days before its day, and
# Python's dates end at 9999; 1970-2999 leaves every computation room on both databases.
FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(2999, 12, 31)
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DAY_PATTERN = "^(19[7-9][0-9]|2[0-9]{3})-[0-9]{2}-[0-9]{2}$"


def _iso_day(value: Any) -> Any:
    # A query string holds text: only YYYY-MM-DD, never `0` read as a Unix timestamp.
    if isinstance(value, str) and not _DAY.match(value):
        raise ValueError("Input should be a valid date (YYYY-MM-DD)")
    return value


def _within(value: date) -> date:
    if not FIRST_DAY <= value <= LAST_DAY:
        raise ValueError(f"must be between {FIRST_DAY} and {LAST_DAY}")
    return value


Day = Annotated[
    date,
    BeforeValidator(_iso_day),
    AfterValidator(_within),
    Field(json_schema_extra={"pattern": DAY_PATTERN}),
]
