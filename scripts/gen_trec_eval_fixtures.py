"""Generate the trec_eval reference fixtures that `repro`'s measures are tested against.

Usage, from the crate root:

    pip install pytrec-eval-terrier
    python scripts/gen_trec_eval_fixtures.py

It writes, under tests/fixtures/trec_eval/:

* one qrels file and one run file per case (TREC formats; one case's qrels is BEIR TSV),
  generated from a fixed seed so that re-running the script gives the same bytes;
* expected.json: for every case, pytrec_eval's value for every query and measure, the
  summary values trec_eval prints (mean over the queries in both run and qrels), and the
  `-c` summary values (mean over every judged query).

pytrec_eval embeds trec_eval's C code (form_res_rels.c and the m_*.c measures), so its
per-query values are trec_eval's, ranking and tie-breaking included. It receives the run as
dicts, so the order of the lines in the run file plays no part; the files are written in a
shuffled order with meaningless rank columns to check that repro ignores both too.

pytrec_eval only returns per-query values; the summaries are computed here with trec_eval's
rules (trec_eval.c and meas_avg.c): sums for num_ret, num_rel and num_rel_ret, the number of
queries for num_q, exp(mean of per-query log AP) for gm_map (pytrec_eval's per-query gm_map is
that log), the arithmetic mean otherwise, each summed in query-id order as trec_eval does.
For `-c`, a judged query missing from the run is evaluated by pytrec_eval as an empty ranking
(all zeros, its num_rel counted), as current trec_eval does (usnistgov/trec_eval#18), and the
divisor is the number of judged queries.

The cases exercise what tends to differ between evaluation tools: graded judgments 0..3,
negative grades (trec_eval: pooled but unjudged), many exact score ties (including ties that
straddle a cutoff, and -0.0 against 0.0), document ids whose byte order differs from their
numeric or case-folded order, queries with no relevant document, a query judged only with
negative grades, queries only in the run, queries only in the qrels, and runs shorter than
the cutoffs.
"""

import importlib.metadata
import json
import math
import os
import random

import pytrec_eval

SEED = 20250205
OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "trec_eval")

# The measure sets, as repro's -m arguments and as pytrec_eval measure names. trec_eval (and
# pytrec_eval) keep only one parameter list per family, so default and custom cutoffs are two
# separate evaluations.
DEFAULT_SET = (
    ["all_trec"],
    {
        "num_q", "num_ret", "num_rel", "num_rel_ret", "map", "gm_map", "Rprec", "bpref",
        "recip_rank", "P", "recall", "ndcg", "ndcg_cut", "map_cut", "success",
    },
)
CUSTOM_SPECS = [
    "P.1,2,3,7,1100",
    "recall.1,3,7",
    "ndcg_cut.1,2,3,7,1100",
    "map_cut.1,3,7",
    "success.2,3,20",
]
CUSTOM_SET = (CUSTOM_SPECS, set(CUSTOM_SPECS))

# Summary-only in trec_eval: not printed per query, so not compared per query either.
SUMMARY_ONLY = {"num_q", "gm_map"}
SUMMED = {"num_ret", "num_rel", "num_rel_ret"}


def docno(rng):
    """A document id drawn from formats whose byte order is not their natural order."""
    n = rng.randrange(400)
    form = rng.choice(["D{}", "d{}", "D{}a", "X-{}", "{}", "D{}_b"])
    return form.format(n)


def grade(rng):
    return rng.choices([0, 1, 2, 3, -1, -2], weights=[40, 25, 15, 10, 5, 5])[0]


def graded_case(rng):
    """45 query ids; q1..q40 judged and ranked, q41..q43 only ranked, q44..q45 only judged."""
    qrels, run = {}, {}
    for i in range(1, 46):
        qid = f"q{i}"
        judged_only = i >= 44
        ranked_only = 41 <= i <= 43
        pool = sorted({docno(rng) for _ in range(rng.randrange(5, 60))})
        if not ranked_only:
            judged = rng.sample(pool, k=min(len(pool), rng.randrange(1, 25)))
            if i in (5, 17):
                # No relevant document at all.
                qrels[qid] = {d: 0 for d in judged}
            elif i == 23:
                # Only negative grades (trec_eval: in the pool, unjudged).
                qrels[qid] = {d: rng.choice([-1, -2]) for d in judged}
            else:
                qrels[qid] = {d: grade(rng) for d in judged}
        if not judged_only:
            length = rng.randrange(1, len(pool) + 1)
            ranked = rng.sample(pool, k=length)
            if i == 9:
                # Every document tied.
                run[qid] = {d: 0.5 for d in ranked}
            else:
                # One decimal: many exact ties, some across the cutoffs.
                run[qid] = {d: round(rng.uniform(-1, 1), 1) for d in ranked}
    return qrels, run


def deep_case(rng):
    """Long rankings (beyond 1000) with coarse scores so that ties cross 100..1000."""
    qrels, run = {}, {}
    for i, length in enumerate([1050, 1020, 990], start=1):
        qid = str(100 + i)
        docs = [f"doc{j}" for j in range(length + 200)]
        ranked = rng.sample(docs, k=length)
        run[qid] = {d: round(rng.random(), 2) for d in ranked}
        judged = rng.sample(docs, k=120)
        qrels[qid] = {d: rng.choice([0, 0, 1, 1, 2, 3, -1]) for d in judged}
    return qrels, run


def beir_case(rng):
    """Binary BEIR-style judgments, query ids whose byte order is not numeric."""
    qrels, run = {}, {}
    for i in [1, 2, 10, 11, 20, 3, 30]:
        qid = str(i)
        pool = [f"doc-{j}" for j in rng.sample(range(500), k=30)]
        qrels[qid] = {d: rng.choice([0, 1, 1]) for d in rng.sample(pool, k=8)}
        run[qid] = {d: round(rng.random(), 1) for d in rng.sample(pool, k=rng.randrange(3, 30))}
    run["99"] = {"doc-1": 1.0}  # only in the run
    return qrels, run


def ties_case(rng):
    """Every score tied: the order is document ids in descending byte order."""
    names = ["a", "B", "b", "b10", "b9", "b_", "10", "9", "Z", "z", "é", "e", "b-1", "B10"]
    qrels = {
        "t1": {n: g for n, g in zip(names, [1, 0, 2, 0, 1, 3, 0, 1, 0, 2, 1, 0, 1, 0])},
        "t2": {"a": 1, "z": 1, "é": 2, "9": 0},
        "t3": {"x": 1, "y": 2, "w": 0},
    }
    run = {
        "t1": {n: 1.0 for n in names},
        "t2": {n: 0.0 for n in names},
        # -0.0 and 0.0 are equal to C: tie broken by document id.
        "t3": {"x": -0.0, "y": 0.0, "w": 0.0, "v": -0.0},
    }
    return qrels, run


def evaluate(qrels, run, measures):
    """pytrec_eval's per-query values for the queries it evaluates."""
    return pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)


def summarise(per_query, num_queries):
    """trec_eval's summary of per-query values (including the summary-only measures)."""
    names = sorted({name for values in per_query.values() for name in values})
    summary = {}
    for name in names:
        total = 0.0
        for qid in sorted(per_query):
            total += per_query[qid][name]
        if name == "num_q":
            summary[name] = float(num_queries)
        elif name in SUMMED:
            summary[name] = total
        elif name == "gm_map":
            summary[name] = math.exp(total / num_queries)
        else:
            summary[name] = total / num_queries
    return summary


def merged(*parts):
    out = {}
    for part in parts:
        for qid, values in part.items():
            out.setdefault(qid, {}).update(values)
    return out


def without_summary_only(per_query):
    return {
        qid: {name: v for name, v in values.items() if name not in SUMMARY_ONLY}
        for qid, values in per_query.items()
    }


def write_run(path, run, rng):
    lines = [(qid, d, s) for qid, docs in run.items() for d, s in docs.items()]
    rng.shuffle(lines)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for rank, (qid, d, s) in enumerate(lines, start=1):
            f.write(f"{qid} Q0 {d} {rank} {s!r} fixture\n")


def write_qrels(path, qrels, rng, beir):
    lines = [(qid, d, g) for qid, docs in qrels.items() for d, g in docs.items()]
    rng.shuffle(lines)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        if beir:
            f.write("query-id\tcorpus-id\tscore\n")
        for qid, d, g in lines:
            f.write(f"{qid}\t{d}\t{g}\n" if beir else f"{qid} 0 {d} {g}\n")


def main():
    rng = random.Random(SEED)
    os.makedirs(OUT_DIR, exist_ok=True)
    cases = []
    for name, build, beir in [
        ("graded", graded_case, False),
        ("deep", deep_case, False),
        ("beir", beir_case, True),
        ("ties", ties_case, False),
    ]:
        qrels, run = build(rng)
        qrels_file = f"{name}.tsv" if beir else f"{name}.qrels"
        run_file = f"{name}.run"
        write_qrels(os.path.join(OUT_DIR, qrels_file), qrels, rng, beir)
        write_run(os.path.join(OUT_DIR, run_file), run, rng)

        # Queries in both: trec_eval's default. Missing judged queries: an empty ranking.
        missing = {qid: {} for qid in qrels if qid not in run}
        default = merged(*(evaluate(qrels, run, m) for _, m in (DEFAULT_SET, CUSTOM_SET)))
        extra = merged(*(evaluate(qrels, missing, m) for _, m in (DEFAULT_SET, CUSTOM_SET)))
        assert set(extra) == set(missing), (name, set(extra), set(missing))
        complete = merged(default, extra)

        cases.append(
            {
                "name": name,
                "qrels": qrels_file,
                "run": run_file,
                "measure_sets": [DEFAULT_SET[0], CUSTOM_SET[0]],
                "per_query": without_summary_only(default),
                "missing_queries": without_summary_only(extra),
                "aggregate": summarise(default, len(default)),
                "aggregate_complete": summarise(complete, len(qrels)),
            }
        )

    expected = {
        "generator": "scripts/gen_trec_eval_fixtures.py",
        "pytrec_eval_terrier": importlib.metadata.version("pytrec-eval-terrier"),
        "seed": SEED,
        "cases": cases,
    }
    with open(os.path.join(OUT_DIR, "expected.json"), "w", encoding="utf-8", newline="\n") as f:
        json.dump(expected, f, indent=1, sort_keys=True, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
