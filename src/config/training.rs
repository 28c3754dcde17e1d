//! `[train_ce]`, `[train_de]` and `[rerank]`: the settings of the training and re-ranking
//! stages, as written in an experiment file (and sweepable as `train_ce.<field>` etc.).
//!
//! Defaults are small and generic; `experiments/distill.toml` sets the study's own recipe,
//! sized to finish cold within 90 minutes on 2 CPU cores (docs/distillation.md).

use serde::{Deserialize, Serialize};

use crate::train::{DistillLoss, StudentInit};

/// `[train_ce]`: the cross-encoder teacher, trained on a dataset's `train` judgments with
/// hard negatives mined from a first-stage retriever.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrainCeSettings {
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    #[serde(default = "default_ce_batch")]
    pub batch: usize,
    #[serde(default = "default_ce_learning_rate")]
    pub learning_rate: f64,
    /// Fraction of the optimisation steps spent warming the learning rate up linearly.
    #[serde(default = "default_warmup")]
    pub warmup: f64,
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    #[serde(default = "default_max_grad_norm")]
    pub max_grad_norm: f64,
    /// Tokens per (query, document) pair.
    #[serde(default = "default_ce_max_len")]
    pub max_len: usize,
    /// Negatives are mined from the retriever's top `mine_top_k`, positives removed.
    #[serde(default = "default_mine_top_k")]
    pub mine_top_k: usize,
    /// Hard negatives per positive pair.
    #[serde(default = "default_negatives")]
    pub negatives: usize,
    /// The pooler's and classifier's peak learning rate (unset: `learning_rate`). Left out of
    /// the cache key when unset, so stores made before the setting existed stay cached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_learning_rate: Option<f64>,
    /// Fraction of the training queries (those with a positive) held out as a dev split: the
    /// teacher never trains on them, and re-ranking chooses its fusion weight on them
    /// ([`Fusion::Interpolate`]). 0: no dev split. Left out of the cache key when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dev_fraction: f64,
    /// Label-free pairs added to the judgments: this many corpus documents (a seeded sample
    /// of those with a title and a text) each give their title as a query for their own
    /// text, with `negatives` texts mined from the retriever's top `mine_top_k` for the
    /// title. Every document of these pairs is shown without its title, so the title is
    /// never copied into its positive. 0: none. Left out of the cache key when 0.
    #[serde(default, skip_serializing_if = "is_zero_count")]
    pub title_pairs: usize,
    /// Epochs of the DE warm start before the judgments: the teacher's logit is regressed
    /// (mean squared error) onto the retriever's scaled cosine of its top
    /// `warm_start_top_k` candidates of every training query (and title pair), so the new
    /// head starts from the dual encoder's ranking. Label-free: no judgment is read. 0: no
    /// warm start. Left out of the cache key when 0, like the two settings below when unset.
    #[serde(default, skip_serializing_if = "is_zero_count")]
    pub warm_start_epochs: usize,
    /// Candidates per query of the warm start (unset: [`DEFAULT_WARM_START_TOP_K`]), at most
    /// `mine_top_k`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_start_top_k: Option<usize>,
    /// The target logit is `scale · (cosine − mean cosine of the warm start's pairs)`
    /// (unset: [`DEFAULT_WARM_START_SCALE`], MultipleNegativesRankingLoss's scale).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_start_scale: Option<f64>,
}

/// Candidates per query of the DE warm start when `warm_start_top_k` is unset.
pub const DEFAULT_WARM_START_TOP_K: usize = 10;
/// Scale of the DE warm start's target logits when `warm_start_scale` is unset.
pub const DEFAULT_WARM_START_SCALE: f64 = crate::train::loss::MNRL_SCALE;

/// `[train_de]`: a dual-encoder student distilled from the teachers of its model table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrainDeSettings {
    /// Encoder layers of the student.
    #[serde(default = "default_student_layers")]
    pub layers: usize,
    /// `random`, `ce:K` (embeddings and first K layers from the CE teacher) or `de:K`.
    #[serde(default = "default_init")]
    pub init: StudentInit,
    /// `mse`, `mnrl` or `margin_mse`.
    #[serde(default = "default_loss")]
    pub loss: DistillLoss,
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    #[serde(default = "default_de_batch")]
    pub batch: usize,
    #[serde(default = "default_de_learning_rate")]
    pub learning_rate: f64,
    #[serde(default = "default_warmup")]
    pub warmup: f64,
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    #[serde(default = "default_max_grad_norm")]
    pub max_grad_norm: f64,
    #[serde(default = "default_de_max_len")]
    pub max_len: usize,
    /// `mse` trains on corpus documents and train queries: at most this many texts
    /// (0 = all), taken in a seeded random order.
    #[serde(default)]
    pub max_texts: usize,
    /// `mse` also trains on every corpus document's title and sentences as texts of their
    /// own (short, query-like; [`crate::data::Document::passages`]).
    #[serde(default)]
    pub sentences: bool,
    /// `margin_mse`: negatives per (query, positive), mined as for the CE teacher.
    #[serde(default = "default_negatives")]
    pub negatives: usize,
    /// `margin_mse`: negatives are mined from the teacher DE's top `mine_top_k`, positives
    /// removed.
    #[serde(default = "default_mine_top_k")]
    pub mine_top_k: usize,
}

/// `[rerank]`: a cross encoder re-scores the top of a first-stage run.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RerankSettings {
    /// The cross encoder (a `[models.<name>]` of kind `ce`); empty: no re-ranking.
    #[serde(default)]
    pub model: String,
    /// Hits of the first stage re-scored per query.
    #[serde(default = "default_rerank_top_k")]
    pub top_k: usize,
    #[serde(default = "default_rerank_batch")]
    pub batch: usize,
    /// Tokens per (query, document) pair.
    #[serde(default = "default_ce_max_len")]
    pub max_len: usize,
    /// How the re-ranked order is made from the two stages' scores. Left out of the cache key
    /// when `ce` (the default), as are the next field's.
    #[serde(default, skip_serializing_if = "Fusion::is_cross_encoder_only")]
    pub fusion: Fusion,
    /// `interpolate`'s weight of the cross encoder, in 0..=1; unset: chosen on the dev split
    /// of the cross encoder's `train_ce` task (`train_ce.dev_fraction` > 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda: Option<f64>,
}

/// `rerank.fusion`: the order of a re-ranked head.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fusion {
    /// By cross-encoder score alone (reported as `reranked_*`).
    #[default]
    Ce,
    /// Also by `(1 − λ)·first-stage + λ·cross-encoder` score, each min-max normalised over the
    /// query's head (reported as `fused_*` beside `reranked_*`).
    Interpolate,
}

impl Fusion {
    fn is_cross_encoder_only(&self) -> bool {
        *self == Fusion::Ce
    }
}

fn is_zero(value: &f64) -> bool {
    *value == 0.0
}

fn is_zero_count(value: &usize) -> bool {
    *value == 0
}

/// `[bench]`: measure encoder throughput at each depth of every model the experiment
/// encodes, on the first `documents` of each dataset, with the cells' `max_len`, batch and
/// input. A bench task runs alone (no other task beside it), so its timings are not skewed
/// by the experiment's own work; like every task it is cached, so re-running the experiment
/// does not re-measure (`--force bench` does).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BenchConfig {
    #[serde(default = "default_bench_documents")]
    pub documents: usize,
    /// Timed runs per depth (median and spread are reported).
    #[serde(default = "default_bench_runs")]
    pub runs: usize,
    /// Untimed runs before them.
    #[serde(default = "default_bench_warmup")]
    pub warmup: usize,
    /// Depths measured; empty: every depth from 0 (embeddings only: the fixed cost of
    /// tokenization and embeddings) to the model's.
    #[serde(default)]
    pub depths: Vec<usize>,
    /// Datasets measured on (names of `[datasets.*]`); empty: every dataset encoded.
    #[serde(default)]
    pub datasets: Vec<String>,
    /// Inputs measured; empty: every input encoded.
    #[serde(default)]
    pub inputs: Vec<crate::model::InputFormat>,
}

impl BenchConfig {
    /// Whether cells on `dataset` with `input` get a bench task.
    pub fn covers(&self, dataset: &str, input: crate::model::InputFormat) -> bool {
        (self.datasets.is_empty() || self.datasets.iter().any(|d| d == dataset))
            && (self.inputs.is_empty() || self.inputs.contains(&input))
    }

    pub fn check(&self) -> Result<(), String> {
        if self.documents == 0 || self.runs == 0 {
            return Err("documents and runs must be at least 1".to_string());
        }
        Ok(())
    }

    /// The depths measured for a model of `depth` layers.
    pub fn depths_for(&self, depth: usize) -> Result<Vec<usize>, String> {
        if self.depths.is_empty() {
            return Ok((0..=depth).collect());
        }
        let mut depths = self.depths.clone();
        depths.sort_unstable();
        depths.dedup();
        match depths.iter().find(|&&d| d > depth) {
            Some(beyond) => Err(format!(
                "bench.depths: {beyond} is beyond the model's depth {depth}"
            )),
            None => Ok(depths),
        }
    }
}

fn default_bench_documents() -> usize {
    256
}
fn default_bench_runs() -> usize {
    5
}
fn default_bench_warmup() -> usize {
    1
}

fn default_epochs() -> usize {
    1
}
fn default_ce_batch() -> usize {
    16
}
fn default_de_batch() -> usize {
    32
}
fn default_ce_learning_rate() -> f64 {
    2e-5
}
fn default_de_learning_rate() -> f64 {
    1e-4
}
fn default_warmup() -> f64 {
    0.1
}
fn default_weight_decay() -> f64 {
    0.01
}
fn default_max_grad_norm() -> f64 {
    1.0
}
fn default_ce_max_len() -> usize {
    128
}
fn default_de_max_len() -> usize {
    128
}
fn default_mine_top_k() -> usize {
    30
}
fn default_negatives() -> usize {
    3
}
fn default_student_layers() -> usize {
    2
}
fn default_init() -> StudentInit {
    StudentInit::CrossEncoder(1)
}
fn default_loss() -> DistillLoss {
    DistillLoss::Mse
}
fn default_rerank_top_k() -> usize {
    100
}
fn default_rerank_batch() -> usize {
    32
}

macro_rules! default_from_serde {
    ($($settings:ty),*) => {$(
        impl Default for $settings {
            fn default() -> Self {
                // Every field has a serde default, so an empty table is the default value.
                toml::from_str("").expect("every field has a default")
            }
        }
    )*};
}

default_from_serde!(
    TrainCeSettings,
    TrainDeSettings,
    RerankSettings,
    BenchConfig
);

/// The optimisation settings both training stages share, as the training library takes them.
macro_rules! optimisation_settings {
    ($($settings:ty => $head:expr),*) => {$(
        impl $settings {
            pub fn training(&self, seed: u64) -> crate::train::TrainingSettings {
                let head_learning_rate: fn(&Self) -> Option<f64> = $head;
                crate::train::TrainingSettings {
                    epochs: self.epochs,
                    batch_size: self.batch,
                    learning_rate: self.learning_rate,
                    warmup_fraction: self.warmup,
                    weight_decay: self.weight_decay,
                    max_grad_norm: self.max_grad_norm,
                    max_len: self.max_len,
                    seed,
                    head_learning_rate: head_learning_rate(self),
                }
            }
        }
    )*};
}

optimisation_settings!(
    TrainCeSettings => |settings| settings.head_learning_rate,
    TrainDeSettings => |_| None
);

impl TrainCeSettings {
    pub fn warm_start_top_k(&self) -> usize {
        self.warm_start_top_k.unwrap_or(DEFAULT_WARM_START_TOP_K)
    }

    pub fn warm_start_scale(&self) -> f64 {
        self.warm_start_scale.unwrap_or(DEFAULT_WARM_START_SCALE)
    }

    /// Value checks serde cannot express.
    pub fn check(&self) -> Result<(), String> {
        common_checks(
            self.epochs,
            self.batch,
            self.learning_rate,
            self.warmup,
            self.max_len,
        )?;
        if self.negatives == 0 || self.mine_top_k == 0 {
            return Err("negatives and mine_top_k must be at least 1".to_string());
        }
        if let Some(rate) = self.head_learning_rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(format!("head_learning_rate must be positive, got {rate}"));
            }
        }
        if self.warm_start_epochs > 0 && !(1..=self.mine_top_k).contains(&self.warm_start_top_k()) {
            return Err(format!(
                "warm_start_top_k {} must be in 1..={} (mine_top_k)",
                self.warm_start_top_k(),
                self.mine_top_k
            ));
        }
        let scale = self.warm_start_scale();
        if !(scale.is_finite() && scale > 0.0) {
            return Err(format!("warm_start_scale must be positive, got {scale}"));
        }
        if !(0.0..0.5).contains(&self.dev_fraction) {
            return Err(format!(
                "dev_fraction {} must be in 0..0.5 (a fraction of the training queries)",
                self.dev_fraction
            ));
        }
        Ok(())
    }
}

impl TrainDeSettings {
    pub fn check(&self) -> Result<(), String> {
        common_checks(
            self.epochs,
            self.batch,
            self.learning_rate,
            self.warmup,
            self.max_len,
        )?;
        if self.layers == 0 {
            return Err("layers must be at least 1".to_string());
        }
        if let Some(copied) = self.init.copied_layers() {
            if copied > self.layers {
                return Err(format!(
                    "init `{}` copies {copied} layers into a {}-layer student",
                    self.init, self.layers
                ));
            }
        }
        if self.loss == DistillLoss::MarginMse && (self.negatives == 0 || self.mine_top_k == 0) {
            return Err("margin_mse needs negatives and mine_top_k of at least 1".to_string());
        }
        if self.batch < 2 && self.loss == DistillLoss::Mnrl {
            return Err("mnrl needs batch ≥ 2 (in-batch negatives)".to_string());
        }
        Ok(())
    }
}

impl RerankSettings {
    pub fn check(&self) -> Result<(), String> {
        if self.top_k == 0 || self.batch == 0 {
            return Err("top_k and batch must be at least 1".to_string());
        }
        if self.max_len < 3 {
            return Err("max_len must be at least 3 ([CLS] q [SEP] d [SEP])".to_string());
        }
        match (self.fusion, self.lambda) {
            (_, Some(lambda)) if !(0.0..=1.0).contains(&lambda) => {
                Err(format!("lambda {lambda} must be in 0..=1"))
            }
            (Fusion::Ce, Some(_)) => {
                Err("lambda is the weight of fusion = \"interpolate\"; set that too".to_string())
            }
            _ => Ok(()),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.model.is_empty()
    }
}

fn common_checks(
    epochs: usize,
    batch: usize,
    learning_rate: f64,
    warmup: f64,
    max_len: usize,
) -> Result<(), String> {
    if epochs == 0 || batch == 0 {
        return Err("epochs and batch must be at least 1".to_string());
    }
    if !(learning_rate > 0.0 && learning_rate.is_finite()) {
        return Err(format!("learning_rate {learning_rate} must be positive"));
    }
    if !(0.0..=1.0).contains(&warmup) {
        return Err(format!(
            "warmup {warmup} is a fraction of the steps (0..=1)"
        ));
    }
    if max_len < 3 {
        return Err("max_len must be at least 3".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unset_head_learning_rate_leaves_the_cache_key_as_it_was() {
        // The settings are serialised whole into the train_ce task's cache key.
        let unset = serde_json::to_value(TrainCeSettings::default()).unwrap();
        assert!(unset.get("head_learning_rate").is_none(), "{unset}");
        let set: TrainCeSettings = toml::from_str("head_learning_rate = 1e-3").unwrap();
        assert_eq!(set.training(0).head_learning_rate, Some(1e-3));
        assert!(set.check().is_ok());
        let zero: TrainCeSettings = toml::from_str("head_learning_rate = 0.0").unwrap();
        assert!(zero.check().unwrap_err().contains("head_learning_rate"));
    }

    #[test]
    fn dev_split_and_fusion_settings_leave_the_cache_key_as_it_was_until_set() {
        let teacher = serde_json::to_value(TrainCeSettings::default()).unwrap();
        assert!(teacher.get("dev_fraction").is_none(), "{teacher}");
        let rerank = serde_json::to_value(RerankSettings::default()).unwrap();
        assert!(rerank.get("fusion").is_none() && rerank.get("lambda").is_none());
        let fused: RerankSettings = toml::from_str("fusion = \"interpolate\"").unwrap();
        assert_eq!(fused.fusion, Fusion::Interpolate);
        assert_eq!(
            serde_json::to_value(&fused).unwrap()["fusion"],
            "interpolate"
        );
        fused.check().unwrap();
        let held_out: TrainCeSettings = toml::from_str("dev_fraction = 0.1").unwrap();
        held_out.check().unwrap();
        assert!(toml::from_str::<RerankSettings>("fusion = \"sum\"").is_err());
    }

    #[test]
    fn fusion_weights_and_dev_fractions_are_checked() {
        let weight = |toml: &str| toml::from_str::<RerankSettings>(toml).unwrap().check();
        assert!(weight("fusion = \"interpolate\"\nlambda = 0.3").is_ok());
        assert!(weight("fusion = \"interpolate\"\nlambda = 1.5")
            .unwrap_err()
            .contains("0..=1"));
        assert!(weight("lambda = 0.3").unwrap_err().contains("interpolate"));
        let teacher: TrainCeSettings = toml::from_str("dev_fraction = 0.7").unwrap();
        assert!(teacher.check().unwrap_err().contains("dev_fraction"));
    }

    #[test]
    fn warm_start_settings_leave_the_cache_key_as_it_was_until_set_and_are_checked() {
        let teacher = serde_json::to_value(TrainCeSettings::default()).unwrap();
        for field in ["warm_start_epochs", "warm_start_top_k", "warm_start_scale"] {
            assert!(teacher.get(field).is_none(), "{teacher}");
        }
        let check = |toml: &str| toml::from_str::<TrainCeSettings>(toml).unwrap().check();
        check("warm_start_epochs = 1").unwrap();
        check("warm_start_epochs = 1\nmine_top_k = 30\nwarm_start_top_k = 30").unwrap();
        let too_many = check("warm_start_epochs = 1\nmine_top_k = 5\nwarm_start_top_k = 6");
        assert!(too_many.unwrap_err().contains("warm_start_top_k"));
        let scale = check("warm_start_epochs = 1\nwarm_start_scale = 0.0");
        assert!(scale.unwrap_err().contains("warm_start_scale"));
        let set: TrainCeSettings = toml::from_str("warm_start_epochs = 2").unwrap();
        assert_eq!(set.warm_start_top_k(), DEFAULT_WARM_START_TOP_K);
        assert_eq!(set.warm_start_scale(), DEFAULT_WARM_START_SCALE);
    }

    #[test]
    fn defaults_pass_their_checks() {
        TrainCeSettings::default().check().unwrap();
        TrainDeSettings::default().check().unwrap();
        RerankSettings::default().check().unwrap();
        assert!(!RerankSettings::default().enabled());
    }

    #[test]
    fn bad_values_are_refused() {
        let student = TrainDeSettings {
            init: StudentInit::CrossEncoder(3),
            ..TrainDeSettings::default()
        };
        assert!(student.check().unwrap_err().contains("copies 3 layers"));
        let unknown_loss = toml::from_str::<TrainDeSettings>("loss = \"cosine\"").unwrap_err();
        assert!(
            unknown_loss.to_string().contains("cosine"),
            "{unknown_loss}"
        );
        let unknown_init = toml::from_str::<TrainDeSettings>("init = \"ce\"").unwrap_err();
        assert!(unknown_init.to_string().contains("init"), "{unknown_init}");
        let teacher = TrainCeSettings {
            warmup: 1.5,
            ..TrainCeSettings::default()
        };
        assert!(teacher.check().is_err());
    }
}
