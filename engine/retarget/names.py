"""Shape-key name maps: ARKit 52, VRM 1.0 expressions (and VRM 0.x / VRoid mouth names),
Rhubarb Lip Sync / Preston-Blair mouth shapes.

Names are matched after normalising the usual variants: a namespace before the last ``.`` or
``:`` (``blendShape1.jawOpen``), case, separators (``_ - . space``) and side suffixes
(``Left/Right/_L/_R/.L/.R``), so ``jawOpen``, ``JawOpen``, ``mouthSmile_L``, ``mouthSmileLeft``
and ``MouthSmile.L`` all map to the same ARKit channel.  Keys that match nothing are returned as
unmapped and are never driven -- in particular never by their position in a list.
"""
from __future__ import annotations

import re

__all__ = ["ARKIT_52", "RHUBARB", "VRM_VISEMES", "classify", "map_names", "normalise"]

ARKIT_52 = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft", "eyeSquintLeft",
    "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
    "eyeSquintRight", "eyeWideRight", "jawForward", "jawLeft", "jawRight", "jawOpen", "mouthClose", "mouthFunnel",
    "mouthPucker", "mouthLeft", "mouthRight", "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthPressLeft", "mouthPressRight",
    "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight", "browDownLeft",
    "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff", "cheekSquintLeft",
    "cheekSquintRight", "noseSneerLeft", "noseSneerRight", "tongueOut",
)
VRM_VISEMES = ("aa", "ih", "ou", "ee", "oh")
# VRM 0.x presets and VRoid's Fcl_MTH_* keys name the same five visemes
_VRM_ALIASES = {"a": "aa", "i": "ih", "u": "ou", "e": "ee", "o": "oh",
                "fclmtha": "aa", "fclmthi": "ih", "fclmthu": "ou", "fclmthe": "ee", "fclmtho": "oh",
                "vrcva": "aa", "vrcvi": "ih", "vrcvu": "ou", "vrcve": "ee", "vrcvo": "oh"}
RHUBARB = ("A", "B", "C", "D", "E", "F", "G", "H", "X")
_RHUBARB_ALIASES = {"mbp": "A", "rest": "X", "idle": "X", "fv": "G", "l": "H", "ee": "B", "wq": "F", "ai": "D"}
_PREFIXES = ("arkit", "blendshape", "bs", "shapekey", "key", "mouthshape", "rhubarb", "viseme", "mouth", "vrm")


def normalise(name: str) -> str:
    """``blendShape1.mouthSmile_L`` -> ``mouthsmilel`` (side suffix reduced to l/r)."""
    n = re.split(r"[.:|]", name.strip())
    base = n[-1] if n[-1] and len(n[-1]) > 1 else "".join(n[-2:])   # keep "Smile.L" style suffixes
    if len(n) >= 2 and n[-1].lower() in ("l", "r", "left", "right"):
        base = n[-2] + n[-1]
    s = re.sub(r"[\s_\-.]", "", base).lower()
    s = re.sub(r"left$", "l", s)
    s = re.sub(r"right$", "r", s)
    return s


_ARKIT_INDEX = {normalise(n): n for n in ARKIT_52}


def _rhubarb_key(s: str) -> str | None:
    for p in ("", *_PREFIXES):
        if s.startswith(p):
            rest = s[len(p):]
            if len(rest) == 1 and rest.upper() in RHUBARB:
                return rest.upper()
            if rest in _RHUBARB_ALIASES:
                return _RHUBARB_ALIASES[rest]
            m = re.fullmatch(r"([a-hx])(mbp|rest|idle|fv|l|ee|wq|ai|etc)?", rest)
            if m and rest and p:
                return m.group(1).upper()
    return None


def classify(names: list[str]) -> str:
    """The rig's convention: ``arkit``, ``vrm``, ``rhubarb`` or ``unknown`` (most mapped names wins;
    bare single letters count as Rhubarb only if the rig has a Rhubarb-only letter B/C/D/F/G/H/X)."""
    m = map_names(names)
    counts = {"arkit": 0, "vrm": 0, "rhubarb": 0}
    for fam, _ in m.values():
        counts[fam] += 1
    best = max(counts, key=lambda k: counts[k])
    return best if counts[best] else "unknown"


def map_names(names: list[str]) -> dict[str, tuple[str, str]]:
    """``{key name: (family, canonical channel)}`` for the names that map; others are absent."""
    norm = {n: normalise(n) for n in names}
    bare = {s for s in norm.values() if len(s) == 1}
    rhubarb_letters = bool(bare & set("bcdfghx"))
    out: dict[str, tuple[str, str]] = {}
    for n, s in norm.items():
        if s in _ARKIT_INDEX:
            out[n] = ("arkit", _ARKIT_INDEX[s])
            continue
        if len(s) == 1:
            if rhubarb_letters and s.upper() in RHUBARB:
                out[n] = ("rhubarb", s.upper())
            elif s in _VRM_ALIASES:
                out[n] = ("vrm", _VRM_ALIASES[s])
            continue
        if s in VRM_VISEMES:
            out[n] = ("vrm", s)
            continue
        if s in _VRM_ALIASES:
            out[n] = ("vrm", _VRM_ALIASES[s])
            continue
        r = _rhubarb_key(s)
        if r is not None:
            out[n] = ("rhubarb", r)
    return out
