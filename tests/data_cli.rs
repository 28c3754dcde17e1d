//! `repro data` driven the way a user drives it: importing the real Cranfield collection,
//! inspecting SciFact in the mirror, fetching over HTTP from a local server, and the errors
//! a user sees for unknown datasets and broken files.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

use assert_cmd::Command;
use predicates::str::contains;

mod common;

use common::mirror;

/// `repro` with a private data directory and no settings leaking in from the environment.
fn repro(data_dir: &Path) -> Command {
    let mut command = Command::cargo_bin("repro").unwrap();
    command
        .env_remove("REPRO_MIRROR")
        .env_remove("REPRO_BEIR_URL")
        .env("REPRO_DATA", data_dir)
        .arg("--quiet");
    command
}

fn json_stdout(command: &mut Command) -> serde_json::Value {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn import_smart_converts_the_real_cranfield() {
    let temp = tempfile::tempdir().unwrap();
    let out = temp.path().join("cranfield-beir");
    repro(&temp.path().join("data"))
        .args(["data", "import-smart"])
        .arg(mirror().join("cranfield"))
        .arg("--out")
        .arg(&out)
        .assert()
        .success()
        .stdout(contains("documents          1400  cran.all.1400"))
        .stdout(contains(
            "queries             225  cran.qry (query ids: position)",
        ))
        .stdout(contains("judgments          1837  cranqrel"))
        .stdout(contains("relevant           1612"));

    let dataset = repro::data::beir::load(&out, "test").unwrap();
    assert_eq!(dataset.corpus.len(), 1400);
    assert_eq!(dataset.queries.len(), 225);
    let pairs: usize = dataset.qrels.values().map(|docs| docs.len()).sum();
    assert_eq!(pairs, 1837);

    let summary = json_stdout(
        repro(&temp.path().join("data"))
            .args(["data", "import-smart", "--json"])
            .arg(mirror().join("cranfield"))
            .arg("--out")
            .arg(&out),
    );
    assert_eq!(summary["judged_queries"], 225);
    assert_eq!(summary["relevant"], 1612);
    assert_eq!(summary["query_ids"], "position");
}

#[test]
fn import_smart_honours_explicit_conventions() {
    let temp = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smart/med");
    let out = temp.path().join("med");
    // MED.REL.OLD named explicitly instead of the recognised MED.REL.
    let summary = json_stdout(
        repro(temp.path())
            .args([
                "data",
                "import-smart",
                "--json",
                "--judgments",
                "MED.REL.OLD",
            ])
            .arg(&fixtures)
            .arg("--out")
            .arg(&out),
    );
    assert_eq!(summary["judgments"], 2);
    assert_eq!(summary["judgments_format"], "TREC qid iter docid grade");
}

#[test]
fn info_reads_scifact_from_the_mirror_in_place() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    repro(&data_dir)
        .env("REPRO_MIRROR", mirror())
        .args(["data", "info", "scifact"])
        .assert()
        .success()
        .stdout(contains("documents        5183"))
        .stdout(contains("queries          1109"))
        .stdout(contains("judged queries   300"))
        .stdout(contains("judgments        339 (339 relevant)"));
    let info = json_stdout(
        repro(&data_dir)
            .env("REPRO_MIRROR", mirror())
            .args(["data", "info", "scifact", "--split", "train", "--json"]),
    );
    assert_eq!(info["judged_queries"], 809);
    assert_eq!(info["judgments"], 919);
    assert!(
        !data_dir.exists(),
        "the mirror is read in place, nothing copied"
    );
}

#[test]
fn cranfield_by_name_is_imported_from_the_mirror_once() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    for _ in 0..2 {
        repro(&data_dir)
            .env("REPRO_MIRROR", mirror())
            .args(["data", "fetch", "cranfield"])
            .assert()
            .success()
            .stdout(contains(data_dir.join("cranfield").display().to_string()));
    }
    let info = json_stdout(repro(&data_dir).args(["data", "info", "cranfield", "--json"]));
    assert_eq!(info["documents"], 1400);
    assert_eq!(info["relevant"], 1612);
    let list = json_stdout(
        repro(&data_dir)
            .env("REPRO_MIRROR", mirror())
            .args(["data", "list", "--json"]),
    );
    let cranfield = list
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["name"] == "cranfield")
        .unwrap();
    assert_eq!(cranfield["format"], "smart");
    assert_eq!(cranfield["mirror"]["format"], "smart");
    assert!(cranfield["local"].is_string());
}

/// Every raw collection of the mirror, known by name, imported with its conventions: the
/// counts the mirror's README gives (documents, queries, judged queries, judgments).
#[test]
fn every_raw_collection_of_the_mirror_is_fetched_by_name_with_its_counts() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let expected = [
        ("cranfield", "smart", 1400, 225, 225, 1837),
        ("med", "smart", 1033, 30, 30, 696),
        ("cacm", "smart", 3204, 64, 52, 796),
        ("adi", "smart", 82, 35, 35, 170),
        ("npl", "trec", 11429, 93, 93, 2083),
    ];
    let list = json_stdout(
        repro(&data_dir)
            .env("REPRO_MIRROR", mirror())
            .args(["data", "list", "--json"]),
    );
    for (name, format, documents, queries, judged, judgments) in expected {
        repro(&data_dir)
            .env("REPRO_MIRROR", mirror())
            .args(["data", "fetch", name])
            .assert()
            .success();
        let info = json_stdout(repro(&data_dir).args(["data", "info", name, "--json"]));
        let counts = [
            &info["documents"],
            &info["queries"],
            &info["judged_queries"],
            &info["judgments"],
        ];
        assert_eq!(
            counts.map(|count| count.as_u64().unwrap()),
            [documents, queries, judged, judgments],
            "{name}"
        );
        let entry = list
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not listed"));
        assert_eq!(entry["format"], format, "{name}");
        assert_eq!(entry["mirror"]["format"], format, "{name}");
    }
}

#[test]
fn import_trec_converts_the_real_npl() {
    let temp = tempfile::tempdir().unwrap();
    let out = temp.path().join("npl-beir");
    repro(&temp.path().join("data"))
        .args(["data", "import-trec"])
        .arg(mirror().join("npl"))
        .arg("--out")
        .arg(&out)
        .assert()
        .success()
        .stdout(contains("documents         11429  doc-text.trec"))
        .stdout(contains("queries              93  query-text.trec"))
        .stdout(contains("judgments          2083  qrels"));
    let dataset = repro::data::beir::load(&out, "test").unwrap();
    let first = &dataset.corpus[0];
    assert_eq!(first.id, "1");
    assert!(first
        .text
        .starts_with("compact memories have flexible capacities"));
    let query = dataset.queries.iter().find(|q| q.id == "1").unwrap();
    assert_eq!(
        query.text,
        "MEASUREMENT OF DIELECTRIC CONSTANT OF LIQUIDS BY THE USE OF MICROWAVE TECHNIQUES"
    );
}

/// A TREC collection with a broken record stops the import with the file and line.
#[test]
fn import_trec_names_the_line_of_a_broken_record() {
    let temp = tempfile::tempdir().unwrap();
    let src = temp.path().join("broken");
    std::fs::create_dir(&src).unwrap();
    let documents = "<DOC>\n<DOCNO>1</DOCNO>\ntext\n</DOC>\n<DOC>\n<DOCNO>2</DOCNO>\nno end\n";
    std::fs::write(src.join("docs.trec"), documents).unwrap();
    std::fs::write(
        src.join("topics.trec"),
        "<top><num>1</num><title>q</title></top>\n",
    )
    .unwrap();
    std::fs::write(src.join("qrels"), "1 0 1 1\n").unwrap();
    repro(&temp.path().join("data"))
        .args(["data", "import-trec"])
        .arg(&src)
        .arg("--out")
        .arg(temp.path().join("out"))
        .assert()
        .failure()
        .stderr(contains("docs.trec:5: <doc> never closed"));
}

/// A reader that goes away (`repro data list | head -1`) ends the listing quietly, killed by
/// SIGPIPE as Unix tools are, never with a panic.
#[test]
fn a_closed_pipe_ends_a_listing_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let temp = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_repro"))
        .args(["data", "list"])
        .env("REPRO_DATA", temp.path())
        .env_remove("REPRO_MIRROR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        output.status.success() || output.status.signal() == Some(libc::SIGPIPE),
        "{:?}: {stderr}",
        output.status
    );
}

/// A dataset whose test queries overlap with its train split in each way: `q1` is relevant to
/// a train positive, `q2` repeats a train claim in other case and spacing, `q4` repeats one
/// exactly, `q3` is relevant only to a document training judged not relevant (0).
fn overlapping_dataset(dir: &Path) {
    common::write_beir(
        dir,
        &[("d1", "aspirin"), ("d2", "statins"), ("d3", "vitamin c")],
        &[
            ("t1", "Aspirin lowers stroke risk"),
            ("t2", "Vitamin C prevents colds"),
            ("q1", "aspirin and the heart"),
            ("q2", "  aspirin LOWERS\tstroke risk"),
            ("q3", "statins and the liver"),
            ("q4", "Vitamin C prevents colds"),
        ],
        &[
            (
                "test",
                &[
                    ("q1", "d1", 1),
                    ("q2", "d2", 1),
                    ("q3", "d3", 2),
                    ("q4", "d2", 1),
                ],
            ),
            ("train", &[("t1", "d1", 1), ("t2", "d3", 0)]),
        ],
    );
}

#[test]
fn overlap_lists_train_positives_repeated_texts_and_the_unseen_rest() {
    let temp = tempfile::tempdir().unwrap();
    let dataset = temp.path().join("toy");
    overlapping_dataset(&dataset);
    let data_dir = temp.path().join("data");
    repro(&data_dir)
        .args(["data", "overlap"])
        .arg(&dataset)
        .assert()
        .success()
        .stdout(contains("evaluated queries              4"))
        .stdout(contains("with a relevant train positive 1"))
        .stdout(contains("with repeated text             2 (1 exact)"))
        .stdout(contains("unseen                         1"))
        .stdout(contains("  q1: d1\n"))
        .stdout(contains("  q2: t1\n"))
        .stdout(contains("  q4: t2 (exact)\n"))
        .stdout(contains("unseen queries\n  q3\n"));
    let summary = json_stdout(
        repro(&data_dir)
            .args(["data", "overlap", "--json"])
            .arg(&dataset),
    );
    assert_eq!(summary["evaluated"], 4);
    assert_eq!(summary["with_train_positive"], 1);
    assert_eq!(summary["with_repeated_text"], 2);
    assert_eq!(summary["exact_repeats"], 1);
    assert_eq!(summary["unseen_queries"], serde_json::json!(["q3"]));
    assert_eq!(
        summary["train_positives"],
        serde_json::json!([{"query": "q1", "documents": ["d1"]}])
    );
    assert_eq!(
        summary["repeated_text"][1]["train_queries"],
        serde_json::json!(["t2"])
    );
    assert!(!data_dir.exists(), "a BEIR directory is read in place");

    // Splits are arguments; a training split without judgments names its missing file.
    let dev = dataset.join("qrels/dev.tsv");
    repro(&data_dir)
        .args(["data", "overlap", "--train-split", "dev"])
        .arg(&dataset)
        .assert()
        .failure()
        .stderr(contains(format!(
            "the training split `dev` has no judgments: {} is missing (splits: test, train)",
            dev.display()
        )));
    std::fs::copy(dataset.join("qrels/train.tsv"), &dev).unwrap();
    let reversed = json_stdout(
        repro(&data_dir)
            .args([
                "data",
                "overlap",
                "--json",
                "--split",
                "dev",
                "--train-split",
                "test",
            ])
            .arg(&dataset),
    );
    assert_eq!(reversed["evaluated"], 2);
    assert_eq!(reversed["with_train_positive"], 1, "t1's d1 is q1's too");
}

/// `repro data overlap | head -1` ends quietly too.
#[test]
fn a_closed_pipe_ends_an_overlap_listing_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let temp = tempfile::tempdir().unwrap();
    overlapping_dataset(temp.path());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_repro"))
        .args(["data", "overlap"])
        .arg(temp.path())
        .env_remove("REPRO_MIRROR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        output.status.success() || output.status.signal() == Some(libc::SIGPIPE),
        "{:?}: {stderr}",
        output.status
    );
}

#[test]
fn unknown_dataset_is_one_clear_error() {
    let temp = tempfile::tempdir().unwrap();
    repro(&temp.path().join("data"))
        .args(["data", "info", "no-such-dataset"])
        .assert()
        .failure()
        .stderr(contains("unknown dataset `no-such-dataset`"))
        .stderr(contains("REPRO_MIRROR"))
        .stderr(contains("known datasets: scifact, cranfield"));
    repro(&temp.path().join("data"))
        .args(["data", "info", "nfcorpus"])
        .assert()
        .failure()
        .stderr(contains("repro data fetch nfcorpus"));
}

#[test]
fn a_bad_corpus_line_is_named() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("broken");
    std::fs::create_dir_all(dir.join("qrels")).unwrap();
    std::fs::write(
        dir.join("corpus.jsonl"),
        "{\"_id\": \"d1\", \"text\": \"fine\"}\n{\"_id\": \"d2\", \"text\": \"unterminated}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("queries.jsonl"),
        "{\"_id\": \"q1\", \"text\": \"q\"}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("qrels/test.tsv"),
        "query-id\tcorpus-id\tscore\nq1\td1\t1\n",
    )
    .unwrap();
    repro(temp.path())
        .args(["data", "info"])
        .arg(&dir)
        .assert()
        .failure()
        .stderr(contains("corpus.jsonl:2: EOF while parsing a string"));
}

/// Serves one zip at `/<name>.zip` on 127.0.0.1 from a thread; other paths get 404.
fn serve_zip(name: &str, zip: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let route = format!("/{name}.zip");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut head = Vec::new();
            let mut buffer = [0u8; 1024];
            while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(read) => head.extend_from_slice(&buffer[..read]),
                }
            }
            let request = String::from_utf8_lossy(&head).into_owned();
            let _ = if request.split_whitespace().nth(1) == Some(route.as_str()) {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    zip.len()
                );
                stream
                    .write_all(head.as_bytes())
                    .and_then(|()| stream.write_all(&zip))
            } else {
                stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            };
        }
    });
    format!("http://{address}")
}

fn tiny_zip() -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    let files = [
        (
            "tiny/corpus.jsonl",
            "{\"_id\": \"d1\", \"title\": \"A\", \"text\": \"one two\"}\n",
        ),
        (
            "tiny/queries.jsonl",
            "{\"_id\": \"q1\", \"text\": \"one\"}\n",
        ),
        (
            "tiny/qrels/test.tsv",
            "query-id\tcorpus-id\tscore\nq1\td1\t1\n",
        ),
    ];
    for (name, content) in files {
        writer.start_file(name, options).unwrap();
        writer.write_all(content.as_bytes()).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

#[test]
fn fetch_downloads_a_beir_zip_and_info_then_finds_it() {
    let base = serve_zip("tiny", tiny_zip());
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    repro(&data_dir)
        .env("REPRO_BEIR_URL", &base)
        .args(["data", "fetch", "tiny"])
        .assert()
        .success()
        .stdout(contains(data_dir.join("tiny").display().to_string()));
    let info = json_stdout(repro(&data_dir).args(["data", "info", "tiny", "--json"]));
    assert_eq!(info["documents"], 1);
    assert_eq!(info["mean_document_words"], 3.0);

    repro(&data_dir)
        .args(["data", "fetch", "missing", "--beir-url", &base])
        .assert()
        .failure()
        .stderr(contains("HTTP 404"));
}
