//! Shared-library closure of a dynamically linked binary, read from `ldd`, so
//! a host binary can run inside a guest that has no libraries of its own.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// Libraries (absolute paths, loader included) that `binary` needs at run
/// time. A static binary needs none.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, Error> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| Error::io(Path::new("ldd"), e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // ldd exits 1 for static binaries ("not a dynamic executable").
        if stderr.contains("not a dynamic executable") || text.contains("statically linked") {
            return Ok(Vec::new());
        }
        return Err(Error::Ldd {
            binary: binary.to_path_buf(),
            reason: stderr.trim().to_string(),
        });
    }
    parse(&text).map_err(|lib| Error::Ldd {
        binary: binary.to_path_buf(),
        reason: format!("{lib} not found"),
    })
}

/// Parses `ldd` output; `Err(name)` for the first library it could not find.
fn parse(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.contains("statically linked") {
            continue;
        }
        // "libfoo.so.1 => /lib/x/libfoo.so.1 (0x...)" or "/lib64/ld-linux... (0x...)"
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(name.trim().to_string());
                }
                rest.split_whitespace().next()
            }
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
            \tlibaio.so.1 => /lib/x86_64-linux-gnu/libaio.so.1 (0x00007f)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        let libs = parse(text).unwrap();
        assert_eq!(
            libs,
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libaio.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn missing_library_is_named() {
        let text = "\tlibgone.so.3 => not found\n";
        assert_eq!(parse(text).unwrap_err(), "libgone.so.3");
    }

    #[test]
    fn real_binaries() {
        let libs = shared_libraries(Path::new("/bin/ls")).unwrap();
        assert!(
            libs.iter().any(|l| l.to_string_lossy().contains("libc.so")),
            "{libs:?}"
        );
        assert!(libs.iter().all(|l| l.exists()));
        if Path::new("/bin/busybox").exists() {
            assert!(shared_libraries(Path::new("/bin/busybox"))
                .unwrap()
                .is_empty());
        }
    }
}
