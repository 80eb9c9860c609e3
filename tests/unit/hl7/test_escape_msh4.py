"""Escape sequences and the MSH-4 grammar (SPEC 3, rows 5-6)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.errors import Msh4Error
from processor.hl7.escape import DEFAULT_DELIMITERS, Delimiters, escape, unescape
from processor.hl7.msh4 import Msh4Aliases, is_alias, parse_msh4
from processor.reasons import Reason
from tests.unit.hl7.hl7ref import ref_unescape

B = "\\"

UNESCAPE_CASES = {
    "plain": ("abc", "abc"),
    "all five": (r"a\F\b\S\c\T\d\R\e\E\f", "a|b^c&d~e\\f"),
    "highlight kept": (r"\H\bold\N\ ", r"\H\bold\N\ "),
    "hex kept": (r"x\X0D0A\y", r"x\X0D0A\y"),
    "local and charset kept": (r"\Zabc\\C2842\\M244241\ ", r"\Zabc\\C2842\\M244241\ "),
    "formatting kept": (r"a\.br\b", r"a\.br\b"),
    "unknown then known-looking text": (r"\H\F\ ", r"\H\F\ "),
    "lone escape": (B, B),
    "trailing escape": ("abc" + B, "abc" + B),
    "unterminated sequence": (r"\F", r"\F"),
    "empty sequence": (B + B, B + B),
    "three escapes": (B * 3, B * 3),
    "escaped escape twice": (r"\E\\E\ ", "\\\\ "),
    "lowercase is not a sequence": (r"\f\ ", r"\f\ "),
}


@pytest.mark.parametrize(("raw", "want"), UNESCAPE_CASES.values(), ids=UNESCAPE_CASES.keys())
def test_unescape_cases(raw: str, want: str) -> None:
    assert unescape(raw) == want


def test_unescape_with_other_delimiters() -> None:
    d = Delimiters("#", "$", "%", "@", "!")
    assert unescape("a@F@b@S@c@T@d@R@e@E@f", d) == "a#b$c!d%e@f"
    assert escape("a#b$c!d%e@f", d) == "a@F@b@S@c@T@d@R@e@E@f"


def test_escape_line_breaks_and_delimiters() -> None:
    assert escape("a|b\rc\nd") == r"a\F\b\X0D\c\X0A\d"
    assert escape("plain text") == "plain text"


_delims = st.permutations(list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")).map(lambda p: Delimiters(*p[:5]))


@settings(max_examples=300)
@given(st.text(max_size=60), _delims)
def test_escape_round_trip(value: str, d: Delimiters) -> None:
    value = value.replace("\r", "").replace("\n", "")
    escaped = escape(value, d)
    for ch in (d.field_separator, d.component_separator, d.repetition_separator, d.subcomponent_separator):
        assert ch not in escaped
    assert unescape(escaped, d) == value


@settings(max_examples=300)
@given(st.text(alphabet=st.sampled_from(list("\\FSTREHNXab0")), max_size=40))
def test_unescape_agrees_with_regex_reference(value: str) -> None:
    d = DEFAULT_DELIMITERS
    assert unescape(value) == ref_unescape(value, d.field_separator, d.component_separator,
                                           d.repetition_separator, d.escape_character,
                                           d.subcomponent_separator)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("blob", [B * 2_000_000, (B + "X") * 1_000_000, (B + "F") * 700_000 + B])
def test_unescape_linear_on_hostile_input(blob: str) -> None:
    assert len(unescape(blob)) <= len(blob)


# --------------------------------------------------------------- MSH-4 grammar

VALID = {
    "pair": ("trustalias{trustalias}", False, Msh4Aliases("trustalias", "trustalias", False)),
    "delegation": ("mailco-trust{trustalias}", False, Msh4Aliases("mailco-trust", "trustalias", False)),
    "all alias chars": ("A.b-C_9{z.Y-x_0}", False, Msh4Aliases("A.b-C_9", "z.Y-x_0", False)),
    "case kept": ("Trust{TRUST}", False, Msh4Aliases("Trust", "TRUST", False)),
    "customer pair": ("a{b}", True, Msh4Aliases("a", "b", False)),
    "customer legacy plain": ("trustalias", True, Msh4Aliases("trustalias", "trustalias", True)),
    "customer facility code": ("RXH01", True, Msh4Aliases("RXH01", "RXH01", True)),
    "customer plain with space": ("trust alias", True, Msh4Aliases("trust alias", "trust alias", True)),
    "customer fullwidth braces": ("a｛b｝", True, Msh4Aliases("a｛b｝", "a｛b｝", True)),
}


@pytest.mark.parametrize(("value", "customer", "want"), VALID.values(), ids=VALID.keys())
def test_msh4_valid(value: str, customer: bool, want: Msh4Aliases) -> None:
    assert parse_msh4(value, customer_principal=customer) == want


SYNTAX = {
    "partner plain": ("trustalias", False),
    "leading space": (" a{b}", True),
    "trailing space": ("a{b} ", True),
    "space inside braces": ("a{ b}", True),
    "tab": ("a{b}\t", True),
    "newline": ("a\n{b}", True),
    "customer plain, leading space": (" RXH01", True),
    "customer plain, trailing space": ("RXH01 ", True),
    "customer plain, trailing tab": ("RXH01\t", True),
    "customer plain, leading newline": ("\nRXH01", True),
    "customer plain, no-break space": ("RXH01\u00a0", True),
    "partner facility code": ("RXH01", False),
    "customer half brace": ("RXH{01", True),
    "empty controller": ("a{}", True),
    "empty connector": ("{b}", True),
    "only braces": ("{}", True),
    "unclosed": ("a{b", True),
    "unopened": ("ab}", True),
    "double open": ("a{{b}", True),
    "double close": ("a{b}}", True),
    "two pairs": ("a{b}{c}", True),
    "nested": ("a{b{c}}", True),
    "braces reversed": ("a}b{", True),
    "ampersand (unescaped \\T\\)": ("trust&alias{trustalias}", True),
    "caret": ("a^b{c}", True),
    "escape left verbatim": (r"a\X41\{b}", True),
    "non-ascii letter": ("trüst{trust}", True),
    "non-ascii digit": ("trust١{trust}", True),
    "fullwidth braces": ("a｛b｝", False),
    "slash": ("a/b{c}", True),
    "at sign": ("a@b{c}", False),
}


@pytest.mark.parametrize(("value", "customer"), SYNTAX.values(), ids=SYNTAX.keys())
def test_msh4_syntax_errors(value: str, customer: bool) -> None:
    with pytest.raises(Msh4Error) as info:
        parse_msh4(value, customer_principal=customer)
    assert info.value.reason is Reason.MSH4_SYNTAX
    assert value.strip() not in info.value.detail or not value.strip()


@pytest.mark.parametrize("customer", [True, False])
def test_msh4_missing(customer: bool) -> None:
    with pytest.raises(Msh4Error) as info:
        parse_msh4("", customer_principal=customer)
    assert info.value.reason is Reason.MSH4_MISSING


def test_msh4_whitespace_only_is_syntax_not_missing() -> None:
    with pytest.raises(Msh4Error) as info:
        parse_msh4(" ", customer_principal=True)
    assert info.value.reason is Reason.MSH4_SYNTAX


@pytest.mark.parametrize("value", ["RXH01", "trustalias", "otheralias", "RX H01", "a.b-c"])
def test_msh4_customer_plain_value_stands_for_its_own_alias(value: str) -> None:
    """SPEC 3 row 6: whatever the plain value, it means own-alias{own-alias}."""
    got = parse_msh4(value, customer_principal=True, own_alias="trustalias")
    assert got == Msh4Aliases("trustalias", "trustalias", True)
    other = parse_msh4(value, customer_principal=True, own_alias="gpalias")
    assert other == Msh4Aliases("gpalias", "gpalias", True)  # nothing remembered across senders
    with pytest.raises(Msh4Error) as info:
        parse_msh4(value, customer_principal=False, own_alias="trustalias")
    assert info.value.reason is Reason.MSH4_SYNTAX


def test_msh4_pair_ignores_own_alias() -> None:
    assert parse_msh4("a{b}", customer_principal=True, own_alias="c") == Msh4Aliases("a", "b", False)


@settings(max_examples=500)
@given(st.text(max_size=40), st.booleans())
def test_msh4_total(value: str, customer: bool) -> None:
    """Never anything but Msh4Aliases or Msh4Error; a pair's aliases always match the alias
    syntax, a legacy value is any customer value without braces or surrounding whitespace."""
    try:
        got = parse_msh4(value, customer_principal=customer, own_alias="ownalias")
    except Msh4Error as exc:
        assert exc.reason in (Reason.MSH4_MISSING, Reason.MSH4_SYNTAX)
        assert exc.reason is not Reason.MSH4_MISSING or value == ""
        if customer and value and "{" not in value and "}" not in value:
            assert value != value.strip()  # a plain customer value fails only for its padding
    else:
        if got.legacy:
            assert customer and got == Msh4Aliases("ownalias", "ownalias", True)
            assert "{" not in value and "}" not in value and value == value.strip() and value
        else:
            assert is_alias(got.connecting_alias) and is_alias(got.data_controller_alias)
            assert f"{got.connecting_alias}{{{got.data_controller_alias}}}" == value


@pytest.mark.timeout(60)
def test_msh4_long_values() -> None:
    assert parse_msh4("a" * 1_000_000 + "{b}", customer_principal=False).connecting_alias == "a" * 1_000_000
    with pytest.raises(Msh4Error):
        parse_msh4("{" * 1_000_000 + "}", customer_principal=False)
