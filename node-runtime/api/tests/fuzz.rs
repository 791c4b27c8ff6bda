//! Every wire -> spec conversion under the fuzzer (`rauha-fuzz`): the first
//! byte picks the message, the rest is its protobuf body. A body decodes
//! or not; a decoded message converts or gives one short line; a converted
//! value goes back to the wire and converts again to itself.

use prost::Message;
use rauha_api::v1;
use rauha_spec::enforcement::Enforcement;
use rauha_spec::event::{EnforcementEvent, Event};
use rauha_spec::result::{FileChange, TaskResult};

const WORDS: &[&[u8]] = &[
    b"succeeded",
    b"failed",
    b"timed_out",
    b"error",
    b"committed",
    b"discarded",
    b"commit_failed",
    b"added",
    b"modified",
    b"deleted",
    b"file",
    b"dir",
    b"symlink",
    b"special",
    b"task_started",
    b"zone_created",
    b"seccomp",
    b"bpf_lsm",
    b"landlock",
    b"5d1c0a8e-3f6b-4c1e-9a47-2b8f6e0d7c31",
    b"\x0a\x24",
    b"\x12\x24",
    b"\x22\x09",
];

/// Decodes `body` as `W`, converts it, and checks the round trip.
fn round<W, S>(body: &[u8]) -> String
where
    W: Message + Default + for<'a> From<&'a S>,
    S: for<'a> TryFrom<&'a W, Error = rauha_api::convert::ConvertError>
        + PartialEq
        + std::fmt::Debug,
{
    let Ok(wire) = W::decode(body) else {
        return "undecodable".into();
    };
    match S::try_from(&wire) {
        Ok(spec) => {
            let back = W::from(&spec);
            let again =
                S::try_from(&back).unwrap_or_else(|e| panic!("its own wire form is refused: {e}"));
            assert_eq!(spec, again, "the round trip changed it");
            "converted".into()
        }
        Err(e) => {
            let line = e.to_string();
            rauha_fuzz::assert_one_line(&line, 300);
            line.split(':').next().unwrap_or("").to_string()
        }
    }
}

#[test]
fn fuzz_wire() {
    rauha_fuzz::run("wire", WORDS, |data| {
        let Some((which, body)) = data.split_first() else {
            return "empty".into();
        };
        let outcome = match which % 5 {
            0 => round::<v1::TaskResult, TaskResult>(body),
            1 => round::<v1::Event, Event>(body),
            2 => round::<v1::EnforcementEvent, EnforcementEvent>(body),
            3 => round::<v1::FileChange, FileChange>(body),
            _ => round::<v1::Enforcement, Enforcement>(body),
        };
        format!("{}:{outcome}", which % 5)
    });
}
