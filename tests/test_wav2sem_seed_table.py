"""The with/without-Wav2Sem seed table on a hand-made results file."""
from training.wav2sem_seed_table import tables


def _row(lve: float, closure: float) -> dict:
    return {"lve_l2": lve, "lve_sq": lve ** 2, "mve": lve / 10, "fdd": 1e-7, "aperture_corr": 0.9, "closure_mid": closure}


def test_mean_and_half_difference_per_variant_in_mm():
    res = {"sets": [{"set": "synthtalk", "clips": 6, "rows": {
        "h_none_s0": _row(0.003, 0.5), "h_none_s1": _row(0.005, 1.0),
        "h_c_s0": _row(0.004, 0.5), "h_c_s1": _row(0.004, 0.5),
        "h_m_s0": _row(0.004, 0.5)}}]}           # one seed only: no row
    text = tables(res, ["h"])
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert lines[0].startswith("| h | LVE l2 (mm)")
    none, c = lines[1], lines[2]
    assert none.startswith("| without Wav2Sem | 4.0000 ± 1.0000 | 17.0000 ± 8.0000 | 0.4000 ± 0.1000 | 1.0000 ± 0.0000")
    assert none.endswith("| 0.7500 ± 0.2500 |")
    assert c.startswith("| + Wav2Sem_c | 4.0000 ± 0.0000")
    assert not any("Wav2Sem_m" in ln for ln in lines)
