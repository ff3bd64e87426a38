"""Drivers for the branch's physical devices, each behind a small interface with a fake.

- ``hardware.printer``: ``build_printer_from_config(dict, on_result=...) -> PrintSpooler``
  (ticket layout in ``hardware.ticket_layout``: ``TicketPrint``)
- ``hardware.keypad``: ``build_keypad_from_config(dict, handler) -> KeypadReader | FakeKeypad``
- ``hardware.led_sign``: ``build_led_sign_from_config(dict) -> SerialLedSign | FakeLedSign``
- ``hardware.announcer``: ``build_announcer_from_config(dict) -> Announcer``

Every driver runs its blocking I/O on its own thread; the public methods return at once, so
the node may call them from its asyncio loop. Config keys and protocols: docs/hardware.md.
Submodules are imported explicitly so that importing ``hardware`` costs nothing.
"""
