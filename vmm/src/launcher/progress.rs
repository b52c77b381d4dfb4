//! Pull progress: one indicatif bar per layer on a terminal, one line per
//! layer otherwise (so logs of scripted summons still say what happened).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, PoisonError};

use cradle_image::registry::Progress;
use cradle_image::Digest;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

fn short(d: &Digest) -> String {
    format!(
        "{}:{}",
        d.algorithm_name(),
        &d.hex()[..12.min(d.hex().len())]
    )
}

/// The progress callback for `cradle_image::registry::pull`: bars when
/// stderr is a terminal, a line per layer otherwise, `None` when `quiet`.
pub fn layer_progress(quiet: bool) -> Option<Progress> {
    if quiet {
        return None;
    }
    if !std::io::stderr().is_terminal() {
        let seen = Mutex::new(std::collections::HashSet::new());
        return Some(Arc::new(move |d: &Digest, done: u64, total: u64| {
            if done == total
                && seen
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(d.clone())
            {
                eprintln!("kcradle: layer {} ({total} bytes) verified", short(d));
            }
        }));
    }
    let multi = MultiProgress::new();
    let bars: Mutex<HashMap<Digest, ProgressBar>> = Mutex::new(HashMap::new());
    Some(Arc::new(move |d: &Digest, done: u64, total: u64| {
        let mut bars = bars.lock().unwrap_or_else(PoisonError::into_inner);
        let bar = bars.entry(d.clone()).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new(total));
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(short(d));
            bar
        });
        bar.set_position(done);
        if done >= total && !bar.is_finished() {
            bar.finish_with_message("done");
        }
    }))
}
