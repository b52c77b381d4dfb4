//! SVG charts of a report: one group of bars per job, one bar per backend,
//! so "ours vs the peer vs raw" reads at a glance.

use std::path::Path;

use plotters::prelude::*;

use crate::PerfError;

/// One group of bars.
#[derive(Debug, Clone)]
pub struct Group {
    /// Label under the group.
    pub label: String,
    /// (series index, value); a missing series leaves a gap.
    pub bars: Vec<(usize, f64)>,
}

/// Bar colours per series, in order.
const COLOURS: [RGBColor; 4] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0x2c, 0xa0, 0x2c),
];

/// Draws a grouped bar chart of `groups` with `series` names into `path`.
pub fn bars(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &[&str],
    groups: &[Group],
) -> Result<(), PerfError> {
    let err =
        |e: &dyn std::fmt::Display| PerfError::Report(format!("chart {}: {e}", path.display()));
    let width = (160 * groups.len().max(1) as u32 + 160).clamp(640, 2400);
    let root = SVGBackend::new(path, (width, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let max = groups
        .iter()
        .flat_map(|g| g.bars.iter().map(|(_, v)| *v))
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.15;
    let slots = series.len().max(1) as f64 + 1.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(70)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..groups.len() as f64, 0.0..max)
        .map_err(|e| err(&e))?;
    let labels: Vec<String> = groups.iter().map(|g| g.label.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len().max(1))
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            labels.get(i).cloned().unwrap_or_default()
        })
        .y_desc(y_label)
        .draw()
        .map_err(|e| err(&e))?;
    for (s, name) in series.iter().enumerate() {
        let colour = COLOURS[s % COLOURS.len()];
        let rects = groups.iter().enumerate().filter_map(move |(g, group)| {
            let v = group.bars.iter().find(|(i, _)| *i == s)?.1;
            let x0 = g as f64 + (s as f64 + 0.5) / slots;
            let x1 = x0 + 1.0 / slots;
            Some(Rectangle::new([(x0, 0.0), (x1, v)], colour.filled()))
        });
        chart
            .draw_series(rects)
            .map_err(|e| err(&e))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg_with_every_label() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.svg");
        let groups = vec![
            Group {
                label: "randread qd32".into(),
                bars: vec![(0, 90_000.0), (1, 60_000.0), (2, 100_000.0)],
            },
            Group {
                label: "randwrite qd1".into(),
                bars: vec![(0, 9_000.0), (2, 10_000.0)],
            },
        ];
        bars(
            &path,
            "blk IOPS",
            "IOPS",
            &["blk-lv", "qemu-storage-daemon", "raw"],
            &groups,
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        for text in ["blk IOPS", "randread qd32", "qemu-storage-daemon", "IOPS"] {
            assert!(svg.contains(text), "{text} missing");
        }
        // 5 bars + legend swatches.
        assert!(svg.matches("<rect").count() >= 5 + 3);
    }
}
