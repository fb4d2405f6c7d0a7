"""make demo's frame choice: every /b p m/ at its closest frame, then the widest open vowels."""
import numpy as np

from training.demo import sheet_frames


def test_sheet_frames_by_hand():
    fps = 10.0
    gap = np.array([5, 4, 1, 3, 9, 12, 8, 2, 0.5, 6, 7, 11], dtype=float)
    phones = [["B", 0.0, 0.4],      # frames 0-3: closest at 2
              ["AE", 0.4, 0.7],     # frames 4-6: widest at 5 (12)
              ["M", 0.7, 0.9],      # frames 7-8: closest at 8
              ["IY", 0.9, 1.1],     # not open, not bilabial
              ["AA", 1.1, 1.2]]     # frame 11 (11)
    shown, bil = sheet_frames(phones, gap, fps, n=3)
    assert bil == [2, 8]
    assert shown == [2, 5, 8]       # one slot left: the widest open vowel (12 at frame 5)
    shown, _ = sheet_frames(phones, gap, fps, n=12)
    assert shown == [2, 5, 8, 11]
