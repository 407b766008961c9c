//! Line charts as SVG, written by hand: the experiments' plots without a
//! plotting dependency. X values are numbers, or categories placed at
//! 0, 1, 2, ... with their names as tick labels.

use std::fmt::Write;

pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Names for x = 0, 1, 2, ... instead of numeric ticks.
    pub categories: Option<Vec<String>>,
    pub series: Vec<Series>,
}

const W: f64 = 720.0;
const H: f64 = 420.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
/// Where a legend name starts, right of the plot.
const LEGEND_TEXT_X: f64 = 36.0;
const BOTTOM: f64 = 60.0;
const COLOURS: [&str; 8] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

/// Round tick positions covering `lo..=hi`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-9);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| span / s <= 6.0).unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-6 {
        out.push(t);
        t += step;
    }
    out
}

fn label(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e5 || v.abs() < 1e-2) {
        format!("{v:.1e}")
    } else if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}").trim_end_matches('0').to_string()
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

pub fn svg(chart: &Chart) -> String {
    let points = chart.series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1) = (0.0, 1.0);
    }
    if let Some(c) = &chart.categories {
        (x0, x1) = (-0.5, c.len() as f64 - 0.5);
    } else if x0 == x1 {
        (x0, x1) = (x0 - 1.0, x1 + 1.0);
    }
    let y_ticks = ticks(0.0, if y1 > 0.0 { y1 * 1.05 } else { 1.0 });
    let y1 = y_ticks.last().copied().unwrap_or(1.0).max(y1);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    // The legend's column grows with its longest name (about 7 px a
    // character at this size), the plot keeps its size: a name such as
    // "0/100 read/write, 64 conn" ran past the picture's edge.
    let longest = chart.series.iter().map(|s| s.name.chars().count()).max().unwrap_or(0) as f64;
    let w = W - RIGHT + RIGHT.max(LEGEND_TEXT_X + 7.0 * longest + 8.0);
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| TOP + ph - y / y1 * ph;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="{w}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        LEFT + pw / 2.0,
        escape(&chart.title)
    );
    for &t in &y_ticks {
        let y = sy(t);
        let _ = writeln!(o, r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/>"##, LEFT + pw);
        let _ = writeln!(o, r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#, LEFT - 6.0, y + 4.0, label(t));
    }
    let x_ticks: Vec<(f64, String)> = match &chart.categories {
        Some(c) => c.iter().enumerate().map(|(i, n)| (i as f64, n.clone())).collect(),
        None => ticks(x0, x1).into_iter().map(|t| (t, label(t))).collect(),
    };
    for (t, name) in &x_ticks {
        let x = sx(*t);
        let _ =
            writeln!(o, r##"<line x1="{x:.1}" x2="{x:.1}" y1="{}" y2="{}" stroke="#999"/>"##, TOP + ph, TOP + ph + 5.0);
        let _ = writeln!(o, r#"<text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#, TOP + ph + 18.0, escape(name));
    }
    let _ = writeln!(o, r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        H - 18.0,
        escape(&chart.x_label)
    );
    let _ = writeln!(
        o,
        r#"<text transform="translate(18 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
        TOP + ph / 2.0,
        escape(&chart.y_label)
    );
    for (i, s) in chart.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = s.points.iter().map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect();
        let _ =
            writeln!(o, r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#, path.join(" "));
        for &(x, y) in &s.points {
            let _ = writeln!(o, r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#, sx(x), sy(y));
        }
        let ly = TOP + 10.0 + i as f64 * 18.0;
        let lx = LEFT + pw + 12.0;
        let _ = writeln!(
            o,
            r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="3"/>"#,
            lx + 18.0
        );
        let _ = writeln!(o, r#"<text x="{}" y="{}">{}</text>"#, LEFT + pw + LEGEND_TEXT_X, ly + 4.0, escape(&s.name));
    }
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 10.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks(0.0, 43_000.0);
        assert!(t.len() >= 4 && *t.last().unwrap() <= 43_000.0 && t[1] == 10_000.0, "{t:?}");
    }

    #[test]
    fn a_chart_names_its_series_and_escapes_text() {
        let chart = Chart {
            title: "a < b".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            categories: Some(vec!["one".into(), "two".into()]),
            series: vec![Series { name: "ours & theirs".into(), points: vec![(0.0, 1.0), (1.0, 3.0)] }],
        };
        let s = svg(&chart);
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
        assert!(s.contains("a &lt; b") && s.contains("ours &amp; theirs") && s.contains(">two<"));
        assert_eq!(s.matches("<circle").count(), 2);
    }

    #[test]
    fn the_picture_widens_for_long_legend_names() {
        let chart = |name: &str| Chart {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            categories: None,
            series: vec![Series { name: name.into(), points: vec![(1.0, 1.0), (2.0, 2.0)] }],
        };
        let width = |s: String| -> f64 {
            let at = s.find("width=\"").expect("a width") + 7;
            s[at..].split('"').next().and_then(|w| w.parse().ok()).expect("a number")
        };
        assert_eq!(width(svg(&chart("short"))), W);
        let long = "0/100 read/write, 64 conn, and then some";
        let w = width(svg(&chart(long)));
        assert!(w >= W - RIGHT + LEGEND_TEXT_X + 7.0 * long.chars().count() as f64, "{w}");
    }
}
