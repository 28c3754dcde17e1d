use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar on stderr with an ETA, or nothing at all under `--quiet`.
///
/// Library code reports progress through plain callbacks; this type is how the CLI draws them.
#[derive(Debug, Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new(quiet: bool, length: u64, message: impl Into<String>) -> Self {
        let bar = if quiet {
            ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::hidden())
        } else {
            ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr())
        };
        let style = ProgressStyle::with_template(
            "{msg:>12} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, ETA {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(message.into());
        Progress { bar }
    }

    pub fn advance(&self, delta: u64) {
        self.bar.inc(delta);
    }

    pub fn set_message(&self, message: impl Into<String>) {
        self.bar.set_message(message.into());
    }

    pub fn reset(&self, length: u64, message: impl Into<String>) {
        self.bar.reset();
        self.bar.set_length(length);
        self.bar.set_message(message.into());
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
