//! Map layouts shared with the BPF programs. `bpf/rauha.h` is the one source
//! of truth; this module mirrors it with `#[repr(C)]` types, constants and
//! names, and carries the compiled object.
//!
//! The unit tests compare every size, alignment, field offset and constant
//! here with what the C compiler makes of `rauha.h` (build.rs compiles and
//! runs `bpf/layout_probe.c`), so a header and a mirror that drift apart
//! fail `cargo test`. Padding fields exist so that no struct has an implicit
//! hole; they are always zero.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The compiled BPF object: every program and map definition, CO-RE
/// relocatable. Aligned to 32 bytes because aya parses it in place with the
/// `object` crate, which refuses misaligned ELF headers (this is what
/// `aya::include_bytes_aligned!` does).
pub static OBJECT: &[u8] = {
    #[repr(align(32))]
    struct Align32;

    #[repr(C)]
    struct Aligned<Bytes: ?Sized> {
        _align: [Align32; 0],
        bytes: Bytes,
    }

    static ALIGNED: &Aligned<[u8]> = &Aligned {
        _align: [],
        bytes: *include_bytes!(concat!(env!("OUT_DIR"), "/rauha.bpf.o")),
    };
    &ALIGNED.bytes
};

/// Programs in [`OBJECT`] of type LSM, each named after the hook it attaches
/// to (`Lsm::load(name, &btf)`).
pub const LSM_PROGRAMS: [&str; 6] = [
    "file_open",
    "bprm_check_security",
    "ptrace_access_check",
    "task_kill",
    "task_alloc",
    "socket_connect",
];
/// `cgroup/connect4` and `cgroup/connect6`: the connect decision for hosts
/// without BPF-LSM. Attach these or `socket_connect`, not both.
pub const CGROUP_CONNECT_PROGRAMS: [&str; 2] = ["connect4", "connect6"];
/// `cgroup/post_bind4` and `cgroup/post_bind6`: fill `listeners`; needed
/// with and without BPF-LSM. Attach to the cgroup2 root.
pub const CGROUP_POST_BIND_PROGRAMS: [&str; 2] = ["post_bind4", "post_bind6"];

/// A zone as the kernel side knows it, assigned by rauhad; never 0.
pub type ZoneIndex = u32;
/// "Not in a zone".
pub const ZONE_NONE: ZoneIndex = 0;

pub const MAP_ZONE_CGROUPS: &str = "zone_cgroups";
pub const MAP_ZONE_POLICIES: &str = "zone_policies";
pub const MAP_INODE_OWNERS: &str = "inode_owners";
pub const MAP_ZONE_PAIRS: &str = "zone_pairs";
pub const MAP_EGRESS_ALLOW: &str = "egress_allow";
pub const MAP_LISTENERS: &str = "listeners";
pub const MAP_EVENTS: &str = "events";
pub const MAP_COUNTERS: &str = "counters";

pub const ZONE_CGROUPS_MAX: u32 = 16384;
pub const ZONE_POLICIES_MAX: u32 = 4096;
pub const INODE_OWNERS_MAX: u32 = 262_144;
pub const ZONE_PAIRS_MAX: u32 = 16384;
pub const EGRESS_ALLOW_MAX: u32 = 16384;
pub const LISTENERS_MAX: u32 = 16384;
pub const EVENTS_BYTES: u32 = 256 * 1024;

/// Deny opening files created by another zone.
pub const F_ISOLATE_FILES: u32 = 1 << 0;
/// Deny executing files created by another zone.
pub const F_ISOLATE_EXEC: u32 = 1 << 1;
/// Deny signals (signal 0 included) to tasks of another zone.
pub const F_ISOLATE_SIGNAL: u32 = 1 << 2;
/// Deny ptrace (and /proc access checks) of tasks of another zone.
pub const F_ISOLATE_PTRACE: u32 = 1 << 3;
/// Deny moving tasks into a cgroup that is not the zone's, and
/// clone3(CLONE_INTO_CGROUP) altogether.
pub const F_ISOLATE_CGROUP: u32 = 1 << 4;
/// Connect only to `egress_allow`; loopback is always allowed.
pub const F_EGRESS_LIMITED: u32 = 1 << 5;
/// Connect to another zone's listener only for pairs in `zone_pairs`.
pub const F_ZONES_LIMITED: u32 = 1 << 6;
pub const F_ALL: u32 = (1 << 7) - 1;

pub const AF_INET: u32 = 2;
pub const AF_INET6: u32 = 10;

/// Bits of an [`EgressKey`] prefix taken by the zone.
pub const EGRESS_ZONE_BITS: u32 = 32;
pub const EGRESS_ADDR_BITS: u32 = 128;
/// Bits before the IPv4 address in an IPv4-mapped IPv6 address.
pub const EGRESS_V4_MAPPED_BITS: u32 = 96;
pub const EGRESS_PORTS: usize = 8;
pub const COMM_LEN: usize = 16;

/// Number of slots in `counters`: one per [`Hook`], and slot 0.
pub const HOOK_MAX: u32 = 9;
/// Slot 0 of `counters`: its `denied` counts events lost to a full ring
/// buffer (the denial itself happened and was counted under its hook).
pub const COUNTER_EVENTS_LOST: u32 = 0;

/// The decision points, as counted in `counters` and named in events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum Hook {
    FileOpen = 1,
    BprmCheck = 2,
    Ptrace = 3,
    TaskKill = 4,
    CgroupAttach = 5,
    SocketConnect = 6,
    Connect4 = 7,
    Connect6 = 8,
}

impl Hook {
    pub const ALL: [Hook; 8] = [
        Hook::FileOpen,
        Hook::BprmCheck,
        Hook::Ptrace,
        Hook::TaskKill,
        Hook::CgroupAttach,
        Hook::SocketConnect,
        Hook::Connect4,
        Hook::Connect6,
    ];

    pub const fn from_u32(value: u32) -> Option<Hook> {
        Some(match value {
            1 => Hook::FileOpen,
            2 => Hook::BprmCheck,
            3 => Hook::Ptrace,
            4 => Hook::TaskKill,
            5 => Hook::CgroupAttach,
            6 => Hook::SocketConnect,
            7 => Hook::Connect4,
            8 => Hook::Connect6,
            _ => return None,
        })
    }

    pub const fn as_u32(self) -> u32 {
        self as u32
    }

    /// The kernel hook's name (a label for metrics and logs).
    pub const fn name(self) -> &'static str {
        match self {
            Hook::FileOpen => "file_open",
            Hook::BprmCheck => "bprm_check_security",
            Hook::Ptrace => "ptrace_access_check",
            Hook::TaskKill => "task_kill",
            Hook::CgroupAttach => "cgroup_attach_task",
            Hook::SocketConnect => "socket_connect",
            Hook::Connect4 => "connect4",
            Hook::Connect6 => "connect6",
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A map entry that cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapEntryError {
    #[error("prefix /{bits} is longer than the {max} bits of {addr}")]
    PrefixTooLong { addr: IpAddr, bits: u8, max: u8 },
    #[error("an egress rule holds 1 to {max} ports, {count} given")]
    PortCount { count: usize, max: usize },
}

/// `zone_policies` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ZonePolicy {
    /// `F_*` bits.
    pub flags: u32,
    pub(crate) _pad: u32,
}

impl ZonePolicy {
    pub const fn new(flags: u32) -> Self {
        ZonePolicy { flags, _pad: 0 }
    }
}

/// `inode_owners` key. `dev` is the kernel's `s_dev` (`major << 20 | minor`),
/// not stat()'s `st_dev`: convert with [`kernel_dev`] or use
/// [`InodeKey::from_metadata`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InodeKey {
    pub dev: u64,
    pub ino: u64,
}

impl InodeKey {
    /// The key of a file as stat() reports it. On overlayfs stat() may name
    /// the underlying layer's device and inode rather than the overlay inode
    /// the programs see.
    pub fn from_metadata(metadata: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        InodeKey {
            dev: kernel_dev(metadata.dev()),
            ino: metadata.ino(),
        }
    }
}

/// The kernel's internal device number (`MKDEV`: `major << 20 | minor`) for
/// a user-space `st_dev` (glibc's encoding: major in bits 8..20 and 32..44,
/// minor in bits 0..8 and 20..32).
pub const fn kernel_dev(st_dev: u64) -> u64 {
    let major = ((st_dev >> 8) & 0xfff) | ((st_dev >> 32) & !0xfff);
    let minor = (st_dev & 0xff) | ((st_dev >> 12) & !0xff);
    (major << 20) | (minor & 0xf_ffff)
}

/// `zone_pairs` key (value: `1u32`): `from` may connect to listeners of `to`
/// (a policy's `allowed_zones`). Directional; connections only.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ZonePair {
    pub from: ZoneIndex,
    pub to: ZoneIndex,
}

/// 16 address bytes as the maps hold them: IPv6, IPv4 mapped (`::ffff:a.b.c.d`).
pub fn ipv4_mapped(addr: Ipv4Addr) -> [u8; 16] {
    addr.to_ipv6_mapped().octets()
}

/// [`ipv4_mapped`] for IPv4, the octets for IPv6.
pub fn ip_bytes(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => ipv4_mapped(v4),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address for 16 map bytes: IPv4 when they are IPv4-mapped.
fn ip_from_bytes(bytes: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(bytes);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// `egress_allow` key (LPM trie). `prefixlen` counts the 32 zone bits plus
/// the address bits of the 16-byte (IPv4-mapped) address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EgressKey {
    pub prefixlen: u32,
    pub zone: ZoneIndex,
    pub addr: [u8; 16],
}

impl EgressKey {
    /// The key for `addr/prefix_bits` of `zone`; host bits are cleared.
    /// IPv4 prefixes sit under `::ffff:0:0/96`: 10.0.0.0/24 has prefixlen
    /// 32 + 96 + 24, and 0.0.0.0/0 covers IPv4 only. IPv6 `::/0` covers
    /// IPv4 too.
    pub fn new(zone: ZoneIndex, addr: IpAddr, prefix_bits: u8) -> Result<Self, MapEntryError> {
        let (max, offset) = match addr {
            IpAddr::V4(_) => (32, EGRESS_V4_MAPPED_BITS),
            IpAddr::V6(_) => (128, 0),
        };
        if prefix_bits > max {
            return Err(MapEntryError::PrefixTooLong {
                addr,
                bits: prefix_bits,
                max,
            });
        }
        let addr_bits = offset + u32::from(prefix_bits);
        let kept = u128::MAX.checked_shl(128 - addr_bits).unwrap_or(0);
        let masked = u128::from_be_bytes(ip_bytes(addr)) & kept;
        Ok(EgressKey {
            prefixlen: EGRESS_ZONE_BITS + addr_bits,
            zone,
            addr: masked.to_be_bytes(),
        })
    }

    /// The network this key covers, as given to [`EgressKey::new`].
    pub fn network(&self) -> (IpAddr, u8) {
        let addr_bits = self
            .prefixlen
            .saturating_sub(EGRESS_ZONE_BITS)
            .min(EGRESS_ADDR_BITS);
        let v6 = Ipv6Addr::from(self.addr);
        match v6.to_ipv4_mapped() {
            Some(v4) if addr_bits >= EGRESS_V4_MAPPED_BITS => {
                (v4.into(), (addr_bits - EGRESS_V4_MAPPED_BITS) as u8)
            }
            _ => (v6.into(), addr_bits as u8),
        }
    }
}

/// `egress_allow` value: the ports the longest matching prefix allows.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EgressValue {
    /// Host byte order; the first `nports` count.
    pub ports: [u16; EGRESS_PORTS],
    /// 0 = any port.
    pub nports: u32,
}

impl EgressValue {
    pub const ANY_PORT: EgressValue = EgressValue {
        ports: [0; EGRESS_PORTS],
        nports: 0,
    };

    /// A rule for 1 to [`EGRESS_PORTS`] ports; for every port use
    /// [`EgressValue::ANY_PORT`] (an empty list is refused, not widened).
    pub fn new(ports: &[u16]) -> Result<Self, MapEntryError> {
        if ports.is_empty() || ports.len() > EGRESS_PORTS {
            return Err(MapEntryError::PortCount {
                count: ports.len(),
                max: EGRESS_PORTS,
            });
        }
        let mut value = EgressValue::ANY_PORT;
        value.ports[..ports.len()].copy_from_slice(ports);
        value.nports = ports.len() as u32;
        Ok(value)
    }

    pub fn ports(&self) -> &[u16] {
        let n = (self.nports as usize).min(EGRESS_PORTS);
        &self.ports[..n]
    }

    /// The programs' decision for `port`.
    pub fn allows(&self, port: u16) -> bool {
        self.nports == 0 || self.ports().contains(&port)
    }
}

/// `listeners` key -> zone that bound the address. IPv4 (also an IPv6
/// socket's `::ffff:a.b.c.d`) is family [`AF_INET`] with a mapped address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ListenKey {
    pub family: u32,
    /// Host byte order.
    pub port: u16,
    pub(crate) _pad: u16,
    pub addr: [u8; 16],
}

impl ListenKey {
    pub fn new(addr: SocketAddr) -> Self {
        let ip = ip_from_bytes(ip_bytes(addr.ip()));
        ListenKey {
            family: if ip.is_ipv4() { AF_INET } else { AF_INET6 },
            port: addr.port(),
            _pad: 0,
            addr: ip_bytes(ip),
        }
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(ip_from_bytes(self.addr), self.port)
    }
}

/// `counters` value, per CPU; sum the CPUs with `Iterator::sum`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Counter {
    pub allowed: u64,
    pub denied: u64,
}

impl std::iter::Sum for Counter {
    fn sum<I: Iterator<Item = Counter>>(iter: I) -> Counter {
        iter.fold(Counter::default(), |a, b| Counter {
            allowed: a.allowed.wrapping_add(b.allowed),
            denied: a.denied.wrapping_add(b.denied),
        })
    }
}

/// One denial from the `events` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Event {
    /// CLOCK_BOOTTIME nanoseconds.
    pub time_ns: u64,
    /// Thread-group id in the initial pid namespace.
    pub pid: u32,
    pub zone: ZoneIndex,
    /// A [`Hook`] number.
    pub hook: u32,
    /// The negative errno the caller got.
    pub err: i32,
    /// The zone on the other side, 0 if none or unknown.
    pub target_zone: ZoneIndex,
    pub(crate) _pad: u32,
    /// Per hook, see [`Event::target`].
    pub target: [u64; 3],
    pub comm: [u8; COMM_LEN],
}

impl Event {
    pub const SIZE: usize = std::mem::size_of::<Event>();

    /// Decodes a ring buffer record (any alignment); `None` when too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Event> {
        if bytes.len() < Self::SIZE {
            return None;
        }
        // SAFETY: at least SIZE bytes are readable at bytes.as_ptr();
        // read_unaligned has no alignment requirement, and Event is plain
        // integers and byte arrays, valid for any bit pattern.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) })
    }

    /// The record's bytes, as the programs write it.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        // SAFETY: Event is repr(C) without implicit padding (the layout test
        // checks that the fields cover every byte), so all SIZE bytes are
        // initialized, and any bytes are a valid [u8; SIZE].
        unsafe { std::mem::transmute::<Event, [u8; Self::SIZE]>(*self) }
    }

    pub fn hook(&self) -> Option<Hook> {
        Hook::from_u32(self.hook)
    }

    /// The caller's command name up to the first NUL.
    pub fn comm(&self) -> String {
        let end = self.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        String::from_utf8_lossy(&self.comm[..end]).into_owned()
    }

    /// What the denied operation was aimed at.
    pub fn target(&self) -> EventTarget {
        let [t0, t1, t2] = self.target;
        match self.hook() {
            Some(Hook::FileOpen | Hook::BprmCheck) => EventTarget::Inode { dev: t0, ino: t1 },
            Some(Hook::TaskKill) => EventTarget::Signal {
                pid: t0 as u32,
                signal: t1 as u32,
            },
            Some(Hook::Ptrace) => EventTarget::Ptrace {
                pid: t0 as u32,
                mode: t1 as u32,
            },
            Some(Hook::CgroupAttach) if t1 == 1 => EventTarget::CloneIntoCgroup,
            Some(Hook::CgroupAttach) => EventTarget::Cgroup { id: t0 },
            Some(Hook::SocketConnect | Hook::Connect4 | Hook::Connect6) => {
                let mut bytes = [0u8; 16];
                bytes[..8].copy_from_slice(&t1.to_be_bytes());
                bytes[8..].copy_from_slice(&t2.to_be_bytes());
                EventTarget::Connect(SocketAddr::new(ip_from_bytes(bytes), t0 as u16))
            }
            None => EventTarget::Unknown(self.target),
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.hook() {
            Some(hook) => write!(f, "{hook}")?,
            None => write!(f, "hook {}", self.hook)?,
        }
        write!(
            f,
            " denied to {}[{}] of zone {}: {}",
            self.comm(),
            self.pid,
            self.zone,
            self.target()
        )?;
        if self.target_zone != ZONE_NONE {
            write!(f, " of zone {}", self.target_zone)?;
        }
        write!(f, " (errno {})", -self.err)
    }
}

/// The target of an [`Event`], decoded per hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventTarget {
    /// A file opened or executed; `dev` is the kernel's `s_dev`.
    Inode {
        dev: u64,
        ino: u64,
    },
    Signal {
        pid: u32,
        signal: u32,
    },
    /// `mode` is the kernel's `PTRACE_MODE_*` bits.
    Ptrace {
        pid: u32,
        mode: u32,
    },
    /// A write-open of the cgroup's `cgroup.procs` or `cgroup.threads`.
    Cgroup {
        id: u64,
    },
    /// clone3() with CLONE_INTO_CGROUP; the target is not known.
    CloneIntoCgroup,
    Connect(SocketAddr),
    Unknown([u64; 3]),
}

/// `PTRACE_MODE_ATTACH` (include/linux/ptrace.h).
const PTRACE_MODE_ATTACH: u32 = 0x02;

impl fmt::Display for EventTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EventTarget::Inode { dev, ino } => {
                write!(f, "inode {}:{}/{ino}", dev >> 20, dev & 0xf_ffff)
            }
            EventTarget::Signal { pid, signal } => write!(f, "pid {pid} signal {signal}"),
            EventTarget::Ptrace { pid, mode } => {
                let access = if mode & PTRACE_MODE_ATTACH != 0 {
                    "attach"
                } else {
                    "read"
                };
                write!(f, "pid {pid} ptrace {access}")
            }
            EventTarget::Cgroup { id } => write!(f, "cgroup {id}"),
            EventTarget::CloneIntoCgroup => f.write_str("clone3 into a cgroup"),
            EventTarget::Connect(addr) => write!(f, "{addr}"),
            EventTarget::Unknown([a, b, c]) => write!(f, "target {a:#x} {b:#x} {c:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};
    use std::net::{Ipv6Addr, SocketAddrV4};

    mod c {
        include!(concat!(env!("OUT_DIR"), "/layout.rs"));
    }

    fn c_struct(name: &str) -> (usize, usize) {
        let (_, size, align) = c::C_STRUCTS
            .iter()
            .find(|s| s.0 == name)
            .unwrap_or_else(|| panic!("layout_probe.c does not list struct {name}"));
        (*size, *align)
    }

    fn c_field(strukt: &str, field: &str) -> (usize, usize) {
        let (_, _, offset, size) = c::C_FIELDS
            .iter()
            .find(|f| f.0 == strukt && f.1 == field)
            .unwrap_or_else(|| panic!("layout_probe.c does not list {strukt}.{field}"));
        (*offset, *size)
    }

    fn c_number(name: &str) -> u64 {
        c::C_NUMBERS
            .iter()
            .find(|n| n.0 == name)
            .unwrap_or_else(|| panic!("layout_probe.c does not list {name}"))
            .1
    }

    fn c_string(name: &str) -> &'static str {
        c::C_STRINGS
            .iter()
            .find(|n| n.0 == name)
            .unwrap_or_else(|| panic!("layout_probe.c does not list {name}"))
            .1
    }

    fn field_size<T, F>(_: fn(&T) -> &F) -> usize {
        size_of::<F>()
    }

    /// Size, alignment, and offset and size of every field, against C; the
    /// field list must name every field the C struct has, and the fields
    /// must cover the struct without holes.
    macro_rules! assert_layout {
        ($rust:ty, $c:literal, [$($field:ident),+ $(,)?]) => {{
            let (size, align) = c_struct($c);
            assert_eq!(size_of::<$rust>(), size, "size of {}", $c);
            assert_eq!(align_of::<$rust>(), align, "alignment of {}", $c);
            let mut covered = 0;
            let mut listed = 0;
            $(
                let (offset, fsize) = c_field($c, stringify!($field));
                assert_eq!(offset_of!($rust, $field), offset, "offset of {}.{}", $c, stringify!($field));
                assert_eq!(field_size(|s: &$rust| &s.$field), fsize, "size of {}.{}", $c, stringify!($field));
                covered += fsize;
                listed += 1;
            )+
            let in_c = c::C_FIELDS.iter().filter(|f| f.0 == $c).count();
            assert_eq!(listed, in_c, "{} has fields the Rust test does not check", $c);
            assert_eq!(covered, size, "{} has implicit padding", $c);
        }};
    }

    #[test]
    fn structs_match_rauha_h() {
        assert_layout!(ZonePolicy, "rauha_zone_policy", [flags, _pad]);
        assert_layout!(InodeKey, "rauha_inode_key", [dev, ino]);
        assert_layout!(ZonePair, "rauha_zone_pair", [from, to]);
        assert_layout!(EgressKey, "rauha_egress_key", [prefixlen, zone, addr]);
        assert_layout!(EgressValue, "rauha_egress_value", [ports, nports]);
        assert_layout!(ListenKey, "rauha_listen_key", [family, port, _pad, addr]);
        assert_layout!(
            Event,
            "rauha_event",
            [
                time_ns,
                pid,
                zone,
                hook,
                err,
                target_zone,
                _pad,
                target,
                comm
            ]
        );
        assert_layout!(Counter, "rauha_counter", [allowed, denied]);
        assert_eq!(
            c::C_STRUCTS.len(),
            8,
            "rauha.h has a struct without a mirror"
        );
    }

    #[test]
    fn constants_match_rauha_h() {
        let numbers: &[(&str, u64)] = &[
            ("RAUHA_ZONE_NONE", ZONE_NONE.into()),
            ("RAUHA_HOOK_MAX", HOOK_MAX.into()),
            ("RAUHA_COUNTER_EVENTS_LOST", COUNTER_EVENTS_LOST.into()),
            ("RAUHA_F_ISOLATE_FILES", F_ISOLATE_FILES.into()),
            ("RAUHA_F_ISOLATE_EXEC", F_ISOLATE_EXEC.into()),
            ("RAUHA_F_ISOLATE_SIGNAL", F_ISOLATE_SIGNAL.into()),
            ("RAUHA_F_ISOLATE_PTRACE", F_ISOLATE_PTRACE.into()),
            ("RAUHA_F_ISOLATE_CGROUP", F_ISOLATE_CGROUP.into()),
            ("RAUHA_F_EGRESS_LIMITED", F_EGRESS_LIMITED.into()),
            ("RAUHA_F_ZONES_LIMITED", F_ZONES_LIMITED.into()),
            ("RAUHA_F_ALL", F_ALL.into()),
            ("RAUHA_AF_INET", AF_INET.into()),
            ("RAUHA_AF_INET6", AF_INET6.into()),
            ("RAUHA_EGRESS_ZONE_BITS", EGRESS_ZONE_BITS.into()),
            ("RAUHA_EGRESS_ADDR_BITS", EGRESS_ADDR_BITS.into()),
            ("RAUHA_EGRESS_V4_MAPPED_BITS", EGRESS_V4_MAPPED_BITS.into()),
            ("RAUHA_EGRESS_PORTS", EGRESS_PORTS as u64),
            ("RAUHA_COMM_LEN", COMM_LEN as u64),
            ("RAUHA_ZONE_CGROUPS_MAX", ZONE_CGROUPS_MAX.into()),
            ("RAUHA_ZONE_POLICIES_MAX", ZONE_POLICIES_MAX.into()),
            ("RAUHA_INODE_OWNERS_MAX", INODE_OWNERS_MAX.into()),
            ("RAUHA_ZONE_PAIRS_MAX", ZONE_PAIRS_MAX.into()),
            ("RAUHA_EGRESS_ALLOW_MAX", EGRESS_ALLOW_MAX.into()),
            ("RAUHA_LISTENERS_MAX", LISTENERS_MAX.into()),
            ("RAUHA_EVENTS_BYTES", EVENTS_BYTES.into()),
        ];
        for (name, rust) in numbers {
            assert_eq!(c_number(name), *rust, "{name}");
        }
        let c_hooks = [
            ("RAUHA_HOOK_FILE_OPEN", Hook::FileOpen),
            ("RAUHA_HOOK_BPRM_CHECK", Hook::BprmCheck),
            ("RAUHA_HOOK_PTRACE", Hook::Ptrace),
            ("RAUHA_HOOK_TASK_KILL", Hook::TaskKill),
            ("RAUHA_HOOK_CGROUP_ATTACH", Hook::CgroupAttach),
            ("RAUHA_HOOK_SOCKET_CONNECT", Hook::SocketConnect),
            ("RAUHA_HOOK_CONNECT4", Hook::Connect4),
            ("RAUHA_HOOK_CONNECT6", Hook::Connect6),
        ];
        for (name, hook) in c_hooks {
            assert_eq!(c_number(name), u64::from(hook.as_u32()), "{name}");
        }
        let strings = [
            ("RAUHA_MAP_ZONE_CGROUPS", MAP_ZONE_CGROUPS),
            ("RAUHA_MAP_ZONE_POLICIES", MAP_ZONE_POLICIES),
            ("RAUHA_MAP_INODE_OWNERS", MAP_INODE_OWNERS),
            ("RAUHA_MAP_ZONE_PAIRS", MAP_ZONE_PAIRS),
            ("RAUHA_MAP_EGRESS_ALLOW", MAP_EGRESS_ALLOW),
            ("RAUHA_MAP_LISTENERS", MAP_LISTENERS),
            ("RAUHA_MAP_EVENTS", MAP_EVENTS),
            ("RAUHA_MAP_COUNTERS", MAP_COUNTERS),
        ];
        for (name, rust) in strings {
            assert_eq!(c_string(name), rust, "{name}");
        }
        assert_eq!(c::C_STRINGS.len(), strings.len());
    }

    /// (symbol, section, is a function) of every named symbol in a 64-bit
    /// little-endian ELF.
    fn elf_symbols(elf: &[u8]) -> Vec<(String, String, bool)> {
        let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
        let cstr = |o: usize| {
            let end = elf[o..].iter().position(|&b| b == 0).unwrap();
            String::from_utf8_lossy(&elf[o..o + end]).into_owned()
        };
        let (shoff, shentsize, shnum) = (u64_at(0x28), usize::from(u16_at(0x3a)), u16_at(0x3c));
        let header = |i: usize| shoff + i * shentsize;
        let names_at = u64_at(header(usize::from(u16_at(0x3e))) + 0x18);
        let section_name = |i: usize| cstr(names_at + u32_at(header(i)) as usize);
        let symtab = (0..usize::from(shnum))
            .find(|&i| u32_at(header(i) + 4) == 2)
            .expect("a symbol table");
        let (offset, size) = (u64_at(header(symtab) + 0x18), u64_at(header(symtab) + 0x20));
        let strings_at = u64_at(header(u32_at(header(symtab) + 0x28) as usize) + 0x18);
        (offset..offset + size)
            .step_by(24)
            .filter_map(|sym| {
                let (name, shndx) = (u32_at(sym), usize::from(u16_at(sym + 6)));
                let function = elf[sym + 4] & 0xf == 2; // STT_FUNC
                (name != 0 && shndx != 0 && shndx < usize::from(shnum)).then(|| {
                    (
                        cstr(strings_at + name as usize),
                        section_name(shndx),
                        function,
                    )
                })
            })
            .collect()
    }

    #[test]
    fn object_is_an_aligned_bpf_elf_with_every_map_and_program() {
        assert_eq!(
            OBJECT.as_ptr() as usize % 32,
            0,
            "OBJECT must be 32-byte aligned"
        );
        assert_eq!(&OBJECT[..4], b"\x7fELF");
        assert_eq!(
            u16::from_le_bytes([OBJECT[18], OBJECT[19]]),
            247,
            "e_machine EM_BPF"
        );
        let symbols = elf_symbols(OBJECT);
        let has = |name: &str, section: &str| symbols.iter().any(|s| s.0 == name && s.1 == section);
        for map in [
            MAP_ZONE_CGROUPS,
            MAP_ZONE_POLICIES,
            MAP_INODE_OWNERS,
            MAP_ZONE_PAIRS,
            MAP_EGRESS_ALLOW,
            MAP_LISTENERS,
            MAP_EVENTS,
            MAP_COUNTERS,
        ] {
            assert!(has(map, ".maps"), "map {map} missing from the object");
        }
        for program in LSM_PROGRAMS {
            assert!(has(program, &format!("lsm/{program}")), "program {program}");
        }
        for program in CGROUP_CONNECT_PROGRAMS
            .iter()
            .chain(&CGROUP_POST_BIND_PROGRAMS)
        {
            assert!(
                has(program, &format!("cgroup/{program}")),
                "program {program}"
            );
        }
        let programs = symbols
            .iter()
            .filter(|s| s.2 && (s.1.starts_with("lsm/") || s.1.starts_with("cgroup/")))
            .count();
        assert_eq!(programs, LSM_PROGRAMS.len() + 4, "a program is not listed");
        assert!(has("LICENSE", "license"));
    }

    #[test]
    fn hooks_round_trip_and_have_kernel_names() {
        for hook in Hook::ALL {
            assert_eq!(Hook::from_u32(hook.as_u32()), Some(hook));
        }
        assert_eq!(Hook::from_u32(0), None);
        assert_eq!(Hook::from_u32(HOOK_MAX), None);
        assert_eq!(Hook::ALL.len() as u32, HOOK_MAX - 1);
        assert_eq!(Hook::BprmCheck.name(), "bprm_check_security");
        assert_eq!(Hook::CgroupAttach.to_string(), "cgroup_attach_task");
    }

    #[test]
    fn egress_key_prefix_counts_zone_and_mapped_bits() {
        let v4 = EgressKey::new(7, "10.1.2.3".parse().unwrap(), 24).unwrap();
        assert_eq!(v4.prefixlen, 32 + 96 + 24);
        assert_eq!(v4.zone, 7);
        assert_eq!(
            v4.addr,
            ipv4_mapped(Ipv4Addr::new(10, 1, 2, 0)),
            "host bits cleared"
        );
        assert_eq!(v4.network(), ("10.1.2.0".parse().unwrap(), 24));

        let host = EgressKey::new(7, "10.1.2.3".parse().unwrap(), 32).unwrap();
        assert_eq!(host.prefixlen, 160);
        assert_eq!(host.addr, ipv4_mapped(Ipv4Addr::new(10, 1, 2, 3)));

        let any_v4 = EgressKey::new(7, Ipv4Addr::UNSPECIFIED.into(), 0).unwrap();
        assert_eq!(any_v4.prefixlen, 32 + 96);
        assert_eq!(
            any_v4.addr[10..12],
            [0xff, 0xff],
            "0.0.0.0/0 stays under ::ffff:0:0/96"
        );

        let v6 = EgressKey::new(7, "2001:db8::1".parse().unwrap(), 64).unwrap();
        assert_eq!(v6.prefixlen, 32 + 64);
        assert_eq!(v6.network(), ("2001:db8::".parse().unwrap(), 64));

        let any = EgressKey::new(7, Ipv6Addr::UNSPECIFIED.into(), 0).unwrap();
        assert_eq!((any.prefixlen, any.addr), (32, [0; 16]));
        assert_eq!(any.network(), (Ipv6Addr::UNSPECIFIED.into(), 0));

        assert_eq!(
            EgressKey::new(7, "10.0.0.0".parse().unwrap(), 33),
            Err(MapEntryError::PrefixTooLong {
                addr: "10.0.0.0".parse().unwrap(),
                bits: 33,
                max: 32
            })
        );
        assert!(EgressKey::new(7, "::".parse().unwrap(), 129).is_err());
    }

    #[test]
    fn egress_value_ports() {
        let rule = EgressValue::new(&[80, 443]).unwrap();
        assert_eq!((rule.ports(), rule.nports), (&[80, 443][..], 2));
        assert!(rule.allows(443) && !rule.allows(8080) && !rule.allows(0));
        assert!(EgressValue::ANY_PORT.allows(8080));
        assert!(
            EgressValue::new(&[]).is_err(),
            "empty must not mean any port"
        );
        assert_eq!(
            EgressValue::new(&[1; 9]),
            Err(MapEntryError::PortCount { count: 9, max: 8 })
        );
    }

    #[test]
    fn listen_key_maps_ipv4_whatever_the_socket_family() {
        let v4 = ListenKey::new("10.0.0.2:80".parse().unwrap());
        let mapped = ListenKey::new("[::ffff:10.0.0.2]:80".parse().unwrap());
        assert_eq!(v4, mapped);
        assert_eq!((v4.family, v4.port), (AF_INET, 80));
        assert_eq!(v4.socket_addr(), "10.0.0.2:80".parse().unwrap());
        let v6 = ListenKey::new("[::]:8080".parse().unwrap());
        assert_eq!((v6.family, v6.addr), (AF_INET6, [0; 16]));
    }

    #[test]
    fn kernel_dev_from_st_dev() {
        assert_eq!(kernel_dev(0x0801), (8 << 20) | 1, "sda1");
        // major 259, minor 0x12345: glibc puts minor bits 8.. at 20..
        let st_dev = (0x45) | (259 << 8) | (0x123 << 20);
        assert_eq!(kernel_dev(st_dev), (259 << 20) | 0x12345);
    }

    fn event(hook: Hook, target: [u64; 3]) -> Event {
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"curl");
        Event {
            time_ns: 123_456_789,
            pid: 4242,
            zone: 3,
            hook: hook.as_u32(),
            err: -13,
            target_zone: 5,
            target,
            comm,
            ..Event::default()
        }
    }

    #[test]
    fn event_round_trips_through_bytes_at_any_alignment() {
        let original = event(Hook::TaskKill, [42, 9, 0]);
        let bytes = original.to_bytes();
        assert_eq!(bytes.len(), 72);
        assert_eq!(
            &bytes[16..20],
            &Hook::TaskKill.as_u32().to_ne_bytes(),
            "hook at 16"
        );
        let mut shifted = vec![0u8; bytes.len() + 1];
        shifted[1..].copy_from_slice(&bytes);
        assert_eq!(Event::from_bytes(&shifted[1..]), Some(original));
        assert_eq!(Event::from_bytes(&bytes[..71]), None);
        assert_eq!(original.comm(), "curl");
    }

    #[test]
    fn event_targets_read_like_the_operation() {
        let target = |hook, t| event(hook, t).target().to_string();
        assert_eq!(
            target(Hook::FileOpen, [(8 << 20) | 1, 1234, 0]),
            "inode 8:1/1234"
        );
        assert_eq!(
            target(Hook::BprmCheck, [(259 << 20) | 3, 7, 0]),
            "inode 259:3/7"
        );
        assert_eq!(target(Hook::TaskKill, [42, 9, 0]), "pid 42 signal 9");
        assert_eq!(target(Hook::Ptrace, [42, 0x12, 0]), "pid 42 ptrace attach");
        assert_eq!(target(Hook::Ptrace, [42, 0x05, 0]), "pid 42 ptrace read");
        assert_eq!(target(Hook::CgroupAttach, [77, 0, 0]), "cgroup 77");
        assert_eq!(
            target(Hook::CgroupAttach, [0, 1, 0]),
            "clone3 into a cgroup"
        );

        // the encoding the programs use: big-endian halves of the 16 bytes
        let bytes = ipv4_mapped(Ipv4Addr::new(10, 0, 0, 2));
        let hi = u64::from_be_bytes(bytes[..8].try_into().unwrap());
        let lo = u64::from_be_bytes(bytes[8..].try_into().unwrap());
        assert_eq!((hi, lo), (0, 0x0000_ffff_0a00_0002));
        assert_eq!(target(Hook::Connect4, [80, hi, lo]), "10.0.0.2:80");
        assert_eq!(
            event(Hook::SocketConnect, [80, hi, lo]).target(),
            EventTarget::Connect(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 80).into())
        );
        assert_eq!(target(Hook::Connect6, [443, 0, 1]), "[::1]:443");

        let unknown = Event {
            hook: 99,
            ..event(Hook::FileOpen, [1, 2, 3])
        };
        assert_eq!(unknown.target(), EventTarget::Unknown([1, 2, 3]));
        assert_eq!(
            event(Hook::TaskKill, [42, 9, 0]).to_string(),
            "task_kill denied to curl[4242] of zone 3: pid 42 signal 9 of zone 5 (errno 13)"
        );
    }

    #[test]
    fn counters_sum_over_cpus() {
        let per_cpu = [
            Counter {
                allowed: 2,
                denied: 1,
            },
            Counter {
                allowed: 3,
                denied: 0,
            },
        ];
        let total: Counter = per_cpu.into_iter().sum();
        assert_eq!(
            total,
            Counter {
                allowed: 5,
                denied: 1
            }
        );
    }
}
