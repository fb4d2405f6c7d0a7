"""Dialogue scenes: every sound strip of the sequencer baked onto its character.

A *line* is one sound strip plus the mesh object that speaks it. Which object speaks a strip
is decided by a rule the user sees and edits in the panel (``scene.parley.strip_rule``):

* ``PREFIX``  — the strip's name starts with a key of the character table (longest key wins);
  with an empty table the part of the name before the first ``_``/``-``/space is taken as the
  object's name (``Alice_hello`` → ``Alice``);
* ``CHANNEL`` — the table maps a sequencer channel number to an object;
* ``TABLE``   — the table maps exact strip names to objects.

:class:`StripsRun` runs the lines one after the other through the same
:class:`session.GenerateSession` as the Generate button (engine child process, then an
all-or-nothing bake at the strip's frame); the modal operator, ``execute`` and
``batch.py --from-strips`` all drive it. Lines are baked once their engines are done, one
animation per character (see :class:`StripsRun`); Esc bakes the lines already generated and
drops the rest (nothing half-baked); the operator is one undo step.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import bpy
import numpy as np

from . import bake, formats
from .session import GenerateError, GenerateRequest, GenerateSession, describe_progress

RULES = ("PREFIX", "CHANNEL", "TABLE")


@dataclass
class Line:
    strip: str
    audio: str
    start_frame: int
    channel: int
    object_name: str


@dataclass
class Plan:
    lines: list[Line] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "strip: why", shown in the panel


def sound_strips(scene: bpy.types.Scene, selected_only: bool = False) -> list[Any]:
    """Sound strips in time order (then channel); 3.x/4.x ``sequences_all``, 5.0 ``strips_all``."""
    se = scene.sequence_editor
    if se is None:
        return []
    all_strips = se.strips_all if hasattr(se, "strips_all") else se.sequences_all
    out = [s for s in all_strips if s.type == "SOUND" and getattr(s, "sound", None) is not None
           and (s.select or not selected_only) and not s.mute]
    return sorted(out, key=lambda s: (s.frame_start, s.channel, s.name))


def character_for(strip_name: str, channel: int, rule: str, table: Mapping[str, str]) -> str | None:
    """Object name for one strip under ``rule`` (None: no character)."""
    if rule == "CHANNEL":
        return table.get(str(channel))
    if rule == "TABLE":
        return table.get(strip_name)
    if rule != "PREFIX":
        raise ValueError(f"unknown rule {rule!r}; use one of {', '.join(RULES)}")
    keys = sorted((k for k in table if k and strip_name.startswith(k)), key=len, reverse=True)
    if keys:
        return table[keys[0]]
    if table:
        return None
    head = re.split(r"[_\-\s.]", strip_name, maxsplit=1)[0]
    return head or None


def plan(scene: bpy.types.Scene, rule: str, table: Mapping[str, str], selected_only: bool = False) -> Plan:
    """Lines to bake and strips skipped (with the reason)."""
    out = Plan()
    for s in sound_strips(scene, selected_only):
        name = character_for(s.name, int(s.channel), rule, table)
        if name is None:
            out.skipped.append(f"{s.name}: no character for it under the {rule.lower()} rule")
            continue
        obj = bpy.data.objects.get(name)
        if obj is None or obj.type != "MESH":
            out.skipped.append(f"{s.name}: no mesh object named '{name}'")
            continue
        audio = os.path.abspath(bpy.path.abspath(s.sound.filepath, library=s.sound.library))
        out.lines.append(Line(s.name, audio, int(round(s.frame_start)), int(s.channel), obj.name))
    return out


def table_of(settings: Any) -> dict[str, str]:
    """The panel's character table as {key: object name} (rows without an object are ignored)."""
    return {row.key.strip(): row.object.name for row in settings.characters
            if row.key.strip() and row.object is not None}


@dataclass
class Progress:
    index: int  # 0-based line being generated
    total: int
    fraction: float  # over all lines
    text: str


def merge_lines(rest: np.ndarray, lines: list[tuple[int, np.ndarray]]) -> tuple[int, np.ndarray]:
    """One animation for one character from its lines [(start frame, (T,V,3))]: from one frame
    before the first line to one frame after the last, rest pose in the gaps (and in the two
    padding frames, which a mesh cache shows before/after its range), a later line overriding
    an earlier one where they overlap. Returns (first frame, frames)."""
    first = min(start for start, _ in lines) - 1
    last = max(start + len(f) - 1 for start, f in lines) + 1
    out = np.broadcast_to(rest.astype(np.float32), (last - first + 1, *rest.shape)).copy()
    for start, frames in sorted(lines, key=lambda x: x[0]):
        out[start - first:start - first + len(frames)] = frames
    return first, out


class StripsRun:
    """Lines one after another, then one bake per character.

    Why one bake per character instead of one per line: a character speaks several lines, and
    stacked per-line bakes do not play (a mesh cache shows its first/last frame outside its
    range and overrides the earlier one; a new shape-key action replaces the earlier one). So
    the engine outputs are kept until the run ends (or Esc), then each character gets one
    animation with its lines at their strips' frames and the rest pose between them. Each
    character's bake is all-or-nothing (``bake.bake``); the operator makes the run one undo step.
    """

    def __init__(self, scene: bpy.types.Scene, lines: list[Line], make_request: Callable[[Line], GenerateRequest],
                 clip_suffix: str = "dialogue"):
        if not lines:
            raise GenerateError("No sound strip has a character: check the strip rule and the character table.")
        self.scene = scene
        self.lines = lines
        self.make_request = make_request
        self.clip_suffix = clip_suffix
        self.index = 0
        self.session: GenerateSession | None = None
        self.outputs: list[str] = []  # engine outputs of finished lines (index = line)
        self.results: list[bake.BakeResult] = []
        self.warnings: list[str] = []  # the engine's, per line ("line 2: ..."), for the final report
        self.done = False
        self._tmp = tempfile.mkdtemp(prefix="parley_dialogue_")

    def prepare_all(self) -> None:
        """Check every line before the first engine starts (topology, files, shape keys)."""
        for line in self.lines:
            s = GenerateSession(self.scene, self.make_request(line))
            try:
                s.prepare()
            except (GenerateError, bake.BakeError) as exc:
                raise GenerateError(f"{line.strip} -> {line.object_name}: {exc}") from exc
            finally:
                s.cleanup()

    def step(self) -> Progress:
        """Poll the running line; keep its output when done and start the next one; bake all
        characters after the last line. A failing line raises GenerateError (nothing baked)."""
        n = len(self.lines)
        if self.done:
            return Progress(n, n, 1.0, "done")
        if self.session is None:
            self.session = GenerateSession(self.scene, self.make_request(self.lines[self.index]))
            self.session.start()
        st = self.session.poll()
        line = self.lines[self.index]
        if not st.finished:
            words, frac = describe_progress(st.stage, st.fraction)
            words = words.rsplit(" ", 1)[0]  # the percentage shown is the whole run's
            overall = (self.index + frac) / n
            return Progress(self.index, n, overall, f"line {self.index + 1}/{n} ({line.strip} -> "
                                                    f"{line.object_name}) {words} {int(round(overall * 100))}%")
        session, self.session = self.session, None
        self.warnings += [f"line {self.index + 1} ({line.strip}): {w}" for w in st.warnings]
        try:
            self.outputs.append(session.take_output(os.path.join(self._tmp, f"{self.index:04d}.pc2")))
        except GenerateError as exc:
            self.cancel()
            raise GenerateError(f"line {self.index + 1}/{n} ({line.strip}): {exc}") from exc
        self.index += 1
        if self.index < n:
            nxt = self.lines[self.index]
            return Progress(self.index, n, self.index / n,
                            f"line {self.index + 1}/{n} {nxt.strip} -> {nxt.object_name}: starting")
        self.bake_finished()
        return Progress(n, n, 1.0, "done")

    def bake_finished(self) -> list[bake.BakeResult]:
        """Bake the lines finished so far, one animation per character, then clean up."""
        try:
            by_obj: dict[str, list[tuple[int, np.ndarray]]] = {}
            for line, path in zip(self.lines, self.outputs):
                by_obj.setdefault(line.object_name, []).append((line.start_frame, formats.read_pc2(path)))
            for name, parts in by_obj.items():
                obj = bpy.data.objects.get(name)
                if obj is None:
                    raise GenerateError(f"Object '{name}' was deleted during the run.")
                mesh = obj.data
                assert isinstance(mesh, bpy.types.Mesh)
                rest = np.empty(len(mesh.vertices) * 3, np.float32)
                mesh.vertices.foreach_get("co", rest)
                first, frames = merge_lines(rest.reshape(-1, 3), parts)
                merged = os.path.join(self._tmp, f"{bake.clip_name(name)}.pc2")
                formats.write_pc2(merged, frames, fps=bake.scene_fps(self.scene))
                req = self.make_request(self.lines[0])
                opts = bake.BakeOptions(clip=f"{bake.clip_name(name)}_{self.clip_suffix}", mode=req.mode,
                                        start_frame=first, relative_keys=req.relative_keys, cache_dir=req.cache_dir)
                self.results.append(bake.bake(self.scene, obj, merged, opts))
        finally:
            self.done = True
            self._cleanup()
        return self.results

    def cancel(self, keep_finished: bool = False) -> None:
        """Stop the running engine (its line leaves nothing); ``keep_finished`` bakes the lines
        already generated (Esc in the window), otherwise nothing is baked."""
        if self.session is not None:
            self.session.cancel()
            self.session = None
        if keep_finished and self.outputs and not self.done:
            self.bake_finished()
        self.done = True
        self._cleanup()

    def _cleanup(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

    def run(self, on_line: Callable[[int, Line], Any] | None = None, poll: float = 0.05) -> list[bake.BakeResult]:
        """Synchronous (``execute``, batch): every line in order, then the bakes."""
        import time

        try:
            while not self.done:
                before = self.index
                self.step()
                if on_line is not None and self.index > before:
                    on_line(self.index, self.lines[self.index - 1])
                if not self.done:
                    time.sleep(poll)
        except BaseException:
            self.cancel()
            raise
        return self.results


def summary(run: StripsRun) -> str:
    n = len(run.outputs)
    names = ", ".join(r.clip for r in run.results[:4]) + ("…" if len(run.results) > 4 else "")
    return f"{n} line(s) baked onto {len(run.results)} character(s) ({names})"
