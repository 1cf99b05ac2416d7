"""Images in a chat turn: a file checked (size, really an image by its first bytes) and turned into an OpenAI content
part with a data URL, and the test whether a request carries image parts at all (OpenAI chat, Responses, Anthropic)."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from panel.errors import BadRequestError

MAX_IMAGE_BYTES = 10 * 1024 * 1024  # one image; a larger one is refused with its size
MAX_IMAGES = 8  # in one turn
# the part types that carry an image: OpenAI chat, the Responses API, Anthropic messages
IMAGE_PART_TYPES = frozenset({"image_url", "input_image", "image"})
_DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)", re.DOTALL)


@dataclass(frozen=True)
class ImagePart:
    """One checked image: its media type and bytes, sent as an OpenAI `image_url` part with a data URL."""

    media_type: str  # image/png, image/jpeg, image/webp, image/gif
    data: bytes
    name: str = "image"

    @property
    def data_url(self) -> str:
        return f"data:{self.media_type};base64,{base64.b64encode(self.data).decode('ascii')}"

    def content_part(self) -> dict[str, Any]:
        return {"type": "image_url", "image_url": {"url": self.data_url}}


def image_media_type(head: bytes) -> str | None:
    """The image type its first bytes say (PNG, JPEG, WebP, GIF), or None when they are not one of these."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


def image_part(data: bytes, name: str = "image") -> ImagePart:
    """Bytes checked as one image; BadRequestError saying what is wrong (too large, not an image)."""
    if len(data) > MAX_IMAGE_BYTES:
        raise BadRequestError(
            f"{name} is {len(data) / 1024 / 1024:.1f} MB; an image may be at most {MAX_IMAGE_BYTES // 1024 // 1024} MB"
        )
    media_type = image_media_type(data[:16])
    if media_type is None:
        raise BadRequestError(f"{name} is not a PNG, JPEG, WebP or GIF image")
    return ImagePart(media_type, data, name)


def image_part_from_file(path: str | Path) -> ImagePart:
    """An uploaded file checked as one image (its size is read before its bytes)."""
    file = Path(path)
    try:
        size = file.stat().st_size
    except OSError:
        raise BadRequestError(f"the image {file.name} could not be read") from None
    if size > MAX_IMAGE_BYTES:
        raise BadRequestError(
            f"{file.name} is {size / 1024 / 1024:.1f} MB; an image may be at most {MAX_IMAGE_BYTES // 1024 // 1024} MB"
        )
    return image_part(file.read_bytes(), file.name)


def image_part_from_data_url(url: str, name: str = "image") -> ImagePart:
    """A `data:image/...;base64,...` URL checked as one image (its bytes, not the type it claims)."""
    match = _DATA_URL.fullmatch(url.strip())
    if match is None:
        raise BadRequestError(f"{name} must be a data URL: data:image/png;base64,...")
    if len(match["data"]) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise BadRequestError(f"{name} is larger than {MAX_IMAGE_BYTES // 1024 // 1024} MB")
    try:
        data = base64.b64decode(match["data"], validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError(f"{name}: the data URL is not valid base64") from None
    return image_part(data, name)


def checked_images(parts: list[ImagePart] | tuple[ImagePart, ...]) -> tuple[ImagePart, ...]:
    if len(parts) > MAX_IMAGES:
        raise BadRequestError(f"at most {MAX_IMAGES} images in one message; got {len(parts)}")
    return tuple(parts)


def user_content(text: str, images: tuple[ImagePart, ...]) -> str | list[dict[str, Any]]:
    """A user message's content: the text alone, or the text part then one image part per image."""
    if not images:
        return text
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    return [*parts, *(image.content_part() for image in images)]


def has_image_parts(request: dict[str, Any]) -> bool:
    """True when a request's messages (or Responses `input`) hold an image part of any API's shape."""
    for key in ("messages", "input"):
        items = request.get(key)
        if not isinstance(items, list):
            continue
        for item in items:
            content = item.get("content") if isinstance(item, dict) else None
            if isinstance(content, list) and any(
                isinstance(part, dict) and part.get("type") in IMAGE_PART_TYPES for part in content
            ):
                return True
    return False
