"""Bytes as JSON carries them: base64 strings, shared by both protocols' codecs."""

from __future__ import annotations

import base64
import binascii

from service.errors import BadRequest


def decode_base64(text: object, where: str) -> bytes:
    """A base64 string (or a browser's ``data:`` URL) as bytes; ``where`` names the field."""
    if not isinstance(text, str):
        raise BadRequest(f"{where} must be a base64 string")
    if text.startswith("data:"):  # a data URL, as a browser's FileReader makes it
        _, _, text = text.partition(",")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where} is not valid base64") from None
