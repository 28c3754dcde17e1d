/*!
Finding datasets by name, and fetching them: the data directory, the local mirror and BEIR's
download server, with checksum verification.

This module owns the registry of known datasets (their sources and checksums), the order in
which places are searched ([`resolve`]), copying, downloading and unpacking into the data
directory ([`fetch`]), and the marker file that makes a raw import happen once. It must not
parse dataset formats itself ([`super::beir`], [`super::smart`] and [`super::sgml`] do) and must not print:
progress goes to the caller's callback.

Places, in the order [`resolve`] tries them:

1. `name_or_path` as a path: a BEIR directory is used as it is; a raw SMART or TREC collection is
   imported into `data_dir/<dir name>`.
2. `data_dir/<name>` holding a BEIR layout.
3. `mirror/<name>` holding a BEIR layout: checked against the known sha256s and used in place
   (a mirror is read-only and may be large; copying it buys nothing).
4. `mirror/<name>` holding a raw SMART or TREC collection: checked, imported into
   `data_dir/<name>`.

[`resolve`] never uses the network, so that a run never starts a download by surprise;
[`fetch`] does, when neither the data directory nor the mirror has the dataset.

Every directory this module creates in the data directory is built in a temporary sibling
and renamed into place, so an interrupted fetch or import leaves nothing half-written behind.
Each holds a marker file ([`MARKER_FILE`]) recording where it came from and the checksums of
its sources; an import whose sources are unchanged is not redone.
*/

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{beir, sgml, smart, DataError};
use crate::util::{is_plain_name, sha256_file, write_atomic};

mod md5;

/// Where BEIR publishes its datasets, one `<name>.zip` each.
pub const BEIR_BASE_URL: &str =
    "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets";

/// The file, inside a dataset directory made by repro, that records the dataset's origin.
pub const MARKER_FILE: &str = ".repro-source.json";

/// How a dataset is distributed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// BEIR layout (`corpus.jsonl`, `queries.jsonl`, `qrels/`).
    Beir,
    /// A raw SMART collection, converted to BEIR on import.
    Smart,
    /// A raw TREC collection (SGML-style documents and topics, TREC qrels), converted to BEIR
    /// on import.
    Trec,
}

impl Format {
    /// The raw format of the collection in `dir`, if it holds one.
    pub fn of_raw_dir(dir: &Path) -> Option<Format> {
        if !dir.is_dir() {
            None
        } else if smart::is_smart_dir(dir) {
            Some(Format::Smart)
        } else if sgml::is_trec_dir(dir) {
            Some(Format::Trec)
        } else {
            None
        }
    }
}

/// A dataset repro knows by name.
#[derive(Debug)]
pub struct KnownDataset {
    pub name: &'static str,
    pub format: Format,
    pub description: &'static str,
    /// MD5 of BEIR's zip, as BEIR publishes it (and ir_datasets checks it), when known.
    pub zip_md5: Option<&'static str>,
    /// (path relative to the dataset directory, sha256) of files with known content.
    pub files: &'static [(&'static str, &'static str)],
    /// Whether [`fetch`] can download it from BEIR's server.
    pub downloadable: bool,
}

impl KnownDataset {
    /// The URL of the dataset's zip under `base`, for downloadable datasets.
    pub fn url(&self, base: &str) -> Option<String> {
        self.downloadable
            .then(|| format!("{}/{}.zip", base.trim_end_matches('/'), self.name))
    }
}

const fn beir(name: &'static str, md5: &'static str, description: &'static str) -> KnownDataset {
    KnownDataset {
        name,
        format: Format::Beir,
        description,
        zip_md5: Some(md5),
        files: &[],
        downloadable: true,
    }
}

// The zip digests are those of ir_datasets' `downloads.json` (which verifies BEIR's files);
// the sha256 values are those of the data mirror's README.
const REGISTRY: &[KnownDataset] = &[
    KnownDataset {
        name: "scifact",
        format: Format::Beir,
        description: "BEIR SciFact: 5,183 abstracts, 1,109 claims (300 test)",
        zip_md5: Some("5f7d1de60b170fc8027bb7898e2efca1"),
        files: &[
            (
                "corpus.jsonl",
                "fdb9153e212996d9dc6a545b91296c9c1fb8bfe2962a065bdf5c4676685158b9",
            ),
            (
                "queries.jsonl",
                "9db7df096f7414435d52bafcbacf814c30cea50eb565c1e8fa6d11440759bba8",
            ),
            (
                "qrels/test.tsv",
                "0864bb985e0ca2367ba217977e72004d549054b2b06666ed9d4825ac7c21284c",
            ),
            (
                "qrels/train.tsv",
                "a53f2114831916c096b6c37d9e54da68cef4efdcdbd5ed46533601af972acf1d",
            ),
        ],
        downloadable: true,
    },
    KnownDataset {
        name: "cranfield",
        format: Format::Smart,
        description: "Cranfield: 1,400 aerodynamics abstracts, 225 queries (raw SMART)",
        zip_md5: None,
        files: &[
            (
                "cran.all.1400",
                "fbb8935a93263ab6c9fadefb507fd7cd5e101e7fbeb31c12e6bff6dd501315e8",
            ),
            (
                "cran.qry",
                "99578ceb88941ef89c14faf7c63c23776a376d8fba319b990f01d0c601d8b03f",
            ),
            (
                "cranqrel",
                "a90f56082cd44db70bf2c21ebca39a1a34e37c82ccb5ddf1bcc64f18795234c7",
            ),
        ],
        downloadable: false,
    },
    KnownDataset {
        name: "med",
        format: Format::Smart,
        description: "MEDLARS: 1,033 medical abstracts, 30 queries (raw SMART)",
        zip_md5: None,
        files: &[
            (
                "MED.ALL",
                "fdcd99cf7fc6c45707c9b5bef7daac739f06c4063ebcad9b5cccf2f939fa4236",
            ),
            (
                "MED.QRY",
                "41fbc9d7a0ac8620d53e09b3429d2695cecc63d4bf7e15e55bbcee0785a1798c",
            ),
            (
                "MED.REL",
                "9bbcf3b73afc8b0f54362b516f323e52ab3c4147d146dedeb18fdba01f0a4288",
            ),
        ],
        downloadable: false,
    },
    KnownDataset {
        name: "cacm",
        format: Format::Smart,
        description: "CACM: 3,204 computing abstracts, 64 queries (52 judged) (raw SMART)",
        zip_md5: None,
        files: &[
            (
                "cacm.all",
                "3b3b7fa48df75ed60361bf2dda6fcdf54455a8117629f49af92771559aba81c7",
            ),
            (
                "query.text",
                "ca004f06b57cb8a298c73bf55793174e50ff32fc83c5bb5f10ed2ed559f621e6",
            ),
            (
                "qrels.text",
                "da4202b0c70cad7d91c9a028eaf8cbd0a4ca981ebdc3955eb75ba7b6de6f185c",
            ),
        ],
        downloadable: false,
    },
    KnownDataset {
        name: "adi",
        format: Format::Smart,
        description: "ADI: 82 documentation abstracts, 35 queries (raw SMART)",
        zip_md5: None,
        files: &[
            (
                "ADI.ALL",
                "7154f3d91194ca290e306da8803b24eef311064479ec33ab88dac7a9ecd4a3fa",
            ),
            (
                "ADI.QRY",
                "5c6b19a1f1ffa3ad479f3c85914ea6590e05cc0406c8b439e8143917961f380c",
            ),
            (
                "ADI.REL",
                "8c75a2e1f0f02011ba1e6b25893d70ddd2f5602fc9a694a2ab6781e0ec66d745",
            ),
        ],
        downloadable: false,
    },
    KnownDataset {
        name: "npl",
        format: Format::Trec,
        description: "NPL: 11,429 electrical-engineering abstracts, 93 queries (raw TREC)",
        zip_md5: None,
        files: &[
            (
                "doc-text.trec",
                "117ae7491647cb9725621bad52969a78307de19b1757852a0a2383659a856d36",
            ),
            (
                "query-text.trec",
                "fef998db14818f74a22b2fb2be06425d5fb0dbd83ed9841fa0440e0a5477da7b",
            ),
            (
                "qrels",
                "1b3ed6a43752c7a7becb0dbd1614d662791bb7825b60182fd36be24d480ea447",
            ),
        ],
        downloadable: false,
    },
    beir(
        "nfcorpus",
        "a89dba18a62ef92f7d323ec890a0d38d",
        "BEIR NFCorpus (nutrition)",
    ),
    beir(
        "fiqa",
        "17918ed23cd04fb15047f73e6c3bd9d9",
        "BEIR FiQA-2018 (finance)",
    ),
    beir(
        "arguana",
        "8ad3e3c2a5867cdced806d6503f29b99",
        "BEIR ArguAna (arguments)",
    ),
    beir(
        "scidocs",
        "38121350fc3a4d2f48850f6aff52e4a9",
        "BEIR SCIDOCS (citations)",
    ),
    beir(
        "trec-covid",
        "ce62140cb23feb9becf6270d0d1fe6d1",
        "BEIR TREC-COVID",
    ),
    beir(
        "quora",
        "18fb154900ba42a600f84b839c173167",
        "BEIR Quora (duplicate questions)",
    ),
    beir(
        "webis-touche2020",
        "46f650ba5a527fc69e0a6521c5a23563",
        "BEIR Touché-2020 v2",
    ),
    beir(
        "nq",
        "d4d3d2e48787a744b6f6e691ff534307",
        "BEIR Natural Questions",
    ),
    beir(
        "hotpotqa",
        "f412724f78b0d91183a0e86805e16114",
        "BEIR HotpotQA",
    ),
    beir(
        "dbpedia-entity",
        "c2a39eb420a3164af735795df012ac2c",
        "BEIR DBPedia-Entity",
    ),
    beir("fever", "5a818580227bfb4b35bb6fa46d9b6c03", "BEIR FEVER"),
    beir(
        "climate-fever",
        "8b66f0a9126c521bae2bde127b4dc99d",
        "BEIR Climate-FEVER",
    ),
    beir(
        "msmarco",
        "444067daf65d982533ea17ebd59501e4",
        "BEIR MS MARCO passage",
    ),
];

/// Every dataset repro knows by name.
pub fn known_datasets() -> &'static [KnownDataset] {
    REGISTRY
}

/// The known dataset called `name`.
pub fn known(name: &str) -> Option<&'static KnownDataset> {
    REGISTRY.iter().find(|dataset| dataset.name == name)
}

/// Finds a dataset and returns a BEIR-layout directory holding it, importing a raw SMART
/// collection on the way when needed. Never downloads; see the module documentation for the
/// places searched and their order.
pub fn resolve(
    name_or_path: &str,
    data_dir: &Path,
    mirror: Option<&Path>,
) -> Result<PathBuf, DataError> {
    let path = Path::new(name_or_path);
    if path.exists() {
        if beir::is_beir_dir(path) {
            return Ok(path.to_path_buf());
        }
        if let Some(format) = Format::of_raw_dir(path) {
            let name = directory_name(path)?;
            return import_raw_once(&name, (path, format), data_dir, None);
        }
        return Err(DataError::Invalid {
            path: path.to_path_buf(),
            message: "neither a BEIR dataset (corpus.jsonl, queries.jsonl, qrels/) nor a raw \
                      SMART collection (.I records) nor a raw TREC collection (<DOC> and <top> \
                      records, qrels)"
                .to_string(),
        });
    }
    if !is_plain_name(name_or_path) {
        return Err(DataError::Invalid {
            path: path.to_path_buf(),
            message: "no such dataset directory".to_string(),
        });
    }
    let name = name_or_path;
    let entry = known(name);
    let local = data_dir.join(name);
    if beir::is_beir_dir(&local) {
        return Ok(local);
    }
    let mut searched = vec![local.display().to_string()];
    match mirror {
        Some(mirror) => {
            let candidate = mirror.join(name);
            if beir::is_beir_dir(&candidate) {
                if let Some(entry) = entry.filter(|entry| entry.format == Format::Beir) {
                    verify(&candidate, entry.files)?;
                }
                return Ok(candidate);
            }
            if let Some(format) = Format::of_raw_dir(&candidate) {
                return import_raw_once(name, (&candidate, format), data_dir, entry);
            }
            searched.push(candidate.display().to_string());
        }
        None => searched.push("no mirror (REPRO_MIRROR is not set)".to_string()),
    }
    Err(DataError::UnknownDataset {
        name: name.to_string(),
        searched: searched.join(", "),
        hint: not_found_hint(name, entry, data_dir),
    })
}

fn not_found_hint(name: &str, entry: Option<&KnownDataset>, data_dir: &Path) -> String {
    match entry {
        Some(entry) if entry.downloadable => format!(
            "; run `repro data fetch {name}` to download it, or set REPRO_MIRROR (--mirror) to \
             a directory holding `{name}/`"
        ),
        Some(entry) => format!(
            "; set REPRO_MIRROR (--mirror) to a directory holding the raw collection `{name}/`, \
             or convert it with `repro data {} DIR --out {}`",
            import_command(entry.format),
            data_dir.join(name).display()
        ),
        None => {
            let names: Vec<&str> = REGISTRY.iter().map(|dataset| dataset.name).collect();
            format!(
                "; known datasets: {}; other BEIR datasets can be fetched with `repro data fetch \
                 NAME`, found in REPRO_MIRROR (--mirror), or given as a directory path",
                names.join(", ")
            )
        }
    }
}

/// Makes `data_dir/<name>` hold the dataset and returns that directory: it is kept when
/// already there (and, for datasets with known content, verified); otherwise it is copied
/// from the mirror (checked), imported from a raw SMART collection in the mirror, or
/// downloaded from BEIR's server. `progress(bytes done, total bytes if known)` is called while
/// downloading.
pub fn fetch(
    name: &str,
    data_dir: &Path,
    mirror: Option<&Path>,
    progress: &dyn Fn(u64, Option<u64>),
) -> Result<PathBuf, DataError> {
    fetch_from(name, data_dir, mirror, BEIR_BASE_URL, progress)
}

/// [`fetch`] with another download location, laid out as BEIR's (`<base>/<name>.zip`): an
/// internal mirror of BEIR's server, or a local server in tests. Names that are not known are
/// tried too (without checksums); the server's answer decides.
pub fn fetch_from(
    name: &str,
    data_dir: &Path,
    mirror: Option<&Path>,
    beir_base_url: &str,
    progress: &dyn Fn(u64, Option<u64>),
) -> Result<PathBuf, DataError> {
    if !is_plain_name(name) {
        return Err(DataError::Invalid {
            path: PathBuf::from(name),
            message: "a dataset name is letters, digits, `-`, `_` and `.` (to use a directory, \
                      pass it where a dataset is expected)"
                .to_string(),
        });
    }
    let entry = known(name);
    let target = data_dir.join(name);
    if beir::is_beir_dir(&target) {
        let files = entry
            .filter(|entry| entry.format == Format::Beir)
            .map_or(&[][..], |entry| entry.files);
        // A copy that no longer matches is fetched again rather than trusted.
        if verify(&target, files).is_ok() {
            return Ok(target);
        }
    }
    if let Some(mirror) = mirror {
        let candidate = mirror.join(name);
        if beir::is_beir_dir(&candidate) {
            return copy_beir(name, &candidate, data_dir, entry);
        }
        if let Some(format) = Format::of_raw_dir(&candidate) {
            return import_raw_once(name, (&candidate, format), data_dir, entry);
        }
    }
    if let Some(entry) = entry.filter(|entry| !entry.downloadable) {
        let place = match mirror {
            Some(mirror) => format!("the mirror {} has no `{name}/`", mirror.display()),
            None => "no mirror is set (REPRO_MIRROR or --mirror)".to_string(),
        };
        return Err(DataError::Unavailable {
            name: name.to_string(),
            message: format!(
                "{} is distributed as a raw collection that repro does not download, and {place}; \
                 put the raw files in `<mirror>/{name}/`, or convert them with `repro data {} \
                 DIR --out {}`",
                entry.description,
                import_command(entry.format),
                target.display()
            ),
        });
    }
    let url = format!("{}/{name}.zip", beir_base_url.trim_end_matches('/'));
    download_beir(name, &url, entry, data_dir, progress)
}

/// Checks files of a dataset directory against known sha256 values; a missing file is an
/// error too.
pub fn verify(dir: &Path, files: &[(&str, &str)]) -> Result<(), DataError> {
    for (relative, expected) in files {
        let path = dir.join(relative);
        if !path.is_file() {
            return Err(DataError::Invalid {
                path,
                message: "missing: this file of a known dataset is expected here".to_string(),
            });
        }
        let actual = sha256_file(&path).map_err(|err| DataError::io(&path, err))?;
        if actual != *expected {
            return Err(DataError::Checksum {
                path,
                algorithm: "sha256",
                expected: expected.to_string(),
                actual,
            });
        }
    }
    Ok(())
}

/// Where a dataset can be found now (what `repro data list` shows).
#[derive(Debug, Clone)]
pub struct Availability {
    pub name: String,
    pub known: Option<&'static KnownDataset>,
    /// `data_dir/<name>`, when it holds a BEIR layout.
    pub local: Option<PathBuf>,
    /// `mirror/<name>` and its format, when the mirror holds the dataset.
    pub mirror: Option<(PathBuf, Format)>,
}

/// Every known dataset, then every other dataset found in the data directory or the mirror,
/// with where each can be found. Looks at directory layouts only; verifies nothing.
pub fn availability(data_dir: &Path, mirror: Option<&Path>) -> Vec<Availability> {
    let mut names: Vec<String> = REGISTRY
        .iter()
        .map(|entry| entry.name.to_string())
        .collect();
    let mut others: Vec<String> = Vec::new();
    for dir in std::iter::once(data_dir).chain(mirror) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let is_dataset = beir::is_beir_dir(&path) || Format::of_raw_dir(&path).is_some();
            if is_plain_name(&name)
                && is_dataset
                && !names.contains(&name)
                && !others.contains(&name)
            {
                others.push(name);
            }
        }
    }
    others.sort();
    names.extend(others);
    names
        .into_iter()
        .map(|name| {
            let local = Some(data_dir.join(&name)).filter(|path| beir::is_beir_dir(path));
            let mirror = mirror.and_then(|mirror| {
                let path = mirror.join(&name);
                if beir::is_beir_dir(&path) {
                    Some((path, Format::Beir))
                } else {
                    Format::of_raw_dir(&path).map(|format| (path, format))
                }
            });
            Availability {
                known: known(&name),
                name,
                local,
                mirror,
            }
        })
        .collect()
}

/// What [`MARKER_FILE`] holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    /// `smart-import`, `trec-import`, `mirror` or `download`.
    origin: String,
    /// The source directory or URL.
    source: String,
    /// File name → `sha256:<hex>` of the sources (raw files, the downloaded zip) or of the
    /// copied files.
    checksums: BTreeMap<String, String>,
}

const ORIGIN_SMART: &str = "smart-import";
const ORIGIN_TREC: &str = "trec-import";

/// The `repro data` command that converts a raw collection of `format`.
fn import_command(format: Format) -> &'static str {
    match format {
        Format::Trec => "import-trec",
        Format::Smart | Format::Beir => "import-smart",
    }
}

/// A raw collection's files, recognised once and used both to key its import and to run it.
enum RawSources {
    Smart(smart::Sources),
    Trec(sgml::Sources),
}

impl RawSources {
    fn find(source: &Path, format: Format) -> Result<Self, DataError> {
        Ok(match format {
            Format::Trec => RawSources::Trec(sgml::find_sources(source)?),
            Format::Smart | Format::Beir => {
                RawSources::Smart(smart::find_sources(source, &smart::SourceHints::default())?)
            }
        })
    }

    fn paths(&self) -> Vec<&Path> {
        match self {
            RawSources::Smart(sources) => sources.paths().to_vec(),
            RawSources::Trec(sources) => sources.paths(),
        }
    }

    /// Converts the collection into the BEIR directory `out`.
    fn import(&self, out: &Path) -> Result<(), DataError> {
        match self {
            RawSources::Smart(sources) => {
                smart::import_with(sources, out, &smart::ImportOptions::default()).map(drop)
            }
            RawSources::Trec(sources) => sgml::import_with(sources, out).map(drop),
        }
    }
}

fn read_marker(dir: &Path) -> Option<Marker> {
    let text = std::fs::read_to_string(dir.join(MARKER_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_marker(dir: &Path, marker: &Marker) -> Result<(), DataError> {
    let path = dir.join(MARKER_FILE);
    let mut json = serde_json::to_vec_pretty(marker).map_err(|err| DataError::Invalid {
        path: path.clone(),
        message: err.to_string(),
    })?;
    json.push(b'\n');
    write_atomic(&path, &json).map_err(|err| DataError::io(&path, err))
}

/// Imports the raw collection in `source` (SMART or TREC) into `data_dir/<name>`, unless a
/// previous import of the same source files (same sha256s) is already there. Known
/// collections are checked against their sha256s first.
fn import_raw_once(
    name: &str,
    (source, format): (&Path, Format),
    data_dir: &Path,
    entry: Option<&KnownDataset>,
) -> Result<PathBuf, DataError> {
    if let Some(entry) = entry.filter(|entry| entry.format == format) {
        verify(source, entry.files)?;
    }
    let origin = match format {
        Format::Trec => ORIGIN_TREC,
        Format::Smart | Format::Beir => ORIGIN_SMART,
    };
    let sources = RawSources::find(source, format)?;
    let mut checksums = BTreeMap::new();
    for path in sources.paths() {
        let digest = sha256_file(path).map_err(|err| DataError::io(path, err))?;
        checksums.insert(file_label(path), format!("sha256:{digest}"));
    }
    let marker = Marker {
        origin: origin.to_string(),
        source: std::fs::canonicalize(source)
            .unwrap_or_else(|_| source.to_path_buf())
            .display()
            .to_string(),
        checksums,
    };
    let target = data_dir.join(name);
    if target.exists() {
        match read_marker(&target) {
            Some(existing) if existing.origin == origin => {
                if existing.checksums == marker.checksums && beir::is_beir_dir(&target) {
                    return Ok(target);
                }
            }
            _ if is_empty_dir(&target) => {}
            other => {
                let what = match other {
                    Some(existing) => format!(
                        "holds a dataset repro took from elsewhere ({} {})",
                        existing.origin, existing.source
                    ),
                    None => "exists and was not made by repro".to_string(),
                };
                return Err(DataError::Invalid {
                    path: target,
                    message: format!(
                        "{what}, so it is left alone; remove it to import {} here, or use \
                         another --data-dir",
                        source.display()
                    ),
                });
            }
        }
    }
    let staging = staging_dir(data_dir)?;
    let out = staging.path().join(name);
    sources.import(&out)?;
    write_marker(&out, &marker)?;
    replace_dir(&out, &target)?;
    Ok(target)
}

/// Copies a BEIR layout from the mirror into `data_dir/<name>`, checking known sha256s on the
/// bytes copied.
fn copy_beir(
    name: &str,
    source: &Path,
    data_dir: &Path,
    entry: Option<&KnownDataset>,
) -> Result<PathBuf, DataError> {
    let expected: BTreeMap<&str, &str> = entry
        .filter(|entry| entry.format == Format::Beir)
        .map(|entry| entry.files.iter().copied().collect())
        .unwrap_or_default();
    let mut files = vec![
        beir::CORPUS_FILE.to_string(),
        beir::QUERIES_FILE.to_string(),
    ];
    for split in beir::splits(source)? {
        files.push(format!("{}/{split}.tsv", beir::QRELS_DIR));
    }
    for relative in expected.keys() {
        if !files.iter().any(|file| file == relative) {
            return Err(DataError::Invalid {
                path: source.join(relative),
                message: "missing: this file of a known dataset is expected here".to_string(),
            });
        }
    }
    let staging = staging_dir(data_dir)?;
    let out = staging.path().join(name);
    let mut checksums = BTreeMap::new();
    for relative in &files {
        let from = source.join(relative);
        let to = out.join(relative);
        let digest = copy_hashing(&from, &to)?;
        if let Some(expected) = expected.get(relative.as_str()) {
            if digest != *expected {
                return Err(DataError::Checksum {
                    path: from,
                    algorithm: "sha256",
                    expected: expected.to_string(),
                    actual: digest,
                });
            }
        }
        checksums.insert(relative.clone(), format!("sha256:{digest}"));
    }
    let marker = Marker {
        origin: "mirror".to_string(),
        source: source.display().to_string(),
        checksums,
    };
    write_marker(&out, &marker)?;
    let target = data_dir.join(name);
    replace_dir(&out, &target)?;
    Ok(target)
}

/// Copies a file and returns the sha256 of the bytes written.
fn copy_hashing(from: &Path, to: &Path) -> Result<String, DataError> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|err| DataError::io(parent, err))?;
    }
    let mut input = std::fs::File::open(from).map_err(|err| DataError::io(from, err))?;
    let output = std::fs::File::create(to).map_err(|err| DataError::io(to, err))?;
    let mut output = std::io::BufWriter::new(output);
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let read = input
            .read(&mut buffer)
            .map_err(|err| DataError::io(from, err))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        output
            .write_all(&buffer[..read])
            .map_err(|err| DataError::io(to, err))?;
    }
    output.flush().map_err(|err| DataError::io(to, err))?;
    Ok(hex::encode(hasher.finalize()))
}

/// Downloads `<name>.zip` from `url` into a temporary file in `data_dir` (streamed, hashed on
/// the way), checks it, unpacks it into a temporary directory and moves the dataset to
/// `data_dir/<name>`.
fn download_beir(
    name: &str,
    url: &str,
    entry: Option<&KnownDataset>,
    data_dir: &Path,
    progress: &dyn Fn(u64, Option<u64>),
) -> Result<PathBuf, DataError> {
    std::fs::create_dir_all(data_dir).map_err(|err| DataError::io(data_dir, err))?;
    let response = request(name, url, entry)?;
    let mut zip_file = tempfile::Builder::new()
        .prefix(".repro-download-")
        .suffix(".zip")
        .tempfile_in(data_dir)
        .map_err(|err| DataError::io(data_dir, err))?;
    let zip_path = zip_file.path().to_path_buf();
    let digests = save_response(response, url, zip_file.as_file_mut(), &zip_path, progress)?;
    if let Some(expected) = entry.and_then(|entry| entry.zip_md5) {
        if digests.md5 != expected {
            return Err(DataError::Checksum {
                path: PathBuf::from(url),
                algorithm: "md5",
                expected: expected.to_string(),
                actual: digests.md5,
            });
        }
    }

    let staging = staging_dir(data_dir)?;
    unzip(&zip_path, url, staging.path())?;
    drop(zip_file);
    let root = find_beir_root(staging.path(), name).ok_or_else(|| DataError::Invalid {
        path: PathBuf::from(url),
        message: "the archive holds no BEIR layout (corpus.jsonl, queries.jsonl, qrels/)"
            .to_string(),
    })?;
    if let Some(entry) = entry.filter(|entry| entry.format == Format::Beir) {
        verify(&root, entry.files)?;
    }
    let marker = Marker {
        origin: "download".to_string(),
        source: url.to_string(),
        checksums: BTreeMap::from([(format!("{name}.zip"), format!("sha256:{}", digests.sha256))]),
    };
    write_marker(&root, &marker)?;
    let target = data_dir.join(name);
    replace_dir(&root, &target)?;
    Ok(target)
}

fn download_error(url: &str, message: String) -> DataError {
    DataError::Download {
        url: url.to_string(),
        message,
    }
}

/// GETs `url`; a 404 for a name the registry does not know says which names it knows.
fn request(
    name: &str,
    url: &str,
    entry: Option<&KnownDataset>,
) -> Result<ureq::Response, DataError> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(300))
        .build();
    agent.get(url).call().map_err(|err| match err {
        ureq::Error::Status(404, _) if entry.is_none() => download_error(
            url,
            format!(
                "HTTP 404: the server has no `{name}.zip`; is `{name}` a BEIR dataset? known: {}",
                REGISTRY
                    .iter()
                    .map(|dataset| dataset.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        ureq::Error::Status(code, response) => {
            download_error(url, format!("HTTP {code} {}", response.status_text()))
        }
        ureq::Error::Transport(transport) => download_error(url, transport.to_string()),
    })
}

/// The hex digests of a downloaded file.
struct Digests {
    md5: String,
    sha256: String,
}

/// Streams the response's body into `file` (at `path`), hashing it and reporting progress;
/// a body shorter than its `Content-Length` is an error.
fn save_response(
    response: ureq::Response,
    url: &str,
    file: &mut std::fs::File,
    path: &Path,
    progress: &dyn Fn(u64, Option<u64>),
) -> Result<Digests, DataError> {
    let total: Option<u64> = response
        .header("Content-Length")
        .and_then(|value| value.trim().parse().ok());
    let mut md5 = md5::Md5::new();
    let mut sha256 = Sha256::new();
    let mut done: u64 = 0;
    let mut reader = response.into_reader();
    let mut writer = std::io::BufWriter::new(file);
    let mut buffer = vec![0u8; 1 << 16];
    progress(0, total);
    loop {
        let read = reader
            .read(&mut buffer)
            .map_err(|err| download_error(url, err.to_string()))?;
        if read == 0 {
            break;
        }
        md5.update(&buffer[..read]);
        sha256.update(&buffer[..read]);
        writer
            .write_all(&buffer[..read])
            .map_err(|err| DataError::io(path, err))?;
        done += read as u64;
        progress(done, total);
    }
    writer.flush().map_err(|err| DataError::io(path, err))?;
    if let Some(total) = total.filter(|&total| total != done) {
        return Err(download_error(
            url,
            format!("the connection closed after {done} of {total} bytes"),
        ));
    }
    Ok(Digests {
        md5: md5.hex_digest(),
        sha256: hex::encode(sha256.finalize()),
    })
}

/// Unpacks a zip into `dest`, refusing entries whose names would leave it.
fn unzip(zip_path: &Path, label: &str, dest: &Path) -> Result<(), DataError> {
    let invalid = |message: String| DataError::Invalid {
        path: PathBuf::from(label),
        message,
    };
    let file = std::fs::File::open(zip_path).map_err(|err| DataError::io(zip_path, err))?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|err| invalid(format!("not a readable zip archive: {err}")))?;
    for index in 0..archive.len() {
        let mut entry = archive
            .by_index(index)
            .map_err(|err| invalid(format!("entry {index}: {err}")))?;
        let Some(relative) = entry.enclosed_name() else {
            return Err(invalid(format!(
                "entry `{}` would be written outside the target directory",
                entry.name()
            )));
        };
        // macOS archivers add resource forks under __MACOSX; they are not data.
        if relative.starts_with("__MACOSX") || entry.is_symlink() {
            continue;
        }
        let out = dest.join(&relative);
        if entry.is_dir() {
            std::fs::create_dir_all(&out).map_err(|err| DataError::io(&out, err))?;
            continue;
        }
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).map_err(|err| DataError::io(parent, err))?;
        }
        let file = std::fs::File::create(&out).map_err(|err| DataError::io(&out, err))?;
        let mut writer = std::io::BufWriter::new(file);
        std::io::copy(&mut entry, &mut writer)
            .map_err(|err| invalid(format!("entry `{}`: {err}", relative.display())))?;
        writer.flush().map_err(|err| DataError::io(&out, err))?;
    }
    Ok(())
}

/// The BEIR directory inside an unpacked archive: `<name>/` (BEIR's zips), the top level, or
/// the only sub-directory that holds a layout.
fn find_beir_root(dir: &Path, name: &str) -> Option<PathBuf> {
    let named = dir.join(name);
    if beir::is_beir_dir(&named) {
        return Some(named);
    }
    if beir::is_beir_dir(dir) {
        return Some(dir.to_path_buf());
    }
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| beir::is_beir_dir(path))
        .collect();
    match &found[..] {
        [only] => Some(only.clone()),
        _ => None,
    }
}

/// A temporary directory inside `data_dir`, on the same file system, so that a finished
/// dataset can be renamed into place.
fn staging_dir(data_dir: &Path) -> Result<tempfile::TempDir, DataError> {
    std::fs::create_dir_all(data_dir).map_err(|err| DataError::io(data_dir, err))?;
    tempfile::Builder::new()
        .prefix(".repro-staging-")
        .tempdir_in(data_dir)
        .map_err(|err| DataError::io(data_dir, err))
}

/// Moves the directory `new` to `target`, replacing what is there. The old directory is moved
/// aside first and deleted only once the new one is in place.
fn replace_dir(new: &Path, target: &Path) -> Result<(), DataError> {
    if std::fs::symlink_metadata(target).is_err() {
        return std::fs::rename(new, target).map_err(|err| DataError::io(target, err));
    }
    let parent = match target.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let holder = tempfile::Builder::new()
        .prefix(".repro-old-")
        .tempdir_in(parent)
        .map_err(|err| DataError::io(parent, err))?;
    let old = holder.path().join("old");
    std::fs::rename(target, &old).map_err(|err| DataError::io(target, err))?;
    if let Err(err) = std::fs::rename(new, target) {
        // Put the previous dataset back rather than leave nothing.
        let _ = std::fs::rename(&old, target);
        return Err(DataError::io(target, err));
    }
    Ok(())
}

fn is_empty_dir(path: &Path) -> bool {
    std::fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_none())
}

fn directory_name(path: &Path) -> Result<String, DataError> {
    let canonical = std::fs::canonicalize(path).map_err(|err| DataError::io(path, err))?;
    canonical
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| is_plain_name(name))
        .ok_or_else(|| DataError::Invalid {
            path: path.to_path_buf(),
            message: "cannot name a dataset after this directory; import it with `repro data \
                      import-smart DIR --out OUT` (or `import-trec`)"
                .to_string(),
        })
}

fn file_label(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::net::TcpListener;

    /// The data mirror (`REPRO_MIRROR`, else `../shared/data` beside the crate).
    fn real_mirror() -> PathBuf {
        let mirror = std::env::var_os("REPRO_MIRROR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
        assert!(
            mirror.join("scifact").is_dir() && mirror.join("cranfield").is_dir(),
            "this test reads the data mirror at {} (set REPRO_MIRROR)",
            mirror.display()
        );
        mirror
    }

    const CORPUS: &str = "{\"_id\": \"d1\", \"title\": \"\", \"text\": \"one\"}\n\
                          {\"_id\": \"d2\", \"title\": \"\", \"text\": \"two\"}\n";
    const QUERIES: &str = "{\"_id\": \"q1\", \"text\": \"first\"}\n";
    const QRELS: &str = "query-id\tcorpus-id\tscore\nq1\td2\t1\n";

    fn write_beir(dir: &Path) {
        std::fs::create_dir_all(dir.join("qrels")).unwrap();
        std::fs::write(dir.join("corpus.jsonl"), CORPUS).unwrap();
        std::fs::write(dir.join("queries.jsonl"), QUERIES).unwrap();
        std::fs::write(dir.join("qrels/test.tsv"), QRELS).unwrap();
    }

    fn write_smart(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("x.all"), ".I 1\n.W\none\n.I 2\n.W\ntwo\n").unwrap();
        std::fs::write(dir.join("x.qry"), ".I 1\n.W\nfirst\n").unwrap();
        std::fs::write(dir.join("x.rel"), "1 2\n").unwrap();
    }

    /// A zip holding a BEIR layout under `<top>/`, plus `extra` entries.
    fn beir_zip(top: &str, extra: &[(&str, &str)]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        let files = [
            ("corpus.jsonl", CORPUS),
            ("queries.jsonl", QUERIES),
            ("qrels/test.tsv", QRELS),
        ];
        for (name, content) in files {
            writer.start_file(format!("{top}/{name}"), options).unwrap();
            writer.write_all(content.as_bytes()).unwrap();
        }
        for (name, content) in extra {
            writer.start_file(*name, options).unwrap();
            writer.write_all(content.as_bytes()).unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    /// Serves `routes` (path, body, declared Content-Length) over HTTP on 127.0.0.1 from a
    /// thread; unknown paths get a 404. Returns the base URL.
    fn serve(routes: Vec<(String, Vec<u8>, Option<usize>)>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
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
                let request = String::from_utf8_lossy(&head);
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                let _ = match routes.iter().find(|(route, _, _)| *route == path) {
                    Some((_, body, declared)) => {
                        let length = declared.unwrap_or(body.len());
                        let head = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
                        );
                        stream
                            .write_all(head.as_bytes())
                            .and_then(|()| stream.write_all(body))
                    }
                    None => stream.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    ),
                };
            }
        });
        format!("http://{address}")
    }

    fn no_progress(_: u64, _: Option<u64>) {}

    #[test]
    fn resolve_uses_paths_and_the_data_dir_and_explains_what_it_searched() {
        let temp = tempfile::tempdir().unwrap();
        let data_dir = temp.path().join("data");
        let given = temp.path().join("given");
        write_beir(&given);
        let found = resolve(given.to_str().unwrap(), &data_dir, None).unwrap();
        assert_eq!(found, given);

        write_beir(&data_dir.join("mine"));
        assert_eq!(
            resolve("mine", &data_dir, None).unwrap(),
            data_dir.join("mine")
        );

        let err = resolve("no-such-set", &data_dir, Some(temp.path())).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, DataError::UnknownDataset { .. }));
        assert!(message.contains("`no-such-set`"), "{message}");
        assert!(message.contains(&data_dir.join("no-such-set").display().to_string()));
        assert!(
            message.contains("known datasets: scifact, cranfield"),
            "{message}"
        );
        let message = resolve("nfcorpus", &data_dir, None)
            .unwrap_err()
            .to_string();
        assert!(message.contains("repro data fetch nfcorpus"), "{message}");
        assert!(
            message.contains("no mirror (REPRO_MIRROR is not set)"),
            "{message}"
        );

        let message = resolve("some/missing/dir", &data_dir, None)
            .unwrap_err()
            .to_string();
        assert!(message.contains("no such dataset directory"), "{message}");
        let message = resolve(temp.path().to_str().unwrap(), &data_dir, None)
            .unwrap_err()
            .to_string();
        assert!(message.contains("neither a BEIR dataset"), "{message}");
    }

    #[test]
    fn smart_directories_are_imported_once_per_source_content() {
        let temp = tempfile::tempdir().unwrap();
        let data_dir = temp.path().join("data");
        let source = temp.path().join("raw").join("coll");
        write_smart(&source);
        let found = resolve(source.to_str().unwrap(), &data_dir, None).unwrap();
        assert_eq!(found, data_dir.join("coll"));
        assert_eq!(beir::load(&found, "test").unwrap().qrels["1"]["2"], 1);
        let marker = read_marker(&found).unwrap();
        assert_eq!(marker.origin, ORIGIN_SMART);
        assert_eq!(marker.checksums.len(), 3);

        // Unchanged sources: the import is not redone (a file put there survives).
        std::fs::write(found.join("sentinel"), "").unwrap();
        resolve(source.to_str().unwrap(), &data_dir, None).unwrap();
        assert!(found.join("sentinel").exists());

        // Changed sources: imported again.
        std::fs::write(source.join("x.rel"), "1 1\n").unwrap();
        resolve(source.to_str().unwrap(), &data_dir, None).unwrap();
        assert!(!found.join("sentinel").exists());
        assert_eq!(beir::load(&found, "test").unwrap().qrels["1"]["1"], 1);

        // A directory repro did not make is never overwritten.
        let other = temp.path().join("raw").join("taken");
        write_smart(&other);
        std::fs::create_dir_all(data_dir.join("taken")).unwrap();
        std::fs::write(data_dir.join("taken").join("notes.txt"), "mine").unwrap();
        let message = resolve(other.to_str().unwrap(), &data_dir, None)
            .unwrap_err()
            .to_string();
        assert!(message.contains("was not made by repro"), "{message}");
        assert!(data_dir.join("taken/notes.txt").exists());

        // No staging directories are left behind.
        let names: Vec<String> = std::fs::read_dir(&data_dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|name| !name.starts_with('.')), "{names:?}");
    }

    #[test]
    fn real_mirror_scifact_in_place_and_cranfield_imported() {
        let mirror = real_mirror();
        let temp = tempfile::tempdir().unwrap();
        let data_dir = temp.path().join("data");
        let scifact = resolve("scifact", &data_dir, Some(&mirror)).unwrap();
        assert_eq!(scifact, mirror.join("scifact"));
        assert!(
            !data_dir.join("scifact").exists(),
            "the mirror is used in place"
        );
        let started = std::time::Instant::now();
        let dataset = beir::load(&scifact, "test").unwrap();
        let elapsed = started.elapsed();
        assert_eq!(dataset.corpus.len(), 5183);
        assert_eq!(dataset.queries.len(), 300);
        assert_eq!(
            dataset.qrels.values().map(BTreeMap::len).sum::<usize>(),
            339
        );
        assert!(elapsed.as_secs_f64() < 2.0, "{elapsed:?}");

        let cranfield = resolve("cranfield", &data_dir, Some(&mirror)).unwrap();
        assert_eq!(cranfield, data_dir.join("cranfield"));
        let info = beir::inspect(&cranfield, "test").unwrap();
        assert_eq!(
            (info.documents, info.queries, info.judgments),
            (1400, 225, 1837)
        );
        assert_eq!(
            resolve("cranfield", &data_dir, Some(&mirror)).unwrap(),
            cranfield
        );

        // `fetch` copies the BEIR files, checking them.
        let copied = fetch("scifact", &data_dir, Some(&mirror), &no_progress).unwrap();
        assert_eq!(copied, data_dir.join("scifact"));
        verify(&copied, known("scifact").unwrap().files).unwrap();
        assert_eq!(read_marker(&copied).unwrap().origin, "mirror");
    }

    #[test]
    fn mirror_content_that_does_not_match_is_refused() {
        let temp = tempfile::tempdir().unwrap();
        let mirror = temp.path().join("mirror");
        write_beir(&mirror.join("scifact"));
        let err = resolve("scifact", &temp.path().join("data"), Some(&mirror)).unwrap_err();
        match &err {
            DataError::Checksum {
                path, algorithm, ..
            } => {
                assert!(path.ends_with("scifact/corpus.jsonl"));
                assert_eq!(*algorithm, "sha256");
            }
            other => panic!("expected a checksum error, got {other}"),
        }
        let err = fetch(
            "scifact",
            &temp.path().join("data"),
            Some(&mirror),
            &no_progress,
        );
        let message = err.unwrap_err().to_string();
        assert!(message.contains("qrels/train.tsv: missing"), "{message}");
        std::fs::write(mirror.join("scifact/qrels/train.tsv"), QRELS).unwrap();
        let err = fetch(
            "scifact",
            &temp.path().join("data"),
            Some(&mirror),
            &no_progress,
        );
        assert!(matches!(err, Err(DataError::Checksum { .. })));
        assert!(!temp.path().join("data/scifact").exists());

        write_smart(&mirror.join("cranfield"));
        let err = resolve("cranfield", &temp.path().join("data"), Some(&mirror)).unwrap_err();
        assert!(err.to_string().contains("cran.all.1400"), "{err}");

        // Unknown names in the mirror are used without checksums.
        write_beir(&mirror.join("tiny"));
        let tiny = fetch(
            "tiny",
            &temp.path().join("data"),
            Some(&mirror),
            &no_progress,
        )
        .unwrap();
        assert_eq!(beir::load(&tiny, "test").unwrap().corpus.len(), 2);
    }

    #[test]
    fn cranfield_without_a_mirror_is_explained() {
        let temp = tempfile::tempdir().unwrap();
        let err = fetch("cranfield", temp.path(), None, &no_progress).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, DataError::Unavailable { .. }), "{message}");
        assert!(message.contains("import-smart"), "{message}");
    }

    #[test]
    fn downloads_unpack_atomically_with_progress() {
        let zip = beir_zip("tiny", &[("__MACOSX/tiny/._corpus.jsonl", "junk")]);
        let size = zip.len() as u64;
        let base = serve(vec![("/tiny.zip".to_string(), zip, None)]);
        let temp = tempfile::tempdir().unwrap();
        let data_dir = temp.path().join("data");
        let seen = std::cell::RefCell::new(Vec::new());
        let progress = |done: u64, total: Option<u64>| seen.borrow_mut().push((done, total));
        let dir = fetch_from("tiny", &data_dir, None, &base, &progress).unwrap();
        assert_eq!(dir, data_dir.join("tiny"));
        let dataset = beir::load(&dir, "test").unwrap();
        assert_eq!((dataset.corpus.len(), dataset.queries.len()), (2, 1));
        let marker = read_marker(&dir).unwrap();
        assert_eq!(marker.origin, "download");
        assert_eq!(marker.source, format!("{base}/tiny.zip"));
        let seen = seen.into_inner();
        assert_eq!(seen.first(), Some(&(0, Some(size))));
        assert_eq!(seen.last(), Some(&(size, Some(size))));
        let names: Vec<String> = std::fs::read_dir(&data_dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["tiny"], "no temporary file or directory is left");

        // Present already: no second download (the server would now answer 404).
        let again = fetch_from("tiny", &data_dir, None, "http://127.0.0.1:9", &no_progress);
        assert_eq!(again.unwrap(), dir);
    }

    #[test]
    fn download_failures_are_errors_that_say_why() {
        let good = beir_zip("nfcorpus", &[]);
        let evil = beir_zip("evil", &[("../outside.txt", "x")]);
        let base = serve(vec![
            ("/nfcorpus.zip".to_string(), good.clone(), None),
            ("/evil.zip".to_string(), evil, None),
            ("/short.zip".to_string(), good, Some(1 << 20)),
            ("/junk.zip".to_string(), b"not a zip".to_vec(), None),
        ]);
        let temp = tempfile::tempdir().unwrap();
        let data_dir = temp.path().join("data");

        let err = fetch_from("nfcorpus", &data_dir, None, &base, &no_progress).unwrap_err();
        match &err {
            DataError::Checksum {
                path,
                algorithm,
                expected,
                ..
            } => {
                assert_eq!(*path, PathBuf::from(format!("{base}/nfcorpus.zip")));
                assert_eq!(*algorithm, "md5");
                assert_eq!(expected, "a89dba18a62ef92f7d323ec890a0d38d");
            }
            other => panic!("expected a checksum error, got {other}"),
        }
        let message = fetch_from("evil", &data_dir, None, &base, &no_progress)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("outside the target directory"),
            "{message}"
        );
        assert!(!temp.path().join("outside.txt").exists());
        assert!(!data_dir.join("outside.txt").exists());
        let err = fetch_from("short", &data_dir, None, &base, &no_progress).unwrap_err();
        assert!(matches!(err, DataError::Download { .. }), "{err}");
        let message = fetch_from("junk", &data_dir, None, &base, &no_progress)
            .unwrap_err()
            .to_string();
        assert!(message.contains("not a readable zip archive"), "{message}");
        let message = fetch_from("nothere", &data_dir, None, &base, &no_progress)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("HTTP 404") && message.contains("known:"),
            "{message}"
        );
        let message = fetch_from("../up", &data_dir, None, &base, &no_progress)
            .unwrap_err()
            .to_string();
        assert!(message.contains("a dataset name is"), "{message}");

        let names: Vec<String> = std::fs::read_dir(&data_dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.is_empty(), "nothing is left behind: {names:?}");
    }

    #[test]
    fn availability_lists_known_then_found_datasets() {
        let temp = tempfile::tempdir().unwrap();
        let data_dir = temp.path().join("data");
        let mirror = temp.path().join("mirror");
        write_beir(&data_dir.join("zeta"));
        write_smart(&mirror.join("alpha"));
        write_beir(&mirror.join("scifact"));
        let list = availability(&data_dir, Some(&mirror));
        assert_eq!(list[0].name, "scifact");
        assert_eq!(list[0].mirror, Some((mirror.join("scifact"), Format::Beir)));
        assert!(list[0].local.is_none());
        let tail: Vec<&str> = list[REGISTRY.len()..]
            .iter()
            .map(|entry| entry.name.as_str())
            .collect();
        assert_eq!(tail, ["alpha", "zeta"]);
        let alpha = &list[REGISTRY.len()];
        assert_eq!(alpha.mirror, Some((mirror.join("alpha"), Format::Smart)));
        assert!(alpha.known.is_none());
        assert_eq!(list.last().unwrap().local, Some(data_dir.join("zeta")));
    }
}
