"""Render stills of a baked Parley scene with real Blender (the ``bpy`` module), headless.

    python -m training.render_stills scene.blend out/still --frames 25 60

Uses Cycles on the CPU: Workbench and EEVEE need a GPU context that a headless ``bpy`` does not
have. Adds a camera and lights only in memory (the .blend is not modified on disk), framing the
animated mesh from the front (the head looks toward -Y, Z up).
"""
from __future__ import annotations

import argparse
from pathlib import Path


def render(blend: Path, prefix: Path, frames: list[int], size: int = 512, samples: int = 16) -> list[Path]:
    import bpy
    from mathutils import Vector

    bpy.ops.wm.open_mainfile(filepath=str(blend))
    scene = bpy.context.scene
    meshes = [o for o in scene.objects if o.type == "MESH"]
    if not meshes:
        raise SystemExit(f"{blend}: no mesh object to render")
    obj = meshes[0]
    corners = [obj.matrix_world @ Vector(c) for c in obj.bound_box]
    center = sum(corners, Vector()) / 8.0
    height = max(c.z for c in corners) - min(c.z for c in corners)

    cam_data = bpy.data.cameras.new("ParleyStillCam")
    cam_data.lens = 85
    cam = bpy.data.objects.new("ParleyStillCam", cam_data)
    scene.collection.objects.link(cam)
    cam.location = center + Vector((0.0, -height * 2.6, height * 0.05))
    direction = center - cam.location
    cam.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()
    scene.camera = cam
    for name, loc, energy in (("Key", (-0.6, -1.0, 0.6), 4.0), ("Fill", (0.8, -0.8, 0.1), 1.5)):
        light = bpy.data.lights.new(f"ParleyStill{name}", "SUN")
        light.energy = energy
        lo = bpy.data.objects.new(f"ParleyStill{name}", light)
        lo.location = center + Vector(loc)
        lo.rotation_euler = (center - lo.location).to_track_quat("-Z", "Y").to_euler()
        scene.collection.objects.link(lo)
    if scene.world is None:
        scene.world = bpy.data.worlds.new("ParleyStillWorld")
    scene.world.color = (0.05, 0.05, 0.06)

    mat = bpy.data.materials.new("ParleySkin")
    mat.diffuse_color = (0.80, 0.58, 0.47, 1.0)
    mat.use_nodes = True
    bsdf = mat.node_tree.nodes.get("Principled BSDF")
    if bsdf is not None:
        bsdf.inputs["Base Color"].default_value = (0.80, 0.52, 0.42, 1.0)
        bsdf.inputs["Roughness"].default_value = 0.6
    if not obj.data.materials:
        obj.data.materials.append(mat)
    obj.data.polygons.foreach_set("use_smooth", [True] * len(obj.data.polygons))

    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.image_settings.file_format = "PNG"
    written = []
    for f in frames:
        scene.frame_set(f)
        path = prefix.parent / f"{prefix.name}_{f:04d}.png"
        scene.render.filepath = str(path)
        bpy.ops.render.render(write_still=True)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("blend", type=Path)
    ap.add_argument("prefix", type=Path, help="output prefix; writes <prefix>_<frame>.png")
    ap.add_argument("--frames", type=int, nargs="+", default=[1])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--samples", type=int, default=16)
    args = ap.parse_args(argv)
    args.prefix.parent.mkdir(parents=True, exist_ok=True)
    for p in render(args.blend, args.prefix, args.frames, args.size, args.samples):
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
