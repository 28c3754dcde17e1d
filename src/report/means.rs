/*!
The view over datasets that the paper and BEIR report: each configuration's mean over the
datasets it was measured on, and on how many of them one configuration beats another.

This module owns the averaging rule — a mean is taken only over values every dataset of the
group has, so that no mean quietly covers fewer datasets than its neighbours — for layer
curves, distillation rows and paired comparisons. It computes nothing per query (the paired
tests are [`super::study`]'s, per dataset) and never reads the store.
*/

use std::collections::BTreeSet;

use serde::Serialize;

use super::study::{Comparison, CurvePoint, DistillRow, LayerCurve};

/// How the dataset column of a mean is labelled.
pub fn mean_label(datasets: usize) -> String {
    format!("mean of {datasets}")
}

/// Groups `items` by `key`, keeping the order of each group's first item.
fn groups<T, K: PartialEq>(items: &[T], key: impl Fn(&T) -> K) -> Vec<Vec<&T>> {
    let mut groups: Vec<(K, Vec<&T>)> = Vec::new();
    for item in items {
        let k = key(item);
        match groups.iter_mut().find(|(existing, _)| *existing == k) {
            Some((_, members)) => members.push(item),
            None => groups.push((k, vec![item])),
        }
    }
    groups.into_iter().map(|(_, members)| members).collect()
}

/// The mean of `values` when every one is present.
fn mean_of_all(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let values: Option<Vec<f64>> = values.collect();
    values
        .filter(|v| !v.is_empty())
        .map(|v| v.iter().sum::<f64>() / v.len() as f64)
}

fn distinct_datasets<'a>(names: impl Iterator<Item = &'a String>) -> usize {
    names.collect::<BTreeSet<_>>().len()
}

/// For each configuration (model, pooling, input, other separating settings) measured on two
/// datasets or more, its mean curve over those datasets, at the layers every one of them has.
pub fn mean_curves(curves: &[LayerCurve]) -> Vec<LayerCurve> {
    let by_configuration = groups(curves, |c| {
        (
            c.model.clone(),
            c.kind,
            c.pooling.clone(),
            c.input.clone(),
            c.extra.clone(),
        )
    });
    by_configuration
        .into_iter()
        .filter_map(|members| {
            let datasets = distinct_datasets(members.iter().map(|c| &c.dataset));
            if datasets < 2 || datasets != members.len() {
                return None;
            }
            let layers: BTreeSet<i64> = members[0].points.iter().map(|p| p.layer).collect();
            let points = layers
                .into_iter()
                .filter_map(|layer| {
                    let values = members
                        .iter()
                        .map(|c| c.points.iter().find(|p| p.layer == layer).map(|p| p.value));
                    Some(CurvePoint::unbacked(layer, mean_of_all(values)?))
                })
                .collect();
            let first = members[0];
            Some(LayerCurve {
                dataset: mean_label(datasets),
                points,
                ..first.clone()
            })
        })
        .collect()
}

/// On how many datasets a paired comparison came out each way.
#[derive(Debug, Clone, Serialize)]
pub struct Tally {
    pub datasets: usize,
    /// Datasets where A is better with p < α by both tests.
    pub a_better: usize,
    /// Datasets where B is better with p < α by both tests.
    pub b_better: usize,
    /// The mean over datasets of A's mean minus B's.
    pub mean_difference: f64,
}

impl Tally {
    fn of(comparisons: &[&Comparison]) -> Self {
        let significant = |sign: f64| {
            comparisons
                .iter()
                .filter(|c| c.significant && c.result.mean_difference * sign > 0.0)
                .count()
        };
        let total: f64 = comparisons.iter().map(|c| c.result.mean_difference).sum();
        Tally {
            datasets: comparisons.len(),
            a_better: significant(1.0),
            b_better: significant(-1.0),
            mean_difference: total / comparisons.len().max(1) as f64,
        }
    }

    /// `better on 2, worse on 1 of 6 †`.
    pub fn describe(&self) -> String {
        format!(
            "better on {}, worse on {} of {} †",
            self.a_better, self.b_better, self.datasets
        )
    }
}

/// One paired comparison summed up over the datasets it was made on.
#[derive(Debug, Clone)]
pub struct ComparisonTally {
    pub what: String,
    pub a: String,
    pub b: String,
    pub measure: String,
    pub tally: Tally,
}

/// `label` without a trailing layer (` L3`): the configuration, which is the same on every
/// dataset even when its best layer is not.
fn configuration(label: &str) -> &str {
    match label.rsplit_once(" L") {
        Some((head, layer)) if !layer.is_empty() && layer.bytes().all(|b| b.is_ascii_digit()) => {
            head
        }
        _ => label,
    }
}

/// Comparisons of the same configurations made on two datasets or more, with their tally.
pub fn tally_comparisons(comparisons: &[Comparison]) -> Vec<ComparisonTally> {
    groups(comparisons, |c| {
        (
            c.what.clone(),
            configuration(&c.a).to_string(),
            configuration(&c.b).to_string(),
            c.measure.clone(),
        )
    })
    .into_iter()
    .filter(|members| distinct_datasets(members.iter().map(|c| &c.dataset)) >= 2)
    .map(|members| ComparisonTally {
        what: members[0].what.clone(),
        a: configuration(&members[0].a).to_string(),
        b: configuration(&members[0].b).to_string(),
        measure: members[0].measure.clone(),
        tally: Tally::of(&members),
    })
    .collect()
}

/// A distillation row's mean over datasets.
#[derive(Debug, Clone)]
pub struct MeanDistillRow {
    /// Measures and speed-up averaged; `dataset` says over how many datasets.
    pub row: DistillRow,
    /// Its comparisons with the reference, dataset by dataset (none for the reference).
    pub tally: Option<Tally>,
}

/// For each distillation row measured on two datasets or more, its mean row: measures and
/// speed-up averaged (where every dataset has them), and the tally of its comparisons with the
/// reference.
pub fn mean_distill_rows(rows: &[DistillRow]) -> Vec<MeanDistillRow> {
    groups(rows, |row| {
        (
            row.model.clone(),
            row.role,
            row.layers,
            row.init.clone(),
            row.loss.clone(),
            row.reranked_by.clone(),
        )
    })
    .into_iter()
    .filter_map(|members| {
        let datasets = distinct_datasets(members.iter().map(|row| &row.dataset));
        if datasets < 2 || datasets != members.len() {
            return None;
        }
        let measures = members[0].values.len();
        let values = (0..measures)
            .map(|index| mean_of_all(members.iter().map(|row| row.values[index])))
            .collect();
        let comparisons: Option<Vec<&Comparison>> =
            members.iter().map(|row| row.comparison.as_ref()).collect();
        let row = DistillRow {
            dataset: mean_label(datasets),
            values,
            docs_per_second: None,
            speedup: mean_of_all(members.iter().map(|row| row.speedup)),
            comparison: None,
            ..members[0].clone()
        };
        let tally = comparisons.map(|c| Tally::of(&c));
        Some(MeanDistillRow { row, tally })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::significance::PairedComparison;

    fn curve(dataset: &str, values: &[(i64, f64)]) -> LayerCurve {
        LayerCurve {
            dataset: dataset.into(),
            model: "m".into(),
            kind: "DE",
            pooling: "mean".into(),
            input: "single".into(),
            extra: String::new(),
            points: values
                .iter()
                .map(|&(layer, value)| CurvePoint::unbacked(layer, value))
                .collect(),
        }
    }

    #[test]
    fn mean_curves_keep_the_layers_every_dataset_has() {
        let curves = [
            curve("a", &[(0, 0.2), (1, 0.4)]),
            curve("b", &[(0, 0.4)]),
            LayerCurve {
                pooling: "cls".into(),
                ..curve("a", &[(0, 0.9)])
            },
        ];
        let means = mean_curves(&curves);
        assert_eq!(means.len(), 1, "cls is on one dataset only");
        assert_eq!(means[0].dataset, "mean of 2");
        assert_eq!(means[0].points.len(), 1);
        assert!((means[0].points[0].value - 0.3).abs() < 1e-12);
    }

    fn comparison(dataset: &str, difference: f64, significant: bool) -> Comparison {
        Comparison {
            dataset: dataset.into(),
            what: "best layer vs last layer".into(),
            a: format!("DE m · mean · single L{}", dataset.len()),
            b: "DE m · mean · single L6".into(),
            measure: "ndcg_cut_10".into(),
            result: PairedComparison {
                queries: 10,
                queries_dropped: 0,
                mean_a: 0.5 + difference,
                mean_b: 0.5,
                mean_difference: difference,
                t_statistic: 3.0,
                t_test_p: 0.01,
                randomisation_p: 0.01,
                permutations: 1000,
            },
            significant,
        }
    }

    #[test]
    fn tallies_count_significant_wins_each_way_over_best_layers_that_differ() {
        let comparisons = [
            comparison("a", 0.1, true),
            comparison("bb", -0.05, true),
            comparison("ccc", 0.02, false),
        ];
        let tallies = tally_comparisons(&comparisons);
        assert_eq!(tallies.len(), 1);
        let tally = &tallies[0].tally;
        assert_eq!((tally.datasets, tally.a_better, tally.b_better), (3, 1, 1));
        assert!((tally.mean_difference - 0.07 / 3.0).abs() < 1e-12);
        assert_eq!(tallies[0].a, "DE m · mean · single");
        assert_eq!(tally.describe(), "better on 1, worse on 1 of 3 †");
        assert!(tally_comparisons(&comparisons[..1]).is_empty());
    }

    #[test]
    fn a_configuration_is_a_label_without_its_layer() {
        assert_eq!(
            configuration("CE t · mean · single L12"),
            "CE t · mean · single"
        );
        assert_eq!(configuration("student ce:1 mse"), "student ce:1 mse");
        assert_eq!(configuration("odd L"), "odd L");
    }
}
