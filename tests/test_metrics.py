"""The study's metrics on fixed verdict arrays, against values worked out by hand."""
import math

import numpy as np
import pytest

from reasonless import metrics as m


def test_wilson_interval_matches_the_formula_by_hand():
    # 8 of 10, z = 1.96: centre = (0.8 + 1.96²/20) / (1 + 1.96²/10), half = 1.96/(1 + 1.96²/10) ·
    # sqrt(0.8·0.2/10 + 1.96²/400)
    z = 1.959963984540054
    d = 1 + z * z / 10
    centre = (0.8 + z * z / 20) / d
    half = z / d * math.sqrt(0.016 + z * z / 400)
    lo, hi = m.wilson_interval(8, 10)
    assert (lo, hi) == pytest.approx((centre - half, centre + half), abs=1e-12)
    assert (lo, hi) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # the textbook value
    assert m.wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert m.wilson_interval(0, 10)[0] == 0.0 and m.wilson_interval(10, 10)[1] == 1.0
    assert m.wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert m.wilson_interval(0, 0) is None
    with pytest.raises(ValueError):
        m.wilson_interval(3, 2)


def test_rate_in_percent():
    r = m.rate(8, 10)
    assert r["k"] == 8 and r["n"] == 10 and r["pct"] == 80.0
    assert r["ci95"] == pytest.approx([49.016, 94.332], abs=1e-3)
    assert m.rate(0, 0) == {"k": 0, "n": 0, "pct": None, "ci95": None}
    assert m.format_rate(r) == "80.0 [49.0, 94.3]"
    assert m.format_rate(r, ci=False) == "80.0" and m.format_rate(m.rate(0, 0)) == "—"


# Six examples: plan valid 1 1 1 0 0 1, trace valid 1 0 1 0 1 0, optimal 1 0 1 0 0 0.
PV = [True, True, True, False, False, True]
TV = [True, False, True, False, True, False]
PO = [True, False, True, False, False, False]
FE = [None, "close_not_in_open_list", None, "operation_syntax_error", "plan_syntax_error",
      "close_not_in_open_list"]


def test_confusion_and_top_errors():
    assert m.confusion(PV, TV) == {"plan_valid": {"trace_valid": 2, "trace_invalid": 2},
                                   "plan_invalid": {"trace_valid": 1, "trace_invalid": 1}}
    # by count, then name
    assert m.top_errors(FE) == [["close_not_in_open_list", 2], ["operation_syntax_error", 1],
                                ["plan_syntax_error", 1]]
    assert m.top_errors(FE, top=1) == [["close_not_in_open_list", 2]]
    assert m.top_errors([None, None]) == []
    with pytest.raises(ValueError):
        m.confusion([True], [True, False])


def test_mode_metrics():
    out = m.mode_metrics(PV, PO, TV, FE)
    assert out["plan_valid"]["k"] == 4 and out["plan_valid"]["pct"] == pytest.approx(400 / 6)
    assert out["plan_optimal"]["k"] == 2
    assert out["trace_valid"]["k"] == 3 and out["trace_valid"]["n"] == 6
    # trace valid among the 4 valid plans: examples 0 and 2
    tva = out["trace_valid_among_valid_plans"]
    assert (tva["k"], tva["n"], tva["pct"]) == (2, 4, 50.0)
    assert tva["ci95"] == pytest.approx([100 * x for x in m.wilson_interval(2, 4)])
    assert out["confusion"]["plan_invalid"]["trace_valid"] == 1
    assert out["first_errors"][0] == ["close_not_in_open_list", 2]
    none_valid = m.mode_metrics([False, False], [False, False], [True, False], [None, "x"])
    assert none_valid["trace_valid_among_valid_plans"]["pct"] is None


def test_pearson_by_hand():
    # dx = -1.5 -0.5 0.5 1.5, dy = -3 -1 0 4: r = 11 / sqrt(5 · 26)
    assert m.pearson([1, 2, 3, 4], [2, 4, 5, 9]) == pytest.approx(11 / math.sqrt(130))
    assert m.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert m.pearson([1, 1, 1], [1, 2, 3]) is None  # constant side
    assert m.pearson([5], [6]) is None
    lm = m.length_metrics([10, 20, 30], [10, 22, 27])
    assert lm["mean_generated"] == 20.0 and lm["mean_reference"] == pytest.approx(59 / 3)
    assert lm["pearson_r"] == pytest.approx(np.corrcoef([10, 20, 30], [10, 22, 27])[0, 1])


def test_length_bins_and_validity_by_bin():
    ref = [1, 2, 2, 3, 5, 8, 13, 21, 34, 55]
    edges = m.length_bins(ref, 5)
    # the sorted values at ranks 0, 2, 4, 6, 8: 1, 2, 5, 13, 34; then past the max
    assert edges.tolist() == [1, 2, 5, 13, 34, 56]
    valid = [True, True, False, True, False, False, True, True, True, False]
    bins = m.validity_by_bin(ref, valid, edges)
    assert [(b["lo"], b["hi"], b["k"], b["n"]) for b in bins] == [
        (1, 2, 1, 1), (2, 5, 2, 3), (5, 13, 0, 2), (13, 34, 2, 2), (34, 56, 1, 2)]
    assert sum(b["n"] for b in bins) == len(ref)
    assert m.length_bins([4, 4, 4], 5).tolist() == [4, 5]  # ties merge bins


def test_suite_metrics():
    verdicts = {"paper": {"plan_valid": PV, "plan_optimal": PO, "trace_valid": TV, "first_error": FE},
                "strict": {"plan_valid": PV, "plan_optimal": PO, "trace_valid": [False] * 6,
                           "first_error": ["wrong_h"] * 6}}
    out = m.suite_metrics(verdicts, [False, False, True, False, False, True], [3, 4, 9, 0, 2, 12],
                          [3, 4, 5, 6, 7, 8])
    assert out["n"] == 6 and out["hit_budget"]["k"] == 2
    assert out["modes"]["strict"]["trace_valid"]["k"] == 0
    assert out["modes"]["strict"]["first_errors"] == [["wrong_h", 6]]
    assert out["modes"]["paper"]["trace_valid"]["k"] == 3
    assert out["trace_length"]["mean_generated"] == 5.0
    assert out["trace_length"]["pearson_r"] == pytest.approx(np.corrcoef([3, 4, 9, 0, 2, 12], [3, 4, 5, 6, 7, 8])[0, 1])
