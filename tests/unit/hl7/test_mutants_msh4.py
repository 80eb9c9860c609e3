"""``is_alias``: the alias syntax (SPEC 3) as a public predicate, exactly ``ALIAS_PATTERN``.

Written to kill mutants that survived ``make mutation`` (docs/mutation.md).
"""

from __future__ import annotations

import re

import pytest

from processor.hl7.msh4 import ALIAS_PATTERN, is_alias


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("trustalias", True),
        ("a.b-c_1", True),
        ("A", True),
        ("", False),  # the pattern needs at least one character
        ("caf\u00e9", False),  # non-ASCII letters are not alias characters
        ("\u00e9", False),
        ("trust alias", False),
        (" trustalias", False),  # never trimmed
        ("a{b}", False),
        ("a/b", False),
    ],
)
def test_is_alias_matches_alias_pattern(value: str, expected: bool) -> None:
    assert is_alias(value) is expected
    assert (re.fullmatch(ALIAS_PATTERN, value, re.ASCII) is not None) is expected
