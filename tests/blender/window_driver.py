"""Drive the Parley add-on in a real Blender window, the way an animator uses it.

Run by tests/test_addon_window.py as

    xvfb-run -a -s "-screen 0 1280x800x24" blender --factory-startup --enable-event-simulate \\
        -p 0 0 1280 800 --python window_driver.py -- config.json results.json

Blender starts with a window; ``bpy.app.timers`` runs :func:`_tick`, which advances one
scenario generator at a time (a scenario ``yield``s the seconds to wait, so Blender keeps
processing events, redraws, the add-on's modal timer and the engine's output in between).
Clicks are real: ``bpy.ops.parley.generate('INVOKE_DEFAULT')`` under a
``temp_override(window, area, region)`` of the 3D viewport runs ``invoke`` and ``modal``
exactly as a button press does; Esc is ``Window.event_simulate``; reports are read back from
the window manager with ``ui.reports_to_textblock``; pictures come from
``screen.screenshot``. Each scenario writes ``{"ok", "detail", "seconds", "data"}`` into the
results JSON as soon as it ends, and prints ``=== BEGIN/END <name>`` markers so the pytest
side can show (and search) each scenario's part of the Blender log.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import window_rig  # noqa: E402
import window_scenarios  # noqa: E402,F401  (registers the scenarios, in this order)
import window_scenarios_dialogue  # noqa: E402,F401
import window_scenarios_warm  # noqa: E402,F401

window_rig.main()
