//! The policy parser and validator under the fuzzer (`rauha-fuzz`): any
//! text is a policy or one line of error naming file, line and key, and a
//! policy it accepts is shown as TOML it accepts again, unchanged.

use rauha_spec::Policy;

const WORDS: &[&[u8]] = &[
    b"[zone]\n",
    b"[resources]\n",
    b"[network]\n",
    b"[filesystem]\n",
    b"[capabilities]\n",
    b"[syscalls]\n",
    b"[task]\n",
    b"[pod]\n",
    b"memory_limit = ",
    b"pids_max = ",
    b"cpu_limit = ",
    b"cpu_shares = ",
    b"disk_limit = ",
    b"mode = ",
    b"allowed_egress = [",
    b"allowed_egress_domains = [",
    b"publish = [",
    b"\"bridged\"",
    b"\"host\"",
    b"\"*.",
    b":65536",
    b"allowed_zones = [",
    b"readable_paths = [",
    b"writable_paths = [",
    b"denied_paths = [",
    b"allowed = [",
    b"deny = [",
    b"timeout = ",
    b"max_output = ",
    b"max_changes = ",
    b"hold_back = [",
    b"security = ",
    b"hostname = ",
    b"type = ",
    b"sysctls = { ",
    b"host_pid = true",
    b"\"4Gi\"",
    b"\"30s\"",
    b"\"loopback\"",
    b"\"joined\"",
    b"\"privileged\"",
    b"\"baseline\"",
    b"\"restricted\"",
    b"\"/tmp\"",
    b"\"CAP_SYS_ADMIN\"",
    b"\"mount\"",
    b"[[",
    b"]]",
    b"'''",
    b"\"\"\"",
    b"\\u0000",
    b"\\n",
    b"1.5",
    b"inf",
];

#[test]
fn fuzz_policy() {
    rauha_fuzz::run("policy", WORDS, |data| {
        let text = String::from_utf8_lossy(data);
        match Policy::parse("fuzz.toml", &text) {
            Ok(policy) => {
                let shown = policy.to_toml();
                let again = Policy::parse("shown.toml", &shown)
                    .unwrap_or_else(|e| panic!("its TOML is refused: {e}\n{shown}"));
                assert_eq!(policy, again, "its TOML is another policy:\n{shown}");
                "accepted".into()
            }
            Err(e) => {
                let line = e.to_string();
                rauha_fuzz::assert_one_line(&line, 700);
                // Which key and which kind of complaint, without values.
                let kind: String = e
                    .message
                    .chars()
                    .take_while(|c| !c.is_ascii_digit() && *c != '"' && *c != '`')
                    .collect();
                format!("{}|{kind}", e.key)
            }
        }
    });
}
