"""Errors raised by the hardware drivers.

Library errors (python-escpos, pyserial, OSError, subprocess) are translated into these at
the driver boundary so the node only ever has to know this small hierarchy.
"""

from __future__ import annotations


class HardwareError(Exception):
    """Base class of every error a hardware driver raises."""


class HardwareConfigError(HardwareError, ValueError):
    """A driver's config dict is malformed (unknown key, wrong type, bad value)."""


class PrinterError(HardwareError):
    """A print job failed."""


class PrinterUnavailable(PrinterError):
    """The printer could not be reached (connect refused, device missing, timeout)."""


class PrinterQueueFull(PrinterError):
    """The spooler's bounded queue is full; the job was not accepted."""


class KeypadError(HardwareError):
    """A keypad line could not be parsed."""


class AnnouncerError(HardwareError):
    """Speech synthesis or playback failed."""
