//! The tree hash against an independent implementation: botocore's
//! `calculate_tree_hash`, in moto's Python environment
//! (`tests/servers/moto.sh start`; `make test` starts it).
#![cfg(feature = "glacier")]

mod common;

use offsite_backends::treehash::{CHUNK, tree_hash_hex};

#[test]
fn botocore_computes_the_same_tree_hashes() {
    let python = common::server_env("moto.env", "moto.sh")
        .remove("MOTO_PYTHON")
        .expect("moto.env names MOTO_PYTHON");
    let dir = tempfile::tempdir().expect("temp dir");
    // Empty, under one chunk, around the chunk edge, and the Glacier guide's
    // 3.2 MB and 6.5 MB examples.
    let sizes = [
        0,
        1,
        CHUNK - 1,
        CHUNK,
        CHUNK + 1,
        2 * CHUNK,
        3 * CHUNK + CHUNK / 5,
        6 * CHUNK + CHUNK / 2,
        8 * CHUNK + 3,
    ];
    let mut paths = Vec::new();
    let mut ours = Vec::new();
    for (n, size) in sizes.iter().enumerate() {
        let data: Vec<u8> = (0..*size)
            .map(|i| ((i ^ (i >> 11)) * 131 + n) as u8)
            .collect();
        let path = dir.path().join(format!("d{n}"));
        std::fs::write(&path, &data).expect("write");
        paths.push(path);
        ours.push(tree_hash_hex(&data));
    }
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(
            "import sys, botocore.utils\n\
             for p in sys.argv[1:]:\n    \
                 print(botocore.utils.calculate_tree_hash(open(p, 'rb')))",
        )
        .args(&paths)
        .output()
        .expect("run moto's python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(ours, theirs, "sizes {sizes:?}");
}
