"""Generate the reference values that `repro::eval::significance`'s multiple-testing corrections,
paired t intervals and equivalence tests (TOST) are tested against.

Usage, from the crate root (a throwaway virtual environment is enough):

    python3 -m venv /tmp/sm && /tmp/sm/bin/pip install statsmodels scipy numpy
    /tmp/sm/bin/python scripts/multiple_testing_reference.py

(or `python3 scripts/multiple_testing_reference.py` where statsmodels is installed).

It writes tests/fixtures/multiple_testing_reference.json with two lists:

* `families`: families of p-values and, for each, the adjusted p-values that
  `statsmodels.stats.multitest.multipletests(p, method=m)` returns for m in holm, bonferroni and
  fdr_bh (in the input's order). The families cover what an adjustment tends to get wrong:
  unsorted input (the result must come back in the input's order), ties (tied p-values must
  get equal adjusted values whatever order the sort leaves them in), values at 0, near 0 and
  near 1 (the cap at 1, and the running max/min that makes Holm and BH monotone), a single
  value (nothing to correct), and 57 values from a seeded generator, half of them small, so
  that both the step-down and the step-up passes change many values.
* `paired`: pairs of per-query score vectors (nDCG-like values in [0, 1] rounded to 4 decimals,
  as trec_eval prints them, so that each has a short decimal form that any JSON reader turns
  into the double statsmodels saw), n from 5 to 300, some with many zeros and ties, with
  `ttost_paired(a, b, -margin, margin)`'s p-value for margins 0.01 and 0.05, and
  `DescrStatsW(a - b).tconfint_mean(alpha=0.05)` and `.std_mean`.

Every number is written with Python's `repr` (what `json.dumps` does), which round-trips to the
same double. The generator is seeded, so re-running the script gives the same bytes.
"""

import json
import pathlib

import numpy as np
import scipy
import statsmodels
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import DescrStatsW, ttost_paired

SEED = 20250301
OUTPUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "multiple_testing_reference.json"
METHODS = {"holm": "holm", "bonferroni": "bonferroni", "bh": "fdr_bh"}
MARGINS = [0.01, 0.05]
ALPHA = 0.05


def families(rng):
    yield "hand_checked", [0.01, 0.04, 0.03]
    yield "unsorted", [0.2, 0.01, 0.049, 0.003, 0.04, 0.5, 0.0125]
    yield "ties", [0.02, 0.5, 0.02, 0.001, 0.5, 0.02, 0.75]
    yield "zeros_near_zero_near_one", [0.0, 1e-12, 0.999, 1.0, 3.2e-9, 0.98, 0.0, 2.5e-5, 0.7]
    yield "bonferroni_cap", [0.3, 0.6, 0.9, 0.45]
    yield "single", [0.03]
    # Half the family from tests of real differences (p near 0), half from null ones (uniform).
    small = rng.beta(0.3, 8.0, size=28)
    null = rng.uniform(size=29)
    values = np.concatenate([small, null])
    rng.shuffle(values)
    yield "seeded_57", [float(v) for v in values]


def scores(values):
    return [round(float(v), 4) for v in np.clip(values, 0.0, 1.0)]


def paired(rng):
    yield "five_queries", scores(rng.uniform(size=5)), scores(rng.uniform(size=5))

    base = rng.beta(2.0, 3.0, size=30)
    yield "close_30", scores(base + rng.normal(0.0, 0.02, size=30)), scores(base)

    # Grades in steps of 0.25, a third of the queries at zero for both systems, half the rest
    # scored alike: many zero differences and repeated difference values.
    a = np.round(rng.uniform(0.0, 1.0, size=60) * 4.0) / 4.0
    b = np.where(rng.uniform(size=60) < 0.5, a, np.round(rng.uniform(0.0, 1.0, size=60) * 4.0) / 4.0)
    zeros = rng.choice(60, size=20, replace=False)
    a[zeros] = 0.0
    b[zeros] = 0.0
    yield "ties_and_zeros_60", scores(a), scores(b)

    base = rng.beta(2.0, 2.0, size=100)
    yield "clearly_different_100", scores(base + rng.uniform(0.05, 0.2, size=100)), scores(base)

    base = rng.beta(2.0, 2.0, size=200)
    yield "near_identical_200", scores(base + rng.normal(0.0, 0.005, size=200)), scores(base)

    base = rng.beta(3.0, 2.0, size=300)
    yield "b_better_300", scores(base), scores(base + rng.normal(0.02, 0.05, size=300))


def main():
    rng = np.random.default_rng(SEED)
    family_out = []
    for name, p in families(rng):
        adjusted = {
            ours: [float(v) for v in multipletests(np.asarray(p), alpha=ALPHA, method=theirs)[1]]
            for ours, theirs in METHODS.items()
        }
        family_out.append({"name": name, "p_values": p, "adjusted": adjusted})

    paired_out = []
    for name, a, b in paired(rng):
        x, y = np.asarray(a), np.asarray(b)
        stats = DescrStatsW(x - y)
        low, high = stats.tconfint_mean(alpha=ALPHA)
        tost = [{"margin": m, "p_value": float(ttost_paired(x, y, -m, m)[0])} for m in MARGINS]
        paired_out.append(
            {
                "name": name,
                "a": a,
                "b": b,
                "standard_error": float(stats.std_mean),
                "interval": {"level": 1.0 - ALPHA, "low": float(low), "high": float(high)},
                "tost": tost,
            }
        )

    document = {
        "generator": "scripts/multiple_testing_reference.py",
        "statsmodels": statsmodels.__version__,
        "scipy": scipy.__version__,
        "numpy": np.__version__,
        "families": family_out,
        "paired": paired_out,
    }
    OUTPUT.write_text(json.dumps(document, indent=1) + "\n")
    for family in family_out:
        print(f"{family['name']:>26}: {len(family['p_values'])} p-values")
    for case in paired_out:
        tost = ", ".join(f"TOST({t['margin']}) p = {t['p_value']:.4g}" for t in case["tost"])
        interval = case["interval"]
        print(f"{case['name']:>26}: 95% [{interval['low']:.5f}, {interval['high']:.5f}], {tost}")


if __name__ == "__main__":
    main()
