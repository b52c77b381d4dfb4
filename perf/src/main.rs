//! `cradle-perf`: runs a suite and writes its report, or re-renders a
//! report from a run's `measurements.json`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use cradle_perf::record::Mode;
use cradle_perf::report::{self, RunLog};
use cradle_perf::suite::{run_blk, SuiteConfig};

#[derive(Parser)]
#[command(
    name = "cradle-perf",
    about = "fio-based performance harness: ours vs the peers vs the raw device"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Suite {
    Blk,
    Fs,
    Net,
    Boot,
    All,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    Raw,
    Device,
    Guest,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs a suite and writes raw JSON, measurements.json, summary.json,
    /// report.md and charts into --out.
    Run {
        /// Which suite.
        suite: Suite,
        /// Short runs and one repetition (checks the harness, not figures).
        #[arg(long)]
        quick: bool,
        /// Output directory (created).
        #[arg(long, default_value = "perf/out")]
        out: PathBuf,
        /// Drive modes to run (default: all).
        #[arg(long, value_delimiter = ',')]
        modes: Vec<ModeArg>,
        /// Repetitions per measurement (default 3, 1 with --quick).
        #[arg(long)]
        repetitions: Option<u32>,
        /// Measured seconds per run.
        #[arg(long)]
        runtime: Option<u64>,
        /// The blk-lv binary (default: next to this one).
        #[arg(long)]
        blk_lv: Option<PathBuf>,
        /// The directory of fio job files (default: perf/jobs of the source tree).
        #[arg(long)]
        jobs: Option<PathBuf>,
    },
    /// Re-renders report.md, summary.json and charts from DIR/measurements.json.
    Report {
        /// A directory written by `run`.
        dir: PathBuf,
    },
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating cradle-perf")?;
    Ok(exe.with_file_name(name))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cradle-perf: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Report { dir } => {
            let path = dir.join("measurements.json");
            let text =
                std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
            let log: RunLog =
                serde_json::from_str(&text).with_context(|| path.display().to_string())?;
            report::write(&dir, &log)?;
            println!("{}", dir.join("report.md").display());
            Ok(())
        }
        Cmd::Run {
            suite,
            quick,
            out,
            modes,
            repetitions,
            runtime,
            blk_lv,
            jobs,
        } => {
            if !matches!(suite, Suite::Blk | Suite::All) {
                bail!(
                    "only the blk suite exists so far (fs, net and boot come with their daemons)"
                );
            }
            std::fs::create_dir_all(&out).with_context(|| out.display().to_string())?;
            let jobs =
                jobs.unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("jobs"));
            let blk_lv = match blk_lv {
                Some(p) => p,
                None => sibling("blk-lv")?,
            };
            if !blk_lv.exists() {
                bail!(
                    "{} not found: build it (cargo build -p blk-lv) or pass --blk-lv",
                    blk_lv.display()
                );
            }
            let mut cfg = SuiteConfig::blk(quick, out.clone(), jobs, blk_lv);
            if !modes.is_empty() {
                cfg.modes = modes
                    .iter()
                    .map(|m| match m {
                        ModeArg::Raw => Mode::Raw,
                        ModeArg::Device => Mode::Device,
                        ModeArg::Guest => Mode::Guest,
                    })
                    .collect();
            }
            if let Some(r) = repetitions {
                cfg.repetitions = r.max(1);
            }
            if let Some(s) = runtime {
                cfg.runtime = std::time::Duration::from_secs(s.max(1));
            }
            let log = run_blk(&cfg)?;
            let json = serde_json::to_string_pretty(&log)?;
            std::fs::write(out.join("measurements.json"), json)?;
            report::write(&out, &log)?;
            println!("{}", out.join("report.md").display());
            Ok(())
        }
    }
}
