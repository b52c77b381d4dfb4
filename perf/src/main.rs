//! `cradle-perf`: runs a suite and writes its report, or re-renders a
//! report from a run's `measurements.json`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use cradle_perf::record::Mode;
use cradle_perf::report::{self, RunLog};
use cradle_perf::suite::{run_blk, run_fs, Binaries, SuiteConfig};

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
        /// The virtiofsd-gfs binary (default: next to this one).
        #[arg(long)]
        virtiofsd_gfs: Option<PathBuf>,
        /// The reference virtiofsd (default: from PATH or ~/.cargo/bin, as
        /// scripts/install-peers installs it).
        #[arg(long)]
        virtiofsd: Option<PathBuf>,
        /// The directory of fio job files (default: perf/jobs of the source tree).
        #[arg(long)]
        jobs: Option<PathBuf>,
        /// The net-tap binary (default: next to this one).
        #[arg(long)]
        net_tap: Option<PathBuf>,
        /// The kcradle binary (default: next to this one).
        #[arg(long)]
        kcradle: Option<PathBuf>,
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
            if !cradle_perf::suite::rerender_other(&dir, &text)? {
                let log: RunLog =
                    serde_json::from_str(&text).with_context(|| path.display().to_string())?;
                report::write(&dir, &log)?;
            }
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
            virtiofsd_gfs,
            virtiofsd,
            jobs,
            net_tap,
            kcradle,
        } => {
            let jobs =
                jobs.unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("jobs"));
            let bin = Binaries {
                blk_lv: blk_lv.map_or_else(|| sibling("blk-lv"), Ok)?,
                virtiofsd_gfs: virtiofsd_gfs.map_or_else(|| sibling("virtiofsd-gfs"), Ok)?,
                virtiofsd: virtiofsd.unwrap_or_else(find_virtiofsd),
                net_tap: net_tap.map_or_else(|| sibling("net-tap"), Ok)?,
                kcradle: kcradle.map_or_else(|| sibling("kcradle"), Ok)?,
            };
            let wanted: Vec<(&str, Suite)> = match suite {
                Suite::All => vec![
                    ("blk", Suite::Blk),
                    ("fs", Suite::Fs),
                    ("net", Suite::Net),
                    ("boot", Suite::Boot),
                ],
                s => vec![("", s)],
            };
            for (sub, s) in wanted {
                let needed = match s {
                    Suite::Blk => vec![&bin.blk_lv],
                    Suite::Net => vec![&bin.net_tap],
                    Suite::Boot => vec![&bin.kcradle],
                    _ => vec![&bin.virtiofsd_gfs, &bin.virtiofsd],
                };
                for b in needed {
                    if !b.exists() {
                        bail!("{} not found: build it (cargo build --workspace) or install the peers (scripts/install-peers)", b.display());
                    }
                }
                let dir = if sub.is_empty() {
                    out.clone()
                } else {
                    out.join(sub)
                };
                std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
                let mut cfg = SuiteConfig::new(quick, dir.clone(), jobs.clone(), bin.clone());
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
                if let Some(secs) = runtime {
                    cfg.runtime = std::time::Duration::from_secs(secs.max(1));
                }
                if matches!(s, Suite::Net | Suite::Boot) {
                    let name = if s == Suite::Net { "net" } else { "boot" };
                    cradle_perf::suite::run_other(name, &cfg)?;
                    println!("{}", dir.join("report.md").display());
                    continue;
                }
                let log = if s == Suite::Blk {
                    run_blk(&cfg)?
                } else {
                    run_fs(&cfg)?
                };
                let json = serde_json::to_string_pretty(&log)?;
                std::fs::write(dir.join("measurements.json"), json)?;
                report::write(&dir, &log)?;
                println!("{}", dir.join("report.md").display());
            }
            Ok(())
        }
    }
}

/// `virtiofsd` on PATH, else where `cargo install` puts it.
fn find_virtiofsd() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("virtiofsd"))
        .find(|p| p.exists());
    on_path.unwrap_or_else(|| {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        home.join(".cargo/bin/virtiofsd")
    })
}
