"""The HTML report's quality-vs-NFE chart: families with several NFEs are lines; single-NFE
generators (students) are points beside them, each labelled."""

import numpy as np
import pandas as pd

from cdm_bench.report.html import nfe_charts


def test_single_nfe_students_are_points_beside_the_teacher_lines():
    wide = pd.DataFrame({"generator": ["t1", "t2", "t4", "t50", "cdm-4", "dmd-4"],
                         "recipe": ["teacher"] * 4 + ["cdm", "dmd"], "cfg": [np.nan] * 6,
                         "nfe": [1, 2, 4, 50, 4, 4], "q": [0.1, 0.3, 0.5, 0.7, 0.6, 0.55]})
    (name, svg), = nfe_charts(wide, {"q": True})
    assert name == "q" and "teacher" in svg and "cdm-4" in svg and "dmd-4" in svg
    assert nfe_charts(wide[wide["recipe"] != "teacher"], {"q": True}) == []  # no line: no chart
