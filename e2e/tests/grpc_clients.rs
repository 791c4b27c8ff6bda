//! Stock gRPC clients reach rauhad's Unix socket with their defaults:
//! Python's grpcio (from PyPI, as an agent framework installs it; since
//! 1.57 it sends the socket's path, percent-encoded, as `:authority`,
//! which h2 refused until vendor/h2's patch) and the same calls with an
//! explicit authority. Installed by scripts/install-deps.sh.

use std::path::PathBuf;
use std::process::Command;

use rauha_e2e::{prerequisite, ready, text, Daemon};

/// Calls rauhad with grpcio and prints one line per call.
const CLIENT: &str = r#"
import sys, grpc
socket, authority = sys.argv[1], sys.argv[2]
options = [("grpc.default_authority", authority)] if authority else []
channel = grpc.insecure_channel("unix://" + socket, options=options)
def call(method, body):
    f = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    try:
        f(body, timeout=10)
        print("OK")
    except grpc.RpcError as e:
        print(e.code().name, e.details())
print("version", grpc.__version__)
call("/rauha.v1.Zones/List", b"")
# ZoneRef { zone = "nope" }: field 1, length-delimited.
call("/rauha.v1.Zones/Get", b"\x0a\x04nope")
"#;

fn grpcio() -> Option<PathBuf> {
    let dir = PathBuf::from(
        std::env::var("RAUHA_GRPCIO")
            .unwrap_or_else(|_| "/var/cache/rauha/python/grpcio-1.85.4".into()),
    );
    prerequisite(
        dir.join("grpc/__init__.py").exists(),
        "Python's grpcio from PyPI in $RAUHA_GRPCIO (scripts/install-deps.sh installs it)",
    )
    .then_some(dir)
}

#[test]
fn pythons_grpcio_calls_rauhad_over_its_unix_socket_with_its_default_authority() {
    if !ready() {
        return;
    }
    let Some(grpcio) = grpcio() else { return };
    let d = Daemon::start();
    for authority in ["", "localhost"] {
        let out = Command::new("/usr/bin/python3")
            .args(["-c", CLIENT])
            .arg(&d.socket)
            .arg(authority)
            .env("PYTHONPATH", &grpcio)
            .output()
            .expect("python3");
        let said = text(&out.stdout);
        assert!(out.status.success(), "{said}{}", text(&out.stderr));
        let lines: Vec<&str> = said.lines().collect();
        assert_eq!(lines.len(), 3, "{said}");
        let version: Vec<u32> = lines[0]
            .trim_start_matches("version ")
            .split('.')
            .filter_map(|p| p.parse().ok())
            .collect();
        assert!(
            version >= vec![1, 57],
            "a grpcio that sends the socket path as :authority: {}",
            lines[0]
        );
        assert_eq!(lines[1], "OK", "authority {authority:?}: {said}");
        assert_eq!(
            lines[2], "NOT_FOUND zone \"nope\" not found; list zones with `rauha zone list`",
            "authority {authority:?}: {said}"
        );
    }
}
