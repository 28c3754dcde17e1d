/*!
Raw SMART-format test collections (Cranfield, CISI, MED, CACM) and their conversion to the
BEIR layout.

This module owns the SMART record format, the judgment-file conventions of those collections,
recognising which file of a collection directory is which, and [`import`], which writes the
collection as a BEIR directory through [`super::beir::write`]. It must not locate datasets by
name or verify checksums (that is [`super::fetch`]); everything downstream reads the BEIR copy.

# Records

A record starts with `.I <id>` and holds fields, each opened by a marker line `.X` (one
upper-case letter): `.T` title, `.A` authors, `.B` bibliographic data, `.W` text, and others
such as CACM's `.N`, `.K`, `.C` and the `.X` cross-references of CISI and CACM. Every field is
parsed; documents keep `.T` as title and `.W` as text, queries keep `.W` (or `.T` when a query
has no `.W`). A marker may carry text on its own line (`.T Some title`). A field that occurs
twice in one record is joined (Cranfield's document 576 has two `.W` sections). A field's
lines are joined and every run of whitespace becomes one space. Ids are whole numbers and are written without
leading zeros (`.I 001` is query `1`; CACM's judgments say `01`).

# Judgments

Whitespace-separated numbers, one judgment per line, in one of the [`QrelsFormat`]s. The
format is recognised from the content (see [`QrelsFormat`] for the rules) unless
[`ImportOptions`] fixes it.

# Cranfield's conventions

`cran.qry` labels its 225 queries `.I 001, 002, 004, 008, …` but `cranqrel` numbers them by
position (1..225): with [`QueryIds::Position`] the query id is the query's ordinal position,
which is what the judgments mean. Its third column is Cleverdon's relevance code, 1 (complete
answer) … 4 (minimum interest), and −1 for the query's source paper, which is not relevant:
[`QrelsFormat::CranfieldCodes`] turns code `c` into grade `5 − c` and −1 into grade 0, a
judged non-relevant document. Both are detected together, from the signature "three columns,
codes within −1..4, query labels not 1..n".
*/

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{beir, DataError, Document, Qrels, Query};

/// One SMART record: its id and every field, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The id without leading zeros.
    pub id: String,
    /// The id as written after `.I`.
    pub label: String,
    /// 1-based line of the `.I` line.
    pub line: usize,
    /// (marker letter, content) in file order; a marker can occur more than once.
    pub fields: Vec<(char, String)>,
}

impl Record {
    /// The content of every `.marker` field of the record, joined with spaces; `None` when the
    /// record has no such field.
    pub fn field(&self, marker: char) -> Option<String> {
        let parts: Vec<&str> = self
            .fields
            .iter()
            .filter(|(letter, text)| *letter == marker && !text.is_empty())
            .map(|(_, text)| text.as_str())
            .collect();
        if parts.is_empty() && !self.fields.iter().any(|(letter, _)| *letter == marker) {
            None
        } else {
            Some(parts.join(" "))
        }
    }
}

/// Reads every record of a SMART file. Text outside a record or a field, and a `.I` line
/// without a whole-number id, are errors naming the line.
pub fn read_records(path: &Path) -> Result<Vec<Record>, DataError> {
    parse_records(path, &read_text(path)?)
}

fn parse_records(path: &Path, text: &str) -> Result<Vec<Record>, DataError> {
    let mut records: Vec<Record> = Vec::new();
    // Whether the current record has opened a field yet.
    let mut in_field = false;
    for (index, raw_line) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw_line.trim_end();
        if let Some((marker, rest)) = field_marker(line) {
            if marker == 'I' {
                let (id, label) = parse_id(rest)
                    .map_err(|message| DataError::malformed(path, number, message))?;
                records.push(Record {
                    id,
                    label,
                    line: number,
                    fields: Vec::new(),
                });
                in_field = false;
                continue;
            }
            let Some(record) = records.last_mut() else {
                return Err(DataError::malformed(
                    path,
                    number,
                    format!("field `.{marker}` before the first `.I` record"),
                ));
            };
            record.fields.push((
                marker,
                rest.split_whitespace().collect::<Vec<_>>().join(" "),
            ));
            in_field = true;
            continue;
        }
        let content = line.trim();
        if content.is_empty() {
            continue;
        }
        let Some(record) = records.last_mut() else {
            return Err(DataError::malformed(
                path,
                number,
                "text before the first `.I` record",
            ));
        };
        if !in_field {
            return Err(DataError::malformed(
                path,
                number,
                format!(
                    "text outside any field of record {} (expected a marker such as `.W`)",
                    record.label
                ),
            ));
        }
        if let Some((_, field)) = record.fields.last_mut() {
            for word in content.split_whitespace() {
                if !field.is_empty() {
                    field.push(' ');
                }
                field.push_str(word);
            }
        }
    }
    Ok(records)
}

/// `.X` or `.X rest`, X an upper-case ASCII letter: the marker and the trimmed rest.
fn field_marker(line: &str) -> Option<(char, &str)> {
    let bytes = line.as_bytes();
    let is_marker = bytes.len() >= 2
        && bytes[0] == b'.'
        && bytes[1].is_ascii_uppercase()
        && (bytes.len() == 2 || bytes[2].is_ascii_whitespace());
    // Index 2 is a char boundary: the first two bytes are ASCII.
    is_marker.then(|| (char::from(bytes[1]), line[2..].trim()))
}

/// The id of a `.I` line: one whole number, returned without leading zeros and as written.
fn parse_id(rest: &str) -> Result<(String, String), String> {
    let mut tokens = rest.split_whitespace();
    match (tokens.next(), tokens.next()) {
        (Some(label), None) => match label.parse::<u64>() {
            Ok(value) => Ok((value.to_string(), label.to_string())),
            Err(_) => Err(format!("bad `.I` line: id `{label}` is not a whole number")),
        },
        (None, _) => Err("bad `.I` line: no id after `.I`".to_string()),
        (Some(_), Some(_)) => Err(format!(
            "bad `.I` line: expected `.I <number>`, found `.I {rest}`"
        )),
    }
}

/// A file's text: UTF-8, or Latin-1 for the older collections that are not UTF-8 (every byte
/// maps to one character, so nothing is lost and line numbers stay right).
fn read_text(path: &Path) -> Result<String, DataError> {
    let bytes = std::fs::read(path).map_err(|err| DataError::io(path, err))?;
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|err| err.into_bytes().iter().map(|&b| char::from(b)).collect()))
}

/// How a judgments file's columns are read.
///
/// Recognition (when [`ImportOptions::qrels_format`] is `None`): two columns → [`Pairs`];
/// three columns → [`CranfieldCodes`] when every code is −1 or 1..4 and either a −1 occurs,
/// the query labels are not 1..n, or the file is named `cran*`, otherwise [`Graded`]; four
/// columns → [`PairsWithZeros`] when the last two columns are all zero, else [`Trec`] when the
/// second column is all zero.
///
/// [`Pairs`]: QrelsFormat::Pairs
/// [`Graded`]: QrelsFormat::Graded
/// [`CranfieldCodes`]: QrelsFormat::CranfieldCodes
/// [`PairsWithZeros`]: QrelsFormat::PairsWithZeros
/// [`Trec`]: QrelsFormat::Trec
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QrelsFormat {
    /// `qid docid`: each pair is relevant, grade 1.
    Pairs,
    /// `qid docid grade`: the grade as written.
    Graded,
    /// Cranfield's `qid docid code`: code 1..4 → grade 5 − code, code −1 (the query's source
    /// paper) → grade 0.
    CranfieldCodes,
    /// `qid docid 0 0` (CISI, CACM): each pair is relevant, grade 1; the last two columns
    /// carry no information.
    PairsWithZeros,
    /// TREC's `qid iteration docid grade` (MED): the grade as written.
    Trec,
}

impl QrelsFormat {
    /// Number of columns a line of this format has.
    pub fn columns(self) -> usize {
        match self {
            QrelsFormat::Pairs => 2,
            QrelsFormat::Graded | QrelsFormat::CranfieldCodes => 3,
            QrelsFormat::PairsWithZeros | QrelsFormat::Trec => 4,
        }
    }

    /// A short description for summaries.
    pub fn describe(self) -> &'static str {
        match self {
            QrelsFormat::Pairs => "qid docid (grade 1)",
            QrelsFormat::Graded => "qid docid grade",
            QrelsFormat::CranfieldCodes => "Cranfield qid docid code (grade 5 - code, -1 -> 0)",
            QrelsFormat::PairsWithZeros => "qid docid 0 0 (grade 1)",
            QrelsFormat::Trec => "TREC qid iter docid grade",
        }
    }
}

/// How the query ids of the judgments relate to the queries file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryIds {
    /// The number after `.I` (CISI, MED, CACM).
    Label,
    /// The query's 1-based position in the queries file (Cranfield).
    Position,
}

/// Conventions fixed by the caller; `None` means recognise them from the files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportOptions {
    pub query_ids: Option<QueryIds>,
    pub qrels_format: Option<QrelsFormat>,
}

impl ImportOptions {
    /// Cranfield's conventions: positional query ids and Cleverdon's relevance codes.
    pub fn cranfield() -> Self {
        ImportOptions {
            query_ids: Some(QueryIds::Position),
            qrels_format: Some(QrelsFormat::CranfieldCodes),
        }
    }
}

/// The conventions an import used (given or recognised).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conventions {
    pub query_ids: QueryIds,
    pub qrels_format: QrelsFormat,
}

/// The three files of a collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    pub documents: PathBuf,
    pub queries: PathBuf,
    pub judgments: PathBuf,
}

impl Sources {
    /// The three paths, in the order documents, queries, judgments.
    pub fn paths(&self) -> [&Path; 3] {
        [&self.documents, &self.queries, &self.judgments]
    }
}

/// Files the caller names itself; the others are recognised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceHints {
    pub documents: Option<PathBuf>,
    pub queries: Option<PathBuf>,
    pub judgments: Option<PathBuf>,
}

/// True when `dir` holds at least one file of SMART records (a cheap look at each file's
/// first line), i.e. looks like a raw collection rather than a BEIR layout.
pub fn is_smart_dir(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        path.is_file() && !is_hidden(&path) && starts_with_record(&path).unwrap_or(false)
    })
}

/// Recognises the documents, queries and judgments of a collection directory.
///
/// By content first: files of SMART records (first line `.I n`) are the documents (the one
/// with most records) and the queries (the next; with more than two, the one named like
/// `*.qry`/`query*`); a file whose lines are all 2–4 numbers is a judgments file (with more
/// than one, the one named like `*rel*`, not `*old*`). Names only break ties, so renamed copies
/// still work; anything else (read-me files, stop-word lists) is ignored. Files named in
/// `hints` are taken as given and left out of the recognition of the others.
pub fn find_sources(dir: &Path, hints: &SourceHints) -> Result<Sources, DataError> {
    let candidates = Candidates::scan(dir, hints)?;
    let invalid = |message: String| DataError::Invalid {
        path: dir.to_path_buf(),
        message: format!("{message}; name the files with --documents, --queries and --judgments"),
    };
    let documents = match &hints.documents {
        Some(path) => path.clone(),
        None => candidates
            .documents(hints.queries.is_some())
            .map_err(invalid)?,
    };
    let queries = match &hints.queries {
        Some(path) => path.clone(),
        None => candidates.queries(&documents).map_err(invalid)?,
    };
    let judgments = match &hints.judgments {
        Some(path) => path.clone(),
        None => candidates.judgments().map_err(invalid)?,
    };
    Ok(Sources {
        documents,
        queries,
        judgments,
    })
}

/// The files of a collection directory that may be its documents, queries or judgments.
#[derive(Default)]
struct Candidates {
    /// Files of SMART records with their record counts, most records first (equal counts in
    /// name order).
    records: Vec<(PathBuf, usize)>,
    /// Files of judgment lines, in name order.
    judgments: Vec<PathBuf>,
}

impl Candidates {
    /// Classifies every visible file of `dir` not named in `hints` (none when all three are).
    fn scan(dir: &Path, hints: &SourceHints) -> Result<Self, DataError> {
        let pinned: Vec<&PathBuf> = [&hints.documents, &hints.queries, &hints.judgments]
            .into_iter()
            .flatten()
            .collect();
        let mut candidates = Candidates::default();
        if pinned.len() == 3 {
            return Ok(candidates);
        }
        let entries = std::fs::read_dir(dir).map_err(|err| DataError::io(dir, err))?;
        let mut paths: Vec<PathBuf> = entries
            .map(|entry| entry.map(|entry| entry.path()))
            .collect::<Result<_, _>>()
            .map_err(|err| DataError::io(dir, err))?;
        paths.sort();
        for path in paths {
            if !path.is_file() || is_hidden(&path) || pinned.iter().any(|p| same_file(p, &path)) {
                continue;
            }
            match classify(&path)? {
                Kind::Records(count) => candidates.records.push((path, count)),
                Kind::Judgments => candidates.judgments.push(path),
                Kind::Other => {}
            }
        }
        // A stable sort: equal counts stay in name order.
        candidates
            .records
            .sort_by_key(|(_, count)| std::cmp::Reverse(*count));
        Ok(candidates)
    }

    /// The file with most records (by name among equals); `queries_named` when the queries
    /// file is given, so one file of records is enough.
    fn documents(&self, queries_named: bool) -> Result<PathBuf, String> {
        let needed = if queries_named { 1 } else { 2 };
        if self.records.len() < needed {
            return Err(format!(
                "found {} file(s) of SMART records (`.I n` lines) where documents and queries \
                 are needed",
                self.records.len()
            ));
        }
        let most = self.records[0].1;
        let tied: Vec<PathBuf> = self
            .records
            .iter()
            .filter(|(_, count)| *count == most)
            .map(|(path, _)| path.clone())
            .collect();
        match &tied[..] {
            [only] => Ok(only.clone()),
            _ => pick_by_name(&tied, name_score_documents).ok_or_else(|| {
                format!(
                    "cannot tell the documents from the queries: {} have {most} records each",
                    file_names(&tied)
                )
            }),
        }
    }

    /// The file of records other than `documents` (by name among several).
    fn queries(&self, documents: &Path) -> Result<PathBuf, String> {
        let rest: Vec<PathBuf> = self
            .records
            .iter()
            .map(|(path, _)| path.clone())
            .filter(|path| !same_file(path, documents))
            .collect();
        match &rest[..] {
            [] => Err("found no queries file".to_string()),
            [only] => Ok(only.clone()),
            _ => pick_by_name(&rest, name_score_queries).ok_or_else(|| {
                format!(
                    "cannot tell which file holds the queries: {}",
                    file_names(&rest)
                )
            }),
        }
    }

    /// The judgments file (by name among several).
    fn judgments(&self) -> Result<PathBuf, String> {
        match &self.judgments[..] {
            [] => Err(
                "found no judgments file (lines of 2-4 numbers: `qid docid [code]`)".to_string(),
            ),
            [only] => Ok(only.clone()),
            _ => pick_by_name(&self.judgments, name_score_judgments).ok_or_else(|| {
                format!(
                    "cannot tell which file holds the judgments: {}",
                    file_names(&self.judgments)
                )
            }),
        }
    }
}

/// The files' names, comma-separated, for messages.
fn file_names(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|path| file_name(path))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The one candidate with the best positive name score, if there is exactly one.
fn pick_by_name(candidates: &[PathBuf], score: fn(&Path) -> i32) -> Option<PathBuf> {
    let best = candidates.iter().map(|path| score(path)).max()?;
    let top: Vec<&PathBuf> = candidates
        .iter()
        .filter(|path| score(path) == best)
        .collect();
    match top[..] {
        [path] if best > 0 => Some(path.clone()),
        _ => None,
    }
}

fn lower_name(path: &Path) -> String {
    file_name(path).to_ascii_lowercase()
}

fn name_score_documents(path: &Path) -> i32 {
    let name = lower_name(path);
    i32::from(name.contains("all") || name.contains("doc") || name.contains("corpus"))
}

fn name_score_queries(path: &Path) -> i32 {
    let name = lower_name(path);
    let mut score = i32::from(name.contains("qry") || name.contains("quer"));
    if name.contains("old") || name.contains("bak") {
        score -= 2;
    }
    score
}

fn name_score_judgments(path: &Path) -> i32 {
    let name = lower_name(path);
    let mut score = 2 * i32::from(name.contains("rel")) + i32::from(name.contains("qrel"));
    if name.contains("old") || name.contains("bak") || name.ends_with('~') {
        score -= 4;
    }
    score
}

enum Kind {
    Records(usize),
    Judgments,
    Other,
}

/// How much of a file recognition reads before deciding it holds judgments.
const SNIFF_BYTES: usize = 64 * 1024;

fn classify(path: &Path) -> Result<Kind, DataError> {
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    let file = std::fs::File::open(path).map_err(|err| DataError::io(path, err))?;
    file.take(SNIFF_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(|err| DataError::io(path, err))?;
    let truncated = head.len() == SNIFF_BYTES;
    let text = String::from_utf8_lossy(&head);
    let mut lines: Vec<&str> = text.lines().collect();
    if truncated {
        // The last line may be cut in the middle.
        lines.pop();
    }
    let mut lines = lines.into_iter().filter(|line| !line.trim().is_empty());
    let Some(first) = lines.next() else {
        return Ok(Kind::Other);
    };
    if field_marker(first.trim_end()).is_some_and(|(marker, _)| marker == 'I') {
        let text = read_text(path)?;
        let count = text
            .lines()
            .filter(|line| field_marker(line.trim_end()).is_some_and(|(m, _)| m == 'I'))
            .count();
        return Ok(Kind::Records(count));
    }
    let numeric_row = |line: &str| {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        (2..=4)
            .contains(&tokens.len())
            .then_some(tokens.len())
            .filter(|_| {
                tokens
                    .iter()
                    .all(|token| token.parse::<f64>().is_ok_and(f64::is_finite))
            })
    };
    let Some(columns) = numeric_row(first) else {
        return Ok(Kind::Other);
    };
    if lines.all(|line| numeric_row(line) == Some(columns)) {
        Ok(Kind::Judgments)
    } else {
        Ok(Kind::Other)
    }
}

/// Whether the first non-blank line of a file is a `.I` line.
fn starts_with_record(path: &Path) -> Result<bool, DataError> {
    let mut head = Vec::new();
    let file = std::fs::File::open(path).map_err(|err| DataError::io(path, err))?;
    file.take(4096)
        .read_to_end(&mut head)
        .map_err(|err| DataError::io(path, err))?;
    let text = String::from_utf8_lossy(&head);
    Ok(text
        .lines()
        .find(|line| !line.trim().is_empty())
        .is_some_and(|line| field_marker(line.trim_end()).is_some_and(|(m, _)| m == 'I')))
}

fn is_hidden(path: &Path) -> bool {
    file_name(path).starts_with('.')
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// A collection read into memory, with the conventions used to read it.
#[derive(Debug, Clone)]
pub struct Collection {
    pub corpus: Vec<Document>,
    /// Every query of the queries file, in file order.
    pub queries: Vec<Query>,
    pub qrels: Qrels,
    pub conventions: Conventions,
    /// Judgment lines read (a repeated identical line counts once in `qrels`).
    pub judgment_lines: usize,
}

/// Reads the three files of a collection and checks them against each other: unique
/// document and query ids, and every judgment naming a known query and document.
pub fn read_collection(
    sources: &Sources,
    options: &ImportOptions,
) -> Result<Collection, DataError> {
    let doc_records = read_records(&sources.documents)?;
    check_unique(&sources.documents, &doc_records)?;
    let query_records = read_records(&sources.queries)?;
    check_unique(&sources.queries, &query_records)?;
    let rows = read_judgment_rows(&sources.judgments)?;

    let contiguous = query_records
        .iter()
        .enumerate()
        .all(|(index, record)| record.id == (index + 1).to_string());
    let qrels_format = match options.qrels_format {
        Some(format) => format,
        None => detect_format(&sources.judgments, &rows, contiguous)?,
    };
    let query_ids = options.query_ids.unwrap_or(
        if qrels_format == QrelsFormat::CranfieldCodes && !contiguous {
            QueryIds::Position
        } else {
            QueryIds::Label
        },
    );

    let corpus = documents_of(&doc_records);
    let queries = queries_of(&query_records, query_ids);
    let qrels = judgments_of(sources, &rows, qrels_format, query_ids, &corpus, &queries)?;
    Ok(Collection {
        corpus,
        queries,
        qrels,
        conventions: Conventions {
            query_ids,
            qrels_format,
        },
        judgment_lines: rows.len(),
    })
}

fn documents_of(records: &[Record]) -> Vec<Document> {
    records
        .iter()
        .map(|record| Document {
            id: record.id.clone(),
            title: record.field('T').unwrap_or_default(),
            text: record.field('W').unwrap_or_default(),
        })
        .collect()
}

/// Queries are their `.W` text, or their `.T` title where they have no text.
fn queries_of(records: &[Record], query_ids: QueryIds) -> Vec<Query> {
    records
        .iter()
        .enumerate()
        .map(|(index, record)| Query {
            id: match query_ids {
                QueryIds::Label => record.id.clone(),
                QueryIds::Position => (index + 1).to_string(),
            },
            text: record
                .field('W')
                .filter(|text| !text.is_empty())
                .or_else(|| record.field('T'))
                .unwrap_or_default(),
        })
        .collect()
}

/// The judgment rows read in `format`, each checked against the queries and documents.
fn judgments_of(
    sources: &Sources,
    rows: &[Row],
    format: QrelsFormat,
    query_ids: QueryIds,
    corpus: &[Document],
    queries: &[Query],
) -> Result<Qrels, DataError> {
    let query_set: HashSet<&str> = queries.iter().map(|query| query.id.as_str()).collect();
    let doc_set: HashSet<&str> = corpus.iter().map(|doc| doc.id.as_str()).collect();
    let documents_name = file_name(&sources.documents);
    let queries_name = file_name(&sources.queries);
    let mut qrels = Qrels::new();
    for row in rows {
        let at = |message: String| DataError::malformed(&sources.judgments, row.line, message);
        if row.fields.len() != format.columns() {
            return Err(at(format!(
                "expected {} columns ({}), found {}",
                format.columns(),
                format.describe(),
                row.fields.len()
            )));
        }
        let (qid, docid, grade) = interpret(row, format).map_err(at)?;
        if !query_set.contains(qid.as_str()) {
            let meaning = match query_ids {
                QueryIds::Label => format!("no `.I {qid}` in {queries_name}"),
                QueryIds::Position => format!("{queries_name} holds {} queries", queries.len()),
            };
            return Err(at(format!(
                "query `{qid}` is not a known query ({meaning})"
            )));
        }
        if !doc_set.contains(docid.as_str()) {
            return Err(at(format!("document `{docid}` is not in {documents_name}")));
        }
        let docs = qrels.entry(qid.clone()).or_default();
        match docs.get(&docid) {
            Some(&previous) if previous != grade => {
                return Err(at(format!(
                    "query `{qid}` judges document `{docid}` twice, with grades {previous} and \
                     {grade}"
                )))
            }
            Some(_) => {}
            None => {
                docs.insert(docid, grade);
            }
        }
    }
    Ok(qrels)
}

fn check_unique(path: &Path, records: &[Record]) -> Result<(), DataError> {
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(records.len());
    for record in records {
        if let Some(first) = seen.insert(&record.id, record.line) {
            return Err(DataError::malformed(
                path,
                record.line,
                format!(
                    "duplicate record `.I {}` (first on line {first})",
                    record.label
                ),
            ));
        }
    }
    Ok(())
}

/// One non-blank line of a judgments file, split on whitespace.
struct Row {
    line: usize,
    fields: Vec<String>,
}

/// Reads a judgments file: 2–4 numeric columns, the same number on every line.
fn read_judgment_rows(path: &Path) -> Result<Vec<Row>, DataError> {
    let text = read_text(path)?;
    let mut rows: Vec<Row> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let fields: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        if fields.is_empty() {
            continue;
        }
        if !(2..=4).contains(&fields.len()) {
            return Err(DataError::malformed(
                path,
                number,
                format!(
                    "expected 2 to 4 whitespace-separated columns (qid docid [code ...]), found {}",
                    fields.len()
                ),
            ));
        }
        if let Some(first) = rows.first() {
            if first.fields.len() != fields.len() {
                return Err(DataError::malformed(
                    path,
                    number,
                    format!(
                        "{} columns, but line {} has {}",
                        fields.len(),
                        first.line,
                        first.fields.len()
                    ),
                ));
            }
        }
        if let Some(bad) = fields
            .iter()
            .find(|field| !field.parse::<f64>().is_ok_and(f64::is_finite))
        {
            return Err(DataError::malformed(
                path,
                number,
                format!("`{bad}` is not a number"),
            ));
        }
        rows.push(Row {
            line: number,
            fields,
        });
    }
    if rows.is_empty() {
        return Err(DataError::Invalid {
            path: path.to_path_buf(),
            message: "no judgments".to_string(),
        });
    }
    Ok(rows)
}

fn detect_format(path: &Path, rows: &[Row], contiguous: bool) -> Result<QrelsFormat, DataError> {
    let column = |index: usize| rows.iter().map(move |row| row.fields[index].as_str());
    let is_zero = |value: &str| value.parse::<f64>().is_ok_and(|v| v == 0.0);
    match rows.first().map_or(0, |row| row.fields.len()) {
        2 => Ok(QrelsFormat::Pairs),
        3 => {
            let codes: Option<Vec<i32>> = column(2).map(|code| code.parse().ok()).collect();
            let cranfield_codes = codes.as_ref().is_some_and(|codes| {
                codes.iter().all(|code| matches!(code, -1 | 1..=4))
                    && (codes.contains(&-1) || !contiguous || lower_name(path).starts_with("cran"))
            });
            Ok(if cranfield_codes {
                QrelsFormat::CranfieldCodes
            } else {
                QrelsFormat::Graded
            })
        }
        _ => {
            if column(2).all(is_zero) && column(3).all(is_zero) {
                Ok(QrelsFormat::PairsWithZeros)
            } else if column(1).all(is_zero) {
                Ok(QrelsFormat::Trec)
            } else {
                Err(DataError::Invalid {
                    path: path.to_path_buf(),
                    message: "4-column judgments match neither `qid docid 0 0` (CISI, CACM) \
                              nor `qid 0 docid grade` (TREC, MED)"
                        .to_string(),
                })
            }
        }
    }
}

/// (query id, document id, grade) of one row in `format`.
fn interpret(row: &Row, format: QrelsFormat) -> Result<(String, String, i32), String> {
    let id = |index: usize, what: &str| {
        let value = &row.fields[index];
        value
            .parse::<u64>()
            .map(|number| number.to_string())
            .map_err(|_| format!("{what} `{value}` is not a whole number"))
    };
    let grade = |index: usize| {
        let value = &row.fields[index];
        value
            .parse::<i32>()
            .map_err(|_| format!("grade `{value}` is not an integer"))
    };
    Ok(match format {
        QrelsFormat::Pairs | QrelsFormat::PairsWithZeros => {
            (id(0, "query id")?, id(1, "document id")?, 1)
        }
        QrelsFormat::Graded => (id(0, "query id")?, id(1, "document id")?, grade(2)?),
        QrelsFormat::CranfieldCodes => {
            let code = grade(2)?;
            let grade = match code {
                -1 => 0,
                1..=4 => 5 - code,
                _ => {
                    return Err(format!(
                        "Cranfield relevance code must be -1 or 1..4, found {code}"
                    ))
                }
            };
            (id(0, "query id")?, id(1, "document id")?, grade)
        }
        QrelsFormat::Trec => (id(0, "query id")?, id(2, "document id")?, grade(3)?),
    })
}

/// What an import wrote.
#[derive(Debug, Clone)]
pub struct ImportSummary {
    pub out_dir: PathBuf,
    pub sources: Sources,
    pub conventions: Conventions,
    pub documents: usize,
    /// Every query of the queries file.
    pub queries: usize,
    /// Queries with at least one judgment.
    pub judged_queries: usize,
    /// Lines of the judgments file.
    pub judgment_lines: usize,
    /// Distinct judged (query, document) pairs.
    pub judgments: usize,
    /// Judged pairs with grade ≥ 1.
    pub relevant: usize,
}

/// Recognises a collection in `src_dir` ([`find_sources`]) and its conventions, and writes it
/// to `out_dir` as a BEIR layout with one split, `test` ([`beir::write`], atomic).
pub fn import(src_dir: &Path, out_dir: &Path) -> Result<ImportSummary, DataError> {
    let sources = find_sources(src_dir, &SourceHints::default())?;
    import_with(&sources, out_dir, &ImportOptions::default())
}

/// [`import`] with the files and conventions chosen by the caller.
pub fn import_with(
    sources: &Sources,
    out_dir: &Path,
    options: &ImportOptions,
) -> Result<ImportSummary, DataError> {
    let collection = read_collection(sources, options)?;
    let summary = ImportSummary {
        out_dir: out_dir.to_path_buf(),
        sources: sources.clone(),
        conventions: collection.conventions,
        documents: collection.corpus.len(),
        queries: collection.queries.len(),
        judged_queries: collection.qrels.len(),
        judgment_lines: collection.judgment_lines,
        judgments: collection.qrels.values().map(BTreeMap::len).sum(),
        relevant: collection
            .qrels
            .values()
            .flat_map(BTreeMap::values)
            .filter(|&&grade| grade >= 1)
            .count(),
    };
    let splits = BTreeMap::from([("test".to_string(), collection.qrels)]);
    beir::write(out_dir, &collection.corpus, &collection.queries, &splits)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/smart")
            .join(name)
    }

    /// The data mirror (`REPRO_MIRROR`, else `../shared/data` beside the crate).
    fn mirror() -> PathBuf {
        std::env::var_os("REPRO_MIRROR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"))
    }

    fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    fn malformed(err: DataError) -> (PathBuf, usize, String) {
        match err {
            DataError::Malformed {
                path,
                line,
                message,
            } => (path, line, message),
            other => panic!("expected a malformed-line error, got {other}"),
        }
    }

    #[test]
    fn records_keep_every_field_and_join_lines() {
        let text = ".I 007\n.T\nA title\n  on two lines .\n.A\nsomeone\n.W first words\n\nmore \
                    words\n.X\n1\t5\t1\n.W\nsecond part\n.I 8\n.T Title on the marker line\n";
        let records = parse_records(Path::new("x"), text).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].id, "7");
        assert_eq!(records[0].label, "007");
        assert_eq!(records[0].field('T').unwrap(), "A title on two lines .");
        assert_eq!(
            records[0].field('W').unwrap(),
            "first words more words second part"
        );
        assert_eq!(records[0].field('X').unwrap(), "1 5 1");
        assert_eq!(records[0].field('B'), None);
        assert_eq!(records[1].line, 14);
        assert_eq!(records[1].field('T').unwrap(), "Title on the marker line");
        assert_eq!(records[1].field('W'), None);
    }

    #[test]
    fn malformed_records_name_the_line() {
        let cases = [
            (
                "some text\n.I 1\n.W\nx\n",
                1,
                "text before the first `.I` record",
            ),
            ("\n.T\n.I 1\n", 2, "field `.T` before the first `.I` record"),
            (".I 1\n.W\nx\n.I one\n", 4, "id `one` is not a whole number"),
            (".I\n", 1, "no id after `.I`"),
            (".I 1 2\n", 1, "expected `.I <number>`"),
            (".I 1\nloose text\n", 2, "text outside any field"),
        ];
        for (text, line, expected) in cases {
            let (path, at, message) =
                malformed(parse_records(Path::new("f.all"), text).unwrap_err());
            assert_eq!(path, Path::new("f.all"));
            assert_eq!(at, line, "{text:?}");
            assert!(message.contains(expected), "{text:?}: {message}");
        }
    }

    #[test]
    fn latin1_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latin1");
        std::fs::write(&path, b".I 1\n.W\ncaf\xe9\n").unwrap();
        assert_eq!(read_records(&path).unwrap()[0].field('W').unwrap(), "café");
    }

    #[test]
    fn judgment_errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "docs.all", ".I 1\n.W\na\n.I 2\n.W\nb\n");
        write(dir.path(), "q.qry", ".I 1\n.W\nqa\n");
        let cases = [
            ("1 1\n1 x\n", 2, "`x` is not a number"),
            ("1 1\n1 2 3\n", 2, "3 columns, but line 1 has 2"),
            ("1\n", 1, "expected 2 to 4"),
            ("1 9\n", 1, "document `9` is not in docs.all"),
            ("2 1\n", 1, "no `.I 2` in q.qry"),
            ("1.5 1\n", 1, "query id `1.5` is not a whole number"),
        ];
        for (qrels, line, expected) in cases {
            write(dir.path(), "q.rel", qrels);
            let sources = Sources {
                documents: dir.path().join("docs.all"),
                queries: dir.path().join("q.qry"),
                judgments: dir.path().join("q.rel"),
            };
            let err = read_collection(&sources, &ImportOptions::default()).unwrap_err();
            let (path, at, message) = malformed(err);
            assert!(path.ends_with("q.rel"));
            assert_eq!(at, line, "{qrels:?}");
            assert!(message.contains(expected), "{qrels:?}: {message}");
        }
    }

    #[test]
    fn cranfield_codes_and_positions() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "cran.all.1400",
            ".I 1\n.T\nt1\n.A\n.B\n.W\nw1\n.I 2\n.T\nt2\n.W\nw2\n.I 3\n.W\nw3\n",
        );
        write(
            dir.path(),
            "cran.qry",
            ".I 001\n.W\nfirst .\n.I 002\n.W\nsecond .\n.I 004\n.W\nthird .\n",
        );
        write(
            dir.path(),
            "cranqrel",
            "1 1 -1 \n1 2 1\n3 3 4\n3 1 2\n2 2 3\n",
        );
        write(
            dir.path(),
            "cranqrel.readme",
            "The codes are defined by Cleverdon.\n",
        );
        let out = dir.path().join("out");
        let summary = import(dir.path(), &out).unwrap();
        assert_eq!(
            summary.conventions,
            Conventions {
                query_ids: QueryIds::Position,
                qrels_format: QrelsFormat::CranfieldCodes
            }
        );
        assert_eq!(summary.sources.judgments, dir.path().join("cranqrel"));
        assert_eq!((summary.documents, summary.queries), (3, 3));
        assert_eq!(
            (summary.judgment_lines, summary.judgments, summary.relevant),
            (5, 5, 4)
        );
        let dataset = beir::load(&out, "test").unwrap();
        // Query `.I 004` is the third query, hence id 3, as cranqrel numbers it.
        assert_eq!(dataset.queries[2].id, "3");
        assert_eq!(dataset.queries[2].text, "third .");
        assert_eq!(dataset.qrels["1"]["1"], 0);
        assert_eq!(dataset.qrels["1"]["2"], 4);
        assert_eq!(dataset.qrels["3"]["3"], 1);
        assert_eq!(dataset.qrels["3"]["1"], 3);
        assert_eq!(dataset.qrels["2"]["2"], 2);
        assert_eq!(dataset.corpus[2].title, "");
    }

    #[test]
    fn explicit_options_override_recognition() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "d.all", ".I 1\n.W\na\n.I 2\n.W\nb\n");
        write(dir.path(), "q.qry", ".I 1\n.W\nqa\n.I 2\n.W\nqb\n");
        write(dir.path(), "q.rel", "1 1 2\n2 2 1\n");
        let sources = find_sources(dir.path(), &SourceHints::default()).unwrap();
        let graded = read_collection(&sources, &ImportOptions::default()).unwrap();
        assert_eq!(graded.conventions.qrels_format, QrelsFormat::Graded);
        assert_eq!(graded.qrels["1"]["1"], 2);
        let cranfield = read_collection(&sources, &ImportOptions::cranfield()).unwrap();
        assert_eq!(cranfield.qrels["1"]["1"], 3);
        write(dir.path(), "q.rel", "1 1 5\n");
        let err = read_collection(&sources, &ImportOptions::cranfield()).unwrap_err();
        assert!(
            err.to_string()
                .contains("q.rel:1: Cranfield relevance code"),
            "{err}"
        );
    }

    #[test]
    fn cisi_like_collection() {
        let dir = tempfile::tempdir().unwrap();
        let summary = import(&fixture("cisi"), &dir.path().join("cisi")).unwrap();
        assert_eq!(
            summary.conventions.qrels_format,
            QrelsFormat::PairsWithZeros
        );
        assert_eq!(summary.conventions.query_ids, QueryIds::Label);
        assert!(summary.sources.documents.ends_with("CISI.ALL"));
        assert!(summary.sources.queries.ends_with("CISI.QRY"));
        assert!(summary.sources.judgments.ends_with("CISI.REL"));
        assert_eq!(
            (summary.documents, summary.queries, summary.judged_queries),
            (4, 3, 2)
        );
        assert_eq!((summary.judgments, summary.relevant), (5, 5));
        let dataset = beir::load(&dir.path().join("cisi"), "test").unwrap();
        let doc = &dataset.corpus[0];
        assert_eq!(
            doc.title,
            "18 Editions of the Dewey Decimal Classifications"
        );
        assert!(
            doc.text.starts_with("The present study is a history"),
            "{}",
            doc.text
        );
        assert!(!doc.text.contains("Comaromi"), "authors are not text");
        // Query 3 has .T, .A, .W and .B sections; its text is the .W section.
        let query = dataset.queries.iter().find(|q| q.id == "3").unwrap();
        assert_eq!(
            query.text,
            "Abstracting and indexing of articles in the social sciences."
        );
    }

    #[test]
    fn med_like_collection_with_trec_judgments() {
        let dir = tempfile::tempdir().unwrap();
        let summary = import(&fixture("med"), &dir.path().join("med")).unwrap();
        assert!(
            summary.sources.judgments.ends_with("MED.REL"),
            "MED.REL.OLD is not chosen"
        );
        assert_eq!(summary.conventions.qrels_format, QrelsFormat::Trec);
        assert_eq!(
            (summary.documents, summary.queries, summary.judgments),
            (3, 2, 4)
        );
        let dataset = beir::load(&dir.path().join("med"), "test").unwrap();
        assert_eq!(dataset.qrels["1"]["2"], 1);
        assert_eq!(dataset.qrels["2"]["3"], 2);
        assert_eq!(dataset.corpus[0].title, "");
        assert!(dataset.corpus[0]
            .text
            .starts_with("correlation between maternal"));
    }

    #[test]
    fn cacm_like_collection_with_padded_ids() {
        let dir = tempfile::tempdir().unwrap();
        let summary = import(&fixture("cacm"), &dir.path().join("cacm")).unwrap();
        assert!(summary.sources.documents.ends_with("cacm.all"));
        assert!(summary.sources.queries.ends_with("query.text"));
        assert!(summary.sources.judgments.ends_with("qrels.text"));
        assert_eq!(
            summary.conventions.qrels_format,
            QrelsFormat::PairsWithZeros
        );
        assert_eq!(
            (summary.documents, summary.queries, summary.judged_queries),
            (4, 3, 2)
        );
        let dataset = beir::load(&dir.path().join("cacm"), "test").unwrap();
        // `01 0003 0 0` in qrels.text is query 1, document 3.
        assert_eq!(dataset.qrels["1"]["3"], 1);
        let doc = dataset.corpus.iter().find(|d| d.id == "2").unwrap();
        assert_eq!(
            doc.title,
            "Extraction of Roots by Repeated Subtractions for Digital Computers"
        );
        assert_eq!(doc.text, "");
        let query = dataset.queries.iter().find(|q| q.id == "2").unwrap();
        assert_eq!(
            query.text,
            "I'm interested in mechanisms for communicating between disjoint processes."
        );
    }

    #[test]
    fn recognition_failures_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.all", ".I 1\n.W\na\n");
        let err = find_sources(dir.path(), &SourceHints::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("found 1 file(s) of SMART records"), "{err}");
        write(dir.path(), "b.all", ".I 1\n.W\nb\n");
        let err = find_sources(dir.path(), &SourceHints::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot tell the documents from the queries"),
            "{err}"
        );
        std::fs::remove_file(dir.path().join("b.all")).unwrap();
        write(dir.path(), "b.qry", ".I 1\n.W\nq\n");
        let err = find_sources(dir.path(), &SourceHints::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("found no judgments file"), "{err}");
        write(dir.path(), "one.txt", "1 1\n");
        write(dir.path(), "two.txt", "1 1\n");
        write(dir.path(), "a.all", ".I 1\n.W\na\n.I 2\n.W\nb\n");
        let err = find_sources(dir.path(), &SourceHints::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("one.txt, two.txt") && err.contains("--judgments"),
            "{err}"
        );
        let hints = SourceHints {
            judgments: Some(dir.path().join("two.txt")),
            ..SourceHints::default()
        };
        let sources = find_sources(dir.path(), &hints).unwrap();
        assert!(sources.documents.ends_with("a.all") && sources.queries.ends_with("b.qry"));
        assert!(is_smart_dir(dir.path()));
        assert!(!is_smart_dir(&dir.path().join("missing")));
    }

    #[test]
    fn real_cranfield_imports_with_its_conventions() {
        let source = mirror().join("cranfield");
        assert!(
            source.join("cran.all.1400").is_file(),
            "this test reads the Cranfield collection from the data mirror at {} (set \
             REPRO_MIRROR)",
            source.display()
        );
        let out = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let summary = import(&source, &out.path().join("cranfield")).unwrap();
        let elapsed = started.elapsed();
        assert!(summary.sources.documents.ends_with("cran.all.1400"));
        assert!(summary.sources.queries.ends_with("cran.qry"));
        assert!(summary.sources.judgments.ends_with("cranqrel"));
        assert_eq!(
            summary.conventions,
            Conventions {
                query_ids: QueryIds::Position,
                qrels_format: QrelsFormat::CranfieldCodes
            }
        );
        assert_eq!(summary.documents, 1400);
        assert_eq!(summary.queries, 225);
        assert_eq!(summary.judged_queries, 225);
        assert_eq!(summary.judgment_lines, 1837);
        assert_eq!(summary.judgments, 1837);
        // 225 lines carry code -1 (the source paper), all others are relevant.
        assert_eq!(summary.relevant, 1612);
        assert!(elapsed.as_secs_f64() < 5.0, "{elapsed:?}");

        let dataset = beir::load(&out.path().join("cranfield"), "test").unwrap();
        assert_eq!(dataset.corpus.len(), 1400);
        assert_eq!(dataset.queries.len(), 225);
        // cran.qry's 225th query is labelled `.I 365`.
        assert_eq!(dataset.queries[224].id, "225");
        let grades: usize = dataset.qrels.values().map(BTreeMap::len).sum();
        assert_eq!(grades, 1837);
        // Query 1 judges document 184 with code 2 (grade 3) and 486 with -1 (grade 0).
        assert_eq!(dataset.qrels["1"]["184"], 3);
        assert_eq!(dataset.qrels["1"]["486"], 0);
        let first = &dataset.corpus[0];
        assert_eq!(
            first.title,
            "experimental investigation of the aerodynamics of a wing in a slipstream ."
        );
        assert!(first
            .text
            .starts_with("experimental investigation of the aerodynamics"));
        assert!(first
            .text
            .ends_with("the specific configuration of the experiment ."));
        assert!(dataset.queries[0]
            .text
            .starts_with("what similarity laws must be obeyed"));
    }
}
