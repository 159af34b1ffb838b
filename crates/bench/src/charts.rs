//! The SVG charts docs/benchmarks.md shows: the S curve and W3's latency histogram.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use crate::suite::thousands;

const SIZE: (u32, u32) = (800, 440);
const INK: RGBColor = RGBColor(33, 102, 172);

/// Draws jobs per second against the number of factories.
pub fn scaling(path: &Path, points: &[(u32, f64)]) -> anyhow::Result<()> {
    let top = points.iter().map(|&(_, rate)| rate).fold(1.0, f64::max) * 1.15;
    let right = points
        .iter()
        .map(|&(factories, _)| factories)
        .max()
        .unwrap_or(1) as f64
        + 0.5;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "S: W2 throughput by number of factories",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(84)
        .build_cartesian_2d(0.5f64..right, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("factories (prefetch 16 each)")
        .y_desc("jobs/s")
        .x_labels(right as usize)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| thousands(*y))
        .draw()?;
    let series: Vec<(f64, f64)> = points
        .iter()
        .map(|&(factories, rate)| (f64::from(factories), rate))
        .collect();
    chart.draw_series(LineSeries::new(series.iter().copied(), INK.stroke_width(2)))?;
    chart.draw_series(
        series
            .iter()
            .map(|&point| Circle::new(point, 5, INK.filled())),
    )?;
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Draws jobs per latency bucket; `buckets` are (upper bound in seconds, jobs).
pub fn latency(path: &Path, title: &str, buckets: &[(f64, u64)]) -> anyhow::Result<()> {
    // From the first bucket with jobs to the last, so that the bars fill the chart.
    let first = buckets.iter().position(|&(_, jobs)| jobs > 0).unwrap_or(0);
    let last = buckets
        .iter()
        .rposition(|&(_, jobs)| jobs > 0)
        .unwrap_or(buckets.len().saturating_sub(1));
    let shown = &buckets[first.saturating_sub(1)..=(last + 1).min(buckets.len().saturating_sub(1))];
    let top = shown
        .iter()
        .map(|&(_, jobs)| jobs)
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.1;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(54)
        .y_label_area_size(84)
        .build_cartesian_2d(-0.5f64..shown.len() as f64 - 0.5, 0f64..top)?;
    // Bars stand on whole numbers, so that each label sits under its bar.
    let label = |x: &f64| {
        if x.round() < 0.0 {
            return String::new();
        }
        let index = x.round() as usize;
        shown
            .get(index)
            .map(|&(upper, _)| format!("≤{:.0}", upper * 1e6))
            .unwrap_or_default()
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("publish to completion, µs (bucket upper bound)")
        .y_desc("jobs")
        .x_labels(shown.len())
        .x_label_formatter(&label)
        .y_label_formatter(&|y| thousands(*y))
        .draw()?;
    chart.draw_series(shown.iter().enumerate().map(|(index, &(_, jobs))| {
        let x = index as f64;
        Rectangle::new([(x - 0.4, 0.0), (x + 0.4, jobs as f64)], INK.filled())
    }))?;
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
