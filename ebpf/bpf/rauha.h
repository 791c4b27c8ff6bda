/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * rauha.h: the one description of every map key, value and event that the
 * BPF programs (rauha.bpf.c) and rauhad share. ebpf/src/maps.rs mirrors it
 * with #[repr(C)] types, and a unit test compares the sizes and offsets the
 * C compiler gives for this file with the Rust ones, so change both together.
 *
 * Rules for this file:
 *  - fixed-size types only, every hole filled by an explicit _pad field that
 *    writers set to 0 (the kernel hashes keys byte by byte);
 *  - no kernel headers beyond linux/types.h, so the host compiler can build
 *    the layout probe (layout_probe.c) without vmlinux.h;
 *  - integers are in host byte order unless a comment says otherwise.
 */
#ifndef RAUHA_H
#define RAUHA_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* ---------------------------------------------------------------- zones */

/*
 * A zone index is a __u32 that rauhad assigns to a zone; 0 is never used
 * and means "not in a zone". Callers outside every zone are allowed
 * everything and counted nowhere.
 */
#define RAUHA_ZONE_NONE 0

/* ---------------------------------------------------------------- hooks */

/* Index into `counters` and the `hook` field of an event. */
enum rauha_hook {
	RAUHA_HOOK_FILE_OPEN = 1,      /* lsm/file_open: cross-zone file access */
	RAUHA_HOOK_BPRM_CHECK = 2,     /* lsm/bprm_check_security: cross-zone exec */
	RAUHA_HOOK_PTRACE = 3,         /* lsm/ptrace_access_check */
	RAUHA_HOOK_TASK_KILL = 4,      /* lsm/task_kill (signal 0 included) */
	RAUHA_HOOK_CGROUP_ATTACH = 5,  /* write-open of cgroup.procs/threads, clone3(CLONE_INTO_CGROUP) */
	RAUHA_HOOK_SOCKET_CONNECT = 6, /* lsm/socket_connect */
	RAUHA_HOOK_CONNECT4 = 7,       /* cgroup/connect4 (hosts without BPF-LSM) */
	RAUHA_HOOK_CONNECT6 = 8,       /* cgroup/connect6 (hosts without BPF-LSM) */
	RAUHA_HOOK_MAX = 9,            /* number of slots in `counters` */
};

/*
 * Slot 0 of `counters` belongs to no hook: its `denied` field counts events
 * that were dropped because the `events` ring buffer was full (the deny
 * itself still happened and was counted under its hook).
 */
#define RAUHA_COUNTER_EVENTS_LOST 0

/* ------------------------------------------------------------- policies */

#define RAUHA_F_ISOLATE_FILES (1U << 0)  /* deny opening files created by another zone */
#define RAUHA_F_ISOLATE_EXEC (1U << 1)   /* deny executing files created by another zone */
#define RAUHA_F_ISOLATE_SIGNAL (1U << 2) /* deny signals to tasks of another zone */
#define RAUHA_F_ISOLATE_PTRACE (1U << 3) /* deny ptrace of tasks of another zone */
#define RAUHA_F_ISOLATE_CGROUP (1U << 4) /* deny moving tasks into a cgroup not of this zone */
#define RAUHA_F_EGRESS_LIMITED (1U << 5) /* connect only to egress_allow (loopback always allowed) */
#define RAUHA_F_ZONES_LIMITED (1U << 6)  /* connect to another zone's listener only for allowed pairs */
#define RAUHA_F_ALL ((1U << 7) - 1)

/* zone_policies value */
struct rauha_zone_policy {
	__u32 flags; /* RAUHA_F_* */
	__u32 _pad;
};

/* inode_owners key -> __u32 zone that created the inode (O_CREAT in a zone) */
struct rauha_inode_key {
	__u64 dev; /* the kernel's s_dev: (major << 20) | minor, NOT stat()'s st_dev encoding */
	__u64 ino; /* i_ino */
};

/*
 * zone_pairs key -> __u32 1: "from" may connect to listeners of "to" although
 * RAUHA_F_ZONES_LIMITED of "from" would deny it (a policy's allowed_zones).
 * Directional, and about connections only: files, exec, signals and ptrace
 * stay isolated by the RAUHA_F_ISOLATE_* flags.
 */
struct rauha_zone_pair {
	__u32 from;
	__u32 to;
};

/* ------------------------------------------------------------- networks */

#define RAUHA_AF_INET 2
#define RAUHA_AF_INET6 10

/*
 * egress_allow is an LPM trie keyed by zone + address. prefixlen counts the
 * 32 bits of `zone` (always fully matched) plus the address bits. Addresses
 * are IPv6; IPv4 is stored IPv4-mapped (::ffff:a.b.c.d), so an IPv4 /24 has
 * prefixlen 32 + 96 + 24 and IPv4 0.0.0.0/0 has 32 + 96. The longest
 * matching prefix alone decides: its port list is not merged with the lists
 * of shorter prefixes that also match.
 */
#define RAUHA_EGRESS_ZONE_BITS 32
#define RAUHA_EGRESS_ADDR_BITS 128
#define RAUHA_EGRESS_V4_MAPPED_BITS 96

struct rauha_egress_key {
	__u32 prefixlen;
	__u32 zone;
	__u8 addr[16]; /* network byte order */
};

#define RAUHA_EGRESS_PORTS 8

struct rauha_egress_value {
	__u16 ports[RAUHA_EGRESS_PORTS]; /* host byte order */
	__u32 nports;                    /* 0 = any port; at most RAUHA_EGRESS_PORTS */
};

/*
 * listeners key -> __u32 zone that bound the address (recorded by the
 * cgroup/post_bind4 and post_bind6 programs after a successful bind(), TCP
 * and UDP alike). family is the family of the address after mapping: an
 * IPv6 socket bound to ::ffff:a.b.c.d is recorded as RAUHA_AF_INET.
 */
struct rauha_listen_key {
	__u32 family; /* RAUHA_AF_INET or RAUHA_AF_INET6 */
	__u16 port;   /* host byte order */
	__u16 _pad;
	__u8 addr[16]; /* network byte order, IPv4 mapped as above */
};

/* --------------------------------------------------------------- events */

#define RAUHA_COMM_LEN 16

/*
 * One record in the `events` ring buffer per denial.
 *
 * time_ns   bpf_ktime_get_boot_ns(): CLOCK_BOOTTIME nanoseconds
 * pid       the caller's thread-group id in the initial pid namespace
 * zone      the caller's zone
 * hook      enum rauha_hook
 * err       the errno returned to the caller, negative (-EACCES, -EPERM)
 * target_zone  the zone on the other side (file owner, target task's zone,
 *           target cgroup's zone, listener's zone), 0 if none or unknown
 * target    per hook:
 *   FILE_OPEN, BPRM_CHECK  {dev (kernel s_dev), ino, 0}
 *   TASK_KILL              {target tgid (initial pid ns), signal, 0}
 *   PTRACE                 {target tgid (initial pid ns), ptrace mode (PTRACE_MODE_*), 0}
 *   CGROUP_ATTACH          {target cgroup id, via, 0}; via 0 = write-open of
 *                          cgroup.procs/cgroup.threads, via 1 = clone3() with
 *                          CLONE_INTO_CGROUP (target cgroup id unknown: 0)
 *   SOCKET_CONNECT, CONNECT4, CONNECT6
 *                          {port (host order), addr_hi, addr_lo} where the
 *                          16 address bytes (IPv4 mapped) are
 *                          addr_hi = big-endian u64 of bytes 0..8,
 *                          addr_lo = big-endian u64 of bytes 8..16,
 *                          so ::ffff:10.0.0.2 is hi 0, lo 0x0000ffff0a000002
 * comm      the caller's comm, NUL-padded
 */
struct rauha_event {
	__u64 time_ns;
	__u32 pid;
	__u32 zone;
	__u32 hook;
	__s32 err;
	__u32 target_zone;
	__u32 _pad;
	__u64 target[3];
	char comm[RAUHA_COMM_LEN];
};

/* counters value (per CPU), one slot per enum rauha_hook */
struct rauha_counter {
	__u64 allowed; /* decisions that allowed a caller in a zone */
	__u64 denied;
};

/* ----------------------------------------------------------------- maps */

/*
 * Map names are what rauhad looks up; every map is pinned by name
 * (LIBBPF_PIN_BY_NAME) so a loader given a pin path reuses them after a
 * restart of rauhad.
 */
#define RAUHA_MAP_ZONE_CGROUPS "zone_cgroups"   /* HASH __u64 cgroup id -> __u32 zone */
#define RAUHA_MAP_ZONE_POLICIES "zone_policies" /* HASH __u32 zone -> rauha_zone_policy */
#define RAUHA_MAP_INODE_OWNERS "inode_owners"   /* HASH rauha_inode_key -> __u32 zone */
#define RAUHA_MAP_ZONE_PAIRS "zone_pairs"       /* HASH rauha_zone_pair -> __u32 1 */
#define RAUHA_MAP_EGRESS_ALLOW "egress_allow"   /* LPM_TRIE rauha_egress_key -> rauha_egress_value */
#define RAUHA_MAP_LISTENERS "listeners"         /* HASH rauha_listen_key -> __u32 zone */
#define RAUHA_MAP_EVENTS "events"               /* RINGBUF of rauha_event */
#define RAUHA_MAP_COUNTERS "counters"           /* PERCPU_ARRAY [RAUHA_HOOK_MAX] rauha_counter */

#define RAUHA_ZONE_CGROUPS_MAX 16384
#define RAUHA_ZONE_POLICIES_MAX 4096
#define RAUHA_INODE_OWNERS_MAX 262144
#define RAUHA_ZONE_PAIRS_MAX 16384
#define RAUHA_EGRESS_ALLOW_MAX 16384
#define RAUHA_LISTENERS_MAX 16384
#define RAUHA_EVENTS_BYTES (256 * 1024)

#endif /* RAUHA_H */
