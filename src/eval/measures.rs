/*!
Measures that match trec_eval 9.x exactly: choosing them with trec_eval's `-m` syntax, scoring
one run against qrels, and averaging over queries the way trec_eval does.

This module owns the value of every measure for one query and the summary over queries; the
ranking convention it scores on is [`crate::data::trec::rank_documents`], the order run files
are written in. It must not read or write files (that is [`crate::data::trec`]) nor format
output (that is the `repro eval` command).

The conventions below are trec_eval's (read from its source, `form_res_rels.c` and `m_*.c`)
and are checked value by value against pytrec_eval, which embeds trec_eval, by the fixtures in
`tests/fixtures/trec_eval/` (see `scripts/gen_trec_eval_fixtures.py`):

* A query's documents are ranked by score, descending; equal scores are ordered by document id
  in *descending* byte order (trec_eval's `comp_sim_docno`). The run's own rank column plays
  no part.
* Relevance level 1: a document is relevant when judged with grade ≥ 1. Grade 0 is judged
  non-relevant. A *negative* grade is what trec_eval calls "in the pool but unjudged": never
  relevant, no gain, absent from the ideal ranking, and for `bpref` neither relevant nor
  judged non-relevant. Documents absent from the qrels are non-relevant (and unjudged for
  `bpref`).
* nDCG uses the grade as gain and `log2(rank + 1)` as discount; the ideal ranking is built
  from every judged document of the query with grade > 0, not only the retrieved ones, and is
  cut at the same depth as the ranking.
* Queries without any relevant document are evaluated (they score 0 on every measure); only
  queries without any judgment are ignored.
* Summary values average over the queries that have both judgments and a ranking. With
  `complete` (trec_eval `-c`), they average over every judged query instead, a query missing
  from the run being scored as an empty ranking (0 everywhere, its `num_rel` still counted),
  as current trec_eval does (its fix for usnistgov/trec_eval#18; older 9.0.x releases only
  changed the divisor, so their `-c` `num_q` and `num_rel` left missing queries out).
  `num_ret`, `num_rel` and `num_rel_ret` are sums, `num_q` a count, `gm_map` a geometric mean
  (per-query AP floored at 1e-5).

The arithmetic repeats trec_eval's operations in the same order (running sums down the
ranking, one division at the end), so values agree to the last bit, not just to 4 decimals.
*/

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::data::trec::sort_trec_order;
use crate::data::{Qrels, Run};

use super::error::{EvalError, KnownMeasures};

/// Grade from which a judged document counts as relevant (trec_eval's default `-l 1`).
const RELEVANCE_LEVEL: i32 = 1;

/// Floor applied to a query's average precision before the log in `gm_map` (trec_eval's
/// `MIN_GEO_MEAN`), so that one query with AP 0 does not make the geometric mean 0.
const MIN_GEO_MEAN: f64 = 0.00001;

/// trec_eval's relevance value for a retrieved document absent from the qrels.
const RELVALUE_NONPOOL: i32 = -1;
/// trec_eval's relevance value for a retrieved document judged with a negative grade.
const RELVALUE_UNJUDGED: i32 = -2;

/// One value that trec_eval reports, with its cutoff where it has one.
///
/// The variant order is trec_eval's print order (its `te_trec_measures` table), then cutoffs
/// ascending, so sorting a list of measures sorts it the way trec_eval prints it. `MrrCut` is
/// not a trec_eval measure and comes last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Measure {
    /// Number of queries averaged over (a count, not printed per query).
    NumQ,
    /// Number of documents retrieved (summed over queries).
    NumRet,
    /// Number of relevant documents judged (summed over queries).
    NumRel,
    /// Number of relevant documents retrieved (summed over queries).
    NumRelRet,
    /// Average precision, divided by all relevant documents of the query.
    Map,
    /// Average precision averaged with a geometric mean (not printed per query).
    GmMap,
    /// Precision after R documents, R the number of relevant documents.
    Rprec,
    /// Binary preference (Buckley & Voorhees, SIGIR 2004).
    Bpref,
    /// Reciprocal rank of the first relevant document, anywhere in the ranking.
    RecipRank,
    /// Precision at k, always divided by k.
    P(usize),
    /// Relevant documents in the top k over all relevant documents.
    Recall(usize),
    /// nDCG over the whole ranking.
    Ndcg,
    /// nDCG at k.
    NdcgCut(usize),
    /// Average precision counting only the top k, divided by all relevant documents.
    MapCut(usize),
    /// 1 if a relevant document is in the top k.
    Success(usize),
    /// Reciprocal rank if the first relevant document is in the top k, else 0: MRR@k as
    /// BEIR and ranx report it. Not a trec_eval measure.
    MrrCut(usize),
}

impl Measure {
    /// The name trec_eval prints: `map`, `P_10`, `ndcg_cut_10`; `mrr_cut_10` for the extra.
    pub fn name(&self) -> String {
        self.to_string()
    }

    /// Whether the value is a count, printed as an integer and summed rather than averaged.
    pub fn is_count(&self) -> bool {
        matches!(
            self,
            Measure::NumQ | Measure::NumRet | Measure::NumRel | Measure::NumRelRet
        )
    }

    /// Whether trec_eval reports the measure per query. `num_q` and `gm_map` exist only as
    /// summaries.
    pub fn has_per_query_value(&self) -> bool {
        !matches!(self, Measure::NumQ | Measure::GmMap)
    }

    fn cutoff(&self) -> Option<usize> {
        match *self {
            Measure::P(k)
            | Measure::Recall(k)
            | Measure::NdcgCut(k)
            | Measure::MapCut(k)
            | Measure::Success(k)
            | Measure::MrrCut(k) => Some(k),
            _ => None,
        }
    }

    fn family(&self) -> &'static str {
        match self {
            Measure::NumQ => "num_q",
            Measure::NumRet => "num_ret",
            Measure::NumRel => "num_rel",
            Measure::NumRelRet => "num_rel_ret",
            Measure::Map => "map",
            Measure::GmMap => "gm_map",
            Measure::Rprec => "Rprec",
            Measure::Bpref => "bpref",
            Measure::RecipRank => "recip_rank",
            Measure::P(_) => "P",
            Measure::Recall(_) => "recall",
            Measure::Ndcg => "ndcg",
            Measure::NdcgCut(_) => "ndcg_cut",
            Measure::MapCut(_) => "map_cut",
            Measure::Success(_) => "success",
            Measure::MrrCut(_) => "mrr_cut",
        }
    }
}

impl fmt::Display for Measure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cutoff() {
            Some(k) => write!(f, "{}_{k}", self.family()),
            None => f.write_str(self.family()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Choosing measures: trec_eval's `-m` syntax.

/// trec_eval's default cutoffs for `P`, `recall`, `ndcg_cut` and `map_cut`.
const TREC_CUTOFFS: &[usize] = &[5, 10, 15, 20, 30, 100, 200, 500, 1000];
/// trec_eval's default cutoffs for `success`.
const SUCCESS_CUTOFFS: &[usize] = &[1, 5, 10];
/// Default for the bare `mrr_cut`: MRR@10, the value BEIR-style tables report.
const MRR_CUTOFFS: &[usize] = &[10];

/// A name `-m` accepts: one value, or one value per cutoff.
#[derive(Clone, Copy)]
enum Family {
    Single(Measure),
    Cut {
        make: fn(usize) -> Measure,
        defaults: &'static [usize],
    },
}

/// Every measure family, in trec_eval's print order.
const FAMILIES: &[(&str, Family)] = &[
    ("num_q", Family::Single(Measure::NumQ)),
    ("num_ret", Family::Single(Measure::NumRet)),
    ("num_rel", Family::Single(Measure::NumRel)),
    ("num_rel_ret", Family::Single(Measure::NumRelRet)),
    ("map", Family::Single(Measure::Map)),
    ("gm_map", Family::Single(Measure::GmMap)),
    ("Rprec", Family::Single(Measure::Rprec)),
    ("bpref", Family::Single(Measure::Bpref)),
    ("recip_rank", Family::Single(Measure::RecipRank)),
    (
        "P",
        Family::Cut {
            make: Measure::P,
            defaults: TREC_CUTOFFS,
        },
    ),
    (
        "recall",
        Family::Cut {
            make: Measure::Recall,
            defaults: TREC_CUTOFFS,
        },
    ),
    ("ndcg", Family::Single(Measure::Ndcg)),
    (
        "ndcg_cut",
        Family::Cut {
            make: Measure::NdcgCut,
            defaults: TREC_CUTOFFS,
        },
    ),
    (
        "map_cut",
        Family::Cut {
            make: Measure::MapCut,
            defaults: TREC_CUTOFFS,
        },
    ),
    (
        "success",
        Family::Cut {
            make: Measure::Success,
            defaults: SUCCESS_CUTOFFS,
        },
    ),
    (
        "mrr_cut",
        Family::Cut {
            make: Measure::MrrCut,
            defaults: MRR_CUTOFFS,
        },
    ),
];

/// trec_eval's `official` nickname, restricted to the measures implemented here (trec_eval
/// also lists `runid` and `iprec_at_recall`).
const OFFICIAL: &[&str] = &[
    "num_q",
    "num_ret",
    "num_rel",
    "num_rel_ret",
    "map",
    "gm_map",
    "Rprec",
    "bpref",
    "recip_rank",
    "P",
];

/// trec_eval's `all_trec` nickname, restricted to the measures implemented here.
const ALL_TREC: &[&str] = &[
    "num_q",
    "num_ret",
    "num_rel",
    "num_rel_ret",
    "map",
    "gm_map",
    "Rprec",
    "bpref",
    "recip_rank",
    "P",
    "recall",
    "ndcg",
    "ndcg_cut",
    "map_cut",
    "success",
];

const NICKNAMES: &[(&str, &[&str])] = &[("official", OFFICIAL), ("all_trec", ALL_TREC)];

/// Turns trec_eval `-m` arguments into the measures to compute, sorted in trec_eval's print
/// order without duplicates.
///
/// Each argument is a measure name (`map`, `P`), a name with comma-separated cutoffs
/// (`P.5,10`, `ndcg_cut.10`) or a nickname (`official`, `all_trec`). A family named without
/// cutoffs gets trec_eval's default cutoffs; cutoffs given explicitly replace the defaults, as
/// in trec_eval, and cutoffs from several arguments for the same family are merged (trec_eval
/// silently keeps only the first argument's). An empty list gives an empty list: trec_eval's
/// default when no `-m` is given is `official`, which the caller passes.
pub fn parse_measures<S: AsRef<str>>(specs: &[S]) -> Result<Vec<Measure>, EvalError> {
    let mut marked = vec![false; FAMILIES.len()];
    let mut explicit: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); FAMILIES.len()];
    for spec in specs {
        let spec = spec.as_ref().trim();
        let (name, params) = match spec.split_once('.') {
            Some((name, params)) => (name, Some(params)),
            None => (spec, None),
        };
        if let Some((_, members)) = NICKNAMES.iter().find(|(nick, _)| *nick == name) {
            if params.is_some() {
                return Err(bad_measure(spec, "a nickname takes no parameters"));
            }
            for member in members.iter() {
                if let Some(index) = family_index(member) {
                    marked[index] = true;
                }
            }
            continue;
        }
        let index = family_index(name).ok_or_else(|| EvalError::UnknownMeasure {
            name: name.to_string(),
            known: known_measures(),
        })?;
        match (FAMILIES[index].1, params) {
            (_, None) => marked[index] = true,
            (Family::Single(_), Some(_)) => {
                return Err(bad_measure(spec, "this measure takes no parameters"));
            }
            (Family::Cut { .. }, Some(params)) => {
                explicit[index].extend(parse_cutoffs(spec, params)?);
            }
        }
    }

    let mut measures = Vec::new();
    for (index, (_, family)) in FAMILIES.iter().enumerate() {
        match *family {
            Family::Single(measure) if marked[index] => measures.push(measure),
            Family::Single(_) => {}
            Family::Cut { make, defaults } => {
                if !explicit[index].is_empty() {
                    measures.extend(explicit[index].iter().map(|&k| make(k)));
                } else if marked[index] {
                    measures.extend(defaults.iter().map(|&k| make(k)));
                }
            }
        }
    }
    measures.sort();
    measures.dedup();
    Ok(measures)
}

fn family_index(name: &str) -> Option<usize> {
    FAMILIES.iter().position(|(family, _)| *family == name)
}

fn known_measures() -> KnownMeasures {
    let mut names: Vec<&'static str> = FAMILIES.iter().map(|(name, _)| *name).collect();
    names.extend(NICKNAMES.iter().map(|(name, _)| *name));
    KnownMeasures(names)
}

fn bad_measure(spec: &str, message: impl Into<String>) -> EvalError {
    EvalError::BadMeasure {
        spec: spec.to_string(),
        message: message.into(),
    }
}

fn parse_cutoffs(spec: &str, params: &str) -> Result<Vec<usize>, EvalError> {
    params
        .split(',')
        .map(|param| {
            let param = param.trim();
            match param.parse::<usize>() {
                Ok(0) => Err(bad_measure(spec, "cutoffs must be positive")),
                Ok(k) => Ok(k),
                Err(_) => Err(bad_measure(
                    spec,
                    format!("cutoff `{param}` is not a positive integer"),
                )),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Scoring.

/// The measures of one run against qrels: per query and summarised over queries, keyed by
/// the names trec_eval prints ([`Measure::name`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The measures computed, in trec_eval's print order (the maps below sort by name).
    pub measures: Vec<Measure>,
    /// Query id → measure name → value, for every evaluated query. Holds only the measures
    /// that have a per-query value ([`Measure::has_per_query_value`]).
    pub per_query: BTreeMap<String, BTreeMap<String, f64>>,
    /// Measure name → summary value over the evaluated queries.
    pub aggregate: BTreeMap<String, f64>,
}

impl Evaluation {
    /// Names of every measure in the summary, in trec_eval's print order.
    pub fn names(&self) -> Vec<String> {
        self.measures.iter().map(Measure::name).collect()
    }

    /// Names of the measures reported per query, in trec_eval's print order.
    pub fn per_query_names(&self) -> Vec<String> {
        self.measures
            .iter()
            .filter(|measure| measure.has_per_query_value())
            .map(Measure::name)
            .collect()
    }

    /// Number of queries the summary averages over (what `num_q` reports).
    pub fn num_queries(&self) -> usize {
        self.per_query.len()
    }
}

/// Scores `run` against `qrels` on `measures`, per query and summarised, as trec_eval does
/// (see the module documentation for the conventions). The run need not be sorted: each
/// query is ranked once, in [`rank_documents`]' order, and every measure is read off that
/// one ranking.
///
/// A query is evaluated when it has at least one judgment and, unless `complete`, at least one
/// ranked document. With `complete` (trec_eval `-c`) every judged query is evaluated, missing
/// ones as an empty ranking. Fails only when no query can be evaluated.
pub fn evaluate(
    qrels: &Qrels,
    run: &Run,
    measures: &[Measure],
    complete: bool,
) -> Result<Evaluation, EvalError> {
    let names: Vec<String> = measures.iter().map(Measure::name).collect();
    let needs = Needs::of(measures);
    let empty = BTreeMap::new();
    let mut sums = vec![0.0; measures.len()];
    let mut values = Vec::with_capacity(measures.len());
    let mut per_query = BTreeMap::new();

    // trec_eval walks the qrels in query-id order and sums in that order; doing the same
    // keeps the summaries identical to the last bit.
    for (qid, judgments) in qrels {
        if judgments.is_empty() {
            continue;
        }
        let docs = match run.get(qid) {
            Some(docs) if !docs.is_empty() => docs,
            _ if complete => &empty,
            _ => continue,
        };
        let ranking = JudgedRanking::new(judgments, docs);
        let stats = RankingStats::new(&ranking, needs);
        values.clear();
        values.extend(measures.iter().map(|&measure| stats.value(measure)));
        let mut row = BTreeMap::new();
        for ((measure, name), (&value, sum)) in measures
            .iter()
            .zip(&names)
            .zip(values.iter().zip(sums.iter_mut()))
        {
            *sum += value;
            if measure.has_per_query_value() {
                row.insert(name.clone(), value);
            }
        }
        per_query.insert(qid.clone(), row);
    }

    let num_queries = per_query.len();
    if num_queries == 0 {
        return Err(EvalError::NoQueries {
            run_queries: run.values().filter(|docs| !docs.is_empty()).count(),
            qrels_queries: qrels.values().filter(|judged| !judged.is_empty()).count(),
        });
    }
    let aggregate = measures
        .iter()
        .zip(&names)
        .zip(&sums)
        .map(|((measure, name), &sum)| {
            let value = match measure {
                Measure::NumQ => num_queries as f64,
                Measure::NumRet | Measure::NumRel | Measure::NumRelRet => sum,
                Measure::GmMap => (sum / num_queries as f64).exp(),
                _ => sum / num_queries as f64,
            };
            (name.clone(), value)
        })
        .collect();
    Ok(Evaluation {
        measures: measures.to_vec(),
        per_query,
        aggregate,
    })
}

/// Which per-query running sums the requested measures read, so that none is built in vain.
#[derive(Debug, Clone, Copy)]
struct Needs {
    average_precision: bool,
    dcg: bool,
    bpref: bool,
}

impl Needs {
    fn of(measures: &[Measure]) -> Needs {
        let any = |wanted: fn(&Measure) -> bool| measures.iter().any(wanted);
        Needs {
            average_precision: any(|m| {
                matches!(m, Measure::Map | Measure::GmMap | Measure::MapCut(_))
            }),
            dcg: any(|m| matches!(m, Measure::Ndcg | Measure::NdcgCut(_))),
            bpref: any(|m| matches!(m, Measure::Bpref)),
        }
    }
}

/// One query's ranking reduced to what trec_eval's measures look at (its `RES_RELS`).
struct JudgedRanking {
    /// trec_eval relevance value at each rank: the grade of a judged document (≥ 0),
    /// [`RELVALUE_NONPOOL`] for one absent from the qrels, [`RELVALUE_UNJUDGED`] for one
    /// judged with a negative grade.
    rels: Vec<i32>,
    /// Grades > 0 of every judged document of the query, descending: the ideal ranking.
    ideal: Vec<i32>,
    /// Judged documents with grade ≥ [`RELEVANCE_LEVEL`].
    num_rel: usize,
    /// Judged documents with grade in `0..RELEVANCE_LEVEL` (judged non-relevant, for bpref).
    num_nonrel: usize,
}

impl JudgedRanking {
    fn new(judgments: &BTreeMap<String, i32>, docs: &BTreeMap<String, f64>) -> JudgedRanking {
        // Both maps are sorted by id: walk them together from the largest id down (trec_eval
        // merges the same way), which yields each document's relevance value in the incoming
        // order `sort_trec_order` expects.
        let mut judged = judgments.iter().rev().peekable();
        let mut scored: Vec<(f64, i32)> = docs
            .iter()
            .rev()
            .map(|(doc, &score)| {
                while judged
                    .next_if(|(id, _)| id.as_str() > doc.as_str())
                    .is_some()
                {}
                let rel = match judged.next_if(|(id, _)| *id == doc) {
                    None => RELVALUE_NONPOOL,
                    Some((_, &grade)) if grade < 0 => RELVALUE_UNJUDGED,
                    Some((_, &grade)) => grade,
                };
                (score, rel)
            })
            .collect();
        sort_trec_order(&mut scored, |&(score, _)| score);
        let rels = scored.into_iter().map(|(_, rel)| rel).collect();
        let mut ideal: Vec<i32> = judgments.values().copied().filter(|&g| g > 0).collect();
        ideal.sort_unstable_by(|a, b| b.cmp(a));
        let num_rel = judgments
            .values()
            .filter(|&&g| g >= RELEVANCE_LEVEL)
            .count();
        let num_nonrel = judgments
            .values()
            .filter(|&&g| (0..RELEVANCE_LEVEL).contains(&g))
            .count();
        JudgedRanking {
            rels,
            ideal,
            num_rel,
            num_nonrel,
        }
    }
}

/// Running sums down one ranking, from which every measure is read in O(1) per cutoff.
///
/// Each sum is accumulated in rank order exactly as trec_eval accumulates it, and a value at
/// cutoff k is the running sum after k documents, which is the number trec_eval holds when
/// its loop reaches k: the results are bitwise equal, not just close.
struct RankingStats {
    num_ret: usize,
    num_rel: usize,
    /// `relevant[i]`: relevant documents among the first i.
    relevant: Vec<usize>,
    /// `precision_sum[i]`: sum of precision at each relevant rank among the first i.
    precision_sum: Vec<f64>,
    /// `dcg[i]`: DCG of the first i documents.
    dcg: Vec<f64>,
    /// `ideal_dcg[i]`: DCG of the first i documents of the ideal ranking.
    ideal_dcg: Vec<f64>,
    /// 0-based rank of the first relevant document.
    first_relevant: Option<usize>,
    bpref: f64,
}

impl RankingStats {
    fn new(ranking: &JudgedRanking, needs: Needs) -> RankingStats {
        let rels = &ranking.rels;
        let mut relevant = Vec::with_capacity(rels.len() + 1);
        relevant.push(0);
        let mut so_far = 0;
        for &rel in rels {
            if rel >= RELEVANCE_LEVEL {
                so_far += 1;
            }
            relevant.push(so_far);
        }
        let first_relevant = rels.iter().position(|&rel| rel >= RELEVANCE_LEVEL);

        let mut precision_sum = Vec::new();
        if needs.average_precision {
            precision_sum.reserve(rels.len() + 1);
            let mut sum = 0.0;
            precision_sum.push(sum);
            for (i, &rel) in rels.iter().enumerate() {
                if rel >= RELEVANCE_LEVEL {
                    sum += relevant[i + 1] as f64 / (i + 1) as f64;
                }
                precision_sum.push(sum);
            }
        }

        let (mut dcg, mut ideal_dcg) = (Vec::new(), Vec::new());
        if needs.dcg {
            dcg = discounted_cumulative_gain(rels);
            ideal_dcg = discounted_cumulative_gain(&ranking.ideal);
        }

        let bpref = if needs.bpref { bpref(ranking) } else { 0.0 };

        RankingStats {
            num_ret: rels.len(),
            num_rel: ranking.num_rel,
            relevant,
            precision_sum,
            dcg,
            ideal_dcg,
            first_relevant,
            bpref,
        }
    }

    /// Relevant documents in the top k (fewer retrieved: all of them).
    fn relevant_at(&self, k: usize) -> usize {
        self.relevant[k.min(self.num_ret)]
    }

    fn value(&self, measure: Measure) -> f64 {
        let num_rel = self.num_rel as f64;
        match measure {
            Measure::NumQ => 1.0,
            Measure::NumRet => self.num_ret as f64,
            Measure::NumRel => num_rel,
            Measure::NumRelRet => self.relevant[self.num_ret] as f64,
            Measure::Map => self.average_precision(),
            Measure::GmMap => self.average_precision().max(MIN_GEO_MEAN).ln(),
            Measure::Rprec => {
                let depth = self.num_ret.min(self.num_rel);
                if depth == 0 {
                    0.0
                } else {
                    self.relevant[depth] as f64 / num_rel
                }
            }
            Measure::Bpref => self.bpref,
            Measure::RecipRank => match self.first_relevant {
                Some(i) => 1.0 / (i + 1) as f64,
                None => 0.0,
            },
            // Divided by k even when fewer were retrieved: missing ranks count as non-relevant.
            Measure::P(k) => self.relevant_at(k) as f64 / k as f64,
            Measure::Recall(k) => {
                if self.num_rel == 0 {
                    0.0
                } else {
                    self.relevant_at(k) as f64 / num_rel
                }
            }
            Measure::Ndcg => {
                let ideal = self.ideal_dcg.last().copied().unwrap_or(0.0);
                if ideal > 0.0 {
                    self.dcg[self.num_ret] / ideal
                } else {
                    0.0
                }
            }
            Measure::NdcgCut(k) => {
                let dcg = self.dcg[k.min(self.num_ret)];
                let ideal = self.ideal_dcg[k.min(self.ideal_dcg.len().saturating_sub(1))];
                // trec_eval leaves the unnormalised DCG when the ideal is 0; both are 0 then.
                if ideal > 0.0 {
                    dcg / ideal
                } else {
                    dcg
                }
            }
            Measure::MapCut(k) => {
                if self.num_rel == 0 {
                    0.0
                } else {
                    self.precision_sum[k.min(self.num_ret)] / num_rel
                }
            }
            Measure::Success(k) => {
                if self.relevant_at(k) > 0 {
                    1.0
                } else {
                    0.0
                }
            }
            Measure::MrrCut(k) => match self.first_relevant {
                Some(i) if i < k => 1.0 / (i + 1) as f64,
                _ => 0.0,
            },
        }
    }

    /// trec_eval's `map` for one query: 0 unless a relevant document was retrieved.
    fn average_precision(&self) -> f64 {
        if self.relevant[self.num_ret] == 0 {
            0.0
        } else {
            self.precision_sum[self.num_ret] / self.num_rel as f64
        }
    }
}

/// Running DCG down a list of relevance values: gain = value for values > 0, discount
/// `log2(rank + 1)`. Element i is the DCG of the first i entries.
fn discounted_cumulative_gain(rels: &[i32]) -> Vec<f64> {
    let mut cumulative = Vec::with_capacity(rels.len() + 1);
    let mut sum = 0.0;
    cumulative.push(sum);
    for (i, &rel) in rels.iter().enumerate() {
        if rel > 0 {
            // Rank i + 1, so the discount is log2(i + 2).
            sum += f64::from(rel) / ((i + 2) as f64).log2();
        }
        cumulative.push(sum);
    }
    cumulative
}

/// trec_eval's `bpref`: for each retrieved relevant document, the fraction of the first R
/// judged non-relevant documents ranked above it is lost; unjudged documents are skipped.
fn bpref(ranking: &JudgedRanking) -> f64 {
    let num_rel = ranking.num_rel;
    let mut nonrel_so_far = 0usize;
    let mut sum = 0.0;
    for &rel in &ranking.rels {
        if rel == RELVALUE_NONPOOL || rel == RELVALUE_UNJUDGED {
            continue;
        }
        if rel < RELEVANCE_LEVEL {
            nonrel_so_far += 1;
        } else if nonrel_so_far > 0 {
            sum += 1.0 - nonrel_so_far.min(num_rel) as f64 / ranking.num_nonrel.min(num_rel) as f64;
        } else {
            sum += 1.0;
        }
    }
    if num_rel > 0 {
        sum / num_rel as f64
    } else {
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::trec::rank_documents;

    fn qrels(entries: &[(&str, &str, i32)]) -> Qrels {
        let mut qrels = Qrels::new();
        for &(qid, doc, grade) in entries {
            qrels
                .entry(qid.to_string())
                .or_default()
                .insert(doc.to_string(), grade);
        }
        qrels
    }

    fn run(entries: &[(&str, &str, f64)]) -> Run {
        let mut run = Run::new();
        for &(qid, doc, score) in entries {
            run.entry(qid.to_string())
                .or_default()
                .insert(doc.to_string(), score);
        }
        run
    }

    fn measures(specs: &[&str]) -> Vec<Measure> {
        parse_measures(specs).unwrap()
    }

    #[test]
    fn names_follow_trec_eval() {
        assert_eq!(Measure::NdcgCut(10).name(), "ndcg_cut_10");
        assert_eq!(Measure::P(5).name(), "P_5");
        assert_eq!(Measure::MrrCut(10).name(), "mrr_cut_10");
        assert_eq!(Measure::Rprec.name(), "Rprec");
    }

    #[test]
    fn parses_cutoffs_nicknames_and_orders_like_trec_eval() {
        assert_eq!(
            measures(&["ndcg_cut.100,5,10", "map", "P.10"]),
            vec![
                Measure::Map,
                Measure::P(10),
                Measure::NdcgCut(5),
                Measure::NdcgCut(10),
                Measure::NdcgCut(100)
            ]
        );
        assert_eq!(
            measures(&["success"]),
            vec![
                Measure::Success(1),
                Measure::Success(5),
                Measure::Success(10)
            ]
        );
        assert_eq!(measures(&["mrr_cut"]), vec![Measure::MrrCut(10)]);
        let official = measures(&["official"]);
        assert_eq!(official.first(), Some(&Measure::NumQ));
        assert!(official.contains(&Measure::P(1000)));
        assert!(!official.contains(&Measure::Ndcg));
        let all = measures(&["all_trec"]);
        assert!(all.contains(&Measure::NdcgCut(1000)) && all.contains(&Measure::Success(1)));
        assert!(!all.contains(&Measure::MrrCut(10)));
    }

    #[test]
    fn explicit_cutoffs_replace_defaults_and_merge() {
        // trec_eval: `-m official -m P.10` prints only P_10.
        let chosen = measures(&["official", "P.10", "P.5,10"]);
        let cut: Vec<_> = chosen
            .iter()
            .filter(|m| matches!(m, Measure::P(_)))
            .collect();
        assert_eq!(cut, vec![&Measure::P(5), &Measure::P(10)]);
    }

    #[test]
    fn rejects_unknown_and_malformed_measures() {
        let err = parse_measures(&["ndgc_cut.10"]).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("`ndgc_cut`"), "{message}");
        assert!(
            message.contains("ndcg_cut") && message.contains("all_trec"),
            "{message}"
        );
        for bad in ["P.0", "P.x", "P.", "map.5", "official.5", "P.5,,10"] {
            assert!(
                matches!(parse_measures(&[bad]), Err(EvalError::BadMeasure { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn ranks_by_score_then_docno_descending() {
        let docs: BTreeMap<String, f64> = [
            ("a", 1.0),
            ("b", 2.0),
            ("c", 1.0),
            ("B", 1.0),
            ("z", -0.0),
            ("y", 0.0),
        ]
        .into_iter()
        .map(|(d, s)| (d.to_string(), s))
        .collect();
        let order: Vec<&str> = rank_documents(&docs).into_iter().map(|(d, _)| d).collect();
        // Ties broken by reverse byte order ("c" > "a" > "B"); -0.0 ties with 0.0.
        assert_eq!(order, vec!["b", "c", "a", "B", "z", "y"]);
    }

    #[test]
    fn hand_computed_values() {
        // Ranking: n (grade -1, unjudged), b (0), u (absent), c (1), a (2): the c/a tie is
        // broken by docno descending.
        let qrels = qrels(&[("q", "a", 2), ("q", "b", 0), ("q", "c", 1), ("q", "n", -1)]);
        let run = run(&[
            ("q", "a", 0.5),
            ("q", "b", 0.9),
            ("q", "c", 0.5),
            ("q", "n", 0.95),
            ("q", "u", 0.7),
        ]);
        let chosen = measures(&["all_trec", "mrr_cut.3,4"]);
        let eval = evaluate(&qrels, &run, &chosen, false).unwrap();
        let q = &eval.per_query["q"];
        assert_eq!(q["num_ret"], 5.0);
        assert_eq!(q["num_rel"], 2.0);
        assert_eq!(q["map"], (1.0 / 4.0 + 2.0 / 5.0) / 2.0);
        assert_eq!(q["recip_rank"], 0.25);
        assert_eq!(q["mrr_cut_3"], 0.0);
        assert_eq!(q["mrr_cut_4"], 0.25);
        assert_eq!(q["P_5"], 0.4);
        assert_eq!(q["P_10"], 0.2);
        assert_eq!(q["bpref"], 0.0);
        let ideal = 2.0 + 1.0 / 3f64.log2();
        let dcg = 1.0 / 5f64.log2() + 2.0 / 6f64.log2();
        assert_eq!(q["ndcg"], dcg / ideal);
        assert_eq!(q["ndcg_cut_5"], dcg / ideal);
        assert!(!q.contains_key("num_q") && !q.contains_key("gm_map"));
        assert_eq!(eval.aggregate["num_q"], 1.0);
        assert_eq!(eval.aggregate["gm_map"], eval.aggregate["map"]);
    }

    #[test]
    fn averages_over_intersection_or_all_judged_queries() {
        let qrels = qrels(&[
            ("q1", "d1", 1),
            ("q2", "d2", 1),
            ("q2", "d3", 2),
            ("q3", "d4", 0),
        ]);
        let run = run(&[("q1", "d1", 1.0), ("q3", "d4", 1.0), ("q9", "d1", 1.0)]);
        let chosen = measures(&["num_q", "num_rel", "num_ret", "map", "gm_map"]);

        let eval = evaluate(&qrels, &run, &chosen, false).unwrap();
        assert_eq!(eval.per_query.keys().collect::<Vec<_>>(), vec!["q1", "q3"]);
        assert_eq!(eval.aggregate["num_q"], 2.0);
        assert_eq!(eval.aggregate["num_rel"], 1.0);
        assert_eq!(eval.aggregate["map"], 0.5);

        let eval = evaluate(&qrels, &run, &chosen, true).unwrap();
        assert_eq!(eval.per_query["q2"]["map"], 0.0);
        assert_eq!(eval.per_query["q2"]["num_rel"], 2.0);
        assert_eq!(eval.per_query["q2"]["num_ret"], 0.0);
        assert_eq!(eval.aggregate["num_q"], 3.0);
        assert_eq!(eval.aggregate["num_rel"], 3.0);
        assert_eq!(eval.aggregate["map"], 1.0 / 3.0);
        let gm = ((1f64.ln() + MIN_GEO_MEAN.ln() * 2.0) / 3.0).exp();
        assert!((eval.aggregate["gm_map"] - gm).abs() < 1e-15);
    }

    /// Checks every per-query and summary value against trec_eval's, as computed by
    /// pytrec_eval in `scripts/gen_trec_eval_fixtures.py`, reading the fixture files through
    /// the same readers `repro eval` uses.
    #[test]
    fn matches_trec_eval_on_fixtures() {
        use crate::data::trec::{read_qrels, read_run};
        use serde_json::Value;

        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trec_eval");
        let text = std::fs::read_to_string(dir.join("expected.json")).unwrap();
        let expected: Value = serde_json::from_str(&text).unwrap();
        let cases = expected["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 4);
        let mut checked = 0usize;
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let qrels = read_qrels(&dir.join(case["qrels"].as_str().unwrap())).unwrap();
            let run = read_run(&dir.join(case["run"].as_str().unwrap())).unwrap();
            for complete in [false, true] {
                let mut per_query: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
                let mut aggregate = BTreeMap::new();
                for set in case["measure_sets"].as_array().unwrap() {
                    let specs: Vec<&str> = set
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|s| s.as_str().unwrap())
                        .collect();
                    let eval = evaluate(&qrels, &run, &measures(&specs), complete).unwrap();
                    for (qid, values) in eval.per_query {
                        per_query.entry(qid).or_default().extend(values);
                    }
                    aggregate.extend(eval.aggregate);
                }
                let mut want = case["per_query"].as_object().unwrap().clone();
                let summary = if complete {
                    want.extend(case["missing_queries"].as_object().unwrap().clone());
                    &case["aggregate_complete"]
                } else {
                    &case["aggregate"]
                };
                let context = format!("case {name}, complete={complete}");
                assert_eq!(
                    per_query.keys().collect::<Vec<_>>(),
                    want.keys().collect::<Vec<_>>(),
                    "{context}: evaluated queries"
                );
                for (qid, values) in &want {
                    checked +=
                        assert_values(&per_query[qid], values, &format!("{context}, query {qid}"));
                }
                checked += assert_values(&aggregate, summary, &format!("{context}, summary"));
            }
        }
        assert!(checked > 7_000, "only {checked} values checked");
    }

    /// Asserts that `actual` has exactly the measures of `expected`, each equal to within
    /// 1e-12 relative; returns how many were compared. The values agree to the bit (checked
    /// when the fixtures were made); the tolerance only absorbs serde_json's float parsing,
    /// which is not correctly rounded without its `float_roundtrip` feature.
    fn assert_values(
        actual: &BTreeMap<String, f64>,
        expected: &serde_json::Value,
        context: &str,
    ) -> usize {
        let expected = expected.as_object().unwrap();
        assert_eq!(
            actual.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "{context}: measure names"
        );
        for (name, want) in expected {
            let want = want.as_f64().unwrap();
            let got = actual[name];
            assert!(
                (got - want).abs() <= 1e-12 * want.abs().max(1.0),
                "{context}, {name}: repro {got} vs trec_eval {want}"
            );
        }
        expected.len()
    }

    #[test]
    fn no_overlap_is_an_error() {
        let qrels = qrels(&[("1", "d", 1)]);
        let run = run(&[("1.x", "d", 1.0)]);
        let err = evaluate(&qrels, &run, &measures(&["map"]), false).unwrap_err();
        assert!(matches!(
            err,
            EvalError::NoQueries {
                run_queries: 1,
                qrels_queries: 1
            }
        ));
    }
}
