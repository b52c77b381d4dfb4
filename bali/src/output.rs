//! Writing output files so that a failure leaves nothing half-made.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::Path;

/// Errors while writing an output file.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// I/O on the output or its temporary file.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// The producer failed.
    #[error(transparent)]
    Producer(Box<dyn std::error::Error + Send + Sync>),
}

/// Writes `path` through `fill` into a temporary file beside it, then
/// renames it into place; on error the temporary file is removed.
pub fn write_atomically<F>(path: &Path, fill: F) -> Result<(), OutputError>
where
    F: FnOnce(&mut BufWriter<File>) -> Result<(), Box<dyn std::error::Error + Send + Sync>>,
{
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let ctx = |e| OutputError::Io(tmp.display().to_string(), e);
    let result = (|| {
        let f = File::create(&tmp).map_err(ctx)?;
        let mut w = BufWriter::new(f);
        fill(&mut w).map_err(OutputError::Producer)?;
        let f = w
            .into_inner()
            .map_err(|e| OutputError::Io(tmp.display().to_string(), e.into_error()))?;
        f.sync_all().map_err(ctx)?;
        fs::rename(&tmp, path).map_err(|e| OutputError::Io(path.display().to_string(), e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
