//! `[report]`: how a report turns an experiment's measures into findings — the multiple-testing
//! correction of each family of tests, the significance level, the equivalence margin, and the
//! dataset on which anything is chosen (a layer). These settings change what a report
//! concludes, never what a task computes, so they are not part of any cache key.

use serde::{Deserialize, Serialize};

use crate::eval::significance::Correction;

/// What a report needs to turn paired tests into verdicts.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSettings {
    /// How each family's p-values are adjusted before they are compared with `alpha`.
    #[serde(default)]
    pub correction: Correction,
    /// Significance level of the (adjusted) paired tests and of the equivalence test.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Half-width of the equivalence region, in units of the measure (nDCG@10): a difference
    /// whose interval lies within ±margin (TOST) is "equivalent"; a difference neither
    /// significant nor equivalent is "inconclusive".
    #[serde(default = "default_margin")]
    pub margin: f64,
    /// The dataset (a key of `[datasets]`) whose cells choose each layer curve's layer; the
    /// choice is then tested on every other dataset. Without it, best layers are shown post
    /// hoc and never tested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<String>,
}

fn default_alpha() -> f64 {
    0.05
}

fn default_margin() -> f64 {
    0.01
}

impl Default for ReportSettings {
    fn default() -> Self {
        ReportSettings {
            correction: Correction::default(),
            alpha: default_alpha(),
            margin: default_margin(),
            selection: None,
        }
    }
}

impl ReportSettings {
    /// The first problem with the values, starting with the field's name.
    pub fn check(&self) -> Result<(), String> {
        if !(self.alpha > 0.0 && self.alpha < 0.5) {
            return Err(format!(
                "alpha {} must be in (0, 0.5): a significance level",
                self.alpha
            ));
        }
        if !(self.margin > 0.0 && self.margin < 1.0) {
            return Err(format!(
                "margin {} must be in (0, 1): a difference of the measure",
                self.margin
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_holm_at_five_percent_with_a_margin_of_one_point() {
        let settings: ReportSettings = toml::from_str("").unwrap();
        assert_eq!(settings, ReportSettings::default());
        assert_eq!(settings.correction, Correction::Holm);
        assert_eq!((settings.alpha, settings.margin), (0.05, 0.01));
        assert!(settings.check().is_ok());
    }

    #[test]
    fn values_are_checked_and_unknown_fields_refused() {
        let parsed: ReportSettings =
            toml::from_str("correction = \"bh\"\nmargin = 0.02\nselection = \"dev\"").unwrap();
        assert_eq!(parsed.correction, Correction::Bh);
        assert_eq!(parsed.selection.as_deref(), Some("dev"));
        for (text, field) in [("alpha = 0.7", "alpha"), ("margin = 0.0", "margin")] {
            let settings: ReportSettings = toml::from_str(text).unwrap();
            assert!(settings.check().unwrap_err().starts_with(field), "{text}");
        }
        assert!(toml::from_str::<ReportSettings>("correction = \"fdr\"").is_err());
        assert!(toml::from_str::<ReportSettings>("alfa = 0.1").is_err());
    }
}
