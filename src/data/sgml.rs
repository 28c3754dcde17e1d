/*!
Raw TREC-format test collections (NPL, and any collection distributed as TREC's SGML-style
files) and their conversion to the BEIR layout.

This module owns the SGML-style record format of TREC documents and topics, recognising which
file of a collection directory is which, and [`import`], which writes the collection as a BEIR
directory through [`super::beir::write`]. The judgments are TREC qrels, read by
[`super::trec::read_qrels`]. It must not locate datasets by name or verify checksums (that is
[`super::fetch`]); everything downstream reads the BEIR copy.

# Documents

A documents file holds records `<DOC> … </DOC>`. Inside a record, `<DOCNO>` gives the id (one
token, no whitespace); `<TITLE>`, `<HEADLINE>` or `<HEAD>` give the title; the text is the
content of the `<TEXT>` elements when there are any, otherwise everything of the record outside
its tagged fields (NPL's documents are a `<DOCNO>` followed by bare text). A collection may
spread its documents over several files.

# Topics

A topics file holds records `<top> … </top>`. `<num>` gives the id (an optional `Number:`
prefix is dropped), `<title>` the query text (an optional `Topic:` prefix dropped), or `<desc>`
when a topic has no title. Old TREC topics leave their fields unclosed: a field ends at its
closing tag, at the next tag, or at the end of the record.

# Text

Tag names are case-insensitive and attributes are ignored; a field's lines are joined and every
run of whitespace becomes one space; the entities `&amp;`, `&lt;`, `&gt;`, `&quot;` and `&apos;`
are decoded. Text outside a record, a record left open, a nested record, a record without an id
and a repeated id are errors naming the file and line.
*/

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::{beir, trec, DataError, Document, Qrels, Query};

/// One SGML-style record: its fields and its untagged text, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// 1-based line of the opening tag.
    pub line: usize,
    /// (lower-case tag name, content with whitespace collapsed) in file order.
    pub fields: Vec<(String, String)>,
    /// The record's text outside any field, whitespace collapsed.
    pub body: String,
}

impl Record {
    /// The contents of every `tag` field, joined with spaces; `None` when there is none.
    pub fn field(&self, tag: &str) -> Option<String> {
        let parts: Vec<&str> = self
            .fields
            .iter()
            .filter(|(name, _)| name == tag)
            .map(|(_, text)| text.as_str())
            .collect();
        (!parts.is_empty()).then(|| parts.join(" ").trim().to_string())
    }
}

/// Reads every `<record_tag>` record of an SGML-style file (`doc` or `top`).
pub fn read_records(path: &Path, record_tag: &str) -> Result<Vec<Record>, DataError> {
    let bytes = std::fs::read(path).map_err(|err| DataError::io(path, err))?;
    // Old collections are Latin-1 at times; every byte maps to the same code point.
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(err) => err.into_bytes().iter().map(|&b| b as char).collect(),
    };
    parse_records(path, &text, record_tag)
}

/// An open record while parsing.
struct Open {
    line: usize,
    fields: Vec<(String, String)>,
    field: Option<(String, String)>,
    body: String,
}

impl Open {
    fn add_text(&mut self, text: &str) {
        match &mut self.field {
            Some((_, content)) => content.push_str(text),
            None => {
                self.body.push(' ');
                self.body.push_str(text);
            }
        }
    }

    fn close_field(&mut self) {
        if let Some((name, content)) = self.field.take() {
            self.fields.push((name, clean(&content)));
        }
    }

    fn finish(mut self) -> Record {
        self.close_field();
        Record {
            line: self.line,
            fields: self.fields,
            body: clean(&self.body),
        }
    }
}

fn parse_records(path: &Path, text: &str, record_tag: &str) -> Result<Vec<Record>, DataError> {
    let mut records = Vec::new();
    let mut open: Option<Open> = None;
    let mut line = 1;
    let mut rest = text;
    while !rest.is_empty() {
        let (chunk, after) = rest.split_at(rest.find('<').unwrap_or(rest.len()));
        match &mut open {
            Some(record) => record.add_text(chunk),
            None => {
                if let Some(offset) = chunk.find(|c: char| !c.is_whitespace()) {
                    let at = line + chunk[..offset].matches('\n').count();
                    let message = format!("text outside a <{record_tag}> record");
                    return Err(DataError::malformed(path, at, message));
                }
            }
        }
        line += chunk.matches('\n').count();
        if after.is_empty() {
            break;
        }
        let Some(end) = after.find('>') else {
            return Err(DataError::malformed(
                path,
                line,
                "a `<` opens a tag never closed",
            ));
        };
        let tag = &after[1..end];
        line += tag.matches('\n').count();
        rest = &after[end + 1..];
        let closing = tag.starts_with('/');
        let name = tag
            .trim_start_matches('/')
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        if name == record_tag {
            if closing {
                let Some(record) = open.take() else {
                    let message = format!("</{record_tag}> without an open <{record_tag}>");
                    return Err(DataError::malformed(path, line, message));
                };
                records.push(record.finish());
            } else if let Some(record) = &open {
                let message = format!(
                    "<{record_tag}> inside the record opened on line {}",
                    record.line
                );
                return Err(DataError::malformed(path, line, message));
            } else {
                open = Some(Open {
                    line,
                    fields: Vec::new(),
                    field: None,
                    body: String::new(),
                });
            }
            continue;
        }
        let Some(record) = &mut open else {
            let message = format!("<{tag}> outside a <{record_tag}> record");
            return Err(DataError::malformed(path, line, message));
        };
        record.close_field();
        if !closing && !name.is_empty() {
            record.field = Some((name, String::new()));
        }
    }
    if let Some(record) = open {
        let message = format!("<{record_tag}> never closed");
        return Err(DataError::malformed(path, record.line, message));
    }
    Ok(records)
}

/// Whitespace collapsed to single spaces, entities decoded.
fn clean(text: &str) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if !collapsed.contains('&') {
        return collapsed;
    }
    collapsed
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// `text` without a leading `label` (e.g. `Number:`), compared case-insensitively.
fn strip_label<'a>(text: &'a str, label: &str) -> &'a str {
    match text.get(..label.len()) {
        Some(head) if head.eq_ignore_ascii_case(label) => text[label.len()..].trim(),
        _ => text,
    }
}

/// An id field: one non-empty token.
fn record_id(path: &Path, record: &Record, tag: &str, label: &str) -> Result<String, DataError> {
    let value = record.field(tag).unwrap_or_default();
    let id = strip_label(&value, label);
    if id.is_empty() || id.contains(char::is_whitespace) {
        let found = if id.is_empty() {
            format!("no <{tag}>")
        } else {
            format!("<{tag}> `{id}` is not one token")
        };
        return Err(DataError::malformed(path, record.line, found));
    }
    Ok(id.to_string())
}

fn check_unique<'a>(
    path: &Path,
    ids: impl Iterator<Item = (&'a str, usize)>,
    what: &str,
) -> Result<(), DataError> {
    let mut seen = HashSet::new();
    for (id, line) in ids {
        if !seen.insert(id) {
            return Err(DataError::malformed(
                path,
                line,
                format!("{what} `{id}` again"),
            ));
        }
    }
    Ok(())
}

/// The documents of a TREC documents file.
pub fn read_documents(path: &Path) -> Result<Vec<Document>, DataError> {
    let records = read_records(path, "doc")?;
    let mut documents = Vec::with_capacity(records.len());
    let mut lines = Vec::with_capacity(records.len());
    for record in &records {
        let id = record_id(path, record, "docno", "")?;
        let title = ["title", "headline", "head"]
            .iter()
            .find_map(|tag| record.field(tag))
            .unwrap_or_default();
        let text = record.field("text").unwrap_or_else(|| record.body.clone());
        lines.push(record.line);
        documents.push(Document { id, title, text });
    }
    let ids = documents.iter().map(|d| d.id.as_str()).zip(lines);
    check_unique(path, ids, "document")?;
    Ok(documents)
}

/// The queries of a TREC topics file.
pub fn read_topics(path: &Path) -> Result<Vec<Query>, DataError> {
    let records = read_records(path, "top")?;
    let mut queries = Vec::with_capacity(records.len());
    for record in &records {
        let id = record_id(path, record, "num", "Number:")?;
        let title = record
            .field("title")
            .map(|t| strip_label(&t, "Topic:").to_string());
        let description = || {
            record
                .field("desc")
                .map(|d| strip_label(&d, "Description:").to_string())
        };
        let text = title.filter(|t| !t.is_empty()).or_else(description);
        let Some(text) = text.filter(|t| !t.is_empty()) else {
            let message = format!("topic `{id}` has no <title> or <desc> text");
            return Err(DataError::malformed(path, record.line, message));
        };
        queries.push(Query { id, text });
    }
    let lines = records.iter().map(|record| record.line);
    check_unique(
        path,
        queries.iter().map(|q| q.id.as_str()).zip(lines),
        "topic",
    )?;
    Ok(queries)
}

/// The files of a TREC collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    /// Every documents file, in name order.
    pub documents: Vec<PathBuf>,
    pub topics: PathBuf,
    pub judgments: PathBuf,
}

impl Sources {
    /// Every source file.
    pub fn paths(&self) -> Vec<&Path> {
        let mut paths: Vec<&Path> = self.documents.iter().map(PathBuf::as_path).collect();
        paths.push(&self.topics);
        paths.push(&self.judgments);
        paths
    }
}

/// What the start of a file says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Documents,
    Topics,
    Judgments,
    Other,
}

fn classify(path: &Path) -> Result<Kind, DataError> {
    use std::io::Read;
    let mut head = Vec::with_capacity(4096);
    std::fs::File::open(path)
        .and_then(|file| file.take(4096).read_to_end(&mut head))
        .map_err(|err| DataError::io(path, err))?;
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let first_tag: String = head
        .trim_start()
        .strip_prefix('<')
        .map(|tag| {
            tag.chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect()
        })
        .unwrap_or_default();
    Ok(match first_tag.as_str() {
        "doc" => Kind::Documents,
        "top" => Kind::Topics,
        _ => {
            let first_line = head.lines().find(|line| !line.trim().is_empty());
            let columns: Vec<&str> = first_line.map_or(vec![], |l| l.split_whitespace().collect());
            if columns.len() == 4 && columns[3].parse::<i32>().is_ok() {
                Kind::Judgments
            } else {
                Kind::Other
            }
        }
    })
}

/// Whether `dir` looks like a TREC collection: a documents file and a topics file.
pub fn is_trec_dir(dir: &Path) -> bool {
    find_sources(dir).is_ok()
}

/// Recognises the files of the collection in `dir` by their content: documents start with
/// `<DOC>`, topics with `<top>`, judgments are 4-column lines. Hidden files are skipped.
pub fn find_sources(dir: &Path) -> Result<Sources, DataError> {
    let entries = std::fs::read_dir(dir).map_err(|err| DataError::io(dir, err))?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_file())
        .filter(|path| {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            !name.unwrap_or_default().starts_with('.')
        })
        .collect();
    files.sort();
    let mut by_kind: BTreeMap<u8, Vec<PathBuf>> = BTreeMap::new();
    for path in files {
        let slot = match classify(&path)? {
            Kind::Documents => 0,
            Kind::Topics => 1,
            Kind::Judgments => 2,
            Kind::Other => continue,
        };
        by_kind.entry(slot).or_default().push(path);
    }
    let invalid = |message: String| DataError::Invalid {
        path: dir.to_path_buf(),
        message,
    };
    let documents = by_kind.remove(&0).unwrap_or_default();
    if documents.is_empty() {
        return Err(invalid(
            "no documents file (one starting with <DOC>)".into(),
        ));
    }
    let one = |files: Option<Vec<PathBuf>>, what: &str| match files.as_deref() {
        Some([file]) => Ok(file.clone()),
        None | Some([]) => Err(invalid(format!("no {what} file"))),
        Some(many) => {
            let names: Vec<String> = many.iter().map(|p| p.display().to_string()).collect();
            Err(invalid(format!(
                "several {what} files: {}",
                names.join(", ")
            )))
        }
    };
    let topics = one(by_kind.remove(&1), "topics (<top> records)")?;
    let judgments = one(by_kind.remove(&2), "judgments (4-column qrels)")?;
    Ok(Sources {
        documents,
        topics,
        judgments,
    })
}

/// What an import wrote.
#[derive(Debug, Clone)]
pub struct ImportSummary {
    pub out_dir: PathBuf,
    pub sources: Sources,
    pub documents: usize,
    /// Every topic of the topics file.
    pub queries: usize,
    /// Topics with at least one judgment.
    pub judged_queries: usize,
    /// Distinct judged (query, document) pairs.
    pub judgments: usize,
    /// Judged pairs with grade ≥ 1.
    pub relevant: usize,
}

/// Recognises a collection in `src_dir` ([`find_sources`]) and writes it to `out_dir` as a
/// BEIR layout with one split, `test` ([`beir::write`], atomic).
pub fn import(src_dir: &Path, out_dir: &Path) -> Result<ImportSummary, DataError> {
    import_with(&find_sources(src_dir)?, out_dir)
}

/// [`import`] with the files chosen by the caller.
pub fn import_with(sources: &Sources, out_dir: &Path) -> Result<ImportSummary, DataError> {
    let mut corpus = Vec::new();
    let mut file_of: HashMap<String, usize> = HashMap::new();
    for (index, path) in sources.documents.iter().enumerate() {
        for document in read_documents(path)? {
            if let Some(&earlier) = file_of.get(&document.id) {
                return Err(DataError::Invalid {
                    path: path.clone(),
                    message: format!(
                        "document `{}` is in {} too",
                        document.id,
                        sources.documents[earlier].display()
                    ),
                });
            }
            file_of.insert(document.id.clone(), index);
            corpus.push(document);
        }
    }
    let queries = read_topics(&sources.topics)?;
    let qrels = trec::read_qrels(&sources.judgments)?;
    check_judged_ids(&sources.judgments, &qrels, &corpus, &queries)?;
    let summary = ImportSummary {
        out_dir: out_dir.to_path_buf(),
        sources: sources.clone(),
        documents: corpus.len(),
        queries: queries.len(),
        judged_queries: qrels.len(),
        judgments: qrels.values().map(BTreeMap::len).sum(),
        relevant: qrels
            .values()
            .flat_map(BTreeMap::values)
            .filter(|&&grade| grade >= 1)
            .count(),
    };
    let splits = BTreeMap::from([("test".to_string(), qrels)]);
    beir::write(out_dir, &corpus, &queries, &splits)?;
    Ok(summary)
}

/// Every judged query is a topic and every judged document is in the corpus.
fn check_judged_ids(
    path: &Path,
    qrels: &Qrels,
    corpus: &[Document],
    queries: &[Query],
) -> Result<(), DataError> {
    let documents: HashSet<&str> = corpus.iter().map(|d| d.id.as_str()).collect();
    let topics: HashSet<&str> = queries.iter().map(|q| q.id.as_str()).collect();
    let invalid = |message: String| {
        Err(DataError::Invalid {
            path: path.to_path_buf(),
            message,
        })
    };
    for (query, judged) in qrels {
        if !topics.contains(query.as_str()) {
            return invalid(format!("judgments of query `{query}`, which no topic has"));
        }
        if let Some(document) = judged.keys().find(|d| !documents.contains(d.as_str())) {
            return invalid(format!(
                "query `{query}` judges document `{document}`, which no documents file has"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    fn malformed(err: DataError) -> (usize, String) {
        match err {
            DataError::Malformed { line, message, .. } => (line, message),
            other => panic!("expected a malformed-file error, got {other}"),
        }
    }

    const DOCUMENTS: &str = "<DOC>\n<DOCNO>1</DOCNO>\ncompact memories  have\nflexible \
                             capacities\n</DOC>\n<DOC>\n<DOCNO> 2 </DOCNO>\n<TITLE>A \
                             title</TITLE>\n<TEXT>\nthe text &amp; more\n</TEXT>\n</DOC>\n";
    const TOPICS: &str = "<top>\n<num>1</num><title>\nMEASUREMENT OF THINGS\n</title>\n</top>\n\
                          <top>\n<num> Number: 2\n<title> Topic: old style\n<desc> \
                          Description:\nignored\n</top>\n";

    #[test]
    fn documents_keep_id_title_and_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "docs", DOCUMENTS);
        let documents = read_documents(&path).unwrap();
        assert_eq!(
            documents,
            vec![
                Document {
                    id: "1".into(),
                    title: String::new(),
                    text: "compact memories have flexible capacities".into(),
                },
                Document {
                    id: "2".into(),
                    title: "A title".into(),
                    text: "the text & more".into(),
                },
            ]
        );
    }

    #[test]
    fn topics_closed_or_not_give_their_title() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "topics", TOPICS);
        let queries = read_topics(&path).unwrap();
        let pairs: Vec<(&str, &str)> = queries
            .iter()
            .map(|q| (q.id.as_str(), q.text.as_str()))
            .collect();
        assert_eq!(
            pairs,
            vec![("1", "MEASUREMENT OF THINGS"), ("2", "old style")]
        );
    }

    #[test]
    fn malformed_files_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("<DOC>\n<DOCNO>1</DOCNO>\ntext\n", 1, "never closed"),
            ("stray\n<DOC><DOCNO>1</DOCNO></DOC>\n", 1, "outside"),
            ("<DOC><DOCNO>1</DOCNO>\n<DOC>\n", 2, "inside the record"),
            (
                "<DOC><DOCNO>1</DOCNO></DOC>\n\n</DOC>\n",
                3,
                "without an open",
            ),
            ("<DOC>\ntext only\n</DOC>\n", 1, "no <docno>"),
            ("<DOC><DOCNO>a b</DOCNO></DOC>\n", 1, "not one token"),
            (
                "<DOC><DOCNO>1</DOCNO></DOC>\n<DOC><DOCNO>1</DOCNO></DOC>\n",
                2,
                "again",
            ),
            ("<DOC><DOCNO>1</DOCNO>\n<TEXT\n", 2, "never closed"),
        ];
        for (content, line, needle) in cases {
            let path = write(dir.path(), "bad", content);
            let (at, message) = malformed(read_documents(&path).unwrap_err());
            assert_eq!(at, line, "{content:?}: {message}");
            assert!(message.contains(needle), "{content:?}: {message}");
        }
        let path = write(dir.path(), "topics", "<top>\n<num>7</num>\n</top>\n");
        let (line, message) = malformed(read_topics(&path).unwrap_err());
        assert_eq!(line, 1);
        assert!(message.contains("no <title> or <desc>"), "{message}");
    }

    #[test]
    fn a_collection_is_recognised_and_imported() {
        let src = tempfile::tempdir().unwrap();
        write(src.path(), "doc-text", DOCUMENTS);
        write(src.path(), "query-text", TOPICS);
        write(src.path(), "qrels", "1 0 1 1\n1 0 2 0\n2 0 2 1\n");
        write(src.path(), ".hidden", "<DOC></DOC>");
        assert!(is_trec_dir(src.path()));
        let out = tempfile::tempdir().unwrap();
        let summary = import(src.path(), &out.path().join("npl")).unwrap();
        assert_eq!(summary.documents, 2);
        assert_eq!(summary.queries, 2);
        assert_eq!(summary.judged_queries, 2);
        assert_eq!(summary.judgments, 3);
        assert_eq!(summary.relevant, 2);
        let dataset = beir::load(&out.path().join("npl"), "test").unwrap();
        assert_eq!(dataset.corpus.len(), 2);
        assert_eq!(dataset.qrels["1"]["2"], 0);
    }

    #[test]
    fn judgments_of_unknown_ids_are_refused() {
        let src = tempfile::tempdir().unwrap();
        write(src.path(), "docs", DOCUMENTS);
        write(src.path(), "topics", TOPICS);
        let out = tempfile::tempdir().unwrap();
        for (qrels, needle) in [("3 0 1 1\n", "no topic"), ("1 0 9 1\n", "no documents")] {
            write(src.path(), "qrels", qrels);
            let err = import(src.path(), &out.path().join("x")).unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn recognition_failures_are_explained() {
        let src = tempfile::tempdir().unwrap();
        write(src.path(), "docs", DOCUMENTS);
        let err = find_sources(src.path()).unwrap_err().to_string();
        assert!(err.contains("no topics"), "{err}");
        write(src.path(), "topics", TOPICS);
        write(src.path(), "qrels.a", "1 0 1 1\n");
        write(src.path(), "qrels.b", "1 0 1 1\n");
        let err = find_sources(src.path()).unwrap_err().to_string();
        assert!(err.contains("several judgments"), "{err}");
    }
}
