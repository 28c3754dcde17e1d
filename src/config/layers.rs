//! Which hidden states a sweep looks at: `all`, `6`, `0-6`, `1,3,5-6`, or a TOML list.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

/// A selection of hidden-state indices (0 = embedding output, `i` = after layer `i`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerSelection {
    /// Every hidden state of the model, 0 to its depth.
    All,
    /// The listed indices, sorted and without duplicates.
    Only(Vec<usize>),
}

impl LayerSelection {
    /// The indices for a model of `depth` layers; an index beyond `depth` is an error.
    pub fn resolve(&self, depth: usize) -> Result<Vec<usize>, String> {
        match self {
            LayerSelection::All => Ok((0..=depth).collect()),
            LayerSelection::Only(layers) => match layers.iter().find(|&&layer| layer > depth) {
                Some(layer) => Err(format!(
                    "layer {layer} is beyond the model's depth {depth} (layers are 0..={depth})"
                )),
                None => Ok(layers.clone()),
            },
        }
    }

    fn from_list(mut layers: Vec<usize>) -> Result<Self, String> {
        if layers.is_empty() {
            return Err("the layer selection is empty".to_string());
        }
        layers.sort_unstable();
        layers.dedup();
        Ok(LayerSelection::Only(layers))
    }
}

impl std::str::FromStr for LayerSelection {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text == "all" {
            return Ok(LayerSelection::All);
        }
        let number = |part: &str| {
            part.trim().parse::<usize>().map_err(|_| {
                format!(
                    "`{part}` is not a layer index in `{text}` (expected e.g. 0-6, 1,3,5 or all)"
                )
            })
        };
        let mut layers = Vec::new();
        for part in text.split(',') {
            match part.split_once('-') {
                Some((start, end)) => {
                    let (start, end) = (number(start)?, number(end)?);
                    if start > end {
                        return Err(format!("range `{part}` runs backwards"));
                    }
                    layers.extend(start..=end);
                }
                None => layers.push(number(part)?),
            }
        }
        LayerSelection::from_list(layers)
    }
}

impl fmt::Display for LayerSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerSelection::All => f.write_str("all"),
            LayerSelection::Only(layers) => {
                let parts: Vec<String> = layers.iter().map(usize::to_string).collect();
                f.write_str(&parts.join(","))
            }
        }
    }
}

/// TOML accepts `"all"`, `"0-6"`, `3`, or `[0, 1, 6]`.
impl<'de> Deserialize<'de> for LayerSelection {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LayerVisitor;

        impl<'de> Visitor<'de> for LayerVisitor {
            type Value = LayerSelection;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"a layer index, a list of indices, or a string like "0-6" or "all""#)
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
                value.parse().map_err(E::custom)
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
                let layer = usize::try_from(value)
                    .map_err(|_| E::custom(format!("layer {value} is negative")))?;
                Ok(LayerSelection::Only(vec![layer]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut layers = Vec::new();
                while let Some(layer) = seq.next_element::<usize>()? {
                    layers.push(layer);
                }
                LayerSelection::from_list(layers).map_err(de::Error::custom)
            }
        }

        deserializer.deserialize_any(LayerVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_lists_and_all() {
        assert_eq!("0-3".parse(), Ok(LayerSelection::Only(vec![0, 1, 2, 3])));
        assert_eq!(
            "6,1,3-4,1".parse(),
            Ok(LayerSelection::Only(vec![1, 3, 4, 6]))
        );
        assert_eq!("all".parse(), Ok(LayerSelection::All));
        assert!("3-1".parse::<LayerSelection>().is_err());
        assert!("x".parse::<LayerSelection>().unwrap_err().contains("`x`"));
    }

    #[test]
    fn resolve_checks_depth() {
        assert_eq!(LayerSelection::All.resolve(2), Ok(vec![0, 1, 2]));
        let selection: LayerSelection = "0-7".parse().unwrap();
        assert!(selection.resolve(6).unwrap_err().contains("layer 7"));
    }

    #[test]
    fn deserializes_every_toml_form() {
        #[derive(Deserialize)]
        struct Holder {
            layers: LayerSelection,
        }
        let parse = |text: &str| toml::from_str::<Holder>(text).map(|h| h.layers);
        assert_eq!(parse("layers = 3").unwrap(), LayerSelection::Only(vec![3]));
        assert_eq!(
            parse("layers = [2, 0]").unwrap(),
            LayerSelection::Only(vec![0, 2])
        );
        assert_eq!(parse(r#"layers = "all""#).unwrap(), LayerSelection::All);
        assert!(parse("layers = -1").is_err());
        assert!(parse("layers = []").is_err());
    }
}
