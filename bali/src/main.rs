//! The `bali` command line.

use std::fs::File;
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
    /// Build a Dockerfile into a signed image.
    Build {
        /// The image to write (`.tar.gz`).
        out: PathBuf,
        /// The Dockerfile (default: CONTEXT/Dockerfile).
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        /// Build-time variable for ARG.
        #[arg(long = "build-arg", value_name = "K=V")]
        build_args: Vec<String>,
        /// Key id that `FROM bali:PATH` bases must be signed with
        /// (default: the local key).
        #[arg(long)]
        from_key: Option<String>,
        /// The build context directory.
        #[arg(default_value = ".")]
        context: PathBuf,
    },
    /// Verify and unpack an image into a private tmpfs root, then exec its
    /// command in place of bali.
    Run {
        /// Image path, file://, http:// or https:// URL.
        pkg: String,
        /// Key id the image must be signed with (default: the local key).
        #[arg(long)]
        key: Option<String>,
        /// Set K=V, or pass K from bali's environment.
        #[arg(short = 'e', long = "env", value_name = "K[=V]")]
        env: Vec<String>,
        /// Bind HOST at GUEST (read-only with :ro).
        #[arg(short = 'v', long = "volume", value_name = "HOST:GUEST[:ro]")]
        volumes: Vec<String>,
        /// Memory limit (cgroup v2 memory.max of bali's cgroup).
        #[arg(short = 'm', long = "memory", value_name = "SIZE")]
        memory: Option<String>,
        /// Working directory (default: the image's).
        #[arg(long)]
        workdir: Option<String>,
        /// User[:group] (default: the image's).
        #[arg(long)]
        user: Option<String>,
        /// Command replacing the image's CMD (after --).
        #[arg(last = true)]
        command: Vec<String>,
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
        /// Image path, file://, http:// or https:// URL.
        pkg: String,
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
        Cmd::Build {
            out,
            file,
            build_args,
            from_key,
            context,
        } => {
            let key = key::load_or_create(&key::key_path()?)?;
            let from_key = match from_key {
                Some(id) => key::parse_key_id(&id).context("--from-key")?,
                None => key.verifying_key(),
            };
            let mut args = std::collections::BTreeMap::new();
            for a in build_args {
                match a.split_once('=') {
                    Some((k, v)) if !k.is_empty() => args.insert(k.to_string(), v.to_string()),
                    _ => anyhow::bail!("--build-arg {a:?}: expected K=V"),
                };
            }
            if !context.is_dir() {
                anyhow::bail!("{}: build context is not a directory", context.display());
            }
            let file = file.unwrap_or_else(|| context.join("Dockerfile"));
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("{}", file.display()))?;
            let opts = bali::build::BuildOptions {
                dockerfile: text,
                context: context.clone(),
                build_args: args,
                key: key.clone(),
                from_key,
                work_dir: bali::build::work_dir_for(&out),
            };
            let (tmp, config) = bali::build::build(&opts)?;
            bali::output::write_atomically(&out, |w| {
                bali::pack::write_image(&tmp.path().join("rootfs"), &config, w, &key)?;
                Ok(())
            })?;
            eprintln!(
                "bali: wrote {} signed by {}",
                out.display(),
                key::key_id(&key.verifying_key())
            );
            Ok(())
        }
        Cmd::Run {
            pkg,
            key: id,
            env,
            volumes,
            memory,
            workdir,
            user,
            command,
        } => {
            let key = verifying_key(id.as_deref())?;
            let memory = memory.map(|m| bali::cgroup::parse_size(&m)).transpose()?;
            let volumes = volumes
                .iter()
                .map(|v| bali::run::Volume::parse(v))
                .collect::<Result<Vec<_>, _>>()?;
            let opts = bali::run::RunOptions {
                pkg,
                key,
                env,
                volumes,
                memory,
                workdir,
                user,
                command,
            };
            match bali::run::run(opts)? {}
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
            let src = bali::run::open_source(&pkg)?;
            sign::verify_reader(src, &vk).with_context(|| pkg.clone())?;
            println!("{pkg}: signed by {}", key::key_id(&vk));
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
