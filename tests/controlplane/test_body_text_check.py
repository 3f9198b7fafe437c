"""The body guard's shortcut: a body it calls plainly storable holds no NUL or lone surrogate in
any string, however the JSON spells it (controlplane/app.py)."""

import json

from hypothesis import given
from hypothesis import strategies as st

from nodeplane.controlplane.app import _plainly_storable, _unstorable_text

# Text that leans on the characters that matter: NUL, surrogates, other escapes, non-ASCII.
TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from(["\x00", "\ud800", "\udfff", "\\", '"', "u", "0", "d", "é", "\u2028"]),
        st.characters(codec="utf-8", exclude_categories=()),
        st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    ),
    max_size=12,
)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)


def _encodings(value: object) -> list[bytes]:
    """The ways a client might send `value`: escaped ASCII, or raw UTF-8 (lone surrogates as
    the bytes Python's decoder accepts)."""
    return [
        json.dumps(value).encode(),
        json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"),
    ]


@given(VALUES)
def test_a_plainly_storable_body_never_hides_unstorable_text(value: object) -> None:
    for body in _encodings(value):
        parsed = json.loads(body)
        if _plainly_storable(body):
            assert not _unstorable_text(parsed), body


def test_the_shortcut_takes_ordinary_bodies_and_leaves_risky_ones_to_the_walk() -> None:
    assert _plainly_storable(b'{"query": "q", "variables": {"name": "node-1", "n": 3}}')
    assert _plainly_storable(b'{"a": "\\\\u0000 is text here, not NUL"}') is False  # walks, ok
    for risky in (b'{"a": "\\u0000"}', b'{"a": "\\uD800"}', b'{"a": "\\udfff"}'):
        assert not _plainly_storable(risky)
        assert _unstorable_text(json.loads(risky))
    assert not _plainly_storable('{"a": "é"}'.encode())  # non-ASCII: walked
