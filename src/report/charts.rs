//! Line charts drawn with plotters: as SVG text (inlined in HTML pages, written as figure
//! files) or as PNG files.
//!
//! Every chart keeps its legend outside the plot area (below it, where it hides no point),
//! draws each series' 95% interval as a translucent band where it has one, and colours
//! series from a colour-blind-safe palette of distinct hues; callers keep a chart to at most
//! [`PALETTE_SIZE`] colours (small multiples rather than one crowded chart).
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

/// Six hues told apart under the common colour-vision deficiencies (Okabe–Ito's blue,
/// vermillion, bluish green and reddish purple, Paul Tol's olive yellow, and a dark grey),
/// chosen so that no two are of one hue family: Okabe–Ito's orange beside its vermillion,
/// or its sky blue beside its blue, read as one colour on screen.
const PALETTE: [RGBColor; 6] = [
    RGBColor(0x00, 0x72, 0xB2),
    RGBColor(0xD5, 0x5E, 0x00),
    RGBColor(0x00, 0x9E, 0x73),
    RGBColor(0xCC, 0x79, 0xA7),
    RGBColor(0xCC, 0xBB, 0x44),
    RGBColor(0x55, 0x55, 0x55),
];

/// How many series of one chart can have colours of their own.
pub const PALETTE_SIZE: usize = PALETTE.len();

/// Size of a chart's plot (and axes), in pixels (SVG user units); the legend adds rows below.
pub const SIZE: (u32, u32) = (760, 440);

/// Height of one legend row, and how many entries share a row.
const LEGEND_ROW: u32 = 20;
const LEGEND_COLUMNS: usize = 2;

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
    /// 95% interval at some of the points, `(x, low, high)`: drawn as a band.
    pub band: Vec<(f64, f64, f64)>,
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
    /// Width and height with the legend rows below the plot.
    pub fn size(&self) -> (u32, u32) {
        let labelled = self.series.iter().filter(|s| !s.label.is_empty()).count();
        let rows = labelled.div_ceil(LEGEND_COLUMNS) as u32;
        let legend = if rows == 0 { 0 } else { rows * LEGEND_ROW + 12 };
        (SIZE.0, SIZE.1 + legend)
    }

    /// Whether the chart shows anything a line could: some series with two points or more.
    pub fn has_lines(&self) -> bool {
        self.series.iter().any(|series| series.points.len() >= 2)
    }

    /// The chart as an SVG document.
    pub fn to_svg(&self) -> Result<String, ReportError> {
        register_font()?;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, self.size()).into_drawing_area();
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
            let root = BitMapBackend::new(&partial, self.size()).into_drawing_area();
            self.draw(&root)?;
        }
        std::fs::rename(&partial, path).map_err(|source| ReportError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    fn bounds(&self) -> (f64, f64, f64, f64) {
        let points = || self.series.iter().flat_map(|s| s.points.iter());
        let bands = || self.series.iter().flat_map(|s| s.band.iter());
        let finite = |v: &f64| v.is_finite();
        let xs: Vec<f64> = points().map(|p| p.0).filter(finite).collect();
        let ys: Vec<f64> = points()
            .map(|p| p.1)
            .chain(bands().flat_map(|b| [b.1, b.2]))
            .filter(finite)
            .collect();
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
        let (plot_area, legend_area) = root.split_vertically(SIZE.1);
        let (x0, x1, y0, y1) = self.bounds();
        let mut chart = ChartBuilder::on(&plot_area)
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
            if series.band.len() >= 2 {
                let upper = series.band.iter().map(|&(x, _, high)| (x, high));
                let lower = series.band.iter().rev().map(|&(x, low, _)| (x, low));
                chart
                    .draw_series(std::iter::once(Polygon::new(
                        upper.chain(lower).collect::<Vec<_>>(),
                        color.mix(0.14).filled(),
                    )))
                    .map_err(failed)?;
            }
        }
        for series in &self.series {
            let color = PALETTE[series.color % PALETTE.len()];
            let style = ShapeStyle::from(color).stroke_width(2);
            let points = series.points.clone();
            match series.stroke {
                Stroke::Solid => chart.draw_series(LineSeries::new(points.clone(), style)),
                Stroke::Dashed => {
                    chart.draw_series(DashedLineSeries::new(points.clone(), 7, 5, style))
                }
                Stroke::Dotted => {
                    chart.draw_series(DashedLineSeries::new(points.clone(), 2, 4, style))
                }
            }
            .map_err(failed)?;
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
        self.draw_legend(&legend_area).map_err(failed)?;
        root.present().map_err(failed)?;
        Ok(())
    }

    /// The legend below the plot: a sample of each series' stroke and marker, then its label,
    /// [`LEGEND_COLUMNS`] entries a row.
    fn draw_legend<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let column_width = (SIZE.0 as i32 - 80) / LEGEND_COLUMNS as i32;
        let labelled = self.series.iter().filter(|s| !s.label.is_empty());
        for (index, series) in labelled.enumerate() {
            let color = PALETTE[series.color % PALETTE.len()];
            let style = ShapeStyle::from(color).stroke_width(2);
            let x = 70 + (index % LEGEND_COLUMNS) as i32 * column_width;
            let y = 8 + (index / LEGEND_COLUMNS) as i32 * LEGEND_ROW as i32 + LEGEND_ROW as i32 / 2;
            let segments: Vec<(i32, i32)> = match series.stroke {
                Stroke::Solid => vec![(x, x + 26)],
                Stroke::Dashed => vec![(x, x + 8), (x + 13, x + 21)],
                Stroke::Dotted => vec![
                    (x, x + 2),
                    (x + 6, x + 8),
                    (x + 12, x + 14),
                    (x + 18, x + 20),
                ],
            };
            for (from, to) in segments {
                area.draw(&PathElement::new(vec![(from, y), (to, y)], style))?;
            }
            match series.stroke {
                Stroke::Solid => area.draw(&Circle::new((x + 13, y), 3, style.filled()))?,
                Stroke::Dashed => {
                    area.draw(&TriangleMarker::new((x + 13, y), 4, style.filled()))?
                }
                Stroke::Dotted => {}
            }
            area.draw(&Text::new(
                series.label.clone(),
                (x + 34, y - 7),
                (FONT_FAMILY, 12).into_font().color(&RGBColor(40, 40, 40)),
            ))?;
        }
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
                    band: vec![(0.0, 0.25, 0.35), (1.0, 0.3, 0.4), (2.0, 0.45, 0.55)],
                },
                Series {
                    label: "CE".to_string(),
                    points: vec![(0.0, 0.4), (1.0, 0.2), (2.0, 0.1)],
                    stroke: Stroke::Dashed,
                    color: 1,
                    band: Vec::new(),
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

    /// The `y` of the text element that reads `label`.
    fn text_y(svg: &str, label: &str) -> f64 {
        let end = svg
            .find(&format!(">\n{label}\n</text>"))
            .unwrap_or_else(|| panic!("no text `{label}`"));
        let start = svg[..end].rfind("<text").unwrap();
        let attribute = &svg[start..end];
        let y = attribute.split(" y=\"").nth(1).unwrap();
        y[..y.find('"').unwrap()].parse().unwrap()
    }

    #[test]
    fn the_legend_sits_below_the_plot_and_bands_are_drawn() {
        let svg = chart().to_svg().unwrap();
        for label in ["DE", "CE"] {
            assert!(
                text_y(&svg, label) > f64::from(SIZE.1),
                "{label} inside the plot"
            );
        }
        assert!(chart().size().1 > SIZE.1);
        // The band is one filled polygon (the others are the CE's triangles: three points
        // and its legend sample).
        assert_eq!(svg.matches("<polygon").count(), 1 + 3 + 1);
        let mut no_band = chart();
        no_band.series[0].band.clear();
        assert_eq!(no_band.to_svg().unwrap().matches("<polygon").count(), 3 + 1);
    }

    #[test]
    fn palette_hues_are_distinct() {
        // Hue in degrees of each saturated colour (the grey has none).
        let hue = |RGBColor(r, g, b): RGBColor| {
            let (r, g, b) = (f64::from(r), f64::from(g), f64::from(b));
            let (max, min) = (r.max(g).max(b), r.min(g).min(b));
            if max - min < 20.0 {
                return None;
            }
            let h = if max == r {
                (g - b) / (max - min)
            } else if max == g {
                2.0 + (b - r) / (max - min)
            } else {
                4.0 + (r - g) / (max - min)
            };
            Some((h * 60.0).rem_euclid(360.0))
        };
        let hues: Vec<f64> = PALETTE.iter().filter_map(|&c| hue(c)).collect();
        assert_eq!(hues.len(), PALETTE.len() - 1);
        for (i, a) in hues.iter().enumerate() {
            for b in &hues[i + 1..] {
                let apart = (a - b).abs().min(360.0 - (a - b).abs());
                assert!(apart > 25.0, "hues {a:.0}° and {b:.0}° are one hue");
            }
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
