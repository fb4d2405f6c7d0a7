"""Window-only plumbing of the modal operators: timer, status bar, progress, panel redraw.

Why one module: these calls only run in a Blender window (the ``bpy``-module tests never
reach them), and each one is a way to crash or hang Blender, so they live in one place that
the real-window suite (tests/blender/window_driver.py) exercises:

* ``status`` writes the status bar through ``context.workspace.status_text_set`` (the first
  release called itself here: RecursionError, then a segfault);
* everything that can raise runs *before* ``modal_handler_add`` — an exception in ``invoke``
  after it left Blender 3.4 segfaulting at the next timer event;
* every timer added is removed in :meth:`ModalUI.end` and by :func:`end_all`, which the
  add-on's ``unregister`` and a ``load_pre`` handler call: unregistering an operator class
  frees its modal handler *without* calling ``cancel``, and a timer left registered makes
  Blender 4.5 hang at exit.
"""
from __future__ import annotations

from typing import Any

import bpy

_OPEN: list[ModalUI] = []  # UIs of running modal operators, newest last


def status(context: Any, text: str | None) -> None:
    """Status-bar text (None clears it); a no-op without a workspace (file loading, background)."""
    ws = getattr(context, "workspace", None)
    if ws is not None:
        ws.status_text_set(text)


def redraw_sidebars(context: Any) -> None:
    """Tag the 3D viewports' sidebars so the Parley panel shows the new progress."""
    screen = getattr(context, "screen", None)
    if screen is None:
        return
    for area in screen.areas:
        if area.type == "VIEW_3D":
            for region in area.regions:
                if region.type == "UI":
                    region.tag_redraw()


class ModalUI:
    """Timer + status text + progress of one modal run; :meth:`end` is idempotent."""

    def __init__(self, title: str, interval: float = 0.1, progress: bool = True):
        self.title = title
        self.interval = interval
        self.use_progress = progress
        self.text = ""
        self.fraction = 0.0
        self._timer: Any = None
        self._wm: Any = None
        self._progress_on = False
        self._shown = False

    def begin(self, context: Any) -> None:
        """Call before ``modal_handler_add``; if this raises nothing is left behind."""
        wm = context.window_manager
        try:
            self._wm = wm
            self._timer = wm.event_timer_add(self.interval, window=context.window)
            if self.use_progress:
                wm.progress_begin(0, 100)
                self._progress_on = True
            self.update(context, "starting…", 0.0)
        except BaseException:
            self.end(context)
            raise
        _OPEN.append(self)

    def update(self, context: Any, text: str, fraction: float | None = None) -> None:
        """Show ``text`` and ``fraction``; nothing is redrawn when neither changed (the modal timer
        calls this 10 times a second, and each redraw competes with the engine for the CPU)."""
        before = (self.text, self.percent)
        self.text = text
        if fraction is not None:
            self.fraction = min(1.0, max(0.0, float(fraction)))
        if (self.text, self.percent) == before and self._shown:
            return
        self._shown = True
        if self._progress_on and self._wm is not None:
            self._wm.progress_update(self.percent)
        status(context, f"{self.title}: {text} (Esc cancels)")
        redraw_sidebars(context)

    @property
    def percent(self) -> int:
        return int(round(self.fraction * 100))

    def end(self, context: Any = None) -> None:
        ctx = context if context is not None else bpy.context
        wm = self._wm
        if wm is not None and self._timer is not None:
            try:
                wm.event_timer_remove(self._timer)
            except (ReferenceError, RuntimeError):  # the window manager went away (file loaded)
                pass
        self._timer = None
        if self._progress_on and wm is not None:
            try:
                wm.progress_end()
            except (ReferenceError, RuntimeError):
                pass
        self._progress_on = False
        try:
            status(ctx, None)
            redraw_sidebars(ctx)
        except (ReferenceError, RuntimeError, AttributeError):
            pass
        if self in _OPEN:
            _OPEN.remove(self)


def current() -> ModalUI | None:
    """The newest running modal UI (the panel shows its progress)."""
    return _OPEN[-1] if _OPEN else None


def end_all() -> None:
    """End every open UI (unregister, file load): no timer, progress or status text survives."""
    for ui in list(_OPEN):
        ui.end()
    _OPEN.clear()
