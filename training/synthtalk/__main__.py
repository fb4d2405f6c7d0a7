"""``python -m training.synthtalk {generate,realspeech,voices,check-timings,sentences}``."""
from __future__ import annotations

import argparse
import json
import sys


def _cmd_generate(a: argparse.Namespace) -> int:
    from .generate import generate, preset

    cfg = preset(a.preset, clips=a.clips, seed=a.seed, augment=a.augment)
    s = generate(a.out, cfg, workers=a.workers, progress=not a.quiet, overwrite=a.overwrite)
    print(f"wrote {s['total_clips']} clips ({s['total_hours']:.3f} h; train/val/test {s['counts']}) "
          f"to {a.out} in {s['build_seconds']} s, {s['size_bytes'] / 1e9:.2f} GB")
    return 0


def _cmd_realspeech(a: argparse.Namespace) -> int:
    from .realspeech import build_realspeech

    s = build_realspeech(a.out, cache=a.cache, identity=a.identity, overwrite=a.overwrite)
    print(f"wrote {s['total_clips']} real-speech clips ({s['total_hours'] * 3600:.1f} s) to {a.out}")
    return 0


def _cmd_voices(a: argparse.Namespace) -> int:
    from .voices import VOICES, engine_available

    for v in VOICES:
        ok = "ok" if engine_available(v.engine) else "MISSING"
        print(f"{v.name:18s} {v.engine:9s} {v.voice + ('+' + v.variant if v.variant else ''):24s} "
              f"{'held-out' if v.held_out else 'train':9s} {ok:8s} {v.licence}")
    return 0


def _cmd_check(a: argparse.Namespace) -> int:
    """Agreement of each engine's own timings with pocketsphinx forced alignment."""
    import numpy as np

    from .align import AlignmentError, align, compare_timings
    from .text import load_sentences
    from .voices import VOICES, synthesize

    sents = load_sentences()[: a.sentences]
    report = {}
    for v in VOICES:
        if a.voice and v.name not in a.voice:
            continue
        if v.engine == "piper":
            continue  # its timings *are* the alignment
        res, fails = [], 0
        for s in sents:
            wav, phones, _ = synthesize(s.text, v)
            try:
                ref, _ = align(wav, s.text)
            except AlignmentError:
                fails += 1
                continue
            res.append(compare_timings(phones, ref))
        n = sum(r.matched for r in res)
        weights = [r.matched for r in res]

        def ms(field: str, res=res, weights=weights, n=n) -> float:
            if not n:
                return float("nan")
            return round(float(np.average([getattr(r, field) for r in res], weights=weights)) * 1000, 1)

        report[v.name] = {"sentences": len(res), "align_failures": fails, "phones": n,
                          "mean_abs_ms": ms("mean_abs"), "median_abs_ms": ms("median_abs"),
                          "mean_signed_ms": ms("mean_signed")}
        print(f"{v.name:18s} {json.dumps(report[v.name])}", flush=True)
    if a.json:
        print(json.dumps(report))
    return 0


def _cmd_sentences(a: argparse.Namespace) -> int:
    from .text import generate_sentences, load_sentences, write_sentences

    if a.regenerate:
        write_sentences(generate_sentences())
    for s in load_sentences()[: a.show]:
        print(s.id, s.text)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.synthtalk", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="build a SynthTalk corpus")
    g.add_argument("--out", required=True)
    g.add_argument("--preset", default="full", choices=["small", "full"])
    g.add_argument("--clips", type=int, default=None, help="rescale the preset to about N clips")
    g.add_argument("--workers", type=int, default=2)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--augment", action="store_true", help="speed/reverb/noise/gain augmentation on half the clips")
    g.add_argument("--overwrite", action="store_true")
    g.add_argument("--quiet", action="store_true")
    g.set_defaults(fn=_cmd_generate)
    r = sub.add_parser("realspeech", help="real-speech evaluation set from pocketsphinx's test recordings")
    r.add_argument("--out", required=True)
    r.add_argument("--cache", default=None, help="download cache (default ~/.cache/parley)")
    r.add_argument("--identity", type=int, default=10)
    r.add_argument("--overwrite", action="store_true")
    r.set_defaults(fn=_cmd_realspeech)
    v = sub.add_parser("voices", help="list voices, engines available, licences")
    v.set_defaults(fn=_cmd_voices)
    c = sub.add_parser("check-timings", help="compare engine phone timings with pocketsphinx alignment")
    c.add_argument("--sentences", type=int, default=10)
    c.add_argument("--voice", action="append")
    c.add_argument("--json", action="store_true")
    c.set_defaults(fn=_cmd_check)
    s = sub.add_parser("sentences", help="show (or --regenerate) the corpus sentences")
    s.add_argument("--show", type=int, default=10)
    s.add_argument("--regenerate", action="store_true")
    s.set_defaults(fn=_cmd_sentences)
    a = p.parse_args(argv)
    try:
        return a.fn(a)
    except (FileExistsError, KeyError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
