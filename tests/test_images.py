"""Images in a chat turn: the magic-byte check, the size limit, data URLs and the content parts a turn sends."""

from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path

import pytest

from panel.errors import BadRequestError
from panel.images import (
    MAX_IMAGE_BYTES,
    MAX_IMAGES,
    checked_images,
    has_image_parts,
    image_media_type,
    image_part,
    image_part_from_data_url,
    image_part_from_file,
    user_content,
)


def png_bytes(width: int = 2, height: int = 2) -> bytes:
    """A real, valid PNG (RGB, one colour), made without an imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("head", "media_type"),
    [
        (png_bytes(), "image/png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image/jpeg"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"GIF89a\x01\x00\x01\x00", "image/gif"),
        (b"GIF87a\x01\x00\x01\x00", "image/gif"),
        (b"%PDF-1.7\n", None),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", None),
        (b"", None),
    ],
)
def test_the_first_bytes_say_the_image_type(head: bytes, media_type: str | None) -> None:
    assert image_media_type(head[:16]) == media_type


def test_a_png_file_becomes_an_image_url_part_with_its_data_url(tmp_path: Path) -> None:
    data = png_bytes()
    path = tmp_path / "red.png"
    path.write_bytes(data)
    part = image_part_from_file(path)
    assert part.media_type == "image/png" and part.name == "red.png"
    url = part.content_part()["image_url"]["url"]
    assert part.content_part()["type"] == "image_url"
    assert url.startswith("data:image/png;base64,") and base64.b64decode(url.split(",", 1)[1]) == data
    assert image_part_from_data_url(url) == part.__class__("image/png", data, "image")


def test_a_file_that_is_not_an_image_or_too_large_is_refused_with_why(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"  # the name says PNG; the bytes do not
    text.write_text("hello")
    with pytest.raises(BadRequestError, match=r"notes\.png is not a PNG, JPEG, WebP or GIF image"):
        image_part_from_file(text)
    big = tmp_path / "big.png"
    big.write_bytes(png_bytes() + b"\x00" * MAX_IMAGE_BYTES)
    with pytest.raises(BadRequestError, match=r"big.png is 10.0 MB; an image may be at most 10 MB"):
        image_part_from_file(big)
    with pytest.raises(BadRequestError, match="could not be read"):
        image_part_from_file(tmp_path / "gone.png")
    with pytest.raises(BadRequestError, match="at most 10 MB"):
        image_part(b"\xff\xd8\xff" + b"\x00" * MAX_IMAGE_BYTES)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://example.com/cat.png", "must be a data URL"),
        ("data:image/png;base64,***", "not valid base64"),
        ("data:image/png;base64," + base64.b64encode(b"plain text").decode(), "is not a PNG"),
        ("data:image/png;base64," + "A" * (MAX_IMAGE_BYTES * 4 // 3 + 8), "larger than 10 MB"),
    ],
)
def test_a_bad_data_url_is_refused_with_why(url: str, why: str) -> None:
    with pytest.raises(BadRequestError, match=why):
        image_part_from_data_url(url, "image 1")


def test_a_data_url_is_judged_by_its_bytes_not_the_type_it_claims() -> None:
    claimed_jpeg = "data:image/jpeg;base64," + base64.b64encode(png_bytes()).decode()
    assert image_part_from_data_url(claimed_jpeg).media_type == "image/png"


def test_user_content_is_text_alone_or_text_then_image_parts() -> None:
    part = image_part(png_bytes())
    assert user_content("hi", ()) == "hi"
    content = user_content("what is this?", (part, part))
    assert isinstance(content, list) and content[0] == {"type": "text", "text": "what is this?"}
    assert [p["type"] for p in content] == ["text", "image_url", "image_url"]
    assert user_content("", (part,)) == [part.content_part()], "an image alone needs no empty text part"
    with pytest.raises(BadRequestError, match=f"at most {MAX_IMAGES} images"):
        checked_images([part] * (MAX_IMAGES + 1))


def test_image_parts_are_found_in_each_api_shape() -> None:
    url = image_part(png_bytes()).data_url
    chat = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]}
    responses = {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": url}]}]}
    anthropic = {"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64"}}]}]}
    for request in (chat, responses, anthropic):
        assert has_image_parts(request)
    text_parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    for request in (text_parts, {"messages": [{"role": "user", "content": "hi"}]}, {"input": "hi"}, {"prompt": "x"}):
        assert not has_image_parts(request)
    assert not has_image_parts({"messages": ["not a message", {"content": ["not a part"]}]})
