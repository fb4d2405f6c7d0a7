"""Real-window scenarios: Generate for All Strips (dialogue scenes) and the shipped-model dropdown."""
from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Generator
from typing import Any

import bpy
import numpy as np

import addon_suite as suite  # noqa: E402
from window_rig import (  # noqa: E402
    CFG,
    StatusSpy,
    addon_mod,
    clear_reports,
    click,
    engine_pid,
    ensure_parley_tab,
    expect,
    key,
    open_scene,
    parley_tmpdirs,
    pid_alive,
    warm_pid,
    reports,
    running,
    scenario,
    screenshot,
    set_engine,
    settings,
    view3d,
    wait_until,
)


def _fake_expected(obj: Any, t_count: int) -> np.ndarray:
    sys.path.insert(0, os.path.dirname(CFG["fake_engine"]))
    import fake_engine

    co = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", co)
    return fake_engine.fake_frames(co.reshape(-1, 3), t_count)


@scenario
def dialogue_all_strips() -> Generator[float, None, str]:
    """Generate for All Strips: each line on its character at its strip's frame, one undo step."""
    yield from open_scene("dialogue")
    set_engine("fake")
    s = settings(checkpoint_source="DEFAULT", bake_mode="CACHE", strip_rule="PREFIX", strips_selected_only=False)
    s.characters.clear()
    plan = addon_mod("operators_strips").dialogue_plan(bpy.context)
    got = [(ln.strip, ln.object_name, ln.start_frame) for ln in plan.lines]
    expect(got == [("Alice_hello", "Alice", 1), ("Bob_reply", "Bob", 40), ("Alice_bye", "Alice", 90)], f"plan {got}")
    # the channel rule through the panel's table gives the same assignment
    s.strip_rule = "CHANNEL"
    for channel, obj in (("1", "Alice"), ("2", "Bob")):
        row = s.characters.add()
        row.key, row.object = channel, bpy.data.objects[obj]
    plan2 = addon_mod("operators_strips").dialogue_plan(bpy.context)
    expect([(ln.strip, ln.object_name) for ln in plan2.lines] == [g[:2] for g in got], "channel rule differs")
    yield from ensure_parley_tab()
    before = suite.snapshot()
    clear_reports()
    with StatusSpy() as st:
        t0 = time.monotonic()
        res = click("parley.generate_strips")
        expect(res == {"RUNNING_MODAL"}, f"click returned {res}: {reports()}")
        shot = False
        while running():
            expect(time.monotonic() - t0 < CFG["timeout"], "the dialogue run did not finish")
            if not shot and addon_mod("modal_ui").current().fraction > 0.3:
                screenshot("dialogue_during")
                shot = True
            yield 0.1
    new = reports()
    expect(any("3 line(s) baked onto 2 character(s)" in r for r in new), f"reports {new}")
    lines = [t for t in st.texts if t and "line " in t]
    for i in (1, 2, 3):
        expect(any(f"line {i}/3" in t for t in lines), f"no progress for line {i}: {st.texts}")
    expect(st.texts[-1] is None, "status bar not cleared")
    checked = []
    for name in ("Alice", "Bob"):
        mods = [m for m in bpy.data.objects[name].modifiers if m.type == "MESH_CACHE"]
        expect([m.name for m in mods] == [f"Parley {name}_dialogue"], f"{name}: modifiers {[m.name for m in mods]}")
    for strip, obj_name, frame in got:  # each line plays at its strip's frame, exactly the engine's frames
        obj = bpy.data.objects[obj_name]
        sound = next(x for x in addon_mod("strips").sound_strips(bpy.context.scene) if x.name == strip)
        t_count = int(round(sound.frame_final_duration))  # the fake engine makes one frame per scene frame
        ref = _fake_expected(obj, t_count)
        for t in (0, t_count // 2):
            bpy.context.scene.frame_set(frame + t)
            err = float(np.abs(suite.evaluated(obj) - ref[t]).max())
            expect(err == 0.0, f"{strip}: |blender - engine| = {err:g} at frame {frame + t}")
        checked.append(f"{strip}@{frame}->{obj_name} exact")
    alice = bpy.data.objects["Alice"]
    rest = np.empty(len(alice.data.vertices) * 3, np.float32)
    alice.data.vertices.foreach_get("co", rest)
    for f in (70, 200):  # between Alice's two lines, and after her last: the rest pose
        bpy.context.scene.frame_set(f)
        expect(np.array_equal(suite.evaluated(alice), rest.reshape(-1, 3)), f"Alice not at rest at frame {f}")
    bpy.context.scene.frame_set(1)
    after = suite.snapshot()
    with bpy.context.temp_override(**view3d()):
        bpy.ops.ed.undo()
    yield 0.3
    undone = suite.snapshot()
    undone["files"] = before["files"]
    expect(undone == before, f"one undo did not remove the whole run: {suite.diff(before, undone)}")
    with bpy.context.temp_override(**view3d()):
        bpy.ops.ed.redo()
    yield 0.3
    expect(suite.snapshot() == after, "redo did not bring the run back")
    return f"{'; '.join(checked)}; one undo step; progress {lines[0]!r} … {lines[-1]!r}"


@scenario
def dialogue_esc_keeps_finished_lines() -> Generator[float, None, str]:
    yield from open_scene("dialogue")
    pidfile = os.path.join(CFG["work"], "dialogue.pid")
    set_engine("fake", {"PARLEY_FAKE_SLEEP": "0.6", "PARLEY_FAKE_PIDFILE": pidfile})
    settings(checkpoint_source="DEFAULT", bake_mode="SHAPEKEYS", strip_rule="PREFIX")
    bpy.context.scene.parley.characters.clear()
    before = suite.snapshot()
    tmp_before = parley_tmpdirs()
    clear_reports()
    res = click("parley.generate_strips")
    expect(res == {"RUNNING_MODAL"}, f"click returned {res}: {reports()}")
    run = next(iter(addon_mod("operators_strips")._RUNS))
    yield from wait_until(lambda: len(run.outputs) == 1 and run.session is not None
                          and run.session.job is not None and run.session.poll().fraction > 0, 120,
                          "line 2 to be running")
    with open(pidfile) as fh:
        pid = int(fh.read())
    key("ESC")
    yield from wait_until(lambda: not running(), 10, "the run to stop after Esc")
    yield 0.3
    expect(pid_alive(pid) and warm_pid() == pid and not addon_mod("warm_engine").current().jobs,
           f"the warm engine {pid} died on Esc or still runs line 2 (warm: {warm_pid()})")
    expect(parley_tmpdirs() <= tmp_before, "temporary folders left")
    alice, bob = bpy.data.objects["Alice"], bpy.data.objects["Bob"]
    expect(alice.data.shape_keys is not None and len(alice.data.shape_keys.key_blocks) > 1, "line 1 not kept")
    expect(bob.data.shape_keys is None, "line 2 (Bob) left something half-baked")
    new = reports()
    expect(any("cancelled after 1 of 3 lines" in r and "1 line(s) baked onto 1 character(s)" in r for r in new),
           f"reports {new}")
    with bpy.context.temp_override(**view3d()):
        bpy.ops.ed.undo()
    yield 0.3
    undone = suite.snapshot()
    expect(undone == before, f"undo after Esc: {suite.diff(before, undone)}")
    return f"Esc during line 2: line 1 kept, line 2's request stopped (engine pid {pid} still warm), nothing of it baked; {new[-1]!r}"


@scenario
def shipped_checkpoint_dropdown() -> Generator[float, None, str]:
    """The panel lists engine/assets/*.safetensors by name; the chosen file goes to the engine."""
    assets = os.path.join(os.path.dirname(addon_mod("operators").__file__), "engine", "assets")
    second = os.path.join(assets, "second_model.safetensors")
    shutil.copyfile(os.path.join(assets, "default.safetensors"), second)
    try:
        yield from open_scene("base")
        yield from ensure_parley_tab()
        s = settings(checkpoint_source="SHIPPED", audio_source="FILE", audio_path=CFG["wav_5s"], bake_mode="CACHE")
        names = addon_mod("checkpoints").shipped()
        labels = [c.label for c in names]
        on_disk = sorted(f for f in os.listdir(assets) if f.endswith(".safetensors"))
        expect("second_model.safetensors" in on_disk and "default.safetensors" in on_disk, f"assets: {on_disk}")
        expect(sorted(c.file for c in names) == on_disk, f"listed {labels}, on disk {on_disk}")
        s.shipped_checkpoint = "second_model.safetensors"
        expect(s.shipped_checkpoint == "second_model.safetensors", "could not choose the second model")
        expect(addon_mod("operators").checkpoint_path(bpy.context) == second, "checkpoint path")
        screenshot("shipped_dropdown")
        pidfile = os.path.join(CFG["work"], "shipped.pid")
        set_engine("fake", {"PARLEY_FAKE_SLEEP": "0.5", "PARLEY_FAKE_PIDFILE": pidfile})
        res = click("parley.generate")
        expect(res == {"RUNNING_MODAL"}, f"click returned {res}: {reports()}")
        yield from wait_until(lambda: engine_pid() is not None, 20, "the engine")
        with open(f"/proc/{engine_pid()}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
        key("ESC")
        yield from wait_until(lambda: not running(), 10, "the run to stop")
        i = argv.index(b"--checkpoint")
        expect(argv[i + 1].decode() == second, f"engine got --checkpoint {argv[i + 1]!r}")
    finally:
        os.unlink(second)
    return f"dropdown lists {labels}; the engine ran with --checkpoint {os.path.basename(second)}"
