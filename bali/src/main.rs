//! The `bali` command line.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use bali::{key, sign};

/// Build, sign, verify and run single-tarball images.
#[derive(Parser)]
#[command(name = "bali", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the public key id, creating the key on first use.
    Key {
        /// Create a new key; fails if one exists already.
        #[arg(long)]
        new: bool,
    },
    /// Sign an existing uncompressed tar into a bali image.
    Sign {
        /// The tar file (`-` for stdin).
        tar: PathBuf,
        /// The image to write.
        out: PathBuf,
    },
    /// Exit 0 only for an intact image signed by the given key.
    Verify {
        /// The image file.
        pkg: PathBuf,
        /// Key id (`bali1...`); defaults to the local key's id.
        #[arg(long)]
        key: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            if e.use_stderr() {
                let first = e.to_string();
                let line = first.lines().next().unwrap_or("bad arguments");
                eprintln!("bali: {}", line.trim_start_matches("error: "));
                return ExitCode::from(2);
            }
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bali: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Key { new } => {
            let path = key::key_path()?;
            let k = if new {
                key::create(&path)?
            } else {
                key::load_or_create(&path)?
            };
            println!("{}", key::key_id(&k.verifying_key()));
            Ok(())
        }
        Cmd::Sign { tar, out } => {
            let k = key::load(&key::key_path()?)?;
            let input: Box<dyn std::io::Read> = if tar.as_os_str() == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                Box::new(File::open(&tar).with_context(|| format!("{}", tar.display()))?)
            };
            bali::output::write_atomically(&out, |w| {
                sign::sign_tar(input, w, &k)?;
                Ok(())
            })?;
            Ok(())
        }
        Cmd::Verify { pkg, key: id } => {
            let vk = verifying_key(id.as_deref())?;
            let f = File::open(&pkg).with_context(|| format!("{}", pkg.display()))?;
            sign::verify_reader(BufReader::new(f), &vk)
                .with_context(|| format!("{}", pkg.display()))?;
            println!("{}: signed by {}", pkg.display(), key::key_id(&vk));
            Ok(())
        }
    }
}

/// The key to verify with: `--key ID` or the local key's public half.
fn verifying_key(id: Option<&str>) -> Result<ed25519_dalek::VerifyingKey> {
    match id {
        Some(id) => Ok(key::parse_key_id(id).context("--key")?),
        None => Ok(key::load(&key::key_path()?)?.verifying_key()),
    }
}
