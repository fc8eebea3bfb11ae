"""The Hypothesis profile the fuzz tests (tests/**/test_fuzz_*.py) run under.

Deterministic (derandomize: the same examples on every run, so CI never flakes on a new
draw) and bounded (60 examples per property, no per-example deadline), so the whole fuzz
suite takes well under a minute on two cores. `HYPOTHESIS_PROFILE=tunelab-deep` explores
more (random, 1000 examples) when hunting bugs locally.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "tunelab-ci", derandomize=True, max_examples=60, deadline=None, database=None,
    print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                            HealthCheck.function_scoped_fixture])
settings.register_profile(
    "tunelab-deep", max_examples=1000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "tunelab-ci"))


# ----------------------------------------------------------------------------- inputs

from hypothesis import strategies as st  # noqa: E402

from tunelab.errors import TunelabError  # noqa: E402

BOM = b"\xef\xbb\xbf"
# bytes that break things: invalid UTF-8 (lone continuation, overlong, surrogate, truncated
# sequence), NUL, line ends, delimiters and quotes, JSON/YAML structure
JUNK = [b"\xff", b"\xfe", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\x00", b"\r\n",
        b"\r", b"\n", b"\n\n", b"\t", b",", b'"', b"'", b"\\", b"{", b"}", b"[", b"]", b":",
        b"- ", b"&a", b"*a", b"!!python/object:os.system", b"\xc2\x85", b"\xe2\x80\xa8", BOM,
        b"-DOCSTART- -X- O O", b"NaN", b"1e999", b"9" * 5000]
ENCODINGS = ["utf-16", "utf-16-le", "latin-1", "cp1252", "utf-32", "shift_jis"]

# field text: mostly printable, sometimes anything (tabs, newlines, NUL, surrogates excluded)
field_text = st.one_of(
    st.text(st.characters(codec="utf-8", categories=["L", "N", "P", "Zs"]), min_size=1,
            max_size=12),
    st.text(st.characters(codec="utf-8"), max_size=12))


@st.composite
def mutated(draw, valid: bytes) -> bytes:
    """`valid` as is, or broken by up to three edits: truncated at any byte, junk or random
    bytes inserted, a byte replaced, a BOM, CRLF line ends, another encoding, an enormous
    line, or nothing at all."""
    data = valid
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["truncate", "insert", "random", "replace", "bom", "crlf",
                                   "encode", "huge", "empty", "deep"]))
        at = draw(st.integers(0, len(data)))
        if op == "truncate":
            data = data[:at]
        elif op == "insert":
            data = data[:at] + draw(st.sampled_from(JUNK)) + data[at:]
        elif op == "random":
            data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
        elif op == "replace" and data:
            at = min(at, len(data) - 1)
            data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1:]
        elif op == "bom":
            data = BOM + data
        elif op == "crlf":
            data = data.replace(b"\n", b"\r\n")
        elif op == "encode":
            text = data.decode("utf-8", errors="replace")
            data = text.encode(draw(st.sampled_from(ENCODINGS)), errors="replace")
        elif op == "huge":
            data = data[:at] + b"x" * draw(st.sampled_from([70_000, 140_000])) + data[at:]
        elif op == "empty":
            data = b""
        elif op == "deep":
            n = draw(st.sampled_from([50, 3_000, 200_000]))
            data = data[:at] + draw(st.sampled_from([b"[" * n, b"{\"a\":" * n, b"- " * n,
                                                     b"[" * n + b"]" * n])) + data[at:]
    return data


def reads_or_fails_cleanly(read, path, errors=(TunelabError,)):
    """The property: `read()` returns, or raises a tunelab error (of `errors`) whose message
    names `path`. Any other exception propagates and fails the test."""
    try:
        return read()
    except TunelabError as exc:
        assert isinstance(exc, errors), f"{type(exc).__name__}: {exc}"
        assert str(path) in str(exc) or getattr(path, "name", "\0") in str(exc), str(exc)
        return None
