//! Pull progress: one indicatif bar per layer on a terminal, one line per
//! layer otherwise (so logs of scripted summons still say what happened).

use std::io::IsTerminal;

use cradle_image::registry::PullProgress;
use cradle_image::Digest;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Progress reporting for `kcradle summon`.
pub struct LayerProgress {
    multi: Option<MultiProgress>,
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl LayerProgress {
    /// Bars when stderr is a terminal; plain lines otherwise; nothing when
    /// `quiet`.
    pub fn new(quiet: bool) -> Self {
        let multi = (!quiet && std::io::stderr().is_terminal()).then(MultiProgress::new);
        LayerProgress {
            multi,
            bar: None,
            quiet,
        }
    }
}

fn short(d: &Digest) -> String {
    format!("{}:{}", d.algorithm_name(), &d.hex()[..12])
}

impl PullProgress for LayerProgress {
    fn layer_start(&mut self, digest: &Digest, size: u64, cached: bool) {
        if self.quiet {
            return;
        }
        let Some(multi) = &self.multi else {
            let what = if cached { "cached" } else { "pulling" };
            eprintln!("kcradle: layer {} {what} ({size} bytes)", short(digest));
            return;
        };
        let bar = multi.add(ProgressBar::new(size));
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(short(digest));
        if cached {
            bar.set_position(size);
            bar.finish_with_message("cached");
        }
        self.bar = Some(bar);
    }

    fn layer_bytes(&mut self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    fn layer_done(&mut self) {
        if let Some(b) = self.bar.take() {
            if !b.is_finished() {
                b.finish_with_message("verified");
            }
        }
    }
}
