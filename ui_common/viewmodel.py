"""The base of the three screens' view-models: translation, connection state, tasks.

Each app's view-model (``kiosk_ui``, ``counter_ui``, ``display_ui`` ``viewmodels.py``)
subclasses :class:`NodeViewModel`, names its gettext ``catalogs`` and rebuilds its own
translated rows in :meth:`retranslate`. Layouts bind to ``vm.tr._('...')`` (an observable
:class:`~ui_common.i18n.Translation`), so a language switch re-evaluates every text rule.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, ClassVar

from kivy.clock import Clock
from kivy.event import EventDispatcher
from kivy.properties import BooleanProperty, StringProperty

from .i18n import SOURCE_LANGUAGE, Catalogs, Translation

logger = logging.getLogger(__name__)


class NodeViewModel(EventDispatcher):
    """State every screen has: its language, whether its node answers, its running tasks."""

    #: The app's gettext domain (set by each subclass).
    catalogs: ClassVar[Catalogs]
    language = StringProperty(SOURCE_LANGUAGE)
    #: True while the node's stream is down.
    offline = BooleanProperty(True)
    #: The one-time code this device shows while it waits for an admin (``smartq enroll``
    #: writes ``enroll-code.json`` in the data dir), and its QR text; "" once enrolled.
    enroll_code = StringProperty("")
    enroll_qr = StringProperty("")
    #: True while the "Enroll this device" panel covers the screen: from the first code seen
    #: until the code file is gone *and* the node answers.
    enrolling = BooleanProperty(False)

    def __init__(self, *, language: str = SOURCE_LANGUAGE, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tr = Translation(self.catalogs, language)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.language = language

    # --- strings --------------------------------------------------------------------------

    def t(self, msgid: str, **values: object) -> str:
        """The current language's text for ``msgid`` (Python side; layouts use ``vm.tr._``)."""
        return self.tr._(msgid, **values)

    def on_language(self, _: Any, language: str) -> None:
        if language != self.tr.language:
            self.tr.switch(language)
            self.retranslate()

    def retranslate(self) -> None:
        """Rebuild texts the view-model composed itself (rows, notices) after a switch."""

    def localized(self, names: dict[str, Any] | None, fallback: str) -> str:
        """A name from configuration (``names = {en = ..., fr = ...}``) in the current
        language, else English, else ``fallback``."""
        names = names or {}
        return str(names.get(self.language) or names.get(SOURCE_LANGUAGE) or fallback)

    # --- connection -----------------------------------------------------------------------

    def set_connected(self, connected: bool, reason: str = "") -> None:
        """Called by the node client whenever its stream connects or drops."""
        self.offline = not connected
        self._update_enrolling()
        if not connected:
            logger.info("%s offline: %s", type(self).__name__, reason)
        self.connection_changed()

    def connection_changed(self) -> None:
        """Hook for subclasses (the display's status line)."""

    # --- enrollment -----------------------------------------------------------------------

    def poll_enrollment(self, data_dir: Path) -> None:
        """Read ``enroll-code.json`` once (a small file; cheap enough every few seconds)."""
        from appliance.enroll import pending_code

        pending = pending_code(data_dir) or {}
        self.enroll_code = str(pending.get("code") or "")
        self.enroll_qr = str(pending.get("qr") or self.enroll_code)
        self._update_enrolling()

    def watch_enrollment(self, data_dir: Path, every: float = 2.0) -> Any:
        """Poll ``data_dir`` now and every ``every`` seconds on the Kivy clock (``--data-dir``)."""
        self.poll_enrollment(data_dir)
        return Clock.schedule_interval(lambda dt: self.poll_enrollment(data_dir), every)

    def _update_enrolling(self) -> None:
        if self.enroll_code:
            self.enrolling = True
        elif self.enrolling and not self.offline:
            self.enrolling = False

    # --- tasks ----------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run an action on the app's asyncio loop, keeping a reference until it ends."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
