//! Distilling a dual-encoder student: `mse` towards a teacher dual encoder's embeddings,
//! `mnrl` (in-batch negatives, no teacher) or `margin_mse` towards a teacher cross
//! encoder's score margins. The student embeds a text as the mean of its last layer's token
//! states (`[CLS]` and `[SEP]` included), as the sentence-transformers directory it is saved
//! as does.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use super::loss::{margin_mse, mean_pool, mnrl, mse, MNRL_SCALE};
use super::params::{StudentInit, TrainableBert};
use super::step::TrainingPass;
use super::trainer::BatchLoss;
use super::{stream_seed, trainer, StepRecord, Stream, TrainError, TrainingLog, TrainingSettings};
use crate::model::{encode_mean, load_model, Batch, InputFormat, TextTokenizer, TokenizedText};

/// Batch size of the teachers' (inference-only) passes.
const TEACHER_BATCH: usize = 32;

/// The distillation objective, written `mse`, `mnrl` or `margin_mse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DistillLoss {
    /// Mean squared error to the teacher dual encoder's final-layer mean-pooled (not
    /// normalised) embeddings; data: [`DistillData::Texts`].
    Mse,
    /// MultipleNegativesRankingLoss over (query, positive) pairs, optionally with a hard
    /// negative each; data: [`DistillData::Pairs`] or [`DistillData::Triples`].
    Mnrl,
    /// MarginMSE to the teacher cross encoder's score margins; data:
    /// [`DistillData::Triples`] (query, positive, negative).
    MarginMse,
}

impl DistillLoss {
    pub const ALL: [DistillLoss; 3] = [DistillLoss::Mse, DistillLoss::Mnrl, DistillLoss::MarginMse];

    pub fn name(self) -> &'static str {
        match self {
            DistillLoss::Mse => "mse",
            DistillLoss::Mnrl => "mnrl",
            DistillLoss::MarginMse => "margin_mse",
        }
    }
}

impl fmt::Display for DistillLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DistillLoss {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DistillLoss::ALL
            .into_iter()
            .find(|loss| loss.name() == s)
            .ok_or_else(|| {
                format!("unknown distillation loss `{s}` (expected mse, mnrl or margin_mse)")
            })
    }
}

/// Training texts for a distillation loss.
#[derive(Debug, Clone, PartialEq)]
pub enum DistillData {
    Texts(Vec<String>),
    /// (query, positive).
    Pairs(Vec<(String, String)>),
    /// (query, positive, negative).
    Triples(Vec<(String, String, String)>),
}

impl DistillData {
    pub fn len(&self) -> usize {
        match self {
            DistillData::Texts(texts) => texts.len(),
            DistillData::Pairs(pairs) => pairs.len(),
            DistillData::Triples(triples) => triples.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn kind(&self) -> &'static str {
        match self {
            DistillData::Texts(_) => "texts",
            DistillData::Pairs(_) => "pairs",
            DistillData::Triples(_) => "triples",
        }
    }
}

/// The student to train and its teachers.
#[derive(Debug, Clone)]
pub struct StudentSpec<'a> {
    /// The student's depth.
    pub layers: usize,
    pub init: StudentInit,
    pub loss: DistillLoss,
    /// The teacher dual encoder: `mse`'s targets, and the student's shape and tokenizer
    /// unless `init` copies from the cross encoder.
    pub teacher_de: &'a Path,
    /// The teacher cross encoder: needed by `margin_mse` and by `init` ce:K.
    pub teacher_ce: Option<&'a Path>,
    /// `mse` targets the caller already has (the teacher DE's encode of the training
    /// corpus, at the student's `max_len`): texts found here are not embedded again.
    pub known_targets: Option<&'a KnownTargets>,
}

/// Teacher DE embeddings by text (final layer, mean-pooled, not normalised).
pub type KnownTargets = HashMap<String, Vec<f32>>;

impl StudentSpec<'_> {
    fn teacher_ce(&self, purpose: &str) -> Result<&Path, TrainError> {
        self.teacher_ce
            .ok_or_else(|| TrainError::Setting(format!("{purpose} needs a teacher cross encoder")))
    }

    /// Where the student's shape, tokenizer and copied layers come from.
    fn source(&self) -> Result<&Path, TrainError> {
        match self.init {
            StudentInit::CrossEncoder(_) => self.teacher_ce(&format!("student init {}", self.init)),
            StudentInit::Random | StudentInit::DualEncoder(_) => Ok(self.teacher_de),
        }
    }
}

/// Distils a student described by `spec` on `data` and saves it to `output` as a
/// sentence-transformers directory (Transformer + mean Pooling).
pub fn train_dual_encoder(
    spec: &StudentSpec,
    data: &DistillData,
    settings: &TrainingSettings,
    output: &Path,
    on_step: &mut dyn FnMut(&StepRecord),
) -> Result<TrainingLog, TrainError> {
    settings.validate()?;
    check_data(spec.loss, data)?;
    let student = build_student(spec, settings)?;
    let log = fit_dual_encoder(&student, spec, data, settings, on_step)?;
    student.save_dual_encoder(output, settings.max_len)?;
    Ok(log)
}

/// The student of `spec` before training (f32), its fresh weights drawn from the run's seed.
pub fn build_student(
    spec: &StudentSpec,
    settings: &TrainingSettings,
) -> Result<TrainableBert, TrainError> {
    TrainableBert::student(
        spec.source()?,
        spec.layers,
        spec.init,
        stream_seed(settings.seed, Stream::Init),
        DType::F32,
    )
}

/// The training loop of [`train_dual_encoder`] on a student in memory: the teachers' targets
/// are computed first (inference, no dropout), then the student is trained on `spec.loss`.
pub fn fit_dual_encoder(
    student: &TrainableBert,
    spec: &StudentSpec,
    data: &DistillData,
    settings: &TrainingSettings,
    on_step: &mut dyn FnMut(&StepRecord),
) -> Result<TrainingLog, TrainError> {
    let started = Instant::now();
    settings.validate()?;
    check_data(spec.loss, data)?;
    let tokenizer = student.tokenizer(settings.max_len)?;
    let embedder = Embedder {
        tokenizer: &tokenizer,
        device: student.device().clone(),
    };
    let mut train = |loss_of: &mut BatchLoss| {
        trainer::run(student, data.len(), settings, started, on_step, loss_of)
    };
    match (spec.loss, data) {
        (DistillLoss::Mse, DistillData::Texts(texts)) => {
            let targets = mse_targets(student, spec, texts, settings.max_len)?;
            let inputs = embedder.tokenize(texts.iter())?;
            train(&mut |batch, pass| {
                let embedded = embedder.embed(&inputs, batch, pass)?;
                Ok(mse(&embedded, &targets.rows(batch, &embedder.device)?)?)
            })
        }
        (DistillLoss::Mnrl, DistillData::Pairs(pairs)) => {
            let queries = embedder.tokenize(pairs.iter().map(|(q, _)| q))?;
            let positives = embedder.tokenize(pairs.iter().map(|(_, p)| p))?;
            train(&mut |batch, pass| {
                let q = embedder.embed(&queries, batch, pass)?;
                let p = embedder.embed(&positives, batch, pass)?;
                Ok(mnrl(&q, &p, MNRL_SCALE)?)
            })
        }
        (DistillLoss::Mnrl, DistillData::Triples(triples)) => {
            let sides = TripleInputs::tokenize(&embedder, triples)?;
            train(&mut |batch, pass| {
                let (q, p, n) = sides.embed(&embedder, batch, pass)?;
                Ok(mnrl(&q, &Tensor::cat(&[p, n], 0)?, MNRL_SCALE)?)
            })
        }
        (DistillLoss::MarginMse, DistillData::Triples(triples)) => {
            let teacher = spec.teacher_ce("margin_mse")?;
            let margins = teacher_margins(teacher, triples, settings.max_len)?;
            let sides = TripleInputs::tokenize(&embedder, triples)?;
            train(&mut |batch, pass| {
                let (q, p, n) = sides.embed(&embedder, batch, pass)?;
                let target: Vec<f32> = batch.iter().map(|&i| margins[i]).collect();
                let target = Tensor::from_vec(target, batch.len(), &embedder.device)?;
                Ok(margin_mse(&q, &p, &n, &target)?)
            })
        }
        (loss, data) => Err(mismatch(loss, data)),
    }
}

/// The `mse` targets: the teacher dual encoder's embeddings of `texts`, as wide as the
/// student's.
fn mse_targets(
    student: &TrainableBert,
    spec: &StudentSpec,
    texts: &[String],
    max_len: usize,
) -> Result<TargetRows, TrainError> {
    let (values, width) = teacher_embeddings(spec.teacher_de, texts, max_len, spec.known_targets)?;
    if width != student.config().hidden_size {
        return Err(TrainError::Setting(format!(
            "mse needs the student's width ({}) to equal the teacher's ({width}, {})",
            student.config().hidden_size,
            spec.teacher_de.display()
        )));
    }
    Ok(TargetRows { values, width })
}

/// One target vector per training text, row-major.
struct TargetRows {
    values: Vec<f32>,
    width: usize,
}

impl TargetRows {
    /// The rows of `batch`, as a `(batch, width)` tensor.
    fn rows(&self, batch: &[usize], device: &Device) -> Result<Tensor, TrainError> {
        let rows: Vec<f32> = batch
            .iter()
            .flat_map(|&i| &self.values[i * self.width..(i + 1) * self.width])
            .copied()
            .collect();
        Ok(Tensor::from_vec(rows, (batch.len(), self.width), device)?)
    }
}

/// Each side of (query, positive, negative) triples, tokenized.
struct TripleInputs {
    queries: Vec<TokenizedText>,
    positives: Vec<TokenizedText>,
    negatives: Vec<TokenizedText>,
}

impl TripleInputs {
    fn tokenize(
        embedder: &Embedder,
        triples: &[(String, String, String)],
    ) -> Result<Self, TrainError> {
        Ok(Self {
            queries: embedder.tokenize(triples.iter().map(|(q, _, _)| q))?,
            positives: embedder.tokenize(triples.iter().map(|(_, p, _)| p))?,
            negatives: embedder.tokenize(triples.iter().map(|(_, _, n)| n))?,
        })
    }

    /// The embeddings of the batch's queries, positives and negatives.
    fn embed(
        &self,
        embedder: &Embedder,
        batch: &[usize],
        pass: &mut TrainingPass,
    ) -> Result<(Tensor, Tensor, Tensor), TrainError> {
        Ok((
            embedder.embed(&self.queries, batch, pass)?,
            embedder.embed(&self.positives, batch, pass)?,
            embedder.embed(&self.negatives, batch, pass)?,
        ))
    }
}

fn check_data(loss: DistillLoss, data: &DistillData) -> Result<(), TrainError> {
    match (loss, data) {
        (DistillLoss::Mse, DistillData::Texts(_))
        | (DistillLoss::Mnrl, DistillData::Pairs(_) | DistillData::Triples(_))
        | (DistillLoss::MarginMse, DistillData::Triples(_)) => Ok(()),
        _ => Err(mismatch(loss, data)),
    }
}

fn mismatch(loss: DistillLoss, data: &DistillData) -> TrainError {
    let wanted = match loss {
        DistillLoss::Mse => "texts",
        DistillLoss::Mnrl => "pairs or triples",
        DistillLoss::MarginMse => "triples",
    };
    TrainError::Setting(format!(
        "loss {loss} trains on {wanted}, got {}",
        data.kind()
    ))
}

/// The student's differentiable sentence embedding.
struct Embedder<'a> {
    tokenizer: &'a TextTokenizer,
    device: Device,
}

impl Embedder<'_> {
    /// `texts` tokenized as single sentences.
    fn tokenize<'t>(
        &self,
        texts: impl Iterator<Item = &'t String>,
    ) -> Result<Vec<TokenizedText>, TrainError> {
        Ok(texts
            .map(|text| self.tokenizer.encode(text, InputFormat::Single))
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// Mean-pooled last-layer states `(batch, hidden)` of `inputs[i]` for `i` in `batch`.
    fn embed(
        &self,
        inputs: &[TokenizedText],
        batch: &[usize],
        pass: &mut TrainingPass,
    ) -> Result<Tensor, TrainError> {
        let members: Vec<&TokenizedText> = batch.iter().map(|&i| &inputs[i]).collect();
        let padded = Batch::new(&members, self.tokenizer.pad_id(), &self.device)?;
        let last = pass.encode(&padded)?;
        Ok(mean_pool(&last, &padded.pooled_mask)?)
    }
}

/// The teacher dual encoder's final-layer mean-pooled embeddings of `texts`, row-major, and
/// their width; texts in `known` are copied from it, the others embedded.
fn teacher_embeddings(
    teacher: &Path,
    texts: &[String],
    max_len: usize,
    known: Option<&KnownTargets>,
) -> Result<(Vec<f32>, usize), TrainError> {
    let empty = KnownTargets::new();
    let known = known.unwrap_or(&empty);
    let missing: Vec<String> = texts
        .iter()
        .filter(|text| !known.contains_key(*text))
        .cloned()
        .collect();
    let loaded = load_model(teacher, max_len, None, &Device::Cpu)?;
    let embedded = encode_mean(
        &loaded.model,
        &loaded.tokenizer,
        &missing,
        loaded.model.depth(),
        TEACHER_BATCH,
        false,
        &mut |_| {},
    )?;
    let dim = loaded.model.config().hidden_size;
    let mut fresh = missing.iter().zip(embedded.data.chunks_exact(dim.max(1)));
    let mut rows = Vec::with_capacity(texts.len() * dim);
    for text in texts {
        let row = match known.get(text) {
            Some(row) => row.as_slice(),
            None => fresh.next().map(|(_, row)| row).ok_or_else(|| {
                TrainError::Setting("the teacher embedded fewer texts than asked".to_string())
            })?,
        };
        if row.len() != dim {
            return Err(TrainError::Setting(format!(
                "a known mse target has {} values, the teacher's embeddings {dim}",
                row.len()
            )));
        }
        rows.extend_from_slice(row);
    }
    Ok((rows, dim))
}

/// `score(q, p) − score(q, n)` of the teacher cross encoder for every triple.
fn teacher_margins(
    teacher: &Path,
    triples: &[(String, String, String)],
    max_len: usize,
) -> Result<Vec<f32>, TrainError> {
    let loaded = load_model(teacher, max_len, None, &Device::Cpu)?;
    if !loaded.model.has_classifier() {
        return Err(TrainError::Setting(format!(
            "{} has no classification head, so it cannot be a teacher cross encoder",
            teacher.display()
        )));
    }
    let mut margins = Vec::with_capacity(triples.len());
    for chunk in triples.chunks(TEACHER_BATCH) {
        let mut pairs = Vec::with_capacity(chunk.len() * 2);
        for (query, positive, negative) in chunk {
            pairs.push(loaded.tokenizer.encode_pair(query, positive)?);
            pairs.push(loaded.tokenizer.encode_pair(query, negative)?);
        }
        let members: Vec<&TokenizedText> = pairs.iter().collect();
        let batch = Batch::new(&members, loaded.tokenizer.pad_id(), &Device::Cpu)?;
        let scores = loaded.model.score_pairs(&batch)?;
        margins.extend(scores.chunks(2).map(|pair| pair[0] - pair[1]));
    }
    Ok(margins)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_parse_and_display() {
        for loss in DistillLoss::ALL {
            assert_eq!(loss.to_string().parse::<DistillLoss>().unwrap(), loss);
        }
        assert_eq!(
            "margin_mse".parse::<DistillLoss>().unwrap(),
            DistillLoss::MarginMse
        );
        let message = "cosine".parse::<DistillLoss>().unwrap_err();
        assert!(message.contains("mse, mnrl or margin_mse"), "{message}");
    }

    #[test]
    fn each_loss_names_the_data_it_needs() {
        let pairs = DistillData::Pairs(vec![("a".into(), "b".into())]);
        let message = check_data(DistillLoss::MarginMse, &pairs)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("margin_mse trains on triples, got pairs"),
            "{message}"
        );
        assert!(check_data(DistillLoss::Mnrl, &pairs).is_ok());
        assert!(check_data(DistillLoss::Mse, &DistillData::Texts(vec![])).is_ok());
    }

    #[test]
    fn known_targets_replace_only_their_own_rows() {
        use crate::model::random::{tiny_config, write_random_bert, TINY_VOCAB};
        let dir = tempfile::tempdir().unwrap();
        write_random_bert(
            dir.path(),
            &tiny_config(2, TINY_VOCAB.len()),
            TINY_VOCAB,
            1,
            false,
        )
        .unwrap();
        let texts: Vec<String> = ["the cat sat", "air flow", "the cat sat", "gene"]
            .map(String::from)
            .into();
        let (all, dim) = teacher_embeddings(dir.path(), &texts, 16, None).unwrap();
        assert_eq!(all.len(), texts.len() * dim);
        let marker = vec![7.0; dim];
        let known: KnownTargets = [("the cat sat".to_string(), marker.clone())].into();
        let (mixed, _) = teacher_embeddings(dir.path(), &texts, 16, Some(&known)).unwrap();
        for (i, row) in mixed.chunks_exact(dim).enumerate() {
            if texts[i] == "the cat sat" {
                assert_eq!(row, marker.as_slice());
            } else {
                // Embedded in a smaller batch: equal up to the matrix products' rounding.
                let alone = &all[i * dim..(i + 1) * dim];
                let gap = row
                    .iter()
                    .zip(alone)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(gap < 1e-5, "{}: {gap}", texts[i]);
            }
        }
        let narrow: KnownTargets = [("gene".to_string(), vec![0.0; dim - 1])].into();
        let error = teacher_embeddings(dir.path(), &texts, 16, Some(&narrow)).unwrap_err();
        assert!(error.to_string().contains("known mse target"), "{error}");
    }
}
