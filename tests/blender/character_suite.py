""""Any character" checks inside real Blender (bpy 4.5 or 5.0), with the real engine.

Run by tests/test_addon_character_blender.py as ``<python with bpy> character_suite.py config.json
results.json``. It installs the built extension zip (addon_suite.install), builds each test
character from its ``.npz`` (exact vertex order and local axes), then clicks through the flows
an animator uses: Fit (stored, re-used, invalidated), landmarks and the fitted-template overlay,
Generate onto another topology as vertices and as the character's own shape keys (sparse and
dense weight curves on NLA tracks, checked against the engine's per-frame weights), a refused
fit, and picked landmarks. Results: ``{check: {"ok", "detail", "seconds"}}``.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import bpy
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import addon_suite as suite  # noqa: E402  (install, snapshot, evaluated: the same helpers)
from addon_suite import CFG, Fail, expect, sub  # noqa: E402

CHECKS: dict[str, Callable[[], str]] = {}
STATE: dict[str, Any] = {}


def check(fn: Callable[[], str]) -> Callable[[], str]:
    CHECKS[fn.__name__] = fn
    return fn


# ------------------------------------------------------------------------------ helpers
def make_character(path: str, name: str = "Character") -> bpy.types.Object:
    """A mesh object from a character .npz, vertex order and local axes kept, with its keys."""
    z = np.load(path)
    v, f = z["vertices"], z["faces"]
    me = bpy.data.meshes.new(name)
    me.vertices.add(len(v))
    me.vertices.foreach_set("co", v.astype(np.float32).ravel())
    me.loops.add(f.size)
    me.loops.foreach_set("vertex_index", f.astype(np.int32).ravel())
    me.polygons.add(len(f))
    me.polygons.foreach_set("loop_start", (np.arange(len(f)) * 3).astype(np.int32))
    me.polygons.foreach_set("loop_total", np.full(len(f), 3, np.int32))
    me.update()
    me.validate()
    obj = bpy.data.objects.new(name, me)
    bpy.context.scene.collection.objects.link(obj)
    if len(z["key_names"]):
        obj.shape_key_add(name="Basis", from_mix=False)
        for n, pos in zip(z["key_names"], z["keys"]):
            kb = obj.shape_key_add(name=str(n), from_mix=False)
            kb.data.foreach_set("co", pos.astype(np.float32).ravel())
    bpy.context.view_layer.objects.active = obj
    obj.select_set(True)
    return obj


def scene_with(char: str, save: bool = True) -> bpy.types.Object:
    suite.fresh_scene(f"char_{char}_{len(STATE)}", None, save=save)
    STATE[f"scene_{len(STATE)}"] = char
    return make_character(CFG[f"char_{char}"])


def panel_settings(target: str, audio: str, **kw: Any) -> Any:
    suite.settings(audio, kw.pop("mode", "CACHE"), **{k: v for k, v in kw.items() if k in ("start_frame",)})
    bpy.context.scene.parley.use_object_template = False
    c = bpy.context.scene.parley_character
    c.target = target
    for k, v in kw.items():
        if k != "start_frame":
            setattr(c, k, v)
    return c


def prefs_engine() -> None:
    prefs = bpy.context.preferences.addons[CFG["module"]].preferences
    prefs.interpreter_path = CFG["engine_python"]
    prefs.keep_engine_warm = False  # one-shot processes here; the warm engine: window_character.py


def fit_now(obj: bpy.types.Object) -> Any:
    """The Fit button's session, run synchronously (the modal path needs a window)."""
    cs = sub("character_session")
    req = cs.FitRequest(object_name=obj.name, python=CFG["engine_python"], engine_root=CFG["repo"],
                        up=bpy.context.scene.parley_character.up_axis)
    return cs.FitSession(bpy.context.scene, req).run(timeout=300)


def char_snapshot() -> dict[str, Any]:
    snap = suite.snapshot()
    snap["props"] = {o.name: sorted(k for k in o.keys()) for o in bpy.data.objects}
    snap["nla"] = {k.name: [t.name for t in k.animation_data.nla_tracks] if k.animation_data else []
                   for k in bpy.data.shape_keys}
    return snap


class WeightSpy:
    """Keeps the engine's weights (the reference the written curves are checked against)."""

    def __init__(self) -> None:
        self.cs = sub("character_session")
        self.orig = self.cs.cf.read_weights_json
        self.seen: list[Any] = []

    def __enter__(self) -> WeightSpy:
        def spy(path: str) -> Any:
            w = self.orig(path)
            self.seen.append(w)
            return w

        self.cs.cf.read_weights_json = spy
        return self

    def __exit__(self, *exc: object) -> None:
        self.cs.cf.read_weights_json = self.orig


def generate() -> tuple[set[str], str]:
    with suite.Spy() as spy:  # keeps the vertex output (PC2) too
        res, msg = suite.run_op()
    STATE["pc2"] = spy.copies
    return res, msg


def curve_values(key: Any, action: Any, name: str, frames: np.ndarray) -> np.ndarray:
    fc = next(fc for fc in _fcurves(action) if fc.data_path == f'key_blocks["{name}"].value')
    return np.array([fc.evaluate(float(f)) for f in frames])


def _fcurves(action: Any) -> list[Any]:
    if hasattr(action, "layers") and len(action.layers):  # 4.4+ slotted actions
        out = []
        for layer in action.layers:
            for strip in layer.strips:
                for slot in action.slots:
                    cb = strip.channelbag(slot)
                    if cb is not None:
                        out += list(cb.fcurves)
        return out
    return list(action.fcurves)


# ------------------------------------------------------------------------------ checks
@check
def fit_stored_reused_invalidated() -> str:
    """Fit button: the fit is stored on the object and valid; moving a vertex makes it stale;
    moving it back makes it valid again; it survives save + reload."""
    prefs_engine()
    obj = scene_with("arkit")
    ch = sub("character")
    panel_settings("VERTICES", CFG["wav_a"])
    t0 = time.perf_counter()
    r = fit_now(obj)
    secs = time.perf_counter() - t0
    expect(r.residual < 0.01, f"residual {r.residual}")
    st = ch.fit_state(obj, CFG["template_fingerprint"])
    expect(st.status == "valid", f"state {st.status}: {st.message}")
    co = obj.data.vertices[0].co.copy()
    obj.data.vertices[0].co.x += 0.001
    expect(ch.fit_state(obj).status == "stale", "a moved vertex did not invalidate the fit")
    obj.data.vertices[0].co = co
    expect(ch.fit_state(obj).status == "valid", "restoring the vertex did not make the fit valid again")
    bpy.ops.wm.save_mainfile()
    bpy.ops.wm.open_mainfile(filepath=bpy.data.filepath)
    obj = bpy.data.objects["Character"]
    expect(sub("character").fit_state(obj).status == "valid", "the fit did not survive save + reload")
    STATE["arkit_blend"] = bpy.data.filepath
    return f"fit {secs:.1f} s (engine: {r.seconds:.1f} s), residual {r.residual:.5f}, landmarks {r.landmark_source}"


@check
def overlays_landmarks_and_template() -> str:
    bpy.ops.wm.open_mainfile(filepath=STATE["arkit_blend"])
    obj = bpy.data.objects["Character"]
    bpy.context.view_layer.objects.active = obj
    expect(bpy.ops.parley.fit_overlay(kind="landmark") == {"FINISHED"}, "landmark overlay failed")
    ch = sub("character")
    lms = ch.overlays(obj, "landmark")
    expect(len(lms) == 6 and all(o.parent == obj for o in lms), f"{len(lms)} landmark empties")
    # they sit on the mesh: each within one remesh cell (4 mm) of a vertex (landmarks are surface points)
    co = ch.rest_vertices(obj)
    d = max(float(np.linalg.norm(co - np.array(o.location), axis=1).min()) for o in lms)
    expect(d < 0.004, f"a landmark is {d * 1000:.1f} mm from the mesh")
    expect(bpy.ops.parley.fit_overlay(kind="preview") == {"FINISHED"}, "preview failed")
    pv = ch.overlays(obj, "preview")
    expect(len(pv) == 1 and len(pv[0].data.vertices) == CFG["template_vertices"] and pv[0].display_type == "WIRE",
           "no wire copy of the template")
    # the fitted template lies on the character: mean distance to the nearest character vertex
    tv = np.array([v.co for v in pv[0].data.vertices])
    sample = tv[:: max(1, len(tv) // 400)]
    near = np.array([np.linalg.norm(co - p, axis=1).min() for p in sample])
    bpy.ops.parley.fit_overlay(kind="landmark")
    bpy.ops.parley.fit_overlay(kind="preview")
    expect(not ch.overlays(obj, "landmark") and not ch.overlays(obj, "preview"), "toggling did not remove overlays")
    return f"6 landmark empties within {d * 1000:.2f} mm; template median {np.median(near) * 1000:.2f} mm from the mesh"


@check
def generate_vertices_other_topology() -> str:
    bpy.ops.wm.open_mainfile(filepath=STATE["arkit_blend"])
    obj = bpy.data.objects["Character"]
    bpy.context.view_layer.objects.active = obj
    panel_settings("VERTICES", CFG["wav_a"], mode="CACHE", start_frame=1)
    bpy.context.scene.parley.set_frame_range = True
    probs = sub("operators").problems(bpy.context)
    expect(not probs, f"problems: {probs}")
    res, msg = generate()
    expect(res == {"FINISHED"}, f"generate: {res} {msg}")
    ref = suite.read_pc2_ref(STATE["pc2"][0])
    expect(ref.shape[1] == len(obj.data.vertices), f"engine output has {ref.shape[1]} vertices")
    detail = suite.verify_playback(obj, ref, 1, 0.0)
    return f"{ref.shape[0]} frames x {ref.shape[1]} vertices as a mesh cache; {detail}"


def _shape_generate(sparse: bool, start: int, audio: str) -> tuple[Any, Any, str]:
    c = panel_settings("SHAPEKEYS", audio, start_frame=start, curves="SPARSE" if sparse else "DENSE", tolerance=0.02)
    bpy.context.scene.parley.add_sound_strip = False
    with WeightSpy() as ws:
        res, msg = suite.run_op()
    expect(res == {"FINISHED"}, f"generate: {res} {msg}")
    expect(len(ws.seen) == 1, "the engine's weights were not read")
    return ws.seen[0], c, msg


@check
def generate_shape_keys_sparse_nla() -> str:
    """Weight curves: one Action on its own NLA track; each curve within tolerance of the
    engine's per-frame weights at every frame; far fewer keys than frames."""
    bpy.ops.wm.open_mainfile(filepath=STATE["arkit_blend"])
    obj = bpy.data.objects["Character"]
    bpy.context.view_layer.objects.active = obj
    w, c, _ = _shape_generate(True, 1, CFG["wav_a"])
    expect(w.path == "fit", f"path {w.path}")
    key = obj.data.shape_keys
    tracks = list(key.animation_data.nla_tracks)
    expect(len(tracks) == 1 and len(tracks[0].strips) == 1, f"{len(tracks)} NLA tracks")
    strip = tracks[0].strips[0]
    action = strip.action
    expect(key.animation_data.action is None, "the clip is also the active action (NLA would be bypassed)")
    T = w.weights.shape[0]
    frames = 1 + np.arange(T)
    worst, n_keys = 0.0, 0
    for j, n in enumerate(w.names):
        vals = curve_values(key, action, n, frames)
        worst = max(worst, float(np.abs(vals - w.weights[:, j]).max()))
    for fc in _fcurves(action):
        n_keys += len(fc.keyframe_points)
        expect(all(p.interpolation == "BEZIER" for p in fc.keyframe_points), "sparse keys are not Bezier")
    expect(worst <= c.tolerance + 1e-6, f"curve error {worst} > tolerance {c.tolerance}")
    dense = T * len(w.names)
    expect(n_keys < 0.5 * dense, f"{n_keys} keys for {dense} dense values: not sparse")
    moving = [n for j, n in enumerate(w.names) if np.ptp(w.weights[:, j]) > 0.05]
    expect(moving, "no key moves more than 0.05: the check would be vacuous")
    # the NLA plays it: at a frame where jawOpen-like keys are open, the evaluated value matches
    j = int(np.argmax(np.ptp(w.weights, axis=0)))
    t = int(np.argmax(w.weights[:, j]))
    bpy.context.scene.frame_set(1 + t)
    played = key.key_blocks[w.names[j]].value
    expect(abs(played - w.weights[t, j]) <= c.tolerance + 1e-4, f"NLA plays {played}, engine {w.weights[t, j]}")
    STATE["weights_a"] = w
    bpy.ops.wm.save_mainfile()
    return (f"{len(w.names)} keys ({', '.join(moving[:4])}...) solved through the fit; {n_keys} keyframes for "
            f"{T} frames ({100 * n_keys / dense:.1f}% of dense); worst curve error {worst:.4f} <= {c.tolerance}")


@check
def second_clip_stacks_and_dense_option() -> str:
    """A second line at a later frame: a second NLA track; each plays in its own range. Dense
    curves have one linear key per frame."""
    bpy.ops.wm.open_mainfile(filepath=STATE["arkit_blend"])
    obj = bpy.data.objects["Character"]
    bpy.context.view_layer.objects.active = obj
    start_b = 300
    w, _, _ = _shape_generate(False, start_b, CFG["wav_b"])
    key = obj.data.shape_keys
    tracks = list(key.animation_data.nla_tracks)
    expect(len(tracks) == 2, f"{len(tracks)} tracks after the second clip")
    action = tracks[1].strips[0].action
    T = w.weights.shape[0]
    for fc in _fcurves(action):
        expect(len(fc.keyframe_points) == T, f"dense curve has {len(fc.keyframe_points)} keys for {T} frames")
    j = int(np.argmax(np.ptp(w.weights, axis=0)))
    t = int(np.argmax(w.weights[:, j]))
    bpy.context.scene.frame_set(start_b + t)
    played = key.key_blocks[w.names[j]].value
    expect(abs(played - w.weights[t, j]) < 1e-4, f"second clip plays {played}, engine {w.weights[t, j]}")
    wa = STATE["weights_a"]
    ja = wa.names.index(w.names[j])
    ta = int(np.argmax(wa.weights[:, ja]))
    bpy.context.scene.frame_set(1 + ta)
    played_a = key.key_blocks[w.names[j]].value
    expect(abs(played_a - wa.weights[ta, ja]) <= 0.02 + 1e-4, f"first clip plays {played_a} with the second stacked")
    return f"2 NLA tracks ({', '.join(t.name for t in tracks)}); dense: {T} keys per curve; both clips play"


@check
def shape_keys_by_name_without_fit() -> str:
    """A Rhubarb-named rig with no fit: driven by key names; the report says so."""
    prefs_engine()
    obj = scene_with("rhubarb")
    panel_settings("SHAPEKEYS", CFG["wav_a"], start_frame=1)
    bpy.context.scene.parley.add_sound_strip = False
    with WeightSpy() as ws:
        res, msg = suite.run_op()
    expect(res == {"FINISHED"}, f"generate: {res} {msg}")
    w = ws.seen[0]
    expect(w.path == "names", f"path {w.path}")
    tracks = obj.data.shape_keys.animation_data.nla_tracks
    expect(len(tracks) == 1, "no NLA track")
    return f"{len(w.names)} Rhubarb keys driven by name ({', '.join(w.names)}), no fit"


@check
def refused_fit_changes_nothing_then_picked_landmarks_work() -> str:
    prefs_engine()
    obj = scene_with("noisy")
    panel_settings("VERTICES", CFG["wav_a"], up_axis="Z")
    before = char_snapshot()
    cs = sub("character_session")
    try:
        fit_now(obj)
        raise Fail("the fit of a rough scan was not refused")
    except cs.GenerateError as exc:
        msg = str(exc)
    expect("Fit refused" in msg and "place landmarks" in msg and "Parley panel > Landmarks" in msg,
           f"message does not say to place landmarks in the panel: {msg}")
    expect("--landmarks" not in msg, f"command-line advice in a panel message: {msg}")
    after = char_snapshot()
    expect(before == after, f"the refused fit changed the scene: {suite.diff(before, after)}")
    # pick the landmarks in Edit Mode, as a user does
    bpy.ops.object.mode_set(mode="EDIT")
    import bmesh

    for name, idx in CFG["noisy_landmarks"].items():
        bm = bmesh.from_edit_mesh(obj.data)
        for v in bm.verts:
            v.select = False
        bm.verts.ensure_lookup_table()
        bm.verts[idx].select = True
        bm.select_history.clear()
        bm.select_history.add(bm.verts[idx])
        bmesh.update_edit_mesh(obj.data)
        expect(bpy.ops.parley.landmark_assign(landmark=name) == {"FINISHED"}, f"assign {name} failed")
    bpy.ops.object.mode_set(mode="OBJECT")
    expect(sub("character").assigned_landmarks(obj) == CFG["noisy_landmarks"], "landmarks not stored")
    r = fit_now(obj)
    expect(r.landmark_source == "file" and r.residual < 0.01, f"picked landmarks: {r}")
    return f"refused: {msg[:150]}...; with 6 picked landmarks: residual {r.residual:.4f}"


@check
def y_up_centimetre_head_fits_with_auto_axis() -> str:
    prefs_engine()
    obj = scene_with("cm_yup")
    panel_settings("VERTICES", CFG["wav_a"], up_axis="AUTO")
    r = fit_now(obj)
    info = json.loads(obj["parley_fit_info"])
    expect(info["up"] == "y", f"up {info['up']}")
    return f"cm, Y up: residual {r.residual:.5f}, up found: {info['up']}"


# ------------------------------------------------------------------------------ main
def main() -> int:
    cfg_path, out_path = sys.argv[1], sys.argv[2]
    with open(cfg_path) as fh:
        CFG.update(json.load(fh))
    results: dict[str, Any] = {"_blender": bpy.app.version_string}
    only = CFG.get("only") or list(CHECKS)
    try:
        suite.install()
    except Exception:
        results["install"] = {"ok": False, "detail": traceback.format_exc()}
        only = []
    for name in only:
        t0 = time.perf_counter()
        try:
            results[name] = {"ok": True, "detail": CHECKS[name]()}
        except Exception:
            results[name] = {"ok": False, "detail": traceback.format_exc()}
        results[name]["seconds"] = round(time.perf_counter() - t0, 2)
        with open(out_path, "w") as fh:
            json.dump(results, fh, indent=1)
    try:
        bpy.ops.preferences.addon_disable(module=CFG["module"])
    except Exception:
        pass
    with open(out_path, "w") as fh:
        json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
