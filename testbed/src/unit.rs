//! The daemons' systemd template units, checked on machines where systemd
//! is not PID 1: `systemd-analyze verify` with no warning, the conventions
//! every cradle unit follows, and `ExecStart` expanded as systemd would so
//! a test can start the daemon exactly as the unit does.
//!
//! ```no_run
//! use cradle_testbed::unit::TemplateUnit;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let text = std::fs::read_to_string("blk-lv/blk-lv@.service")?;
//! let unit = TemplateUnit::new("blk-lv", &text)
//!     .with_binary(std::path::Path::new("target/debug/blk-lv"))?;
//! unit.check_conventions()?;
//! unit.verify(std::path::Path::new("/tmp"), "blk-lv@vol0.service")?;
//! let argv = unit.exec_start(&[("BLK_LV_PATH", "/tmp/vol0.img")], "vol0");
//! # Ok(())
//! # }
//! ```

use std::path::Path;
use std::process::Command;

use crate::TestbedError;

/// One daemon's template unit (`PROGRAM@.service`).
#[derive(Debug, Clone)]
pub struct TemplateUnit {
    program: String,
    text: String,
}

impl TemplateUnit {
    /// The unit of `program` (e.g. `blk-lv`) with the text of its file.
    pub fn new(program: &str, text: &str) -> TemplateUnit {
        TemplateUnit {
            program: program.to_string(),
            text: text.to_string(),
        }
    }

    /// Where the unit expects the binary: `/usr/local/bin/PROGRAM`.
    pub fn installed_path(&self) -> String {
        format!("/usr/local/bin/{}", self.program)
    }

    /// The unit with its installed binary path replaced by `binary` (the
    /// one cargo built), so it can be verified and run here. Fails if the
    /// unit does not name the installed path.
    pub fn with_binary(&self, binary: &Path) -> Result<TemplateUnit, TestbedError> {
        let installed = self.installed_path();
        if !self.text.contains(&installed) {
            return Err(self.bad(format!("does not run {installed}")));
        }
        Ok(TemplateUnit {
            program: self.program.clone(),
            text: self.text.replace(&installed, &binary.display().to_string()),
        })
    }

    /// The unit's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The value of the first `KEY=` line.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.values(key).into_iter().next()
    }

    /// The values of every `KEY=` line, in order.
    pub fn values(&self, key: &str) -> Vec<&str> {
        self.text
            .lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .collect()
    }

    /// What every cradle daemon unit promises: `Type=notify` (started
    /// means READY=1), `KillSignal=SIGTERM` (drains), an operator's
    /// environment file in /etc and kcradle's in /run (read last, so it
    /// wins), both optional but at least one required to exist.
    pub fn check_conventions(&self) -> Result<(), TestbedError> {
        for (key, want) in [("Type", "notify"), ("KillSignal", "SIGTERM")] {
            if self.value(key) != Some(want) {
                return Err(self.bad(format!("{key}={:?}, want {want}", self.value(key))));
            }
        }
        let p = &self.program;
        let want = [
            format!("-/etc/cradle/{p}/%i.env"),
            format!("-/run/cradle/{p}/%i.env"),
        ];
        let envs = self.values("EnvironmentFile");
        if envs != want {
            return Err(self.bad(format!("EnvironmentFile={envs:?}, want {want:?}")));
        }
        let asserts = self.values("AssertPathExists");
        let want: Vec<String> = want.iter().map(|e| format!("|{}", &e[1..])).collect();
        if asserts != want {
            return Err(self.bad(format!("AssertPathExists={asserts:?}, want {want:?}")));
        }
        Ok(())
    }

    /// Writes the unit as `dir/file_name` (a template or instance name)
    /// and runs `systemd-analyze verify` on it: it must succeed without a
    /// single warning.
    pub fn verify(&self, dir: &Path, file_name: &str) -> Result<(), TestbedError> {
        let path = dir.join(file_name);
        std::fs::write(&path, &self.text).map_err(|e| TestbedError::io(&path, e))?;
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .map_err(|e| TestbedError::spawn("systemd-analyze", "systemd", e))?;
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || !err.trim().is_empty() {
            return Err(self.bad(format!(
                "{file_name}: systemd-analyze verify ({}): {err}",
                out.status
            )));
        }
        Ok(())
    }

    /// `ExecStart` expanded as systemd does for `instance` with the
    /// environment `env`: `%i`, `${V}` (one argument) and `$V` (split at
    /// whitespace); an unset variable is empty. Empty if there is no
    /// `ExecStart`.
    pub fn exec_start(&self, env: &[(&str, &str)], instance: &str) -> Vec<String> {
        let var = |name: &str| env.iter().find(|(k, _)| *k == name).map_or("", |(_, v)| *v);
        let mut out = Vec::new();
        for word in self.value("ExecStart").unwrap_or("").split_whitespace() {
            let w = word.replace("%i", instance);
            if let Some(name) = w.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
                out.push(var(name).to_string());
            } else if let Some(name) = w.strip_prefix('$') {
                out.extend(var(name).split_whitespace().map(String::from));
            } else {
                out.push(w);
            }
        }
        out
    }

    fn bad(&self, why: String) -> TestbedError {
        TestbedError::Unit {
            unit: format!("{}@.service", self.program),
            why,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIT: &str = "[Service]\nType=notify\nKillSignal=SIGTERM\n\
        EnvironmentFile=-/etc/cradle/d/%i.env\nEnvironmentFile=-/run/cradle/d/%i.env\n\
        AssertPathExists=|/etc/cradle/d/%i.env\nAssertPathExists=|/run/cradle/d/%i.env\n\
        ExecStart=/usr/local/bin/d --socket ${D_SOCKET} --id %i $D_ARGS\n";

    #[test]
    fn exec_start_expands_like_systemd() {
        let u = TemplateUnit::new("d", UNIT)
            .with_binary(Path::new("/b/d"))
            .unwrap();
        let argv = u.exec_start(&[("D_SOCKET", "/s p"), ("D_ARGS", "-a  -b")], "x");
        assert_eq!(argv, ["/b/d", "--socket", "/s p", "--id", "x", "-a", "-b"]);
        // Unset: `${V}` is one empty argument, `$V` none.
        assert_eq!(
            u.exec_start(&[], "x"),
            ["/b/d", "--socket", "", "--id", "x"]
        );
    }

    #[test]
    fn conventions_are_checked() {
        let u = TemplateUnit::new("d", UNIT);
        u.check_conventions().unwrap();
        let other = TemplateUnit::new("e", UNIT);
        assert!(
            other.check_conventions().is_err(),
            "env files of another program"
        );
        assert!(other.with_binary(Path::new("/b/e")).is_err());
        let simple = TemplateUnit::new("d", &UNIT.replace("Type=notify", "Type=simple"));
        assert!(simple.check_conventions().is_err());
    }
}
