/*!
TREC run and qrels files: reading them into [`Run`] and [`Qrels`], writing them back.

This module owns the on-disk formats: columns, parsing, error positions, and trec_eval's
ranking order ([`rank_documents`]), in which a run's documents are written and on which the
measures (`crate::eval`) score, so that a written run and the measures agree on ranks. It
must not score anything.

Formats:

* Run: `qid Q0 docno rank score tag`, whitespace separated, 6 columns. The `Q0` and rank
  columns are ignored on reading, as trec_eval ignores them: ranks follow from the scores.
* Qrels: TREC `qid iter docno grade` (4 columns), or BEIR's `query-id<TAB>corpus-id<TAB>score`
  (3 columns, optional header line), decided line by line by the number of columns. Grades
  are integers; negative grades are kept (the measures treat them as trec_eval does).

Duplicates: trec_eval stops with "duplicate docs" when a run lists a document twice for one
query, or when qrels judge one twice. A duplicate run line is an error here too. In qrels, a
repeated judgment with the same grade is accepted (it changes nothing, and BEIR-style files
sometimes repeat lines), while two different grades for one (query, document) pair are an
error, because either choice would silently change the scores.
*/

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;

use super::{DataError, Qrels, Run};

/// Reads a TREC run file. See the module documentation for the format and duplicate rule.
pub fn read_run(path: &Path) -> Result<Run, DataError> {
    let mut run = Run::new();
    for_each_line(path, |_, line| {
        // Split on ASCII whitespace as trec_eval's reader does, without allocating a vector:
        // this loop runs once per retrieved document.
        let mut fields = line.split_ascii_whitespace();
        let columns: [Option<&str>; 7] = std::array::from_fn(|_| fields.next());
        let [Some(qid), Some(_q0), Some(docno), Some(_rank), Some(score), Some(_tag), None] =
            columns
        else {
            let found = columns.iter().flatten().count() + fields.count();
            return Err(format!(
                "expected 6 columns `qid Q0 docno rank score tag`, found {found}"
            ));
        };
        let score: f64 = score
            .parse()
            .map_err(|_| format!("score `{score}` is not a number"))?;
        if !score.is_finite() {
            return Err(format!("score `{score}` is not finite"));
        }
        let docs = query_entry(&mut run, qid);
        match docs.entry(docno.to_string()) {
            Entry::Occupied(_) => Err(format!(
                "document `{docno}` appears twice for query `{qid}` (trec_eval refuses \
                 duplicate documents)"
            )),
            Entry::Vacant(slot) => {
                slot.insert(score);
                Ok(())
            }
        }
    })?;
    Ok(run)
}

/// Writes `run` atomically as a TREC run file: queries in id order, each query's documents in
/// trec_eval's ranking order (score descending, ties by document id descending), ranks from
/// 1, scores printed with Rust's shortest round-trip form so that reading the file back gives
/// the same `f64`s and therefore the same ranking.
///
/// Fails without touching `path` when an id or the tag is empty or holds whitespace, or a
/// score is not finite, since the file could not be read back as written.
pub fn write_run(path: &Path, run: &Run, tag: &str) -> Result<(), DataError> {
    check_token(path, "run tag", tag)?;
    for (qid, docs) in run {
        check_token(path, "query id", qid)?;
        for (docno, score) in docs {
            check_token(path, "document id", docno)?;
            if !score.is_finite() {
                return Err(invalid(
                    path,
                    format!("query `{qid}` document `{docno}`: score {score} is not finite"),
                ));
            }
        }
    }
    crate::util::write_atomic_with(path, |out| {
        for (qid, docs) in run {
            for (index, (docno, score)) in rank_documents(docs).into_iter().enumerate() {
                writeln!(out, "{qid} Q0 {docno} {} {score} {tag}", index + 1)?;
            }
        }
        Ok(())
    })
    .map_err(|err| DataError::io(path, err))
}

/// Reads relevance judgments, TREC (4 columns) or BEIR TSV (3 columns). See the module
/// documentation for the formats and the duplicate rule.
pub fn read_qrels(path: &Path) -> Result<Qrels, DataError> {
    let mut qrels = Qrels::new();
    for_each_line(path, |number, line| {
        // BEIR files are tab separated and their ids may hold spaces: split on tabs when that
        // gives BEIR's three columns, otherwise on any whitespace as trec_eval does.
        let tab_fields: Vec<&str> = line.split('\t').map(str::trim).collect();
        let fields = if tab_fields.len() == 3 {
            tab_fields
        } else {
            line.split_ascii_whitespace().collect()
        };
        let (qid, docno, grade) = match fields[..] {
            [qid, _iter, docno, grade] => (qid, docno, grade),
            ["query-id", _, _] if number == 1 => return Ok(()),
            [qid, docno, grade] => (qid, docno, grade),
            _ => {
                return Err(format!(
                    "expected 4 columns `qid iter docno grade` or 3 tab-separated columns \
                     `query-id corpus-id score`, found {}",
                    fields.len()
                ))
            }
        };
        if qid.is_empty() || docno.is_empty() {
            return Err("empty query or document id".to_string());
        }
        let grade: i32 = grade
            .parse()
            .map_err(|_| format!("relevance `{grade}` is not an integer"))?;
        let judged = query_entry(&mut qrels, qid);
        match judged.entry(docno.to_string()) {
            Entry::Vacant(slot) => {
                slot.insert(grade);
                Ok(())
            }
            Entry::Occupied(earlier) if *earlier.get() == grade => Ok(()),
            Entry::Occupied(earlier) => Err(format!(
                "query `{qid}` document `{docno}` judged {grade} here but {} earlier",
                earlier.get()
            )),
        }
    })?;
    Ok(qrels)
}

/// Writes `qrels` atomically in TREC form, `qid 0 docno grade`, sorted by query then document
/// id. Fails without touching `path` when an id is empty or holds whitespace.
pub fn write_qrels(path: &Path, qrels: &Qrels) -> Result<(), DataError> {
    for (qid, judged) in qrels {
        check_token(path, "query id", qid)?;
        for docno in judged.keys() {
            check_token(path, "document id", docno)?;
        }
    }
    crate::util::write_atomic_with(path, |out| {
        for (qid, judged) in qrels {
            for (docno, grade) in judged {
                writeln!(out, "{qid} 0 {docno} {grade}")?;
            }
        }
        Ok(())
    })
    .map_err(|err| DataError::io(path, err))
}

/// Calls `parse` with each non-blank line and its 1-based number; an `Err(message)` becomes
/// [`DataError::Malformed`] at that line.
fn for_each_line(
    path: &Path,
    mut parse: impl FnMut(usize, &str) -> Result<(), String>,
) -> Result<(), DataError> {
    let file = std::fs::File::open(path).map_err(|err| DataError::io(path, err))?;
    let mut reader = std::io::BufReader::new(file);
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
        if line.trim().is_empty() {
            continue;
        }
        parse(number, line.trim_end_matches(['\n', '\r']))
            .map_err(|message| DataError::malformed(path, number, message))?;
    }
}

/// The inner map of `qid`, created on first use.
fn query_entry<'a, V>(
    map: &'a mut BTreeMap<String, BTreeMap<String, V>>,
    qid: &str,
) -> &'a mut BTreeMap<String, V> {
    map.entry(qid.to_string()).or_default()
}

fn check_token(path: &Path, what: &str, value: &str) -> Result<(), DataError> {
    if value.is_empty() || value.chars().any(char::is_whitespace) {
        return Err(invalid(
            path,
            format!("{what} `{value}` is empty or holds whitespace; TREC files cannot hold it"),
        ));
    }
    Ok(())
}

fn invalid(path: &Path, message: String) -> DataError {
    DataError::Invalid {
        path: path.to_path_buf(),
        message,
    }
}

// ---------------------------------------------------------------------------------------
// Ranking.

/// A query's documents in trec_eval's order: score descending, equal scores by document id
/// descending (byte order, as `strcmp`). Run files are written in this order and measures are
/// computed on it; both go through `sort_trec_order`, the one implementation of the order.
///
/// `-0.0` and `0.0` tie, as they do in C. Scores should be finite (reading a run refuses
/// others); a NaN still gets a deterministic place instead of an arbitrary one.
pub fn rank_documents(docs: &BTreeMap<String, f64>) -> Vec<(&str, f64)> {
    // The map iterates ids ascending; reversed, they come in the tie order.
    let mut ranked: Vec<(&str, f64)> = docs
        .iter()
        .rev()
        .map(|(id, &score)| (id.as_str(), score))
        .collect();
    sort_trec_order(&mut ranked, |&(_, score)| score);
    ranked
}

/// Sorts items that arrive in *descending* document-id order into trec_eval's ranking order.
///
/// The sort is stable and compares scores only, so equal scores keep the incoming order, which
/// is the tie order trec_eval wants: no string is compared, and the ranking costs one sort of
/// numbers per query.
pub(crate) fn sort_trec_order<T>(items: &mut [T], score: impl Fn(&T) -> f64) {
    items.sort_by(|a, b| comparable(score(b)).total_cmp(&comparable(score(a))));
}

/// Folds `-0.0` into `0.0` so that `total_cmp` (a total order, which sorting needs) ties them
/// as C's `<` and `>` do.
fn comparable(score: f64) -> f64 {
    if score == 0.0 {
        0.0
    } else {
        score
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, content: &str) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    fn malformed_line(err: DataError) -> (usize, String) {
        match err {
            DataError::Malformed { line, message, .. } => (line, message),
            other => panic!("expected a malformed-line error, got {other}"),
        }
    }

    #[test]
    fn run_round_trips_and_is_written_in_trec_eval_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut run = Run::new();
        let q = run.entry("q2".to_string()).or_default();
        q.insert("a".into(), 0.5);
        q.insert("c".into(), 0.5);
        q.insert("b".into(), 0.1 + 0.2);
        q.insert("B".into(), 0.5);
        q.insert("e".into(), -1e-300);
        run.entry("q1".to_string())
            .or_default()
            .insert("x".into(), 1.0 / 3.0);
        let path = dir.path().join("out.run");
        write_run(&path, &run, "tag").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<&str> = text
            .lines()
            .map(|line| line.split(' ').nth(2).unwrap())
            .collect();
        assert_eq!(docs, vec!["x", "c", "a", "B", "b", "e"]);
        assert!(text.starts_with("q1 Q0 x 1 0.3333333333333333 tag\n"));
        assert!(text.contains("q2 Q0 c 1 0.5 tag\nq2 Q0 a 2 0.5 tag\n"));
        assert_eq!(read_run(&path).unwrap(), run);
    }

    #[test]
    fn run_errors_name_the_line_and_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("q Q0 d 1 1.0 t\n\nq Q0 e 2 0.5\n", 3, "found 5"),
            ("q Q0 d 1 abc t\n", 1, "`abc`"),
            ("q Q0 d 1 inf t\n", 1, "not finite"),
            ("q Q0 d 1 NaN t\n", 1, "not finite"),
            ("q Q0 d 1 1 t\nq Q0 d 2 0.5 t\n", 2, "appears twice"),
        ];
        for (content, line, needle) in cases {
            let path = write(&dir, "bad.run", content);
            let err = read_run(&path).unwrap_err();
            let shown = err.to_string();
            assert!(shown.contains(&format!("bad.run:{line}:")), "{shown}");
            let (at, message) = malformed_line(err);
            assert_eq!(at, line, "{content:?}");
            assert!(message.contains(needle), "{message}");
        }
    }

    #[test]
    fn reads_trec_and_beir_qrels() {
        let dir = tempfile::tempdir().unwrap();
        let trec = write(&dir, "a.qrels", "1 0 d1 2\n1 0 d2 0\r\n\n2 0 d3 -1\n");
        let beir = write(
            &dir,
            "b.tsv",
            "query-id\tcorpus-id\tscore\n1\td1\t2\n1\td2\t0\n2\td3\t-1\n",
        );
        let expected: Qrels = [("1", vec![("d1", 2), ("d2", 0)]), ("2", vec![("d3", -1)])]
            .into_iter()
            .map(|(q, docs)| {
                let docs = docs.into_iter().map(|(d, g)| (d.to_string(), g)).collect();
                (q.to_string(), docs)
            })
            .collect();
        assert_eq!(read_qrels(&trec).unwrap(), expected);
        assert_eq!(read_qrels(&beir).unwrap(), expected);

        let spaced = write(&dir, "c.tsv", "q1\tdoc with space\t1\n");
        assert_eq!(read_qrels(&spaced).unwrap()["q1"]["doc with space"], 1);

        let out = dir.path().join("out.qrels");
        write_qrels(&out, &expected).unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "1 0 d1 2\n1 0 d2 0\n2 0 d3 -1\n"
        );
        assert_eq!(read_qrels(&out).unwrap(), expected);
    }

    #[test]
    fn qrels_errors_and_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("1 0 d1 1\n1 0 d2 1.5\n", 2, "`1.5`"),
            ("1 0 d1 1\n1 d1\n", 2, "found 2"),
            ("1 0 d1 1\nquery-id\tcorpus-id\tscore\n", 2, "`score`"),
            ("1 0 d1 1\n1 0 d1 2\n", 2, "judged 2 here but 1 earlier"),
        ];
        for (content, line, needle) in cases {
            let path = write(&dir, "bad.qrels", content);
            let (at, message) = malformed_line(read_qrels(&path).unwrap_err());
            assert_eq!(at, line, "{content:?}");
            assert!(message.contains(needle), "{message}");
        }
        let repeated = write(&dir, "rep.qrels", "1 0 d1 1\n1 0 d1 1\n");
        assert_eq!(read_qrels(&repeated).unwrap()["1"].len(), 1);
    }

    #[test]
    fn writers_refuse_what_cannot_be_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.run");
        let mut run = Run::new();
        run.entry("q".into()).or_default().insert("a b".into(), 1.0);
        assert!(matches!(
            write_run(&path, &run, "t"),
            Err(DataError::Invalid { .. })
        ));
        let mut run = Run::new();
        run.entry("q".into())
            .or_default()
            .insert("a".into(), f64::NAN);
        assert!(write_run(&path, &run, "t").is_err());
        assert!(write_run(&path, &Run::new(), "two words").is_err());
        assert!(!path.exists());
    }

    #[test]
    fn missing_file_is_an_io_error_naming_it() {
        let err = read_run(Path::new("/nonexistent/x.run")).unwrap_err();
        assert!(matches!(err, DataError::Io { .. }));
        assert!(err.to_string().starts_with("/nonexistent/x.run: "));
    }
}
