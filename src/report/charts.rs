//! Line charts drawn with plotters: as SVG text (inlined in HTML pages, written as figure
//! files) or as PNG files.
//!
//! Output is deterministic: the same chart gives the same bytes, which is what lets
//! `repro figures` promise byte-identical regeneration. Text is laid out with one TrueType
//! font registered once per process ([`FONT_ENV`], or DejaVu Sans from the usual system
//! paths); without a font no chart can be drawn, and the error says how to get one.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::ReportError;

/// Environment variable naming the TrueType font charts are drawn with.
pub const FONT_ENV: &str = "REPRO_FONT";

/// Where DejaVu Sans lives on common systems (Debian/Ubuntu `fonts-dejavu-core`, Fedora,
/// Arch, Homebrew).
const FONT_CANDIDATES: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/opt/homebrew/share/fonts/DejaVuSans.ttf",
];

const FONT_FAMILY: &str = "sans-serif";

/// Okabe–Ito: distinguishable for the common colour-vision deficiencies.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
];

/// Size of every chart, in pixels (SVG user units).
pub const SIZE: (u32, u32) = (760, 440);

/// How a series is drawn: cross encoders dashed with triangles, dual encoders solid with
/// circles, reference lines (ideal speedups) dotted without markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stroke {
    Solid,
    Dashed,
    Dotted,
}

#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub stroke: Stroke,
    /// Index into the palette.
    pub color: usize,
}

#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Whether x is a count (layers, depths, steps): ticks are whole numbers.
    pub integer_x: bool,
}

impl Chart {
    /// The chart as an SVG document.
    pub fn to_svg(&self) -> Result<String, ReportError> {
        register_font()?;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            self.draw(&root)?;
        }
        Ok(svg)
    }

    /// Writes the chart as a PNG file, atomically.
    pub fn write_png(&self, path: &Path) -> Result<(), ReportError> {
        register_font()?;
        // The image encoder picks the format by extension, so the temporary name ends in .png.
        let partial = path.with_extension("partial.png");
        {
            let root = BitMapBackend::new(&partial, SIZE).into_drawing_area();
            self.draw(&root)?;
        }
        std::fs::rename(&partial, path).map_err(|source| ReportError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    fn bounds(&self) -> (f64, f64, f64, f64) {
        let points = || self.series.iter().flat_map(|s| s.points.iter());
        let finite = |v: &f64| v.is_finite();
        let xs: Vec<f64> = points().map(|p| p.0).filter(finite).collect();
        let ys: Vec<f64> = points().map(|p| p.1).filter(finite).collect();
        let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (mut x0, mut x1) = (min(&xs), max(&xs));
        let (mut y0, mut y1) = (min(&ys), max(&ys));
        if !x0.is_finite() {
            (x0, x1) = (0.0, 1.0);
        }
        if !y0.is_finite() {
            (y0, y1) = (0.0, 1.0);
        }
        let x_pad = if self.integer_x {
            0.3
        } else {
            ((x1 - x0) * 0.03).max(1e-9)
        };
        let y_pad = ((y1 - y0) * 0.08).max(0.01);
        (
            x0 - x_pad,
            x1 + x_pad,
            (y0 - y_pad).max(0.0).min(y0),
            y1 + y_pad,
        )
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), ReportError> {
        let failed = |error: DrawingAreaErrorKind<DB::ErrorType>| {
            ReportError::Invalid(format!("drawing chart `{}`: {error}", self.title))
        };
        root.fill(&WHITE).map_err(failed)?;
        let (x0, x1, y0, y1) = self.bounds();
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FONT_FAMILY, 18))
            .margin(14)
            .x_label_area_size(42)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(failed)?;
        let integer_x = self.integer_x;
        let x_ticks = if integer_x {
            ((x1 - x0).round() as usize + 1).clamp(2, 12)
        } else {
            8
        };
        let format_x = move |x: &f64| {
            if !integer_x {
                format!("{x:.2}")
            } else if (x - x.round()).abs() < 1e-6 {
                format!("{}", x.round() as i64)
            } else {
                String::new()
            }
        };
        let format_y = |y: &f64| format!("{y:.2}");
        chart
            .configure_mesh()
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .x_labels(x_ticks)
            .y_labels(8)
            .x_label_formatter(&format_x)
            .y_label_formatter(&format_y)
            .label_style((FONT_FAMILY, 13))
            .axis_desc_style((FONT_FAMILY, 14))
            .light_line_style(RGBColor(238, 238, 238))
            .bold_line_style(RGBColor(215, 215, 215))
            .draw()
            .map_err(failed)?;
        for series in &self.series {
            let color = PALETTE[series.color % PALETTE.len()];
            let style = ShapeStyle::from(color).stroke_width(2);
            let points = series.points.clone();
            let annotation = match series.stroke {
                Stroke::Solid => chart.draw_series(LineSeries::new(points.clone(), style)),
                Stroke::Dashed => {
                    chart.draw_series(DashedLineSeries::new(points.clone(), 7, 5, style))
                }
                Stroke::Dotted => {
                    chart.draw_series(DashedLineSeries::new(points.clone(), 2, 4, style))
                }
            }
            .map_err(failed)?;
            let stroke = series.stroke;
            annotation
                .label(series.label.as_str())
                .legend(move |(x, y)| {
                    let dash = if stroke == Stroke::Solid { 22 } else { 8 };
                    PathElement::new(vec![(x, y), (x + dash, y)], style)
                });
            match series.stroke {
                Stroke::Solid => {
                    chart
                        .draw_series(points.iter().map(|&p| Circle::new(p, 3, style.filled())))
                        .map_err(failed)?;
                }
                Stroke::Dashed => {
                    chart
                        .draw_series(
                            points
                                .iter()
                                .map(|&p| TriangleMarker::new(p, 4, style.filled())),
                        )
                        .map_err(failed)?;
                }
                Stroke::Dotted => {}
            }
        }
        if self.series.iter().any(|series| !series.label.is_empty()) {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperMiddle)
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(190, 190, 190))
                .label_font((FONT_FAMILY, 12))
                .draw()
                .map_err(failed)?;
        }
        root.present().map_err(failed)?;
        Ok(())
    }
}

/// Registers the chart font once per process.
fn register_font() -> Result<(), ReportError> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let path = font_path()?;
            let bytes = std::fs::read(&path)
                .map_err(|error| format!("reading the chart font {}: {error}", path.display()))?;
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, bytes)
                .map_err(|_| format!("{} is not a TrueType font", path.display()))
        })
        .clone()
        .map_err(ReportError::Invalid)
}

fn font_path() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(FONT_ENV) {
        return Ok(PathBuf::from(path));
    }
    FONT_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
        .ok_or_else(|| {
            format!(
                "charts need a TrueType font: install DejaVu Sans (Debian: `apt-get install \
                 fonts-dejavu-core`) or set {FONT_ENV} to a .ttf file"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> Chart {
        Chart {
            title: "layers".to_string(),
            x_label: "layer".to_string(),
            y_label: "nDCG@10".to_string(),
            integer_x: true,
            series: vec![
                Series {
                    label: "DE".to_string(),
                    points: vec![(0.0, 0.3), (1.0, 0.35), (2.0, 0.5)],
                    stroke: Stroke::Solid,
                    color: 0,
                },
                Series {
                    label: "CE".to_string(),
                    points: vec![(0.0, 0.4), (1.0, 0.2), (2.0, 0.1)],
                    stroke: Stroke::Dashed,
                    color: 1,
                },
            ],
        }
    }

    #[test]
    fn svg_is_deterministic_and_labelled() {
        let first = chart().to_svg().unwrap();
        assert_eq!(first, chart().to_svg().unwrap());
        assert!(
            first.starts_with("<svg"),
            "{}",
            &first[..40.min(first.len())]
        );
        for text in ["layers", "nDCG@10", "DE", "CE"] {
            // plotters writes each text element's content on its own line.
            assert!(
                first.contains(&format!(">\n{text}\n</text>")),
                "missing {text}"
            );
        }
    }

    #[test]
    fn png_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.png");
        chart().write_png(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        let again = dir.path().join("again.png");
        chart().write_png(&again).unwrap();
        assert_eq!(bytes, std::fs::read(&again).unwrap());
    }
}
