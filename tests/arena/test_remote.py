"""A remote endpoint as an arena side: what may be shown of it (never its key) and the URLs it refuses."""

from __future__ import annotations

import pytest

from panel.calls.remote import RemoteEndpoint
from panel.errors import BadRequestError

KEY = "sk-never-shown-123"


def test_the_key_is_never_in_what_is_shown() -> None:
    endpoint = RemoteEndpoint("https://api.example.org/v1/", "big-model", KEY).checked()
    assert endpoint.label == "big-model @ https://api.example.org/v1"
    assert endpoint.base_url == "https://api.example.org"
    assert KEY not in repr(endpoint) and KEY not in endpoint.label and KEY not in str(endpoint)


@pytest.mark.parametrize(
    ("url", "model"),
    [
        ("ftp://example.org/v1", "m"),
        ("https://user:pw@example.org/v1", "m"),
        ("https://example.org/v1?key=x", "m"),
        ("example.org", "m"),
        ("https://example.org/v1", " "),
    ],
)
def test_a_url_that_is_not_a_plain_base_url_or_no_model_is_refused(url: str, model: str) -> None:
    with pytest.raises(BadRequestError):
        RemoteEndpoint(url, model, KEY).checked()
