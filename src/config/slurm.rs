//! `[slurm]`: how `repro run --executor slurm` submits tasks. These settings say where and
//! with what resources tasks run, never what they compute, so they are not part of any cache
//! key: the same experiment gives the same tasks under either executor.

use serde::{Deserialize, Serialize};

/// The sbatch settings of an experiment's tasks.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmSettings {
    /// `--partition`; the cluster's default partition when absent.
    #[serde(default)]
    pub partition: Option<String>,
    /// `--time`, the limit of one task: `MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM` or
    /// `D-HH:MM:SS`.
    #[serde(default)]
    pub time: Option<String>,
    /// `--cpus-per-task`; also the compute threads of each task.
    #[serde(default)]
    pub cpus_per_task: Option<usize>,
    /// `--mem`, per task: a number with an optional K, M, G or T suffix.
    #[serde(default)]
    pub mem: Option<String>,
    /// The most array elements running at once (`--array=0-N%P`).
    #[serde(default)]
    pub max_concurrent: Option<usize>,
    /// Further sbatch arguments, passed as written (`["--account=ir", "--qos=short"]`).
    #[serde(default)]
    pub sbatch_args: Vec<String>,
    /// Seconds between two looks at the queue and the result files.
    #[serde(default = "default_poll_seconds")]
    pub poll_seconds: f64,
    /// Seconds a task may be gone from the queue before its result file must be visible
    /// (shared filesystems show files late); after that it is recorded as lost.
    #[serde(default = "default_result_grace_seconds")]
    pub result_grace_seconds: f64,
}

fn default_poll_seconds() -> f64 {
    5.0
}

fn default_result_grace_seconds() -> f64 {
    60.0
}

impl Default for SlurmSettings {
    fn default() -> Self {
        SlurmSettings {
            partition: None,
            time: None,
            cpus_per_task: None,
            mem: None,
            max_concurrent: None,
            sbatch_args: Vec::new(),
            poll_seconds: default_poll_seconds(),
            result_grace_seconds: default_result_grace_seconds(),
        }
    }
}

impl SlurmSettings {
    /// The first problem with the values, starting with the field's name.
    pub fn check(&self) -> Result<(), String> {
        if let Some(time) = &self.time {
            if !is_slurm_time(time) {
                return Err(format!(
                    "time: `{time}` is not a Slurm time (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS)"
                ));
            }
        }
        if let Some(mem) = &self.mem {
            let digits = mem.trim_end_matches(['K', 'M', 'G', 'T']);
            let suffixes = mem.len() - digits.len();
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || suffixes > 1 {
                return Err(format!(
                    "mem: `{mem}` is not a memory size (a number with an optional K, M, G or T)"
                ));
            }
        }
        if self.cpus_per_task == Some(0) {
            return Err("cpus_per_task must be at least 1".to_string());
        }
        if self.max_concurrent == Some(0) {
            return Err("max_concurrent must be at least 1".to_string());
        }
        if self.partition.as_deref().is_some_and(str::is_empty) {
            return Err("partition is empty".to_string());
        }
        if !(self.poll_seconds > 0.0 && self.poll_seconds.is_finite()) {
            return Err("poll_seconds must be a positive number".to_string());
        }
        if !(self.result_grace_seconds >= 0.0 && self.result_grace_seconds.is_finite()) {
            return Err("result_grace_seconds must be zero or more".to_string());
        }
        if let Some(argument) = self.sbatch_args.iter().find(|a| !a.starts_with('-')) {
            return Err(format!(
                "sbatch_args: `{argument}` is not an option (each entry is one `--name=value`)"
            ));
        }
        Ok(())
    }
}

/// Whether `text` is one of sbatch's `--time` formats.
fn is_slurm_time(text: &str) -> bool {
    let numbers = |part: &str, most: usize| {
        let fields: Vec<&str> = part.split(':').collect();
        fields.len() <= most
            && fields
                .iter()
                .all(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
    };
    match text.split_once('-') {
        Some((days, rest)) => numbers(days, 1) && numbers(rest, 3),
        None => numbers(text, 3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_slurm_formats_are_accepted() {
        for good in ["30", "30:00", "02:00:00", "1-00", "1-12:30", "2-00:00:00"] {
            assert!(is_slurm_time(good), "{good}");
        }
        for bad in ["", "1h", "1:2:3:4", "-1", "1-", "a-00:00", "1:-2"] {
            assert!(!is_slurm_time(bad), "{bad}");
        }
    }

    type Change = fn(&mut SlurmSettings);

    #[test]
    fn checks_name_the_field() {
        let with = |change: Change| {
            let mut settings = SlurmSettings::default();
            change(&mut settings);
            settings.check()
        };
        assert!(with(|_| {}).is_ok());
        assert!(with(|s| s.mem = Some("16G".into())).is_ok());
        let cases: [(Change, &str); 6] = [
            (|s| s.time = Some("1h".into()), "time"),
            (|s| s.mem = Some("16GB".into()), "mem"),
            (|s| s.cpus_per_task = Some(0), "cpus_per_task"),
            (|s| s.max_concurrent = Some(0), "max_concurrent"),
            (|s| s.poll_seconds = 0.0, "poll_seconds"),
            (|s| s.sbatch_args = vec!["short".into()], "sbatch_args"),
        ];
        for (change, field) in cases {
            let error = with(change).unwrap_err();
            assert!(error.starts_with(field), "{error}");
        }
    }
}
