//! The loader `rauhad` uses: loads the object with aya, reuses the maps and
//! links an earlier run pinned, attaches what this kernel allows, and keeps
//! the maps in step with the zones.
//!
//! Everything lives under one pin directory on bpffs (`/sys/fs/bpf/rauha` by
//! default): `maps/<name>` and `links/<program>`. A pinned link keeps its
//! program attached after rauhad exits, so a restart neither opens a gap in
//! enforcement nor loses map contents; removing the directory detaches all.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::Lsm;
use aya::{Btf, Ebpf, EbpfLoader};

use crate::maps::{
    self, Counter, EgressKey, EgressValue, Event, InodeKey, ListenKey, ZoneIndex, ZonePair,
    ZonePolicy,
};
use crate::policy::ZoneRules;

// SAFETY: each is `#[repr(C)]` of integers and byte arrays whose padding is
// spelled out as fields (the layout tests check it): any bit pattern is a
// valid value and no byte is uninitialised.
unsafe impl aya::Pod for ZonePolicy {}
unsafe impl aya::Pod for InodeKey {}
unsafe impl aya::Pod for ZonePair {}
unsafe impl aya::Pod for EgressValue {}
unsafe impl aya::Pod for ListenKey {}
unsafe impl aya::Pod for Counter {}
unsafe impl aya::Pod for TrieData {}

/// The part of `rauha_egress_key` after `prefixlen`, which aya's
/// [`Key`] carries itself.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TrieData {
    zone: ZoneIndex,
    addr: [u8; 16],
}

/// Which reported layer a program belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookLayer {
    BpfLsm,
    CgroupBpf,
}

/// One program and whether it is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookStatus {
    /// The program's name: the LSM hook, or `connect4`, `post_bind4`, ...
    pub name: &'static str,
    pub layer: HookLayer,
    pub live: bool,
    /// How it was attached, or why it is not.
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EnforcerError {
    #[error("{0}")]
    Setup(String),
    #[error("BPF map {map}: {message}")]
    Map { map: &'static str, message: String },
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> EnforcerError {
    move |e| EnforcerError::Map {
        map,
        message: e.to_string(),
    }
}

/// One zone as the maps hold it.
#[derive(Debug, Clone)]
pub struct EnforcedZone {
    pub index: ZoneIndex,
    /// Its cgroup ids in the unified hierarchy (the zone's and its work's).
    pub cgroups: Vec<u64>,
    pub rules: ZoneRules,
    /// Inodes that belong to the zone from the start (its private dirs).
    pub owned: Vec<InodeKey>,
}

/// The loaded programs and their maps.
pub struct Enforcer {
    ebpf: Ebpf,
    hooks: Vec<HookStatus>,
    /// Zone indices the maps hold entries for (after the last sync).
    synced: BTreeSet<ZoneIndex>,
    /// Where links are pinned; `zones/<key>@<cgroup inode>/` holds the
    /// cgroup programs' links of a zone whose cgroup is outside the node's
    /// parent.
    links_dir: std::path::PathBuf,
    /// Each live cgroup program's attach type and the id of the program
    /// its node link runs (the kernel's word, read back from the link).
    cgroup_programs: Vec<(&'static str, u32, u32)>,
}

/// The cgroup socket programs and where each attaches.
const CGROUP_PROGRAMS: [(&str, u32); 4] = [
    ("post_bind4", BPF_CGROUP_INET4_POST_BIND),
    ("post_bind6", BPF_CGROUP_INET6_POST_BIND),
    ("connect4", BPF_CGROUP_INET4_CONNECT),
    ("connect6", BPF_CGROUP_INET6_CONNECT),
];

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_F_QUERY_EFFECTIVE: u32 = 1;
const BPF_LINK_TYPE_CGROUP: u32 = 3;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_CGROUP_INET4_POST_BIND: u32 = 12;
const BPF_CGROUP_INET6_POST_BIND: u32 = 13;
const BPF_CGROUP_INET4_CONNECT: u32 = 10;
const BPF_CGROUP_INET6_CONNECT: u32 = 11;

/// Whether `dir` is on a bpffs mount.
pub fn on_bpffs(dir: &Path) -> bool {
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we own.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

/// `bpf(BPF_LINK_CREATE)` for a cgroup program; aya keeps such links
/// private, and only a link we hold can be pinned.
fn cgroup_link(prog: &impl AsFd, cgroup: &impl AsFd, attach_type: u32) -> io::Result<OwnedFd> {
    // union bpf_attr, link_create: prog_fd, target_fd, attach_type, flags.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&(prog.as_fd().as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(cgroup.as_fd().as_raw_fd() as u32).to_ne_bytes());
    attr[8..12].copy_from_slice(&attach_type.to_ne_bytes());
    // SAFETY: the kernel reads `attr.len()` bytes of our buffer.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_CREATE,
            attr.as_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd the kernel gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `bpf(BPF_OBJ_GET)`: a descriptor of a pinned object.
fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in pin path"))?;
    // union bpf_attr, obj_pin: pathname (u64), bpf_fd (u32), file_flags.
    let mut attr = [0u8; 128];
    attr[0..8].copy_from_slice(&(c.as_ptr() as u64).to_ne_bytes());
    // SAFETY: the kernel reads `attr.len()` bytes; `c` outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            attr.as_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd the kernel gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// What the kernel says of a cgroup link: the program it runs and the id
/// of the cgroup it is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLinkInfo {
    pub prog_id: u32,
    pub cgroup_id: u64,
}

/// `bpf(BPF_OBJ_GET_INFO_BY_FD)` on a link; `None` for a link that is not
/// a cgroup link.
fn cgroup_link_info(link: &impl AsFd) -> io::Result<Option<CgroupLinkInfo>> {
    // struct bpf_link_info: type, id, prog_id (u32 each), then a union
    // (8-aligned) whose cgroup member is cgroup_id (u64), attach_type.
    let mut info = [0u8; 64];
    // union bpf_attr, info: bpf_fd (u32), info_len (u32), info (u64).
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&(link.as_fd().as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(info.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
    // SAFETY: the kernel writes at most `info_len` bytes into `info`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            attr.as_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let u32_at = |o: usize| u32::from_ne_bytes(info[o..o + 4].try_into().unwrap_or_default());
    if u32_at(0) != BPF_LINK_TYPE_CGROUP {
        return Ok(None);
    }
    Ok(Some(CgroupLinkInfo {
        prog_id: u32_at(8),
        cgroup_id: u64::from_ne_bytes(info[16..24].try_into().unwrap_or_default()),
    }))
}

/// The ids of the programs of `attach_type` that run for `cgroup`'s
/// processes: attached to it or inherited from an ancestor
/// (`bpf(BPF_PROG_QUERY)` with `BPF_F_QUERY_EFFECTIVE`).
pub fn effective_programs(cgroup: &Path, attach_type: u32) -> io::Result<Vec<u32>> {
    let dir = std::fs::File::open(cgroup)?;
    let mut ids = [0u32; 64];
    // union bpf_attr, query: target_fd, attach_type, query_flags,
    // attach_flags (u32 each), prog_ids (u64), prog_cnt (u32).
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&(dir.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&attach_type.to_ne_bytes());
    attr[8..12].copy_from_slice(&BPF_F_QUERY_EFFECTIVE.to_ne_bytes());
    attr[16..24].copy_from_slice(&(ids.as_mut_ptr() as u64).to_ne_bytes());
    attr[24..28].copy_from_slice(&(ids.len() as u32).to_ne_bytes());
    // SAFETY: the kernel writes at most `prog_cnt` ids into `ids`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_QUERY,
            attr.as_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let count = u32::from_ne_bytes(attr[24..28].try_into().unwrap_or_default()) as usize;
    Ok(ids[..count.min(ids.len())].to_vec())
}

/// A cgroup's id: its inode number on the unified hierarchy.
fn cgroup_id(dir: &std::fs::File) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    dir.metadata().map(|m| m.ino())
}

/// `bpf(BPF_OBJ_PIN)`: the object stays alive while the file exists.
fn pin_fd(fd: &impl AsFd, path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in pin path"))?;
    // union bpf_attr, obj_pin: pathname (u64), bpf_fd (u32), file_flags.
    let mut attr = [0u8; 128];
    attr[0..8].copy_from_slice(&(c.as_ptr() as u64).to_ne_bytes());
    attr[8..12].copy_from_slice(&(fd.as_fd().as_raw_fd() as u32).to_ne_bytes());
    // SAFETY: the kernel reads `attr.len()` bytes; `c` outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_PIN,
            attr.as_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Enforcer {
    /// Loads the object (reusing maps pinned under `pin_dir`), attaches the
    /// LSM programs, and attaches the cgroup programs to `cgroup` (the
    /// unified-hierarchy directory above every zone) when given. Programs
    /// the kernel refuses are reported in [`Enforcer::hooks`], not errors.
    pub fn start(pin_dir: &Path, cgroup: Option<&Path>) -> Result<Enforcer, EnforcerError> {
        let setup = |what: String| EnforcerError::Setup(what);
        let base = pin_dir.parent().unwrap_or(Path::new("/"));
        if !on_bpffs(base) {
            return Err(setup(format!(
                "{} is not a bpffs mount; mount one with `mount -t bpf bpf {}`",
                base.display(),
                base.display()
            )));
        }
        let maps_dir = pin_dir.join("maps");
        let links_dir = pin_dir.join("links");
        for d in [&maps_dir, &links_dir] {
            std::fs::create_dir_all(d)
                .map_err(|e| setup(format!("cannot create {}: {e}", d.display())))?;
        }
        let btf = Btf::from_sys_fs().map_err(|e| {
            setup(format!(
                "kernel BTF is not readable ({e}); the programs need a kernel built with CONFIG_DEBUG_INFO_BTF"
            ))
        })?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .default_map_pin_directory(&maps_dir)
            .load(maps::OBJECT)
            .map_err(|e| setup(format!("cannot load the BPF object: {e}")))?;
        let mut hooks = Vec::new();
        for name in maps::LSM_PROGRAMS {
            hooks.push(attach_lsm(&mut ebpf, name, &btf, &links_dir));
        }
        let socket_connect_live = hooks.iter().any(|h| h.name == "socket_connect" && h.live);
        let cgroup_dir = match cgroup {
            Some(dir) => Some(
                std::fs::File::open(dir)
                    .map_err(|e| setup(format!("cannot open cgroup {}: {e}", dir.display())))?,
            ),
            None => None,
        };
        let mut cgroup_programs = Vec::new();
        for (name, attach_type) in CGROUP_PROGRAMS {
            let status = match &cgroup_dir {
                None => HookStatus {
                    name,
                    layer: HookLayer::CgroupBpf,
                    live: false,
                    detail: "no unified (v2) cgroup hierarchy to attach to".into(),
                },
                Some(_) if name.starts_with("connect") && socket_connect_live => HookStatus {
                    name,
                    layer: HookLayer::CgroupBpf,
                    live: false,
                    detail: "not attached: lsm/socket_connect decides connects".into(),
                },
                Some(dir) => {
                    let mut status = attach_cgroup(&mut ebpf, name, attach_type, dir, &links_dir);
                    // Live only if the kernel says the pinned link runs for
                    // this cgroup.
                    match attached_here(&links_dir.join(name), dir) {
                        Ok(prog_id) if status.live => {
                            cgroup_programs.push((name, attach_type, prog_id))
                        }
                        Ok(_) => {}
                        Err(why) => {
                            status.live = false;
                            status.detail = why;
                        }
                    }
                    status
                }
            };
            hooks.push(status);
        }
        Ok(Enforcer {
            ebpf,
            hooks,
            synced: BTreeSet::new(),
            links_dir,
            cgroup_programs,
        })
    }

    /// Attaches the cgroup programs that are live on the node also to a
    /// zone's cgroup that is not under the node's parent (e.g. in a kubelet
    /// pod cgroup), pinning the links under `links/zones/<key>`. Links an
    /// earlier run pinned are kept.
    pub fn attach_zone(&mut self, key: &str, cgroup: &Path) -> Result<(), EnforcerError> {
        let setup = |what: String| EnforcerError::Setup(what);
        let cgroup_dir = std::fs::File::open(cgroup)
            .map_err(|e| setup(format!("cannot open cgroup {}: {e}", cgroup.display())))?;
        // The pin dir is `<key>@<cgroup inode>`: links pinned for an earlier
        // cgroup of the same zone (it was rebuilt) hold that cgroup, not
        // this one, and are dropped. (bpffs holds only directories and pins.)
        use std::os::unix::fs::MetadataExt;
        let ino = cgroup_dir
            .metadata()
            .map(|m| m.ino())
            .map_err(|e| setup(format!("cannot stat cgroup {}: {e}", cgroup.display())))?;
        let zones = self.links_dir.join("zones");
        let name = format!("{key}@{ino}");
        for e in std::fs::read_dir(&zones).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.split('@').next() == Some(key) && n != name {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let dir = zones.join(&name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| setup(format!("cannot create {}: {e}", dir.display())))?;
        let live: Vec<&'static str> = self
            .hooks
            .iter()
            .filter(|h| h.layer == HookLayer::CgroupBpf && h.live)
            .map(|h| h.name)
            .collect();
        for (name, attach_type) in CGROUP_PROGRAMS.iter().filter(|(n, _)| live.contains(n)) {
            let path = dir.join(name);
            if PinnedLink::from_pin(&path).is_ok() {
                continue;
            }
            let fd = program_fd(&mut self.ebpf, name).map_err(|e| setup(format!("{name}: {e}")))?;
            let link = cgroup_link(&fd, &cgroup_dir, *attach_type)
                .map_err(|e| setup(format!("cannot attach {name} to {}: {e}", cgroup.display())))?;
            pin_fd(&link, &path)
                .map_err(|e| setup(format!("cannot pin {}: {e}", path.display())))?;
        }
        Ok(())
    }

    /// Which live cgroup programs do not run for `cgroup`'s processes, by
    /// the kernel's own list of its effective programs; empty when all do.
    /// `zone_key`: the zone has links of its own on its cgroup
    /// ([`Enforcer::attach_zone`]), whose programs count as well.
    pub fn missing_on(
        &self,
        cgroup: &Path,
        zone_key: Option<&str>,
    ) -> io::Result<Vec<&'static str>> {
        let own = zone_key.and_then(|key| self.zone_links(key));
        let mut missing = Vec::new();
        for (name, attach_type, node_prog) in &self.cgroup_programs {
            let mut expected = vec![*node_prog];
            if let Some(dir) = &own {
                if let Ok(Some(info)) = obj_get(&dir.join(name)).and_then(|l| cgroup_link_info(&l))
                {
                    expected.push(info.prog_id);
                }
            }
            let effective = effective_programs(cgroup, *attach_type)?;
            if !expected.iter().any(|id| effective.contains(id)) {
                missing.push(*name);
            }
        }
        Ok(missing)
    }

    /// The directory of a zone's own links, if it has one.
    fn zone_links(&self, key: &str) -> Option<std::path::PathBuf> {
        std::fs::read_dir(self.links_dir.join("zones"))
            .into_iter()
            .flatten()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().split('@').next() == Some(key))
            .map(|e| e.path())
    }

    /// Whether a zone's own cgroup links are all pinned.
    pub fn zone_attached(&self, key: &str) -> bool {
        let Some(dir) = self.zone_links(key) else {
            return false;
        };
        self.hooks
            .iter()
            .filter(|h| h.layer == HookLayer::CgroupBpf && h.live)
            .all(|h| dir.join(h.name).exists())
    }

    /// Detaches the own cgroup links of every zone but `keep` (unpinning a
    /// link ends it once nothing else holds it).
    pub fn detach_zones_except(&mut self, keep: &[String]) {
        let Ok(entries) = std::fs::read_dir(self.links_dir.join("zones")) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let key = name.split('@').next().unwrap_or_default();
            if !keep.iter().any(|k| k == key) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    pub fn hooks(&self) -> &[HookStatus] {
        &self.hooks
    }

    /// Whether every BPF-LSM program is attached.
    pub fn lsm_live(&self) -> bool {
        self.hooks
            .iter()
            .filter(|h| h.layer == HookLayer::BpfLsm)
            .all(|h| h.live)
    }

    /// Whether the cgroup programs that decide connects (or their LSM
    /// counterpart) and record listeners are attached.
    pub fn network_live(&self) -> bool {
        self.hooks
            .iter()
            .filter(|h| h.name.starts_with("post_bind"))
            .all(|h| h.live)
            && (self
                .hooks
                .iter()
                .filter(|h| h.name.starts_with("connect"))
                .all(|h| h.live)
                || self
                    .hooks
                    .iter()
                    .any(|h| h.name == "socket_connect" && h.live))
    }

    /// Makes the maps hold exactly these zones: their cgroups, flags,
    /// egress lists, owned inodes, and the allowed pairs. Entries of zones
    /// not listed (deleted, or gone while rauhad was down) are removed,
    /// with the files and listeners they owned.
    pub fn sync(
        &mut self,
        zones: &[EnforcedZone],
        pairs: &BTreeSet<(ZoneIndex, ZoneIndex)>,
    ) -> Result<(), EnforcerError> {
        let wanted: BTreeSet<ZoneIndex> = zones.iter().map(|z| z.index).collect();
        {
            let mut cgroups: HashMap<&mut MapData, u64, u32> =
                HashMap::try_from(self.map(maps::MAP_ZONE_CGROUPS)?)
                    .map_err(map_err(maps::MAP_ZONE_CGROUPS))?;
            let want: std::collections::HashMap<u64, u32> = zones
                .iter()
                .flat_map(|z| z.cgroups.iter().map(move |c| (*c, z.index)))
                .collect();
            let stale: Vec<u64> = cgroups
                .iter()
                .filter_map(Result::ok)
                .filter(|(k, v)| want.get(k) != Some(v))
                .map(|(k, _)| k)
                .collect();
            for k in stale {
                let _ = cgroups.remove(&k);
            }
            for (k, v) in &want {
                cgroups
                    .insert(k, v, 0)
                    .map_err(map_err(maps::MAP_ZONE_CGROUPS))?;
            }
        }
        {
            let mut policies: HashMap<&mut MapData, u32, ZonePolicy> =
                HashMap::try_from(self.map(maps::MAP_ZONE_POLICIES)?)
                    .map_err(map_err(maps::MAP_ZONE_POLICIES))?;
            let stale: Vec<u32> = policies
                .keys()
                .filter_map(Result::ok)
                .filter(|k| !wanted.contains(k))
                .collect();
            for k in stale {
                let _ = policies.remove(&k);
            }
            for z in zones {
                policies
                    .insert(z.index, ZonePolicy::new(z.rules.flags), 0)
                    .map_err(map_err(maps::MAP_ZONE_POLICIES))?;
            }
        }
        {
            let mut trie: LpmTrie<&mut MapData, TrieData, EgressValue> =
                LpmTrie::try_from(self.map(maps::MAP_EGRESS_ALLOW)?)
                    .map_err(map_err(maps::MAP_EGRESS_ALLOW))?;
            let mut want = Vec::new();
            for z in zones {
                for e in &z.rules.egress {
                    let key = EgressKey::new(z.index, e.addr.into(), e.prefix).map_err(|err| {
                        EnforcerError::Map {
                            map: maps::MAP_EGRESS_ALLOW,
                            message: err.to_string(),
                        }
                    })?;
                    let value = if e.ports.is_empty() {
                        EgressValue::ANY_PORT
                    } else {
                        EgressValue::new(&e.ports).map_err(|err| EnforcerError::Map {
                            map: maps::MAP_EGRESS_ALLOW,
                            message: err.to_string(),
                        })?
                    };
                    want.push((
                        key.prefixlen,
                        TrieData {
                            zone: key.zone,
                            addr: key.addr,
                        },
                        value,
                    ));
                }
            }
            let existing: Vec<Key<TrieData>> = trie.keys().filter_map(Result::ok).collect();
            for k in existing {
                let (len, data) = (k.prefix_len(), k.data());
                if !want.iter().any(|(l, d, _)| *l == len && *d == data) {
                    let _ = trie.remove(&k);
                }
            }
            for (len, data, value) in &want {
                trie.insert(&Key::new(*len, *data), value, 0)
                    .map_err(map_err(maps::MAP_EGRESS_ALLOW))?;
            }
        }
        {
            let mut pair_map: HashMap<&mut MapData, ZonePair, u32> =
                HashMap::try_from(self.map(maps::MAP_ZONE_PAIRS)?)
                    .map_err(map_err(maps::MAP_ZONE_PAIRS))?;
            let stale: Vec<ZonePair> = pair_map
                .keys()
                .filter_map(Result::ok)
                .filter(|p| !pairs.contains(&(p.from, p.to)))
                .collect();
            for k in stale {
                let _ = pair_map.remove(&k);
            }
            for &(from, to) in pairs {
                pair_map
                    .insert(ZonePair { from, to }, 1, 0)
                    .map_err(map_err(maps::MAP_ZONE_PAIRS))?;
            }
        }
        // After a start every zone not listed is stale (left by an earlier
        // run); later, only those removed since the last sync.
        let first = self.synced.is_empty();
        let gone: BTreeSet<ZoneIndex> = self.synced.difference(&wanted).copied().collect();
        self.remove_owned_by(|zone| !wanted.contains(&zone) && (first || gone.contains(&zone)))?;
        {
            let mut owners: HashMap<&mut MapData, InodeKey, u32> =
                HashMap::try_from(self.map(maps::MAP_INODE_OWNERS)?)
                    .map_err(map_err(maps::MAP_INODE_OWNERS))?;
            for z in zones {
                for key in &z.owned {
                    owners
                        .insert(key, z.index, 0)
                        .map_err(map_err(maps::MAP_INODE_OWNERS))?;
                }
            }
        }
        self.synced = wanted;
        Ok(())
    }

    /// Removes the inode owners and listeners of zones `gone` selects.
    fn remove_owned_by(&mut self, gone: impl Fn(ZoneIndex) -> bool) -> Result<(), EnforcerError> {
        remove_where::<InodeKey>(
            self.map(maps::MAP_INODE_OWNERS)?,
            maps::MAP_INODE_OWNERS,
            &gone,
        )?;
        remove_where::<ListenKey>(self.map(maps::MAP_LISTENERS)?, maps::MAP_LISTENERS, &gone)
    }

    /// Denials and decisions per hook, summed over CPUs; slot 0 counts
    /// events lost to a full ring buffer.
    pub fn counters(&self) -> Result<Vec<(u32, Counter)>, EnforcerError> {
        let map = self
            .ebpf
            .map(maps::MAP_COUNTERS)
            .ok_or_else(|| EnforcerError::Setup("the object has no counters map".into()))?;
        let array: PerCpuArray<&MapData, Counter> =
            PerCpuArray::try_from(map).map_err(map_err(maps::MAP_COUNTERS))?;
        let mut out = Vec::new();
        for i in 0..maps::HOOK_MAX {
            let per_cpu = array.get(&i, 0).map_err(map_err(maps::MAP_COUNTERS))?;
            out.push((i, per_cpu.iter().copied().sum()));
        }
        Ok(out)
    }

    /// Takes the deny-event ring buffer; call once.
    pub fn take_events(&mut self) -> Result<EventReader, EnforcerError> {
        let map = self
            .ebpf
            .take_map(maps::MAP_EVENTS)
            .ok_or_else(|| EnforcerError::Setup("the events ring buffer was taken".into()))?;
        let ring = RingBuf::try_from(map).map_err(map_err(maps::MAP_EVENTS))?;
        Ok(EventReader { ring })
    }

    fn map(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, EnforcerError> {
        self.ebpf.map_mut(name).ok_or(EnforcerError::Map {
            map: name,
            message: "not in the object".into(),
        })
    }
}

/// Removes the entries of a `key -> zone` hash map whose zone `gone` selects.
fn remove_where<K: aya::Pod>(
    map: &mut aya::maps::Map,
    name: &'static str,
    gone: &impl Fn(ZoneIndex) -> bool,
) -> Result<(), EnforcerError> {
    let mut entries: HashMap<&mut MapData, K, u32> =
        HashMap::try_from(map).map_err(map_err(name))?;
    let stale: Vec<K> = entries
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, zone)| gone(*zone))
        .map(|(k, _)| k)
        .collect();
    for k in stale {
        let _ = entries.remove(&k);
    }
    Ok(())
}

/// Deny events as the programs write them.
pub struct EventReader {
    ring: RingBuf<MapData>,
}

impl EventReader {
    /// Every event written so far. Reading the ring is a look at shared
    /// memory, no system call, so polling it often is cheap.
    pub fn drain(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
            if let Some(e) = Event::from_bytes(&item) {
                out.push(e);
            }
        }
        out
    }
}

/// Attaches one program unless an earlier run's pinned link still holds it
/// attached; `attach` loads it, attaches it and pins the link at the path.
fn attach_pinned(
    name: &'static str,
    layer: HookLayer,
    links: &Path,
    attach: impl FnOnce(&Path) -> Result<(), String>,
) -> HookStatus {
    let path = links.join(name);
    let (live, detail) = if PinnedLink::from_pin(&path).is_ok() {
        (
            true,
            format!("attached (kept from an earlier run, {})", path.display()),
        )
    } else {
        match attach(&path) {
            Ok(()) => (true, "attached".to_string()),
            Err(e) => (false, e),
        }
    };
    HookStatus {
        name,
        layer,
        live,
        detail,
    }
}

fn attach_lsm(ebpf: &mut Ebpf, name: &'static str, btf: &Btf, links: &Path) -> HookStatus {
    attach_pinned(name, HookLayer::BpfLsm, links, |path| {
        let program: &mut Lsm = ebpf
            .program_mut(name)
            .ok_or("not in the object")?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| e.to_string())?;
        program.load(name, btf).map_err(|e| verbose(&e))?;
        let id = program.attach().map_err(|e| verbose(&e))?;
        let link: FdLink = program.take_link(id).map_err(|e| e.to_string())?.into();
        link.pin(path)
            .map_err(|e| format!("cannot pin the link: {e}"))?;
        Ok(())
    })
}

/// A cgroup socket program's fd, loading it first when this run has not
/// (an earlier run's pinned link may hold it attached).
fn program_fd(ebpf: &mut Ebpf, name: &str) -> Result<aya::programs::ProgramFd, String> {
    let program = ebpf.program_mut(name).ok_or("not in the object")?;
    let fd = match program {
        aya::programs::Program::CgroupSockAddr(p) => {
            if p.fd().is_err() {
                p.load().map_err(|e| verbose(&e))?;
            }
            p.fd().map_err(|e| e.to_string())?.try_clone()
        }
        aya::programs::Program::CgroupSock(p) => {
            if p.fd().is_err() {
                p.load().map_err(|e| verbose(&e))?;
            }
            p.fd().map_err(|e| e.to_string())?.try_clone()
        }
        _ => return Err("not a cgroup socket program".into()),
    };
    fd.map_err(|e| e.to_string())
}

/// The program id of the link pinned at `pin`, checked to be attached to
/// `cgroup`.
fn attached_here(pin: &Path, cgroup: &std::fs::File) -> Result<u32, String> {
    let link = obj_get(pin).map_err(|e| format!("cannot open the pinned link: {e}"))?;
    let info = cgroup_link_info(&link)
        .map_err(|e| format!("cannot read the pinned link: {e}"))?
        .ok_or("the pinned link is not a cgroup link")?;
    let here = cgroup_id(cgroup).map_err(|e| format!("cannot stat the cgroup: {e}"))?;
    if info.cgroup_id != here {
        return Err(format!(
            "the pinned link is attached to cgroup {}, not this node's ({here})",
            info.cgroup_id
        ));
    }
    Ok(info.prog_id)
}

fn attach_cgroup(
    ebpf: &mut Ebpf,
    name: &'static str,
    attach_type: u32,
    cgroup: &std::fs::File,
    links: &Path,
) -> HookStatus {
    // A link an earlier rauhad pinned here for another cgroup parent (the
    // same pin dir, another `--cgroup-parent`) enforces nothing for this
    // node's zones: it is not adopted. Its pin goes (its zones, if any are
    // left, belong to no running rauhad) and a link to this cgroup
    // replaces it.
    let pin = links.join(name);
    let mut replaced = None;
    if pin.exists() {
        if let Err(why) = attached_here(&pin, cgroup) {
            let _ = std::fs::remove_file(&pin);
            replaced = Some(why);
        }
    }
    let mut status = attach_cgroup_pinned(ebpf, name, attach_type, cgroup, links);
    if let Some(why) = replaced {
        if status.live {
            status.detail = format!("attached (replaced a pinned link: {why})");
        }
    }
    status
}

fn attach_cgroup_pinned(
    ebpf: &mut Ebpf,
    name: &'static str,
    attach_type: u32,
    cgroup: &std::fs::File,
    links: &Path,
) -> HookStatus {
    attach_pinned(name, HookLayer::CgroupBpf, links, |path| {
        let program = ebpf.program_mut(name).ok_or("not in the object")?;
        let fd = match program {
            aya::programs::Program::CgroupSockAddr(p) => {
                p.load().map_err(|e| verbose(&e))?;
                p.fd().map_err(|e| e.to_string())?.try_clone()
            }
            aya::programs::Program::CgroupSock(p) => {
                p.load().map_err(|e| verbose(&e))?;
                p.fd().map_err(|e| e.to_string())?.try_clone()
            }
            _ => return Err("not a cgroup socket program".into()),
        }
        .map_err(|e| e.to_string())?;
        let link = cgroup_link(&fd, cgroup, attach_type)
            .map_err(|e| format!("cannot attach to the cgroup: {e}"))?;
        pin_fd(&link, path).map_err(|e| format!("cannot pin the link: {e}"))
    })
}

/// An aya error with its sources (the errno is in the innermost one), on
/// one line; a verifier log is cut to its last lines, where the reason is.
fn verbose(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    // A refusal before verification has an empty verifier log: say only
    // what the kernel said.
    if let Some((head, log)) = text.split_once(". Verifier output:") {
        if log.trim_start_matches([':', ' ']).trim().is_empty()
            || head.ends_with(log.trim_start_matches([':', ' ']).trim())
        {
            return head.to_string();
        }
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let keep = &lines[lines.len().saturating_sub(3)..];
    keep.join(" | ")
}
