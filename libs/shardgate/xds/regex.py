"""RE2 patterns as Envoy judges them: compiled, and bounded by the program size Envoy computes.

Envoy refuses a regex whose RE2 program is larger than `re2.max_program_size.error_level` (100 by
default), and one refused regex NACKs the whole push it travels in. Envoy 1.40's size equals python-re2's
for the pattern compiled as Latin-1 bytes, measured at the boundary (`(?i)/[a-z]{93}.*` 100: accepted;
`{94}` 101: NACKed; `(?i)/(foo|bar|baz|qux){9}.*` 115 in both). The UTF-8 size of the same pattern is
several times larger (571 for the first) and is not what Envoy checks.
"""

from __future__ import annotations

import re2

MAX_PROGRAM_SIZE = 100


class RegexRefused(ValueError):
    """A pattern Envoy would refuse; the message says why."""


def program_size(pattern: str) -> int:
    """The RE2 program size Envoy computes for `pattern`."""
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1
    options.log_errors = False
    return int(re2.compile(pattern.encode("latin-1"), options).programsize)


def checked(pattern: str) -> str:
    """`pattern` itself, if Envoy would accept it; RegexRefused otherwise."""
    try:
        re2.compile(pattern)
        size = program_size(pattern)
    except (re2.error, UnicodeEncodeError) as exc:
        raise RegexRefused(f"invalid regex {pattern!r}: {exc}") from exc
    if size > MAX_PROGRAM_SIZE:
        raise RegexRefused(f"regex {pattern!r} is too complex (RE2 program size {size} > {MAX_PROGRAM_SIZE})")
    return pattern


def groups(pattern: str) -> int:
    return int(re2.compile(pattern).groups)
