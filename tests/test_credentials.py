"""Keys the panel sends on are checked before use: an HTTP header carries printable ASCII only (the fuzzer found a
token with a non-ASCII character answered 500 by the Hugging Face client's header encoding)."""

from __future__ import annotations

import re

import pytest

from panel.bench.plan import ModelTarget
from panel.calls.remote import RemoteEndpoint
from panel.credentials import bearer_headers, checked_key
from panel.errors import BadRequestError

SECRET = "sk-0123456789abcdef"


def test_a_key_is_stripped_and_an_empty_one_is_none() -> None:
    assert checked_key(f"  {SECRET}\n", "the key") == SECRET
    assert checked_key("  ", "the key") is None and checked_key(None, "the key") is None
    assert bearer_headers(SECRET, "the key") == {"Authorization": f"Bearer {SECRET}"}
    assert bearer_headers("", "the key") == {}


@pytest.mark.parametrize("bad", ["sk-\x80abc", "sk-ab cd", "sk-ab\ncd", "sk-ключ", "sk-\x7f"])
def test_a_key_no_header_can_carry_is_refused_by_name_and_never_echoed(bad: str) -> None:
    with pytest.raises(BadRequestError, match="the judge's API key holds a character no key has") as refused:
        bearer_headers(bad, "the judge's API key")
    assert bad.strip() not in refused.value.message


def test_remote_endpoints_and_targets_check_their_key_before_anything_is_sent() -> None:
    with pytest.raises(BadRequestError, match="remote endpoint's API key"):
        RemoteEndpoint("http://127.0.0.1:9/v1", "m", "sk-\x80").checked()
    with pytest.raises(BadRequestError, match=re.escape("API key for http://127.0.0.1:9/v1")):
        ModelTarget("m", engine="remote", url="http://127.0.0.1:9/v1", api_key="sk- x").check_remote()
    assert RemoteEndpoint("http://127.0.0.1:9/v1", "m", SECRET).checked().api_key == SECRET
