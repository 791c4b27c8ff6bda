use super::*;

fn parse(text: &str) -> Result<Policy, String> {
    Policy::parse("p.toml", text).map_err(|e| e.to_string())
}

#[test]
fn empty_policy_takes_safe_defaults() {
    let p = parse("").expect("empty is valid");
    assert_eq!(p.network.mode, NetworkMode::Loopback);
    assert!(p.capabilities.allowed.is_empty());
    assert!(p
        .filesystem
        .denied_paths
        .contains(&"/etc/shadow".to_string()));
}

#[test]
fn seed_example_parses_with_its_bridged_network() {
    let text = r#"
[zone]
name = "production"
type = "non-global"

[capabilities]
allowed = ["CAP_NET_BIND_SERVICE", "CAP_CHOWN"]

[resources]
cpu_shares = 1024
memory_limit = "4Gi"
pids_max = 512

[filesystem]
writable_paths = ["/data", "/tmp", "/var/log"]

[network]
mode = "bridged"
allowed_zones = ["database", "cache"]
allowed_egress = ["0.0.0.0/0:443"]

[syscalls]
deny = ["mount", "umount2", "pivot_root"]
"#;
    let p = parse(text).expect("valid");
    assert_eq!(p.network.mode, NetworkMode::Bridged);
    assert_eq!(p.resources.memory_limit, Some(4 << 30));
    assert_eq!(p.resources.pids_max, Some(512));
    assert_eq!(p.syscalls.deny.len(), 3);
}

/// Each bad policy and the exact one-line error it must give.
#[test]
fn bad_policies_give_exact_messages() {
    let table: &[(&str, &str)] = &[
        (
            "[resources]\nmemory_limit = \"4Gb\"\n",
            "p.toml:2: resources.memory_limit: \"4Gb\" is not a size; use 512Mi or 4Gi",
        ),
        (
            "[resources]\nmemry_limit = \"4Gi\"\n",
            "p.toml:2: resources.memry_limit: is not a policy key; expected one of `cpu_shares`, `cpu_limit`, `memory_limit`, `pids_max`, `disk_limit`",
        ),
        (
            "[resources]\ndisk_limit = \"1Mi\"\n",
            "p.toml:2: resources.disk_limit: 1Mi is out of range; use 16Mi to 16Ti, e.g. 512Mi or 4Gi",
        ),
        (
            "[resourcez]\n",
            "p.toml:1: resourcez: is not a policy key; expected one of `zone`, `capabilities`, `resources`, `network`, `filesystem`, `syscalls`, `task`, `pod`",
        ),
        (
            "[resources]\npids_max = 2\n",
            "p.toml:2: resources.pids_max: 2 is out of range; use 4 to 4194304 (the zone agent counts as 2)",
        ),
        (
            "[resources]\nmemory_limit = \"1Mi\"\n",
            "p.toml:2: resources.memory_limit: 1Mi is below 4Mi, the least a zone can start with; use 4Mi or more",
        ),
        (
            "[resources]\ncpu_limit = 0\n",
            "p.toml:2: resources.cpu_limit: 0 cores is out of range; use a number of cores from 0.01 to 1024, e.g. 0.5 or 2",
        ),
        (
            "[zone]\ntype = \"global\"\n",
            "p.toml:2: zone.type: \"global\" is the host itself and cannot be created; use \"non-global\"",
        ),
        (
            "[capabilities]\nallowed = [\"CAP_SYS_ADMIN\"]\n",
            "p.toml:2: capabilities.allowed: CAP_SYS_ADMIN lets a process leave its zone and is granted only to privileged pods ([pod] security = \"privileged\"); remove it",
        ),
        (
            "[capabilities]\nallowed = [\"CAP_FLY\"]\n",
            "p.toml:2: capabilities.allowed: \"CAP_FLY\" is not a Linux capability; use a name such as \"CAP_NET_BIND_SERVICE\"",
        ),
        (
            "[network]\nallowed_egress = [\"0.0.0.0/0:443\"]\n",
            "p.toml:2: network.allowed_egress: lists destinations but network.mode = \"loopback\" gives the zone no route out; remove allowed_egress or use mode = \"bridged\"",
        ),
        (
            "[network]\nmode = \"joined\"\nallowed_egress_domains = [\"pypi.org\"]\n",
            "p.toml:3: network.allowed_egress_domains: is set but network.mode = \"joined\": it needs rauhad's bridge (its resolver and NAT), which a joined namespace (a pod's, made by CNI) does not reach; use mode = \"bridged\" or remove allowed_egress_domains",
        ),
        (
            "[network]\nmode = \"bridged\"\nallowed_egress_domains = [\"pypi.*\"]\n",
            "p.toml:3: network.allowed_egress_domains: \"pypi.*\" has a '*' that is not the whole first label; use NAME[:PORT] or *.NAME[:PORT], e.g. \"pypi.org:443\" or \"*.pythonhosted.org\"",
        ),
        (
            "[network]\nmode = \"bridged\"\npublish = [\"8080:80\", \"127.0.0.1:8080:81\"]\n",
            "p.toml:3: network.publish: \"127.0.0.1:8080:81\" publishes 127.0.0.1:8080/tcp a second time; give each host port once",
        ),
        (
            "[network]\nmode = \"joined\"\nallowed_egress = [\"10.0.0.0/40\"]\n",
            "p.toml:3: network.allowed_egress: \"10.0.0.0/40\" has a prefix that is not 0-32; use ADDR[/PREFIX][:PORT], e.g. \"10.0.0.0/8:443\" or \"[fd00::/8]:443\"",
        ),
        (
            "[filesystem]\nwritable_paths = [\"/\"]\n",
            "p.toml:2: filesystem.writable_paths: \"/\" would make the whole host writable; list only the directories the task writes",
        ),
        (
            "[filesystem]\nreadable_paths = [\"usr\"]\n",
            "p.toml:2: filesystem.readable_paths: \"usr\" is not absolute; start it with '/'",
        ),
        (
            "[filesystem]\nwritable_paths = [\"/data\"]\ndenied_paths = [\"/data\"]\n",
            "p.toml:2: filesystem.writable_paths: \"/data\" is also in denied_paths; remove it from one of them",
        ),
        (
            "[syscalls]\ndeny = [\"execve\"]\n",
            "p.toml:2: syscalls.deny: \"execve\" would stop every program in the zone; remove it",
        ),
        (
            "[syscalls]\ndeny = [\"mountt\"]\n",
            "p.toml:2: syscalls.deny: \"mountt\" is not a system call of this architecture; check the spelling (e.g. \"umount2\")",
        ),
        (
            "[task]\ntimeout = \"10\"\n",
            "p.toml:2: task.timeout: \"10\" is not a duration; use 30s, 10m or 1h",
        ),
        (
            "[task]\ntimeout = \"0s\"\n",
            "p.toml:2: task.timeout: 0s would end every task at once; use a duration such as 30s",
        ),
    ];
    for (text, want) in table {
        assert_eq!(parse(text).expect_err(text), *want, "policy:\n{text}");
    }
}

#[test]
fn syntax_errors_name_the_line() {
    let e = Policy::parse("p.toml", "[resources]\npids_max = = 3\n").expect_err("bad syntax");
    assert_eq!(e.line, 2);
    assert!(e.to_string().starts_with("p.toml:2"), "{e}");
}

#[test]
fn wrong_types_name_the_key() {
    let e = Policy::parse("p.toml", "[resources]\npids_max = \"many\"\n").expect_err("bad type");
    assert_eq!(e.key, "resources.pids_max");
    assert_eq!(e.line, 2);
}

#[test]
fn to_toml_round_trips() {
    let p =
        parse("[resources]\nmemory_limit = \"512Mi\"\n[task]\ntimeout = \"30s\"\n").expect("valid");
    let again = parse(&p.to_toml()).expect("round trip");
    assert_eq!(p, again);
}

#[test]
fn json_round_trips() {
    let p = parse("[resources]\nmemory_limit = \"512Mi\"\n").expect("valid");
    let json = serde_json::to_string(&p).expect("serialize");
    let back: Policy = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(p, back);
}

#[test]
fn a_commit_holds_back_git_by_default_and_what_the_policy_names() {
    let default = Policy::parse("p.toml", "").expect("empty policy");
    assert_eq!(default.task.hold_back(), [".git"]);
    let none = Policy::parse("p.toml", "[task]\nhold_back = []\n").expect("explicit");
    assert!(none.task.hold_back().is_empty());
    let more = Policy::parse(
        "p.toml",
        "[task]\nhold_back = [\".git\", \".vscode/\", \".envrc\"]\n",
    )
    .expect("a list");
    assert_eq!(more.task.hold_back().len(), 3);
    assert!(under(".git", ".git"));
    assert!(under(".git/hooks/post-checkout", ".git"));
    assert!(under(".vscode/settings.json", ".vscode/"));
    assert!(!under(".github/workflows/ci.yml", ".git"));
    assert!(!under("src/.git", ".git"));
    for bad in ["/etc", "../up", "", "a//b", "./x"] {
        let text = format!("[task]\nhold_back = [{bad:?}]\n");
        let err = Policy::parse("p.toml", &text).expect_err(bad).to_string();
        assert!(err.contains("task.hold_back"), "{bad}: {err}");
    }
}

#[test]
fn numbers_out_of_range_say_so_without_serdes_words() {
    for (text, says) in [
        (
            "[resources]\npids_max = -1\n",
            "p.toml:2: resources.pids_max: -1 is negative; give a number of 0 or more",
        ),
        (
            "[resources]\npids_max = 9223372036854775808\n",
            "p.toml:2: resources.pids_max: 9223372036854775808 is out of range; use 4 to 4194304 (the zone agent counts as 2)",
        ),
    ] {
        assert_eq!(parse_err(text), says);
    }
    let huge = format!("[resources]\npids_max = 1{}\n", "0".repeat(308));
    let err = parse_err(&huge);
    assert!(
        err.starts_with("p.toml:2: resources.pids_max: ") && err.len() < 200,
        "{err}"
    );
    assert!(!err.contains("i128") && !err.contains("u64"), "{err}");
}

#[test]
fn a_policy_over_a_mebibyte_is_refused_with_its_size() {
    let big = "# x\n".repeat(MAX_POLICY_BYTES / 4 + 1);
    assert_eq!(
        parse_err(&big),
        format!(
            "p.toml: is {} bytes, over the 1048576 bytes a policy may be; a policy is a short TOML file",
            big.len()
        )
    );
}

#[test]
fn writable_paths_missing_on_the_host_are_named_with_their_line() {
    let text = "[filesystem]\nwritable_paths = [\"/tmp\", \"/srv/out\", \"/nonexistent/x\"]\n";
    let p = Policy::parse("p.toml", text).expect("valid");
    let exists = |p: &str| p == "/srv/out";
    assert_eq!(
        p.check_host_paths("p.toml", text, exists)
            .expect_err("missing")
            .to_string(),
        "p.toml:2: filesystem.writable_paths: \"/nonexistent/x\" does not exist on the host; create it, or remove it from the list"
    );
    let fine =
        Policy::parse("p.toml", "[filesystem]\nwritable_paths = [\"/tmp\"]\n").expect("valid");
    assert!(fine.check_host_paths("p.toml", "", |_| false).is_ok());
}

fn parse_err(text: &str) -> String {
    Policy::parse("p.toml", text)
        .expect_err("refused")
        .to_string()
}
