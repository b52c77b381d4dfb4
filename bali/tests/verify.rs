//! `bali key`, `bali sign` and `bali verify` through the real binary.

mod common;
use common::*;
use std::fs;

#[test]
fn key_is_stable_and_new_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let id = key_id(dir.path());
    assert!(id.starts_with("bali1") && id.len() == 63, "{id}");
    assert_eq!(key_id(dir.path()), id);
    let mut c = bali(dir.path());
    c.args(["key", "--new"]);
    assert_bad(&run(c));
    let other = tempfile::tempdir().unwrap();
    let mut c = bali(other.path());
    c.args(["key", "--new"]);
    let out = run(c);
    assert!(out.status.success());
    assert_ne!(String::from_utf8(out.stdout).unwrap().trim(), id);
}

#[test]
fn verify_accepts_untouched_and_rejects_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let id = key_id(dir.path());
    let tar = small_tar(dir.path());
    let img = dir.path().join("img.tar.gz");
    let mut c = bali(dir.path());
    c.arg("sign").arg(&tar).arg(&img);
    assert!(run(c).status.success());

    // Plain tools still read it.
    let st = std::process::Command::new("tar")
        .arg("tzf")
        .arg(&img)
        .output()
        .unwrap();
    assert!(st.status.success());
    assert_eq!(String::from_utf8(st.stdout).unwrap().lines().count(), 20);

    let verify = |path: &std::path::Path, id: &str| {
        let mut c = bali(dir.path());
        c.arg("verify").arg(path).args(["--key", id]);
        run(c)
    };
    assert!(verify(&img, &id).status.success());

    let good = fs::read(&img).unwrap();
    let bad = dir.path().join("bad.tar.gz");
    // Sampled single-byte flips across the whole file, first and last included.
    let n = good.len();
    let mut offsets: Vec<usize> = (0..40).map(|i| i * (n - 1) / 39).collect();
    offsets.extend([1, 2, 3, 4, 8, 9, n - 8, n - 4]);
    for off in offsets {
        let mut b = good.clone();
        b[off] ^= 0xff;
        fs::write(&bad, &b).unwrap();
        let out = verify(&bad, &id);
        // The signature covers the decompressed bytes and the gzip CRC and
        // size are checked, so a flip inside the deflate data that verifies
        // decodes to exactly the signed tar: a lenient decoder may accept a
        // rare flip in bits it never reads (an unused Huffman code length,
        // the last byte's padding). Header and trailer flips must fail.
        if out.status.success() {
            assert!(
                off >= 10 && off < n - 8,
                "a flip at {off} of {n} outside the deflate data was accepted"
            );
        } else {
            assert_bad(&out);
        }
    }
    for cut in [0, 5, n / 3, n - 9, n - 1] {
        fs::write(&bad, &good[..cut]).unwrap();
        assert_bad(&verify(&bad, &id));
    }
    // An unsigned tar.gz: the trailer is missing.
    let gz = std::process::Command::new("gzip")
        .arg("-c")
        .arg(&tar)
        .output()
        .unwrap();
    fs::write(&bad, gz.stdout).unwrap();
    assert_bad(&verify(&bad, &id));
    // Not gzip at all.
    assert_bad(&verify(&tar, &id));
    // Another key.
    let other = tempfile::tempdir().unwrap();
    let other_id = key_id(other.path());
    let out = verify(&img, &other_id);
    assert_bad(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("signature does not match"));
    // A mistyped key id.
    let mut typo = id.clone().into_bytes();
    typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
    assert_bad(&verify(&img, &String::from_utf8(typo).unwrap()));
    // Missing file.
    assert_bad(&verify(&dir.path().join("nope"), &id));
}
