//! The upstream CRI validation suite, `critest` (cri-tools, the version
//! e2e/go/go.mod pins, built by scripts/build-crictl.sh), against a private
//! containerd with no internet: its registries (`registry.k8s.io`,
//! `k8s.gcr.io`, `gcr.io`, `docker.io`, `quay.io`) go to a local registry
//! holding stand-ins under the exact names critest uses
//! (`rauha_e2e::critest`). Per containerd (Debian's 1.6, and 2.x):
//!
//! - runc, the reference;
//! - `rauha-privileged` (the `privileged` pod policy, set by the handler's
//!   shim config): every test that passes on runc passes;
//! - `rauha` (the default pod policy, `baseline`): every test that passes
//!   on runc passes, but those docs/shim.md lists as refused by baseline
//!   on purpose, each with its reason.
//!
//! A test that newly fails on rauha fails this; so does a listed one that
//! passes (the list would be stale). Tests that fail on runc here are
//! printed, not hidden.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rauha_e2e::containerd::{
    containerd2_dir, containerd2_ready, containerd_ready, Containerd, ContainerdOpts, Registry,
};
use rauha_e2e::{bin_dir, prerequisite, ready, Daemon};

/// What critest's registries are: each goes to the local registry.
const UPSTREAMS: &[&str] = &[
    "registry.k8s.io",
    "k8s.gcr.io",
    "gcr.io",
    "docker.io",
    "quay.io",
];

fn critest() -> PathBuf {
    bin_dir().join("../tools/critest")
}

fn critest_ready() -> bool {
    ready()
        && prerequisite(
            bin_dir().join("containerd-shim-rauha-v2").is_file(),
            "containerd-shim-rauha-v2 (run `cargo build --workspace --bins` first)",
        )
        && prerequisite(
            critest().is_file(),
            "critest (run scripts/build-crictl.sh, which builds it from e2e/go/go.mod)",
        )
        && prerequisite(
            critest().with_file_name("ginkgo").is_file(),
            "ginkgo, which critest runs its tests in parallel with (run scripts/build-crictl.sh)",
        )
        && prerequisite(
            Path::new("/usr/sbin/runc").exists() || Path::new("/usr/bin/runc").exists(),
            "runc, the reference runtime (scripts/install-deps.sh installs containerd, which brings it)",
        )
}

/// One run of the suite: each test's name and whether it passed.
struct Run {
    handler: String,
    passed: BTreeSet<String>,
    failed: BTreeSet<String>,
    skipped: usize,
    seconds: f64,
}

/// Undoes XML's five escapes.
fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The value of `attr="..."` in an XML start tag.
fn attribute(tag: &str, attr: &str) -> Option<String> {
    let start = tag.find(&format!(" {attr}=\""))? + attr.len() + 3;
    let end = tag[start..].find('"')? + start;
    Some(unescape(&tag[start..end]))
}

/// Ginkgo's JUnit report: `(name, status)` of each test case.
fn junit_cases(xml: &str) -> Vec<(String, String)> {
    xml.split("<testcase ")
        .skip(1)
        .filter_map(|rest| {
            let tag = format!(" {}", &rest[..rest.find('>')?]);
            Some((attribute(&tag, "name")?, attribute(&tag, "status")?))
        })
        // Ginkgo's own setup nodes are not tests.
        .filter(|(name, _)| name.starts_with("[It]"))
        .collect()
}

/// Tests run at once (ginkgo's nodes): most of a test's time is spent
/// waiting on containers, not on the CPU, as in containerd's own CI
/// (`critest -parallel=8`).
const PARALLEL: usize = 4;

fn run(ctd: &Containerd, handler: &str, dir: &Path) -> Run {
    let label = if handler.is_empty() { "runc" } else { handler };
    let report = dir.join(format!("junit-{label}.xml"));
    let endpoint = format!("unix://{}", ctd.address().display());
    // critest runs its nodes through the ginkgo CLI, which it finds on
    // PATH (scripts/build-crictl.sh builds it next to critest).
    let path = format!(
        "{}:{}",
        critest().parent().expect("tools dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let start = Instant::now();
    let out = Command::new(critest())
        .env("PATH", path)
        .arg(format!("-parallel={PARALLEL}"))
        .arg(format!("--runtime-endpoint={endpoint}"))
        .arg(format!("--image-endpoint={endpoint}"))
        .arg(format!("--runtime-handler={handler}"))
        .arg(format!("--ginkgo.junit-report={}", report.display()))
        .arg("--ginkgo.no-color")
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", critest().display()));
    let seconds = start.elapsed().as_secs_f64();
    std::fs::write(dir.join(format!("critest-{label}.log")), &out.stdout).ok();
    let xml = std::fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!(
            "critest ({label}) wrote no report {}: {e}\n{}",
            report.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let mut r = Run {
        handler: label.to_string(),
        passed: BTreeSet::new(),
        failed: BTreeSet::new(),
        skipped: 0,
        seconds,
    };
    for (name, status) in junit_cases(&xml) {
        match status.as_str() {
            "passed" => {
                r.passed.insert(name);
            }
            "skipped" | "pending" => r.skipped += 1,
            _ => {
                r.failed.insert(name);
            }
        }
    }
    println!(
        "critest {label}: {} passed, {} failed, {} skipped in {seconds:.0} s",
        r.passed.len(),
        r.failed.len(),
        r.skipped
    );
    r
}

/// The heading in docs/shim.md of the tests `baseline` refuses on purpose.
const BASELINE_LIST: &str = "### critest tests baseline refuses on purpose";
/// The heading of those no pod policy passes (by design, or not yet).
const EVERY_LEVEL_LIST: &str = "### critest tests no pod policy passes";

/// A docs/shim.md list of critest tests: lines `` - `NAME`: reason ``
/// under `heading`.
fn doc_list(heading: &str) -> BTreeMap<String, String> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/shim.md"))
            .expect("read docs/shim.md");
    let section = doc
        .split(heading)
        .nth(1)
        .unwrap_or_else(|| panic!("docs/shim.md has no {heading:?}"));
    let section = section.split("\n#").next().unwrap_or(section);
    section
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("- `")?;
            let (name, reason) = rest.split_once("`: ")?;
            Some((name.to_string(), reason.trim().to_string()))
        })
        .collect()
}

/// The names in `of` that `name` matches: a listed name is a test's full
/// name or the end of it (its `[It]` text).
fn listed<'a>(list: &'a BTreeMap<String, String>, name: &str) -> Option<&'a String> {
    list.iter()
        .find(|(k, _)| name == k.as_str() || name.ends_with(k.as_str()))
        .map(|(_, reason)| reason)
}

fn suite(containerd2: bool) {
    if !critest_ready()
        || !(if containerd2 {
            containerd2_ready()
        } else {
            containerd_ready()
        })
    {
        return;
    }
    let d = Daemon::start();
    let reg = Registry::start();
    let images = rauha_e2e::critest::push_images(&reg);
    println!("{} stand-in images pushed", images.len());
    // Kept after the run (the registry's dir is not): each run's JUnit
    // report and log, for a look at what failed.
    let dir = bin_dir().join(format!(
        "../critest-reports/containerd-{}",
        if containerd2 { "2" } else { "1.6" }
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("critest dir");
    let dir = dir.canonicalize().expect("critest dir");
    let privileged = dir.join("rauha-privileged.toml");
    std::fs::write(&privileged, "pod_policy = \"privileged\"\n").expect("write shim config");
    let mut opts = ContainerdOpts::for_rauha(&d, &reg)
        .sandbox_image(rauha_e2e::critest::SANDBOX_IMAGE)
        .rauha_handler("rauha-privileged", &privileged);
    for upstream in UPSTREAMS {
        opts = opts.mirror(upstream, &reg.host());
    }
    if containerd2 {
        opts = opts.containerd2(containerd2_dir());
    }
    let ctd = Containerd::start(opts);
    let runc = run(&ctd, "", &dir);
    let privileged = run(&ctd, "rauha-privileged", &dir);
    let baseline = run(&ctd, "rauha", &dir);
    let refused = doc_list(BASELINE_LIST);
    let every_level = doc_list(EVERY_LEVEL_LIST);

    println!("failing on runc too (reference; not counted):");
    for t in &runc.failed {
        println!("  {t}");
    }
    let mut problems = Vec::new();
    for r in [&privileged, &baseline] {
        for t in runc.passed.iter().filter(|t| !r.passed.contains(*t)) {
            match (listed(&every_level, t), listed(&refused, t)) {
                (Some(reason), _) => {
                    println!("  {}: no pod policy passes {t} ({reason})", r.handler)
                }
                (None, Some(reason)) if r.handler == "rauha" => {
                    println!("  refused by baseline on purpose: {t} ({reason})")
                }
                _ => problems.push(format!("{}: passes on runc, not here: {t}", r.handler)),
            }
        }
        if r.seconds > runc.seconds * 1.5 + 30.0 {
            problems.push(format!(
                "{}: {:.0} s, over 1.5x runc's {:.0} s",
                r.handler, r.seconds, runc.seconds
            ));
        }
    }
    // A listed test that passes: the list is stale.
    for (list, runs) in [
        (&refused, vec![&baseline]),
        (&every_level, vec![&privileged, &baseline]),
    ] {
        for t in list.keys() {
            for r in &runs {
                if r.passed.iter().any(|p| p == t || p.ends_with(t.as_str())) {
                    problems.push(format!(
                        "{}: listed in docs/shim.md as failing, but passes: {t}",
                        r.handler
                    ));
                }
            }
        }
    }
    println!(
        "wall time: runc {:.0} s, rauha-privileged {:.0} s ({:.2}x), rauha {:.0} s ({:.2}x)",
        runc.seconds,
        privileged.seconds,
        privileged.seconds / runc.seconds,
        baseline.seconds,
        baseline.seconds / runc.seconds
    );
    assert!(
        problems.is_empty(),
        "critest on containerd {}:\n{}\n(reports and logs in {})",
        if containerd2 { "2.x" } else { "1.6" },
        problems.join("\n"),
        dir.display()
    );
}

#[test]
fn critest_passes_on_rauha_as_on_runc_under_containerd_1_6() {
    suite(false);
}

#[test]
fn critest_passes_on_rauha_as_on_runc_under_containerd_2() {
    suite(true);
}

#[test]
fn junit_reports_parse() {
    let xml = r#"<testsuites><testsuite name="CRI validation">
<testcase name="[BeforeSuite]" status="passed"></testcase>
<testcase name="[It] [sig-node] Container runtime should support &quot;echo&quot;" classname="CRI validation" status="passed" time="1.2"></testcase>
<testcase name="[It] [sig-node] PodSandbox should fail" classname="CRI validation" status="failed" time="3"><failure message="x">x</failure></testcase>
<testcase name="[It] [sig-node] Skipped one" status="skipped"></testcase>
</testsuite></testsuites>"#;
    let cases = junit_cases(xml);
    assert_eq!(cases.len(), 3);
    assert_eq!(
        cases[0],
        (
            "[It] [sig-node] Container runtime should support \"echo\"".to_string(),
            "passed".to_string()
        )
    );
    assert_eq!(cases[1].1, "failed");
    let list = BTreeMap::from([("PodSandbox should fail".to_string(), "why".to_string())]);
    assert_eq!(
        listed(&list, "[It] [sig-node] PodSandbox should fail").map(String::as_str),
        Some("why")
    );
    assert!(listed(&list, "[It] other").is_none());
    // The docs' lists parse, and name tests, each with its reason (the
    // second is empty while privileged passes all that runc passes).
    for heading in [BASELINE_LIST, EVERY_LEVEL_LIST] {
        let list = doc_list(heading);
        assert!(list.values().all(|reason| !reason.is_empty()), "{heading}");
    }
    assert!(!doc_list(BASELINE_LIST).is_empty(), "{BASELINE_LIST}");
}
