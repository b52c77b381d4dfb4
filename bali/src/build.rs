//! `bali build`: run a Dockerfile's steps on one rootfs directory and pack
//! the result as a signed image.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use cradle_image::{ImageConfig, ImageRef, PullOptions, UnpackOptions};
use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::copy::{copy_sources, CopyOptions};
use crate::dockerfile::{self, key_values, words, Command, Instruction, Step};
use crate::ignore::Ignore;
use crate::sandbox::{host_dir, run_in_root};
use crate::users;

/// Everything `bali build` needs.
pub struct BuildOptions {
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// The build context directory.
    pub context: PathBuf,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// Key that signs the output.
    pub key: SigningKey,
    /// Key that `FROM bali:PATH` bases must be signed with.
    pub from_key: VerifyingKey,
    /// Directory for the working rootfs (the output's directory, so the
    /// final rename stays on one filesystem).
    pub work_dir: PathBuf,
}

/// Why one Dockerfile step failed. The doc comment is the message.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// only ARG may precede FROM
    #[error("only ARG may come before FROM")]
    BeforeFrom,
    /// a second FROM
    #[error("multi-stage builds (a second FROM) are not supported")]
    MultiStage,
    /// FROM syntax
    #[error("expected FROM IMAGE [AS NAME]")]
    FromSyntax,
    /// ARG without a name
    #[error("ARG needs a name")]
    ArgName,
    /// COPY/ADD with fewer than two words
    #[error("COPY/ADD needs a source and a destination")]
    CopyArgs,
    /// --chmod that is not octal permission bits
    #[error("bad --chmod {0:?}")]
    Chmod(String),
    /// EXPOSE value
    #[error("bad EXPOSE port {0:?}")]
    Port(String),
    /// a RUN command exited unsuccessfully
    #[error("RUN {0:?} failed: {1}")]
    RunFailed(String, std::process::ExitStatus),
    /// the `bali:` base image
    #[error("{0}: {1}")]
    Base(PathBuf, crate::pack::PackError),
    /// opening a file
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// variable expansion
    #[error(transparent)]
    Expand(#[from] dockerfile::ExpandError),
    /// COPY/ADD
    #[error(transparent)]
    Copy(#[from] crate::copy::CopyError),
    /// USER or --chown
    #[error(transparent)]
    User(#[from] users::UserError),
    /// preparing or starting a RUN step
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    /// the base image
    #[error(transparent)]
    Image(#[from] cradle_image::ImageError),
}

/// A build failure.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile does not parse.
    #[error(transparent)]
    Parse(#[from] dockerfile::ParseError),
    /// A step failed.
    #[error("Dockerfile line {line}: {err}")]
    Step {
        /// Line of the step.
        line: usize,
        /// What went wrong.
        err: StepError,
    },
    /// Setting up the build failed.
    #[error("{0}")]
    Setup(String),
}

/// The state a build carries from step to step.
struct Builder<'a> {
    opts: &'a BuildOptions,
    root: PathBuf,
    config: ImageConfig,
    /// Declared ARGs with their values (unset ARGs are absent).
    args: BTreeMap<String, String>,
    ignore: Ignore,
    from_seen: bool,
    /// Where registry layers are downloaded (inside the build's temp dir).
    blob_cache: PathBuf,
    /// Build args some ARG declared.
    consumed: std::collections::BTreeSet<String>,
    /// (dev, inode) of the build's temp dir, which COPY must not see.
    work_id: Option<(u64, u64)>,
}

/// Runs the build; returns the final rootfs's temp dir and config for the
/// caller to pack.
pub fn build(opts: &BuildOptions) -> Result<(tempfile::TempDir, ImageConfig), BuildError> {
    let steps = dockerfile::parse(&opts.dockerfile)?;
    let ignore = match fs::read_to_string(opts.context.join(".dockerignore")) {
        Ok(t) => Ignore::parse(&t).map_err(|e| BuildError::Setup(e.to_string()))?,
        Err(_) => Ignore::default(),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".bali-build-")
        .tempdir_in(&opts.work_dir)
        .map_err(|e| BuildError::Setup(format!("{}: {e}", opts.work_dir.display())))?;
    let root = tmp.path().join("rootfs");
    fs::create_dir(&root).map_err(|e| BuildError::Setup(format!("{}: {e}", root.display())))?;
    // The image's `/`: searchable by every user a RUN step may become.
    fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(|e| BuildError::Setup(format!("{}: {e}", root.display())))?;
    let mut b = Builder {
        opts,
        root,
        config: ImageConfig::default(),
        args: BTreeMap::new(),
        ignore,
        from_seen: false,
        blob_cache: tmp.path().join("blobs"),
        consumed: Default::default(),
        work_id: fs::metadata(tmp.path()).ok().map(|m| (m.dev(), m.ino())),
    };
    for step in &steps {
        b.step(step).map_err(|err| BuildError::Step {
            line: step.line,
            err,
        })?;
    }
    if !b.from_seen {
        return Err(BuildError::Setup("Dockerfile has no FROM".into()));
    }
    for k in opts.build_args.keys() {
        if !b.consumed.contains(k) {
            eprintln!("bali: warning: --build-arg {k} is not declared by any ARG");
        }
    }
    let config = b.config;
    Ok((tmp, config))
}

impl Builder<'_> {
    /// Variables visible to expansion: ARGs, overridden by ENV.
    fn vars(&self) -> BTreeMap<String, String> {
        let mut v = self.args.clone();
        for e in &self.config.env {
            if let Some((k, val)) = e.split_once('=') {
                v.insert(k.to_string(), val.to_string());
            }
        }
        v
    }

    fn one_word(&self, raw: &str) -> Result<String, StepError> {
        Ok(words(raw, &self.vars())?.join(" "))
    }

    fn workdir(&self) -> String {
        if self.config.working_dir.is_empty() {
            "/".into()
        } else {
            self.config.working_dir.clone()
        }
    }

    fn step(&mut self, step: &Step) -> Result<(), StepError> {
        match &step.instruction {
            Instruction::Arg(raw) => return self.arg(raw),
            Instruction::From(raw) => return self.from(raw),
            _ if !self.from_seen => return Err(StepError::BeforeFrom),
            _ => {}
        }
        match &step.instruction {
            Instruction::Run(cmd) => self.run(cmd),
            Instruction::Copy {
                args,
                json,
                chown,
                chmod,
                add,
            } => self.copy(args, *json, chown.as_deref(), chmod.as_deref(), *add),
            Instruction::Env(raw) => {
                for (k, v) in key_values(raw, &self.vars(), true)? {
                    self.config.env_set(&k, &v);
                }
                Ok(())
            }
            Instruction::Workdir(raw) => {
                let w = self.one_word(raw)?;
                let abs = if w.starts_with('/') {
                    w
                } else {
                    format!("{}/{w}", self.workdir().trim_end_matches('/'))
                };
                host_dir(&self.root, &abs)?;
                self.config.working_dir = abs;
                Ok(())
            }
            Instruction::User(raw) => {
                self.config.user = self.one_word(raw)?;
                Ok(())
            }
            Instruction::Entrypoint(cmd) => {
                self.config.entrypoint = Some(self.shell_or_exec(cmd));
                // As in Docker: a new ENTRYPOINT drops the base image's CMD.
                self.config.cmd = None;
                Ok(())
            }
            Instruction::Cmd(cmd) => {
                self.config.cmd = Some(self.shell_or_exec(cmd));
                Ok(())
            }
            Instruction::Label(raw) => {
                for (k, v) in key_values(raw, &self.vars(), true)? {
                    self.config.labels.insert(k, v);
                }
                Ok(())
            }
            Instruction::Expose(raw) => {
                for p in words(raw, &self.vars())? {
                    let p = normalize_port(&p)?;
                    if !self.config.exposed_ports.contains(&p) {
                        self.config.exposed_ports.push(p);
                    }
                }
                self.config.exposed_ports.sort();
                Ok(())
            }
            Instruction::Arg(_) | Instruction::From(_) => Ok(()),
        }
    }

    fn shell_or_exec(&self, cmd: &Command) -> Vec<String> {
        cmd.argv()
    }

    fn arg(&mut self, raw: &str) -> Result<(), StepError> {
        for w in words(raw, &self.vars())? {
            let (name, default) = match w.split_once('=') {
                Some((n, d)) => (n.to_string(), Some(d.to_string())),
                None => (w, None),
            };
            if name.is_empty() {
                return Err(StepError::ArgName);
            }
            if self.opts.build_args.contains_key(&name) {
                self.consumed.insert(name.clone());
            }
            match self.opts.build_args.get(&name).cloned().or(default) {
                Some(v) => self.args.insert(name, v),
                None => self.args.remove(&name),
            };
        }
        Ok(())
    }

    fn from(&mut self, raw: &str) -> Result<(), StepError> {
        if self.from_seen {
            return Err(StepError::MultiStage);
        }
        self.from_seen = true;
        let w = words(raw, &self.vars())?;
        let image = match w.as_slice() {
            [image] => image.clone(),
            [image, as_, _name] if as_.eq_ignore_ascii_case("as") => image.clone(),
            _ => return Err(StepError::FromSyntax),
        };
        // ARGs before FROM are only visible to FROM itself.
        self.args.clear();
        if image == "scratch" {
            return Ok(());
        }
        if let Some(path) = image.strip_prefix("bali:") {
            let p = self.opts.context.join(path);
            let f = fs::File::open(&p).map_err(|e| StepError::Io(p.clone(), e))?;
            self.config = crate::pack::read_image(
                std::io::BufReader::new(f),
                &self.opts.from_key,
                &self.root,
                true,
            )
            .map_err(|e| StepError::Base(p.clone(), e))?;
            return Ok(());
        }
        let r = ImageRef::parse(&image, &self.opts.context)?;
        let mut pull = PullOptions::new(&self.blob_cache);
        if let Some(reg) = std::env::var("BALI_REGISTRY")
            .ok()
            .filter(|r| !r.is_empty())
        {
            pull.default_registry = reg;
        }
        let img = r.open_with(&pull)?;
        img.unpack(&self.root, &UnpackOptions::default())?;
        self.config = img.config;
        Ok(())
    }

    fn run(&mut self, cmd: &Command) -> Result<(), StepError> {
        let argv = cmd.argv();
        let mut env = self.config.env.clone();
        for (k, v) in &self.args {
            if self.config.env_get(k).is_none() {
                env.push(format!("{k}={v}"));
            }
        }
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        }
        let user = if self.config.user.is_empty() {
            "0"
        } else {
            &self.config.user
        };
        let ident = users::resolve(&self.root, user)?;
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            env.push(format!("HOME={}", ident.home.as_deref().unwrap_or("/")));
        }
        let _ = std::io::stdout().flush();
        let status = run_in_root(&self.root, &argv, &env, &self.workdir(), &ident)?;
        if !status.success() {
            return Err(StepError::RunFailed(argv.join(" "), status));
        }
        Ok(())
    }

    fn copy(
        &mut self,
        args: &[String],
        json: bool,
        chown: Option<&str>,
        chmod: Option<&str>,
        add: bool,
    ) -> Result<(), StepError> {
        let vars = self.vars();
        let mut list = Vec::new();
        for a in args {
            let w = words(a, &vars)?;
            if json {
                list.push(w.join(" "));
            } else {
                list.extend(w);
            }
        }
        if list.len() < 2 {
            return Err(StepError::CopyArgs);
        }
        let dest = list.pop().unwrap_or_default();
        let owner = match chown {
            Some(spec) => {
                let spec = words(spec, &vars)?.join(" ");
                let id = users::resolve(&self.root, &spec)?;
                // As in Docker: without a group, the gid is the uid's number.
                let gid = if spec.contains(':') { id.gid } else { id.uid };
                Some((id.uid, gid))
            }
            None => None,
        };
        let mode = match chmod {
            Some(m) => Some(
                u32::from_str_radix(m, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| StepError::Chmod(m.to_string()))?,
            ),
            None => None,
        };
        let dest = if dest.starts_with('/') {
            dest
        } else {
            format!("{}/{dest}", self.workdir().trim_end_matches('/'))
        };
        Ok(copy_sources(
            &CopyOptions {
                context: &self.opts.context,
                ignore: &self.ignore,
                root: &self.root,
                owner,
                mode,
                add,
                skip_dir: self.work_id,
            },
            &list,
            &dest,
        )?)
    }
}

fn normalize_port(p: &str) -> Result<String, StepError> {
    let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
    let proto = proto.to_ascii_lowercase();
    let valid = |s: &str| s.parse::<u16>().is_ok_and(|n| n > 0);
    let ok = match port.split_once('-') {
        Some((a, b)) => valid(a) && valid(b),
        None => valid(port),
    };
    if !ok || !["tcp", "udp", "sctp"].contains(&proto.as_str()) {
        return Err(StepError::Port(p.to_string()));
    }
    Ok(format!("{port}/{proto}"))
}

/// Where the working rootfs goes for output `out`.
pub fn work_dir_for(out: &Path) -> PathBuf {
    match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
