"""Generate the paired t-test reference values that `repro::eval::significance` is tested against.

Usage, from the crate root:

    pip install scipy
    python scripts/significance_reference.py

It writes tests/fixtures/significance_reference.json: a few pairs of per-query score vectors
(nDCG-like values in [0, 1], generated from a fixed seed so that re-running the script gives
the same bytes) and, for each pair, `scipy.stats.ttest_rel(a, b)`'s statistic and two-sided
p-value, which is what ranx's paired Student's t-test reports.

Scores are rounded to 4 decimals, as trec_eval prints them, so that every value has a short
decimal form that any JSON reader turns into the same double that scipy saw.

The cases cover what a t-test implementation tends to get wrong: a clearly different pair
(tiny p-value, where a lossy incomplete beta function shows), a near-identical pair (p close
to 1), a pair with many ties and zeros (coarse grades, queries both systems score alike), a
pair where b is better (negative statistic) and a very small pair (2 degrees of freedom).
"""

import json
import pathlib

import numpy as np
import scipy
from scipy.stats import ttest_rel

SEED = 20240611
OUTPUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "significance_reference.json"


def scores(values):
    return [round(float(v), 4) for v in np.clip(values, 0.0, 1.0)]


def cases(rng):
    base = rng.beta(2.0, 3.0, size=30)
    yield "clearly_different", scores(base + rng.uniform(0.05, 0.25, size=30)), scores(base)

    base = rng.beta(2.0, 2.0, size=30)
    yield "near_identical", scores(base + rng.normal(0.0, 0.01, size=30)), scores(base)

    # Grades in steps of 0.25 with a third of the queries at zero for both systems: many
    # equal pairs (zero differences) and repeated difference values.
    a = np.round(rng.uniform(0.0, 1.0, size=30) * 4.0) / 4.0
    b = np.where(rng.uniform(size=30) < 0.5, a, np.round(rng.uniform(0.0, 1.0, size=30) * 4.0) / 4.0)
    zeros = rng.choice(30, size=10, replace=False)
    a[zeros] = 0.0
    b[zeros] = 0.0
    yield "ties_and_zeros", scores(a), scores(b)

    base = rng.beta(3.0, 2.0, size=50)
    yield "b_better", scores(base), scores(base + rng.normal(0.03, 0.05, size=50))

    yield "three_queries", scores(rng.uniform(size=3)), scores(rng.uniform(size=3))


def main():
    rng = np.random.default_rng(SEED)
    out = []
    for name, a, b in cases(rng):
        result = ttest_rel(a, b)
        out.append(
            {
                "name": name,
                "a": a,
                "b": b,
                "t_statistic": float(result.statistic),
                "p_value": float(result.pvalue),
            }
        )
    document = {"generator": "scripts/significance_reference.py", "scipy": scipy.__version__, "cases": out}
    OUTPUT.write_text(json.dumps(document, indent=1) + "\n")
    for case in out:
        print(f"{case['name']:>18}: t = {case['t_statistic']:.6g}, p = {case['p_value']:.6g}")


if __name__ == "__main__":
    main()
