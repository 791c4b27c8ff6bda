//! The image crate's untrusted input under the fuzzer (`rauha-fuzz`).
//!
//! `layer_unpack`: a layer is whatever a registry sends. Whatever the tar
//! bytes, the unpack ends in a directory tree or one line of error, and
//! nothing outside the layer's directory is written: the directory beside
//! it (a sentinel file) is untouched, and nothing new appears next to it.
//!
//! `image_metadata`: manifests, indexes and configs decode to a value or
//! one short line, never a panic.

use std::fs;
use std::path::Path;

use crate::manifest;
use crate::unpack::tests::{tar_of, Recorded, E};

const LAYER_WORDS: &[&[u8]] = &[
    b"../",
    b"..",
    b"/etc/",
    b".wh.",
    b".wh..wh..opq",
    b"ustar\x0000",
    b"ustar  \x00",
    b"0000644\x00",
    b"0000755\x00",
    b"00000000000\x00",
    b"\x00\x00\x00\x00",
    b"2",
    b"1",
    b"5",
    b"L",
    b"x",
    b"././@LongLink",
    b"path=../../x\n",
];

fn sentinel_state(outside: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = fs::read_dir(outside)
        .expect("outside dir")
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let data = fs::read(e.path()).unwrap_or_default();
            (name, data)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn fuzz_layer_unpack() {
    let base = std::env::temp_dir().join(format!("rauha-fuzz-layer-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    let outside = base.join("outside");
    fs::create_dir_all(&outside).expect("outside");
    fs::write(outside.join("sentinel"), b"keep").expect("sentinel");
    let before = sentinel_state(&outside);
    let seeds = vec![
        tar_of(&[
            E::Dir("etc/", 0o755),
            E::File("etc/a", b"1", 0o644),
            E::Symlink("bin", "usr/bin"),
            E::Hard("etc/b", "etc/a"),
        ]),
        tar_of(&[
            E::File("etc/.wh.motd", b"", 0o644),
            E::File("var/.wh..wh..opq", b"", 0o644),
        ]),
        tar_of(&[
            E::Symlink("up", "../outside"),
            E::File("up/sentinel", b"x", 0o644),
        ]),
        tar_of(&[E::File("../outside/sentinel", b"x", 0o644)]),
        tar_of(&[E::Char("dev/null")]),
    ];
    let counter = std::sync::atomic::AtomicU64::new(0);
    let report = rauha_fuzz::run_seeded("layer_unpack", seeds, LAYER_WORDS, |data| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // The layer's directory sits beside `outside`, as a snapshot sits
        // beside its siblings in the store.
        let dest = base.join(format!("layer-{n}"));
        fs::create_dir(&dest).expect("layer dir");
        let outcome = match crate::unpack::unpack(data, &dest, &Recorded::default()) {
            Ok(stats) => format!("ok {} {}", stats.entries.min(4), stats.whiteouts.min(2)),
            Err(e) => {
                rauha_fuzz::assert_one_line(&e, 2000);
                e.split(':')
                    .next()
                    .unwrap_or("")
                    .chars()
                    .filter(|c| c.is_ascii_alphabetic())
                    .take(20)
                    .collect()
            }
        };
        assert_eq!(
            sentinel_state(&outside),
            before,
            "a layer wrote outside its directory"
        );
        let siblings: Vec<String> = fs::read_dir(&base)
            .expect("base")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("layer-") && n != "outside")
            .collect();
        assert!(siblings.is_empty(), "a layer made {siblings:?} beside it");
        // Restore write permission the layer may have taken away, then go.
        let _ = std::process::Command::new("chmod")
            .args(["-R", "u+rwX"])
            .arg(&dest)
            .status();
        let _ = fs::remove_dir_all(&dest);
        outcome
    });
    let _ = fs::remove_dir_all(&base);
    println!("{report}");
}

const JSON_WORDS: &[&[u8]] = &[
    b"\"schemaVersion\":2",
    b"\"mediaType\":",
    b"\"application/vnd.oci.image.index.v1+json\"",
    b"\"application/vnd.oci.image.manifest.v1+json\"",
    b"\"application/vnd.docker.distribution.manifest.v2+json\"",
    b"\"manifests\":[",
    b"\"layers\":[",
    b"\"config\":{",
    b"\"digest\":\"sha256:",
    b"\"size\":",
    b"\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}",
    b"\"Entrypoint\":[",
    b"\"Env\":[",
    b"null",
    b"-1",
    b"18446744073709551616",
    b"{}",
    b"[]",
];

#[test]
fn fuzz_image_metadata() {
    let seeds = vec![
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,"digest":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","size":3,"digest":"sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}]}"#.to_vec(),
        br#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc","size":5,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}}]}"#.to_vec(),
        br#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/x"],"Cmd":["y"],"Env":["A=1"],"User":"1:2"},"rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec(),
    ];
    let platform = crate::platform::Platform::parse("linux/amd64").expect("platform");
    let report = rauha_fuzz::run_seeded("image_metadata", seeds, JSON_WORDS, |data| {
        let manifest = match manifest::decode(data, "manifest") {
            Ok(manifest::Fetched::Manifest(m)) => format!("manifest {}", m.layers().len().min(3)),
            Ok(manifest::Fetched::Index(i)) => match crate::platform::choose(&i, &platform, "x") {
                Ok(_) => "index chosen".to_string(),
                Err(e) => {
                    rauha_fuzz::assert_one_line(&e.to_string(), 4000);
                    "index none".to_string()
                }
            },
            Err(e) => {
                rauha_fuzz::assert_one_line(&e.to_string(), 1000);
                "manifest error".to_string()
            }
        };
        let config = match crate::config::RunConfig::decode(data, "config") {
            Ok(c) => format!("config {}", c.command(&[]).len().min(3)),
            Err(e) => {
                rauha_fuzz::assert_one_line(&e.to_string(), 1000);
                "config error".to_string()
            }
        };
        format!("{manifest} / {config}")
    });
    println!("{report}");
}
