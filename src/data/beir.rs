/*!
The BEIR dataset layout: reading it into a [`Dataset`] and writing one.

A BEIR directory holds `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl` (`_id`,
`text`) and `qrels/<split>.tsv` (`query-id<TAB>corpus-id<TAB>score`, header line, integer
score). This module owns that format: parsing with `file:line` errors, consistency checks
between the three files, and atomic writing. It must not locate or download datasets (that is
[`super::fetch`]) nor know about other formats (SMART collections are converted by
[`super::smart`], which calls [`write()`]).

Consistency rules, chosen because a silent inconsistency would change scores without anyone
noticing:

* ids are unique within `corpus.jsonl` and within `queries.jsonl`;
* every qrels line names a query of `queries.jsonl` and a document of `corpus.jsonl`;
* a (query, document) pair judged twice must carry the same grade (a repeated identical line is
  harmless and accepted, as [`super::trec`] accepts it).

Ids may be JSON strings or integers (some BEIR exports write numbers); both become strings.
*/

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{DataError, Dataset, Document, Qrels, Query};
use crate::util::write_atomic_with;

/// File name of the corpus inside a BEIR directory.
pub const CORPUS_FILE: &str = "corpus.jsonl";
/// File name of the queries inside a BEIR directory.
pub const QUERIES_FILE: &str = "queries.jsonl";
/// Directory of the per-split judgments inside a BEIR directory.
pub const QRELS_DIR: &str = "qrels";

/// Where a BEIR directory keeps one split's judgments: `qrels/<split>.tsv`.
pub fn qrels_path(dir: &Path, split: &str) -> PathBuf {
    dir.join(QRELS_DIR).join(format!("{split}.tsv"))
}

const QRELS_HEADER: [&str; 3] = ["query-id", "corpus-id", "score"];

/// True when `dir` holds the three parts of a BEIR layout (corpus, queries, a qrels folder).
/// Cheap: it looks at names only, it does not parse.
pub fn is_beir_dir(dir: &Path) -> bool {
    dir.join(CORPUS_FILE).is_file()
        && dir.join(QUERIES_FILE).is_file()
        && dir.join(QRELS_DIR).is_dir()
}

/// The splits a BEIR directory has judgments for (`qrels/<split>.tsv`), sorted.
pub fn splits(dir: &Path) -> Result<Vec<String>, DataError> {
    let qrels_dir = dir.join(QRELS_DIR);
    let entries = std::fs::read_dir(&qrels_dir).map_err(|err| DataError::io(&qrels_dir, err))?;
    let mut splits = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|err| DataError::io(&qrels_dir, err))?;
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "tsv") && path.is_file() {
            if let Some(stem) = path.file_stem().and_then(|stem| stem.to_str()) {
                splits.push(stem.to_string());
            }
        }
    }
    splits.sort();
    Ok(splits)
}

/// Loads a BEIR directory for one split: the whole corpus, the queries judged in
/// `qrels/<split>.tsv` (in `queries.jsonl` order) and those judgments.
///
/// Errors name the file and line at fault; see the module documentation for the checks.
pub fn load(dir: &Path, split: &str) -> Result<Dataset, DataError> {
    let parts = load_parts(dir, split)?;
    let queries = parts
        .queries
        .into_iter()
        .filter(|query| parts.qrels.contains_key(&query.id))
        .collect();
    Ok(Dataset {
        name: dataset_name(dir),
        dir: dir.to_path_buf(),
        split: split.to_string(),
        corpus: parts.corpus,
        queries,
        qrels: parts.qrels,
    })
}

/// Counts that describe a BEIR dataset for one split (what `repro data info` shows).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Info {
    pub name: String,
    pub dir: PathBuf,
    pub split: String,
    /// Every split with a qrels file.
    pub splits: Vec<String>,
    pub documents: usize,
    /// Queries in `queries.jsonl`, judged in this split or not.
    pub queries: usize,
    /// Queries with at least one judgment in this split.
    pub judged_queries: usize,
    /// Judged (query, document) pairs in this split.
    pub judgments: usize,
    /// Judged pairs with grade ≥ 1 (trec_eval's default relevance level).
    pub relevant: usize,
    /// Mean number of whitespace-separated words in a document's `title + " " + text`.
    pub mean_document_words: f64,
}

/// Reads a BEIR directory for one split and counts what it holds. Runs every check [`load`]
/// runs.
pub fn inspect(dir: &Path, split: &str) -> Result<Info, DataError> {
    let parts = load_parts(dir, split)?;
    let words: usize = parts
        .corpus
        .iter()
        .map(|doc| doc.title.split_whitespace().count() + doc.text.split_whitespace().count())
        .sum();
    let mean_document_words = if parts.corpus.is_empty() {
        0.0
    } else {
        words as f64 / parts.corpus.len() as f64
    };
    Ok(Info {
        name: dataset_name(dir),
        dir: dir.to_path_buf(),
        split: split.to_string(),
        splits: splits(dir)?,
        documents: parts.corpus.len(),
        queries: parts.queries.len(),
        judged_queries: parts.qrels.len(),
        judgments: parts.qrels.values().map(BTreeMap::len).sum(),
        relevant: parts
            .qrels
            .values()
            .flat_map(BTreeMap::values)
            .filter(|&&grade| grade >= 1)
            .count(),
        mean_document_words,
    })
}

/// Reads `corpus.jsonl`. Ids must be unique, non-empty and free of whitespace.
pub fn read_corpus(path: &Path) -> Result<Vec<Document>, DataError> {
    let (corpus, lines) = read_jsonl(path, |raw: RawDocument| Document {
        id: raw.id,
        title: raw.title.unwrap_or_default(),
        text: raw.text,
    })?;
    index_ids(path, corpus.iter().map(|doc| doc.id.as_str()), &lines)?;
    Ok(corpus)
}

/// Reads `queries.jsonl`. Ids must be unique, non-empty and free of whitespace.
pub fn read_queries(path: &Path) -> Result<Vec<Query>, DataError> {
    let (queries, lines) = read_jsonl(path, |raw: RawQuery| Query {
        id: raw.id,
        text: raw.text,
    })?;
    index_ids(path, queries.iter().map(|query| query.id.as_str()), &lines)?;
    Ok(queries)
}

/// Reads a BEIR qrels file (`query-id<TAB>corpus-id<TAB>score`, optional header) without
/// checking the ids against a corpus; [`load`] does that.
pub fn read_qrels(path: &Path) -> Result<Qrels, DataError> {
    parse_qrels(path, |_, _| Ok(()))
}

/// Writes a BEIR layout: `corpus.jsonl`, `queries.jsonl` and one `qrels/<split>.tsv` per
/// entry of `qrels_by_split`.
///
/// Atomic where the file system allows it: when `dir` does not exist, everything is written
/// into a temporary sibling directory that is then renamed to `dir`, so the dataset appears
/// whole or not at all. When `dir` exists (a user-chosen output folder may hold other files,
/// which must not be deleted), each file is replaced atomically on its own.
///
/// Judgments are written in the order of `queries`, then documents in natural order (numeric
/// ids by value), so that converted collections read like their sources.
pub fn write(
    dir: &Path,
    corpus: &[Document],
    queries: &[Query],
    qrels_by_split: &BTreeMap<String, Qrels>,
) -> Result<(), DataError> {
    for split in qrels_by_split.keys() {
        if split.is_empty() || split.contains(['/', '\\']) || split.starts_with('.') {
            return Err(DataError::Invalid {
                path: dir.to_path_buf(),
                message: format!("`{split}` is not a usable split name"),
            });
        }
    }
    if dir.exists() {
        return write_files(dir, corpus, queries, qrels_by_split);
    }
    let parent = match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(|err| DataError::io(parent, err))?;
    let staging = tempfile::Builder::new()
        .prefix(".repro-beir-")
        .tempdir_in(parent)
        .map_err(|err| DataError::io(parent, err))?;
    write_files(staging.path(), corpus, queries, qrels_by_split)?;
    std::fs::rename(staging.path(), dir).map_err(|err| DataError::io(dir, err))?;
    // The staging directory now lives at `dir`; dropping the handle must not delete it.
    let _ = staging.keep();
    Ok(())
}

fn write_files(
    dir: &Path,
    corpus: &[Document],
    queries: &[Query],
    qrels_by_split: &BTreeMap<String, Qrels>,
) -> Result<(), DataError> {
    let corpus_path = dir.join(CORPUS_FILE);
    write_atomic_with(&corpus_path, |out| {
        for doc in corpus {
            let line = DocumentLine {
                id: &doc.id,
                title: &doc.title,
                text: &doc.text,
            };
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    })
    .map_err(|err| DataError::io(&corpus_path, err))?;

    let queries_path = dir.join(QUERIES_FILE);
    write_atomic_with(&queries_path, |out| {
        for query in queries {
            let line = QueryLine {
                id: &query.id,
                text: &query.text,
            };
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    })
    .map_err(|err| DataError::io(&queries_path, err))?;

    let query_order: HashMap<&str, usize> = queries
        .iter()
        .enumerate()
        .map(|(index, query)| (query.id.as_str(), index))
        .collect();
    for (split, qrels) in qrels_by_split {
        let path = qrels_path(dir, split);
        let mut ordered: Vec<(&String, &BTreeMap<String, i32>)> = qrels.iter().collect();
        ordered.sort_by(|(a, _), (b, _)| {
            let rank = |id: &str| query_order.get(id).copied().unwrap_or(usize::MAX);
            rank(a).cmp(&rank(b)).then_with(|| natural_cmp(a, b))
        });
        for (qid, docs) in &ordered {
            for docid in docs.keys().chain(std::iter::once(*qid)) {
                if docid.contains(['\t', '\n', '\r']) {
                    return Err(DataError::Invalid {
                        path: path.clone(),
                        message: format!("id `{docid}` holds a tab or line break"),
                    });
                }
            }
        }
        write_atomic_with(&path, |out| {
            writeln!(out, "{}", QRELS_HEADER.join("\t"))?;
            for (qid, docs) in &ordered {
                let mut docs: Vec<(&String, &i32)> = docs.iter().collect();
                docs.sort_by(|(a, _), (b, _)| natural_cmp(a, b));
                for (docid, grade) in docs {
                    writeln!(out, "{qid}\t{docid}\t{grade}")?;
                }
            }
            Ok(())
        })
        .map_err(|err| DataError::io(&path, err))?;
    }
    Ok(())
}

/// Numeric ids by value (`2` before `10`), anything else by bytes.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y).then_with(|| a.cmp(b)),
        _ => a.cmp(b),
    }
}

#[derive(Serialize)]
struct DocumentLine<'a> {
    #[serde(rename = "_id")]
    id: &'a str,
    title: &'a str,
    text: &'a str,
}

#[derive(Serialize)]
struct QueryLine<'a> {
    #[serde(rename = "_id")]
    id: &'a str,
    text: &'a str,
}

/// Everything of a BEIR directory, before `load` drops unjudged queries.
struct Parts {
    corpus: Vec<Document>,
    queries: Vec<Query>,
    qrels: Qrels,
}

fn load_parts(dir: &Path, split: &str) -> Result<Parts, DataError> {
    let corpus_path = dir.join(CORPUS_FILE);
    let queries_path = dir.join(QUERIES_FILE);
    let judgments = qrels_path(dir, split);
    check_files(dir, split, &[&corpus_path, &queries_path], &judgments)?;
    let (corpus, corpus_lines) = read_jsonl(&corpus_path, |raw: RawDocument| Document {
        id: raw.id,
        title: raw.title.unwrap_or_default(),
        text: raw.text,
    })?;
    let (queries, query_lines) = read_jsonl(&queries_path, |raw: RawQuery| Query {
        id: raw.id,
        text: raw.text,
    })?;
    // Nothing downstream can retrieve from an empty corpus or score an empty split: refused
    // here, not at the first encode or eval.
    for (path, empty, what) in [
        (&corpus_path, corpus.is_empty(), "holds no document"),
        (&queries_path, queries.is_empty(), "holds no query"),
    ] {
        if empty {
            return Err(DataError::Invalid {
                path: path.clone(),
                message: what.to_string(),
            });
        }
    }
    let doc_ids = index_ids(
        &corpus_path,
        corpus.iter().map(|doc| doc.id.as_str()),
        &corpus_lines,
    )?;
    let query_ids = index_ids(
        &queries_path,
        queries.iter().map(|query| query.id.as_str()),
        &query_lines,
    )?;
    let qrels = parse_qrels(&judgments, |qid, docid| {
        if !query_ids.contains_key(qid) {
            return Err(format!("query id `{qid}` is not in {QUERIES_FILE}"));
        }
        if !doc_ids.contains_key(docid) {
            return Err(format!("document id `{docid}` is not in {CORPUS_FILE}"));
        }
        Ok(())
    })?;
    if qrels.is_empty() {
        return Err(DataError::Invalid {
            path: judgments,
            message: format!("split `{split}` judges no query"),
        });
    }
    Ok(Parts {
        corpus,
        queries,
        qrels,
    })
}

/// The corpus and queries files exist, and the split's judgments (else: which splits do).
fn check_files(
    dir: &Path,
    split: &str,
    texts: &[&PathBuf],
    judgments: &Path,
) -> Result<(), DataError> {
    for path in texts {
        if !path.is_file() {
            return Err(DataError::Invalid {
                path: path.to_path_buf(),
                message: format!(
                    "not found: {} does not hold a BEIR dataset ({CORPUS_FILE}, {QUERIES_FILE}, \
                     {QRELS_DIR}/<split>.tsv)",
                    dir.display()
                ),
            });
        }
    }
    if !judgments.is_file() {
        let available = splits(dir).unwrap_or_default();
        let available = if available.is_empty() {
            "none".to_string()
        } else {
            available.join(", ")
        };
        return Err(DataError::Invalid {
            path: judgments.to_path_buf(),
            message: format!("not found: no judgments for split `{split}` (splits: {available})"),
        });
    }
    Ok(())
}

/// The dataset's short name: its directory's name (resolving `.` and the like).
fn dataset_name(dir: &Path) -> String {
    let named = |path: &Path| {
        path.file_name()
            .map(|name| name.to_string_lossy().into_owned())
    };
    named(dir)
        .or_else(|| std::fs::canonicalize(dir).ok().as_deref().and_then(named))
        .unwrap_or_else(|| dir.display().to_string())
}

#[derive(Deserialize)]
struct RawDocument {
    #[serde(rename = "_id", deserialize_with = "deserialize_id")]
    id: String,
    #[serde(default)]
    title: Option<String>,
    text: String,
}

#[derive(Deserialize)]
struct RawQuery {
    #[serde(rename = "_id", deserialize_with = "deserialize_id")]
    id: String,
    text: String,
}

/// Accepts `"_id": "abc"` and `"_id": 123`; anything else (floats, null) is an error, since it
/// could not be written back unchanged.
fn deserialize_id<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    struct IdVisitor;

    impl serde::de::Visitor<'_> for IdVisitor {
        type Value = String;

        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            formatter.write_str("a string or an integer id")
        }

        fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<String, E> {
            Ok(value.to_string())
        }

        fn visit_string<E: serde::de::Error>(self, value: String) -> Result<String, E> {
            Ok(value)
        }

        fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<String, E> {
            Ok(value.to_string())
        }

        fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<String, E> {
            Ok(value.to_string())
        }
    }

    deserializer.deserialize_any(IdVisitor)
}

/// Parses one JSON object per non-blank line; returns the items and their 1-based lines.
fn read_jsonl<R: serde::de::DeserializeOwned, T>(
    path: &Path,
    convert: impl Fn(R) -> T,
) -> Result<(Vec<T>, Vec<usize>), DataError> {
    let mut items = Vec::new();
    let mut lines = Vec::new();
    for_each_line(path, |number, line| {
        // A byte-order mark (left by some Windows editors) is not JSON whitespace.
        let line = if number == 1 {
            line.trim_start_matches('\u{feff}')
        } else {
            line
        };
        if line.trim().is_empty() {
            return Ok(());
        }
        let raw: R = serde_json::from_str(line).map_err(|err| err.to_string())?;
        items.push(convert(raw));
        lines.push(number);
        Ok(())
    })?;
    Ok((items, lines))
}

/// Maps id → position, failing on the first id seen twice.
fn index_ids<'a>(
    path: &Path,
    ids: impl Iterator<Item = &'a str>,
    lines: &[usize],
) -> Result<HashMap<&'a str, usize>, DataError> {
    let mut index = HashMap::with_capacity(lines.len());
    for (position, id) in ids.enumerate() {
        if id.is_empty() || id.contains(char::is_whitespace) {
            return Err(DataError::malformed(
                path,
                lines[position],
                format!(
                    "id `{id}` is empty or holds whitespace, which TREC run and qrels files \
                     cannot hold"
                ),
            ));
        }
        if let Some(first) = index.insert(id, position) {
            return Err(DataError::malformed(
                path,
                lines[position],
                format!("duplicate id `{id}` (first on line {})", lines[first]),
            ));
        }
    }
    Ok(index)
}

/// Reads BEIR qrels, asking `check` about every (query, document) pair; its error message
/// becomes a `file:line` error.
fn parse_qrels(
    path: &Path,
    mut check: impl FnMut(&str, &str) -> Result<(), String>,
) -> Result<Qrels, DataError> {
    let mut qrels = Qrels::new();
    let mut seen_data = false;
    for_each_line(path, |_, line| {
        if line.trim().is_empty() {
            return Ok(());
        }
        // BEIR writes tabs; a file without any tab is split on whitespace so that hand-made
        // files with spaces still read.
        let fields: Vec<&str> = if line.contains('\t') {
            line.split('\t').map(str::trim).collect()
        } else {
            line.split_whitespace().collect()
        };
        if !seen_data {
            seen_data = true;
            if fields == QRELS_HEADER {
                return Ok(());
            }
        }
        let [qid, docid, score] = fields[..] else {
            return Err(format!(
                "expected 3 tab-separated columns (query-id, corpus-id, score), found {}",
                fields.len()
            ));
        };
        if qid.is_empty() || docid.is_empty() {
            return Err("empty query or document id".to_string());
        }
        let grade: i32 = score
            .parse()
            .map_err(|_| format!("score `{score}` is not an integer"))?;
        check(qid, docid)?;
        let docs = qrels.entry(qid.to_string()).or_default();
        match docs.get(docid) {
            Some(&previous) if previous != grade => Err(format!(
                "query `{qid}` judges document `{docid}` twice, with grades {previous} and {grade}"
            )),
            Some(_) => Ok(()),
            None => {
                docs.insert(docid.to_string(), grade);
                Ok(())
            }
        }
    })?;
    Ok(qrels)
}

/// Calls `parse` with every line (1-based number, without its line break); an `Err` message
/// becomes a [`DataError::Malformed`] at that line.
fn for_each_line(
    path: &Path,
    mut parse: impl FnMut(usize, &str) -> Result<(), String>,
) -> Result<(), DataError> {
    let file = std::fs::File::open(path).map_err(|err| DataError::io(path, err))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
    let mut buffer = Vec::new();
    let mut number = 0;
    loop {
        buffer.clear();
        let read = reader
            .read_until(b'\n', &mut buffer)
            .map_err(|err| DataError::io(path, err))?;
        if read == 0 {
            return Ok(());
        }
        number += 1;
        let line = std::str::from_utf8(&buffer)
            .map_err(|_| DataError::malformed(path, number, "line is not valid UTF-8"))?;
        parse(number, line.trim_end_matches(['\n', '\r']))
            .map_err(|message| DataError::malformed(path, number, message))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_layout(dir: &Path, corpus: &str, queries: &str, split: &str, qrels: &str) {
        std::fs::create_dir_all(dir.join(QRELS_DIR)).unwrap();
        std::fs::write(dir.join(CORPUS_FILE), corpus).unwrap();
        std::fs::write(dir.join(QUERIES_FILE), queries).unwrap();
        std::fs::write(qrels_path(dir, split), qrels).unwrap();
    }

    const CORPUS: &str = concat!(
        r#"{"_id": "d1", "title": "Cats", "text": "the cat sat"}"#,
        "\n",
        r#"{"_id": 2, "text": "no title here", "metadata": {}}"#,
        "\n\n",
        r#"{"_id": "d3", "title": null, "text": "a null title"}"#,
        "\n"
    );
    const QUERIES: &str = concat!(
        r#"{"_id": "q1", "text": "cat"}"#,
        "\n",
        r#"{"_id": "q2", "text": "unjudged"}"#,
        "\n",
        r#"{"_id": 3, "text": "title"}"#,
        "\n"
    );
    const QRELS: &str = "query-id\tcorpus-id\tscore\n3\t2\t1\nq1\td1\t2\nq1\td3\t0\n";

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
    fn loads_corpus_judged_queries_in_file_order_and_qrels() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("tiny");
        write_layout(&dir, CORPUS, QUERIES, "test", QRELS);
        let dataset = load(&dir, "test").unwrap();
        assert_eq!(dataset.name, "tiny");
        assert_eq!(dataset.split, "test");
        assert_eq!(dataset.corpus.len(), 3);
        assert_eq!(dataset.corpus[1].id, "2");
        assert_eq!(dataset.corpus[1].title, "");
        assert_eq!(dataset.corpus[2].title, "");
        let ids: Vec<&str> = dataset.queries.iter().map(|q| q.id.as_str()).collect();
        assert_eq!(ids, ["q1", "3"]);
        assert_eq!(dataset.qrels["q1"]["d1"], 2);
        assert_eq!(dataset.qrels["q1"]["d3"], 0);
        assert_eq!(dataset.qrels["3"]["2"], 1);
    }

    #[test]
    fn inspect_counts() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("tiny");
        write_layout(&dir, CORPUS, QUERIES, "test", QRELS);
        let info = inspect(&dir, "test").unwrap();
        assert_eq!(info.documents, 3);
        assert_eq!(info.queries, 3);
        assert_eq!(info.judged_queries, 2);
        assert_eq!(info.judgments, 3);
        assert_eq!(info.relevant, 2);
        assert_eq!(info.splits, ["test"]);
        // "Cats the cat sat" (4) + "no title here" (3) + "a null title" (3).
        assert!((info.mean_document_words - 10.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn bad_json_line_names_file_line_and_serde_message() {
        let temp = tempfile::tempdir().unwrap();
        let corpus = format!("{CORPUS}{{\"_id\": \"d4\", \"text\": \n");
        write_layout(temp.path(), &corpus, QUERIES, "test", QRELS);
        let (path, line, message) = malformed(load(temp.path(), "test").unwrap_err());
        assert!(path.ends_with(CORPUS_FILE));
        assert_eq!(line, 5);
        assert!(message.contains("EOF"), "{message}");

        let corpus = format!("{CORPUS}{{\"_id\": 1.5, \"text\": \"x\"}}\n");
        write_layout(temp.path(), &corpus, QUERIES, "test", QRELS);
        let (_, line, message) = malformed(load(temp.path(), "test").unwrap_err());
        assert_eq!(line, 5);
        assert!(message.contains("string or an integer"), "{message}");

        let corpus = format!("{CORPUS}{{\"_id\": \"d5\"}}\n");
        write_layout(temp.path(), &corpus, QUERIES, "test", QRELS);
        let (_, _, message) = malformed(load(temp.path(), "test").unwrap_err());
        assert!(message.contains("missing field `text`"), "{message}");
    }

    #[test]
    fn duplicate_ids_are_errors() {
        let temp = tempfile::tempdir().unwrap();
        let corpus = format!("{CORPUS}{{\"_id\": \"d1\", \"text\": \"again\"}}\n");
        write_layout(temp.path(), &corpus, QUERIES, "test", QRELS);
        let (path, line, message) = malformed(load(temp.path(), "test").unwrap_err());
        assert!(path.ends_with(CORPUS_FILE));
        assert_eq!(
            (line, message.as_str()),
            (5, "duplicate id `d1` (first on line 1)")
        );

        let queries = format!("{QUERIES}{{\"_id\": \"3\", \"text\": \"number and string\"}}\n");
        write_layout(temp.path(), CORPUS, &queries, "test", QRELS);
        let (path, line, _) = malformed(load(temp.path(), "test").unwrap_err());
        assert!(path.ends_with(QUERIES_FILE));
        assert_eq!(line, 4);
    }

    #[test]
    fn empty_ids_and_ids_with_whitespace_are_errors() {
        let temp = tempfile::tempdir().unwrap();
        for id in ["", "d 7", "d\\t7"] {
            let corpus = format!("{CORPUS}{{\"_id\": \"{id}\", \"text\": \"x\"}}\n");
            write_layout(temp.path(), &corpus, QUERIES, "test", QRELS);
            let (path, line, message) = malformed(load(temp.path(), "test").unwrap_err());
            assert!(path.ends_with(CORPUS_FILE));
            assert_eq!(line, 5, "{id:?}");
            assert!(message.contains("empty or holds whitespace"), "{message}");
        }
    }

    #[test]
    fn qrels_errors_name_the_line() {
        let temp = tempfile::tempdir().unwrap();
        let cases = [
            ("q1\td1\n", "expected 3 tab-separated columns"),
            ("q1\td1\t1\textra\n", "found 4"),
            ("q1\td1\t1.5\n", "score `1.5` is not an integer"),
            ("q9\td1\t1\n", "query id `q9` is not in queries.jsonl"),
            ("q1\td9\t1\n", "document id `d9` is not in corpus.jsonl"),
            ("q1\td1\t1\nq1\td1\t2\n", "twice, with grades 1 and 2"),
        ];
        for (body, expected) in cases {
            let qrels = format!("query-id\tcorpus-id\tscore\n{body}");
            write_layout(temp.path(), CORPUS, QUERIES, "test", &qrels);
            let (path, line, message) = malformed(load(temp.path(), "test").unwrap_err());
            assert!(path.ends_with("qrels/test.tsv"));
            assert!(line >= 2, "{body}");
            assert!(message.contains(expected), "{body}: {message}");
        }
        // A repeated identical judgment is harmless.
        let qrels = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td1\t1\n";
        write_layout(temp.path(), CORPUS, QUERIES, "test", qrels);
        assert_eq!(load(temp.path(), "test").unwrap().qrels["q1"].len(), 1);
        // No header, space separated, CRLF line ends.
        write_layout(temp.path(), CORPUS, QUERIES, "test", "q1 d1 1\r\n3 2 1\r\n");
        assert_eq!(load(temp.path(), "test").unwrap().qrels.len(), 2);
    }

    #[test]
    fn missing_files_and_splits_are_named() {
        let temp = tempfile::tempdir().unwrap();
        write_layout(temp.path(), CORPUS, QUERIES, "test", QRELS);
        let err = load(temp.path(), "dev").unwrap_err().to_string();
        assert!(
            err.contains("dev.tsv") && err.contains("splits: test"),
            "{err}"
        );
        std::fs::remove_file(temp.path().join(QUERIES_FILE)).unwrap();
        let err = load(temp.path(), "test").unwrap_err().to_string();
        assert!(err.contains("queries.jsonl"), "{err}");
    }

    #[test]
    fn write_then_load_round_trips() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("out").join("round");
        let corpus = vec![
            Document {
                id: "10".into(),
                title: "T \"quoted\"".into(),
                text: "ten\nlines".into(),
            },
            Document {
                id: "2".into(),
                title: String::new(),
                text: "two".into(),
            },
        ];
        let queries = vec![
            Query {
                id: "9".into(),
                text: "nine".into(),
            },
            Query {
                id: "1".into(),
                text: "one".into(),
            },
        ];
        let mut qrels = Qrels::new();
        qrels.entry("1".into()).or_default().insert("2".into(), 1);
        qrels.entry("9".into()).or_default().insert("10".into(), 0);
        qrels.entry("9".into()).or_default().insert("2".into(), 3);
        let splits = BTreeMap::from([("test".to_string(), qrels.clone())]);
        write(&dir, &corpus, &queries, &splits).unwrap();
        let tsv = std::fs::read_to_string(dir.join("qrels/test.tsv")).unwrap();
        assert_eq!(
            tsv,
            "query-id\tcorpus-id\tscore\n9\t2\t3\n9\t10\t0\n1\t2\t1\n"
        );
        let loaded = load(&dir, "test").unwrap();
        assert_eq!(loaded.corpus, corpus);
        assert_eq!(loaded.queries, queries);
        assert_eq!(loaded.qrels, qrels);
        // Writing again into the existing directory replaces the files in place.
        write(&dir, &corpus[..1], &queries, &BTreeMap::new()).unwrap();
        assert_eq!(read_corpus(&dir.join(CORPUS_FILE)).unwrap().len(), 1);
        let leftovers: Vec<_> = std::fs::read_dir(temp.path().join("out"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("round")]);
    }
}
