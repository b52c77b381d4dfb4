//! Fuzzes layer unpacking with hostile tar streams: whatever the entries
//! (`..`, absolute paths, symlinks, hard links, whiteouts), nothing may
//! appear or change outside the root, and nothing may panic.
#![no_main]

use std::fs;
use std::path::Path;

use cradle_image::{apply_layer, UnpackOptions};
use libfuzzer_sys::fuzz_target;

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fuzz_target!(|data: &[u8]| {
    let Ok(parent) = tempfile::tempdir() else { return };
    let root = parent.path().join("root");
    let outside = parent.path().join("outside");
    if fs::create_dir(&root).is_err()
        || fs::create_dir(&outside).is_err()
        || fs::write(outside.join("keep"), b"keep").is_err()
    {
        return;
    }
    let opts = UnpackOptions {
        preserve_owner: false,
        whiteouts: true,
    };
    let _ = apply_layer(&root, data, &opts);
    assert_eq!(listing(parent.path()), ["outside", "root"]);
    assert_eq!(listing(&outside), ["keep"]);
    assert_eq!(fs::read(outside.join("keep")).ok().as_deref(), Some(&b"keep"[..]));
});
