//! Line plots as SVG, rendered on the server: the page needs no plotting script and nothing
//! from a CDN.

use std::fmt::Write;

use crate::text::escape_html as escape;

/// One line: a label and its points `(x, y)`, in x order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The legend's label.
    pub label: String,
    /// The points; a gap (a step the uid missed, or an infinite loss) splits the line.
    pub points: Vec<Option<(f64, f64)>>,
}

/// Colours that stay apart on white, cycled by series index.
const PALETTE: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#7f7f7f", "#bcbd22",
];

const WIDTH: f64 = 520.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 96.0;
const TOP: f64 = 26.0;
const BOTTOM: f64 = 34.0;

/// A line plot of `series` titled `title`, x labelled `x_label`; `class` names it for tests
/// and styles; `empty` is said in its middle when it has no finite point.
pub fn line_plot(
    title: &str,
    x_label: &str,
    class: &str,
    series: &[Series],
    empty: &str,
) -> String {
    let points = series
        .iter()
        .flat_map(|s| s.points.iter().flatten())
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x_min, mut x_max, mut y_min, mut y_max) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    let mut any = false;
    for &(x, y) in points {
        any = true;
        x_min = x_min.min(x);
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if !any {
        (x_min, x_max, y_min, y_max) = (0.0, 1.0, 0.0, 1.0);
    }
    if x_max - x_min < 1e-12 {
        x_max = x_min + 1.0;
    }
    if y_max - y_min < 1e-12 {
        let pad = if y_min.abs() > 1e-12 {
            y_min.abs() * 0.05
        } else {
            0.5
        };
        y_min -= pad;
        y_max += pad;
    }
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let sx = |x: f64| LEFT + (x - x_min) / (x_max - x_min) * plot_w;
    let sy = |y: f64| TOP + (1.0 - (y - y_min) / (y_max - y_min)) * plot_h;

    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="plot {class}" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{title}">"#,
        title = escape(title),
    );
    let _ = write!(
        out,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>"##
    );
    let _ = write!(
        out,
        r#"<text x="{}" y="16" font-size="13" font-weight="bold">{}</text>"#,
        LEFT,
        escape(title)
    );
    let ticks = |min: f64, max: f64| -> Vec<f64> {
        (0..=4u8)
            .map(|tick| min + f64::from(tick) / 4.0 * (max - min))
            .collect()
    };
    let (y_ticks, x_ticks) = (ticks(y_min, y_max), ticks(x_min, x_max));
    let (y_labels, x_labels) = (tick_labels(&y_ticks), tick_labels(&x_ticks));
    for (index, (y, x)) in y_ticks.iter().zip(&x_ticks).enumerate() {
        let py = sy(*y);
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#e5e5e5"/><text class="tick-y" x="{}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 4.0,
            py + 3.0,
            y_labels[index]
        );
        let px = sx(*x);
        let _ = write!(
            out,
            r#"<text class="tick-x" x="{px:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"#,
            TOP + plot_h + 13.0,
            x_labels[index]
        );
    }
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 4.0,
        escape(x_label)
    );
    for (index, line) in series.iter().enumerate() {
        let colour = PALETTE[index % PALETTE.len()];
        let mut path = String::new();
        let mut pen_down = false;
        for point in &line.points {
            match point.filter(|(x, y)| x.is_finite() && y.is_finite()) {
                Some((x, y)) => {
                    let _ = write!(
                        path,
                        "{}{:.1},{:.1} ",
                        if pen_down { "L" } else { "M" },
                        sx(x),
                        sy(y)
                    );
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        let _ = write!(
            out,
            r#"<path class="series" data-label="{}" d="{}" fill="none" stroke="{colour}" stroke-width="1.6"/>"#,
            escape(&line.label),
            path.trim_end()
        );
        // Markers (with the value on hover) only where they stay legible.
        let markers = line.points.len() <= 60;
        for &(x, y) in line.points.iter().flatten() {
            if markers && x.is_finite() && y.is_finite() {
                let _ = write!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="2" fill="{colour}"><title>{}: {}</title></circle>"#,
                    sx(x),
                    sy(y),
                    escape(&line.label),
                    y
                );
            }
        }
        let legend_y = TOP + 12.0 + 14.0 * f64::from(u16::try_from(index).unwrap_or(u16::MAX));
        if legend_y < TOP + plot_h {
            let _ = write!(
                out,
                r#"<rect x="{:.1}" y="{:.1}" width="10" height="3" fill="{colour}"/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
                LEFT + plot_w + 8.0,
                legend_y - 4.0,
                LEFT + plot_w + 22.0,
                legend_y,
                escape(&line.label)
            );
        }
    }
    if !any {
        let _ = write!(
            out,
            r##"<text class="empty" x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle" fill="#888">{}</text>"##,
            LEFT + plot_w / 2.0,
            TOP + plot_h / 2.0,
            escape(empty)
        );
    }
    out.push_str("</svg>");
    out
}

/// Labels for evenly spaced axis values, with as many digits as it takes to tell neighbours
/// apart (losses a few 1e-5 apart get that many decimals), and no more.
fn tick_labels(values: &[f64]) -> Vec<String> {
    let magnitude = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let scientific = magnitude >= 1e6 || (magnitude > 0.0 && magnitude < 1e-3);
    let label = |value: f64, digits: usize| {
        if scientific {
            format!("{value:.digits$e}")
        } else {
            format!("{value:.digits$}")
        }
    };
    let integral = !scientific && values.iter().all(|v| v.fract() == 0.0);
    let start = match (integral, scientific) {
        (true, _) => 0,
        (false, true) => 2,
        (false, false) if magnitude >= 100.0 => 0,
        (false, false) => 3,
    };
    for digits in start..=15 {
        let labels: Vec<String> = values.iter().map(|v| label(*v, digits)).collect();
        let distinct = labels.windows(2).all(|pair| pair[0] != pair[1]);
        if distinct {
            return labels;
        }
    }
    values.iter().map(|v| label(*v, 15)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_or_an_infinite_value_splits_the_line() {
        let series = [Series {
            label: "uid <1>".into(),
            points: vec![
                Some((0.0, 1.0)),
                None,
                Some((2.0, f64::INFINITY)),
                Some((3.0, 2.0)),
            ],
        }];
        let svg = line_plot("t", "step", "loss", &series, "none");
        let path = svg.split("d=\"").nth(1).unwrap().split('"').next().unwrap();
        assert_eq!(path.matches('M').count(), 2, "{path}");
        assert!(!path.contains('L'), "{path}");
        assert!(svg.contains("uid &lt;1&gt;"));
        assert!(
            line_plot("t", "step", "loss", &[], "no completed steps yet")
                .contains("no completed steps yet")
        );
    }

    /// Postmortem (issue 33, class 8): losses 2e-5 apart were labelled with three decimals,
    /// five identical labels on the loss axis. The digits follow the range.
    #[test]
    fn tick_labels_tell_close_values_apart() {
        let close: Vec<f64> = (0..=4).map(|i| 2.31 + f64::from(i) * 0.5e-5).collect();
        let labels = tick_labels(&close);
        assert_eq!(
            labels,
            ["2.310000", "2.310005", "2.310010", "2.310015", "2.310020"]
        );
        assert_eq!(tick_labels(&[0.0, 0.25, 0.5, 0.75, 1.0])[1], "0.250");
        assert_eq!(
            tick_labels(&[0.0, 1.0, 2.0, 3.0, 4.0]),
            ["0", "1", "2", "3", "4"]
        );
        let tiny = tick_labels(&[1e-7, 1.5e-7, 2e-7, 2.5e-7, 3e-7]);
        assert!(tiny.windows(2).all(|p| p[0] != p[1]), "{tiny:?}");
    }
}
