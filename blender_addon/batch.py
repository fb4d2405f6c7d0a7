"""Headless batch baking: audio clips in, baked .blend files out.

    blender -b scene.blend --python-exit-code 1 -P blender_addon/batch.py -- \\
        --audio a.wav [--audio b.wav] [--audio-dir clips/] --object Face \\
        [--checkpoint C.safetensors] [--postprocess lipclose|none] --mode cache|shapekeys --out baked.blend

    python blender_addon/batch.py --scene scene.blend | --mesh head.obj  … (bpy module)

    blender -b dialogue.blend --python-exit-code 1 -P blender_addon/batch.py -- --from-strips \
        [--strip-rule prefix|channel|table] [--map KEY=OBJECT …] [--selected-strips] --out baked.blend

``--from-strips`` bakes every sound strip of the scene onto its character (the panel's
*Generate for All Strips*; see ``strips.py`` for the rules) and saves one .blend.

Synchronous on purpose: in background mode modal operators and timers never run, so this
drives :class:`session.GenerateSession` directly (the same code as the Generate button).
One clip → ``--out`` is the .blend written. Several clips → each clip is baked onto a fresh
copy of the scene and saved as its own file: ``--out`` must be a folder (``<clip>.blend``
inside) or contain ``{clip}``. Mesh caches go to ``parley_cache/`` next to each output file.
A ``line.txt`` next to ``line.wav`` is that line's transcript: it times the lip closures (engine
``--transcript``; ``--no-transcript`` ignores it).
Prints one line per clip; exits 1 (message on stderr) if any clip failed, 2 on bad arguments.
One warm engine (``warm_engine.py``: model loaded once) serves every clip and line of the run;
``--cold`` starts a fresh engine process per clip instead.
"""
from __future__ import annotations

import argparse
import glob
import importlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aiff", ".aif")


def _addon_modules() -> tuple[ModuleType, ModuleType, ModuleType, ModuleType]:
    """Import this add-on's modules whatever the package is called ('blender_addon' in the
    repository, the extension id once installed) — this file is run as a plain script."""
    pkg_dir = Path(__file__).resolve().parent
    # run as a script, Python put this folder first on sys.path: its modules (session, bake…)
    # must only be importable as the package's submodules
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != pkg_dir]
    if str(pkg_dir.parent) not in sys.path:
        sys.path.insert(0, str(pkg_dir.parent))
    name = pkg_dir.name
    return (importlib.import_module(f"{name}.session"), importlib.import_module(f"{name}.bake"),
            importlib.import_module(f"{name}.engine_process"), importlib.import_module(f"{name}.strips"))


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="batch.py", description="Bake Parley facial animation headless.")
    p.add_argument("--audio", action="append", default=[], help="audio file (repeatable)")
    p.add_argument("--audio-dir", help="bake every audio file in this folder (sorted)")
    p.add_argument("--object", help="mesh object to animate (default: the only mesh / active object)")
    p.add_argument("--checkpoint", help=".safetensors checkpoint (default: the bundled one)")
    p.add_argument("--mode", choices=["cache", "shapekeys"], default="cache")
    p.add_argument("--relative-keys", action="store_true", help="shapekeys mode: relative keys")
    p.add_argument("--out", required=True, help="output .blend (one clip), or folder / pattern with {clip}")
    p.add_argument("--scene", help="(python + bpy) .blend to open when Blender did not load one")
    p.add_argument("--mesh", help="(python + bpy) build a scene from this .obj when no .blend is given")
    p.add_argument("--start-frame", type=int, default=1)
    p.add_argument("--fps", type=float, help="animation fps (default: the scene's)")
    p.add_argument("--set-fps", action="store_true", help="also set the scene fps to --fps / the scene's")
    p.add_argument("--set-range", action="store_true", help="set the scene frame range to the clip")
    p.add_argument("--no-sound", action="store_true", help="do not add the audio as a sound strip")
    p.add_argument("--no-template", action="store_true",
                   help="use the checkpoint's own face instead of the object's rest shape")
    p.add_argument("--style", help="style reference (.npy or .pc2)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--postprocess", choices=["lipclose", "none"], default=None,
                   help="lipclose: shut the lips on /p b m/ heard in the audio; none: the model's output as is "
                        "(default: the engine's, lipclose)")
    p.add_argument("--no-transcript", action="store_true",
                   help="ignore line.txt next to line.wav (by default it is the line's transcript, which times "
                        "the lip closures)")
    p.add_argument("--python", dest="python", default="",
                   help="interpreter that runs the engine (default: this one)")
    p.add_argument("--engine-script", default="",
                   help="run this script instead of 'python -m engine' (a custom engine build, tests)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per clip before giving up")
    p.add_argument("--cold", action="store_true",
                   help="a fresh engine process per clip instead of one warm engine for the whole run")
    p.add_argument("--from-strips", action="store_true",
                   help="bake every sound strip of the scene onto its character (one .blend out)")
    p.add_argument("--strip-rule", choices=["prefix", "channel", "table"], default="prefix",
                   help="--from-strips: how a strip finds its character (see strips.py)")
    p.add_argument("--map", action="append", default=[], metavar="KEY=OBJECT",
                   help="--from-strips: a row of the character table (prefix, channel or strip name)")
    p.add_argument("--selected-strips", action="store_true", help="--from-strips: selected strips only")
    return p.parse_args(list(argv))


def collect_audio(args: argparse.Namespace) -> list[str]:
    clips = [os.path.abspath(a) for a in args.audio]
    if args.audio_dir:
        if not os.path.isdir(args.audio_dir):
            raise SystemExit(_fail(f"--audio-dir {args.audio_dir} is not a folder", 2))
        found = sorted(f for f in glob.glob(os.path.join(args.audio_dir, "*")) if f.lower().endswith(AUDIO_EXTS))
        if not found:
            raise SystemExit(_fail(f"no audio files ({', '.join(AUDIO_EXTS)}) in {args.audio_dir}", 2))
        clips += [os.path.abspath(f) for f in found]
    if not clips:
        raise SystemExit(_fail("nothing to do: give --audio FILE and/or --audio-dir DIR", 2))
    for c in clips:
        if not os.path.isfile(c):
            raise SystemExit(_fail(f"audio file not found: {c}", 2))
    return clips


def output_path(out: str, clip: str, several: bool) -> str:
    if "{clip}" in out:
        return os.path.abspath(out.replace("{clip}", clip))
    if out.endswith(("/", os.sep)) or os.path.isdir(out):
        return os.path.abspath(os.path.join(out, f"{clip}.blend"))
    if several:
        raise SystemExit(_fail("several clips: --out must be a folder or contain {clip}", 2))
    return os.path.abspath(out)


def _fail(msg: str, code: int) -> int:
    print(f"parley batch: error: {msg}", file=sys.stderr, flush=True)
    return code


def load_scene(args: argparse.Namespace, source_blend: str) -> None:
    """Fresh copy of the input scene for each clip."""
    import bpy

    if source_blend:
        bpy.ops.wm.open_mainfile(filepath=source_blend)
    elif args.mesh:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        # Parley meshes are Z-up (Blender's own convention): import them without axis conversion
        bpy.ops.wm.obj_import(filepath=os.path.abspath(args.mesh), forward_axis="Y", up_axis="Z")
        imported = list(bpy.context.selected_objects)
        if args.object and imported:
            imported[0].name = args.object


def find_object(name: str | None) -> str:
    import bpy

    if name:
        if bpy.data.objects.get(name) is None:
            names = ", ".join(o.name for o in bpy.data.objects if o.type == "MESH") or "none"
            raise ValueError(f"no object named '{name}' (meshes in the scene: {names})")
        return name
    meshes = [o for o in bpy.data.objects if o.type == "MESH"]
    if len(meshes) == 1:
        return meshes[0].name
    active = bpy.context.view_layer.objects.active if bpy.context.view_layer else None
    if active is not None and active.type == "MESH":
        return active.name
    raise ValueError(f"{len(meshes)} meshes in the scene: choose one with --object")


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    session_mod, bake_mod, engine_process, strips_mod = _addon_modules()
    import bpy

    if args.from_strips:
        return from_strips(args, session_mod, strips_mod, engine_process)
    clips = collect_audio(args)
    source_blend = bpy.data.filepath
    if not source_blend:
        if args.scene:
            source_blend = os.path.abspath(args.scene)
            if not os.path.isfile(source_blend):
                return _fail(f"--scene {source_blend} not found", 2)
        elif not args.mesh:
            return _fail("no scene: run inside Blender with a .blend, or give --scene or --mesh", 2)
    engine_root = engine_process.find_engine_root(Path(__file__).resolve().parent)
    failures = 0
    for i, audio in enumerate(clips, 1):
        clip = bake_mod.clip_name(audio)
        out = output_path(args.out, clip, len(clips) > 1)
        tmp_out = out[:-6] + ".parley-tmp.blend" if out.endswith(".blend") else out + ".parley-tmp.blend"
        t0 = time.perf_counter()
        try:
            load_scene(args, source_blend)
            obj_name = find_object(args.object)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            # save first so '//parley_cache' resolves next to the output file
            bpy.ops.wm.save_as_mainfile(filepath=tmp_out, check_existing=False)
            req = session_mod.GenerateRequest(
                object_name=obj_name, audio_path=audio, checkpoint=args.checkpoint, python=args.python,
                engine_root=engine_root, device=args.device,
                mode="CACHE" if args.mode == "cache" else "SHAPEKEYS", start_frame=args.start_frame,
                fps=args.fps, relative_keys=args.relative_keys, add_sound_strip=not args.no_sound,
                set_frame_range=args.set_range, set_scene_fps=args.set_fps,
                use_object_template=not args.no_template, style_path=args.style, clip=clip,
                postprocess=args.postprocess, use_transcript=not args.no_transcript,
                engine_entry=(os.path.abspath(args.engine_script),) if args.engine_script else ("-m", "engine"),
                warm=not args.cold)
            session = session_mod.GenerateSession(bpy.context.scene, req)
            t_engine = time.perf_counter()
            result = session.run(timeout=args.timeout)
            t_bake = result.seconds
            bpy.ops.wm.save_mainfile()
            if os.path.exists(tmp_out + "1"):  # Blender's backup of the first save
                os.unlink(tmp_out + "1")
            os.replace(tmp_out, out)
            where = result.cache_file if result.mode == "CACHE" else f"{len(result.shape_keys)} shape keys"
            for w in result.warnings:
                print(f"parley: [{i}/{len(clips)}] {clip}: warning: {w}", flush=True)
            print(f"parley: [{i}/{len(clips)}] {clip}: {result.frames} frames from frame {result.start_frame} "
                  f"({result.mode.lower()}: {where}) -> {out} "
                  f"(engine {time.perf_counter() - t_engine - t_bake:.1f} s, bake {t_bake:.2f} s, "
                  f"total {time.perf_counter() - t0:.1f} s, engine pid {session.job.pid})", flush=True)
        except (Exception, SystemExit) as exc:
            failures += 1
            for leftover in (tmp_out, tmp_out + "1"):
                if os.path.exists(leftover):
                    os.unlink(leftover)
            print(f"parley: [{i}/{len(clips)}] {clip}: FAILED: {exc}", flush=True)
            _fail(f"{clip}: {exc}", 1)
    if failures:
        return _fail(f"{failures} of {len(clips)} clip(s) failed", 1)
    return 0


def from_strips(args: argparse.Namespace, session_mod: ModuleType, strips_mod: ModuleType,
                engine_process: ModuleType) -> int:
    """Every sound strip of the loaded scene → its character; saves one .blend (``--out``)."""
    import bpy

    if not bpy.data.filepath:
        if not args.scene or not os.path.isfile(args.scene):
            return _fail("--from-strips needs a .blend: blender -b scene.blend … or --scene", 2)
        bpy.ops.wm.open_mainfile(filepath=os.path.abspath(args.scene))
    table = {}
    for item in args.map:
        key, sep, obj = item.partition("=")
        if not sep or not key or not obj:
            return _fail(f"--map {item!r}: use KEY=OBJECT", 2)
        table[key] = obj
    out = os.path.abspath(args.out)
    tmp_out = out[:-6] + ".parley-tmp.blend" if out.endswith(".blend") else out + ".parley-tmp.blend"
    scene = bpy.context.scene
    plan = strips_mod.plan(scene, args.strip_rule.upper(), table, args.selected_strips)
    for why in plan.skipped:
        print(f"parley: skipped {why}", flush=True)
    if not plan.lines:
        return _fail("no sound strip has a character (check --strip-rule / --map)", 1)
    engine_root = engine_process.find_engine_root(Path(__file__).resolve().parent)
    entry = (os.path.abspath(args.engine_script),) if args.engine_script else ("-m", "engine")

    def make_request(line: object) -> object:
        return session_mod.GenerateRequest(
            object_name=line.object_name, audio_path=line.audio, checkpoint=args.checkpoint,  # type: ignore[attr-defined]
            python=args.python, engine_root=engine_root, device=args.device,
            mode="CACHE" if args.mode == "cache" else "SHAPEKEYS", start_frame=line.start_frame,  # type: ignore[attr-defined]
            fps=args.fps, relative_keys=args.relative_keys, add_sound_strip=False,
            use_object_template=not args.no_template, clip=line.strip, engine_entry=entry,  # type: ignore[attr-defined]
            postprocess=args.postprocess, use_transcript=not args.no_transcript, warm=not args.cold)

    t0 = time.perf_counter()
    n = len(plan.lines)
    try:
        os.makedirs(os.path.dirname(out), exist_ok=True)
        bpy.ops.wm.save_as_mainfile(filepath=tmp_out, check_existing=False)  # '//parley_cache' next to --out
        run = strips_mod.StripsRun(scene, plan.lines, make_request)
        run.prepare_all()

        def on_line(i: int, line: object) -> None:
            print(f"parley: [{i}/{n}] {line.strip} -> {line.object_name} at frame {line.start_frame}: "  # type: ignore[attr-defined]
                  f"generated ({time.perf_counter() - t0:.1f} s)", flush=True)

        for r in run.run(on_line=on_line):
            print(f"parley: baked {r.clip}: frames {r.start_frame}-{r.end_frame} ({r.mode.lower()})", flush=True)
        for w in run.warnings:
            print(f"parley: warning: {w}", flush=True)
        bpy.ops.wm.save_mainfile()
        if os.path.exists(tmp_out + "1"):
            os.unlink(tmp_out + "1")
        os.replace(tmp_out, out)
    except Exception as exc:
        for leftover in (tmp_out, tmp_out + "1"):
            if os.path.exists(leftover):
                os.unlink(leftover)
        return _fail(str(exc), 1)
    print(f"parley: {n} line(s) baked -> {out}", flush=True)
    return 0


def _argv() -> list[str]:
    """Arguments after '--' inside Blender; all of them under plain python."""
    if "--" in sys.argv:
        return sys.argv[sys.argv.index("--") + 1:]
    try:
        import bpy

        in_blender_binary = bool(bpy.app.binary_path) and not bpy.app.binary_path.endswith(("python", "python3"))
    except Exception:
        in_blender_binary = False
    return [] if in_blender_binary else sys.argv[1:]


def _stop_warm_engine() -> None:
    """No engine outlives the batch run (atexit does the same; this makes it explicit and early)."""
    mod = sys.modules.get(f"{Path(__file__).resolve().parent.name}.warm_engine")
    if mod is not None:
        mod.shutdown()


if __name__ == "__main__":
    try:
        code = main(_argv())
    finally:
        _stop_warm_engine()
    sys.stdout.flush()
    sys.stderr.flush()
    if code:
        sys.exit(code)
