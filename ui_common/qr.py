"""Render a QR code (``qrcode`` library) into a Kivy texture: the kiosk's on-screen ticket, the
enrollment panel's code."""

from __future__ import annotations

import qrcode
from kivy.graphics.texture import Texture


def qr_matrix(data: str) -> list[list[bool]]:
    """The module matrix of ``data`` with a 4-module quiet zone (True = dark)."""
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=4)
    qr.add_data(data)
    qr.make(fit=True)
    return [list(row) for row in qr.get_matrix()]


def qr_texture(data: str) -> Texture:
    """An RGBA texture, one texel per module (4 bytes each keeps rows aligned whatever the
    size), nearest filtering so it scales crisply."""
    matrix = qr_matrix(data)
    size = len(matrix)
    # Kivy textures start at the bottom row.
    dark, light = b"\x00\x00\x00\xff", b"\xff\xff\xff\xff"
    buf = b"".join(dark if cell else light for row in reversed(matrix) for cell in row)
    texture = Texture.create(size=(size, size), colorfmt="rgba")
    texture.blit_buffer(buf, colorfmt="rgba", bufferfmt="ubyte")
    texture.mag_filter = "nearest"
    texture.min_filter = "nearest"
    return texture
