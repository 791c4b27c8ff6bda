// SPDX-License-Identifier: GPL-2.0
/*
 * rauha.bpf.c: Rauha's kernel-side zone isolation, one object for every
 * kernel rauhad supports (CO-RE: field offsets come from the running
 * kernel's BTF at load time, never from this file).
 *
 * Design:
 *  - A caller's zone is zone_cgroups[bpf_get_current_cgroup_id()]; callers
 *    outside every zone (absent or 0) are allowed everything and counted
 *    nowhere. A zone without a zone_policies entry has no flags: it is
 *    allowed everything but counted.
 *  - Each program is a thin SEC() function that gathers facts from the hook
 *    arguments and asks one static __always_inline *_allowed() function for
 *    the decision. A denial bumps counters[hook].denied and emits one
 *    rauha_event; an allow of a zoned caller bumps counters[hook].allowed.
 *  - BPF-LSM programs (lsm/...) do the enforcing where the kernel has
 *    BPF-LSM. cgroup/connect4 and connect6 repeat the connect decision for
 *    hosts without it; attach one or the other, not both, or a connect is
 *    counted twice. cgroup/post_bind4 and post_bind6 fill `listeners` and
 *    are needed in both cases.
 *  - Ownership of files and listeners is learned as it happens: a file
 *    created by open(O_CREAT) in a zone belongs to that zone; an address
 *    bound in a zone belongs to that zone until someone binds it again.
 *
 * All loops are bounded by constants, so the programs verify on 6.1.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "rauha.h"

char LICENSE[] SEC("license") = "GPL";

/* Kernel macros that BTF does not carry. */
#define RAUHA_EPERM 1
#define RAUHA_EACCES 13
#define RAUHA_MAX_ERRNO 4095
#define RAUHA_FMODE_WRITE 0x2U
#define RAUHA_FMODE_CREATED 0x100000U /* 1 << 20: 6.1 and current kernels alike */
#define RAUHA_CGROUP2_SUPER_MAGIC 0x63677270UL
#define RAUHA_CLONE_INTO_CGROUP 0x200000000ULL

/* The whole key (zone + IPv6 address) for an exact LPM lookup. */
#define RAUHA_EGRESS_FULL_PREFIX (RAUHA_EGRESS_ZONE_BITS + RAUHA_EGRESS_ADDR_BITS)

/* ----------------------------------------------------------------- maps */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, RAUHA_ZONE_CGROUPS_MAX);
	__type(key, __u64);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} zone_cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, RAUHA_ZONE_POLICIES_MAX);
	__type(key, __u32);
	__type(value, struct rauha_zone_policy);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} zone_policies SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, RAUHA_INODE_OWNERS_MAX);
	__type(key, struct rauha_inode_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} inode_owners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, RAUHA_ZONE_PAIRS_MAX);
	__type(key, struct rauha_zone_pair);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} zone_pairs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, RAUHA_EGRESS_ALLOW_MAX);
	__type(key, struct rauha_egress_key);
	__type(value, struct rauha_egress_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} egress_allow SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, RAUHA_LISTENERS_MAX);
	__type(key, struct rauha_listen_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} listeners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, RAUHA_EVENTS_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RAUHA_HOOK_MAX);
	__type(key, __u32);
	__type(value, struct rauha_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} counters SEC(".maps");

/* --------------------------------------------------------- zones, verdicts */

static __always_inline __u32 zone_of_cgroup(__u64 cgroup_id)
{
	__u32 *zone = bpf_map_lookup_elem(&zone_cgroups, &cgroup_id);

	return zone ? *zone : RAUHA_ZONE_NONE;
}

static __always_inline __u32 current_zone(void)
{
	return zone_of_cgroup(bpf_get_current_cgroup_id());
}

/* The zone of a task: its cgroup on the default (v2) hierarchy. */
static __always_inline __u32 task_zone(struct task_struct *task)
{
	return zone_of_cgroup(BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id));
}

static __always_inline __u32 zone_flags(__u32 zone)
{
	struct rauha_zone_policy *policy = bpf_map_lookup_elem(&zone_policies, &zone);

	return policy ? policy->flags : 0;
}

static __always_inline bool pair_allowed(__u32 from, __u32 to)
{
	struct rauha_zone_pair pair = { .from = from, .to = to };
	__u32 *allowed = bpf_map_lookup_elem(&zone_pairs, &pair);

	return allowed && *allowed;
}

/*
 * The rule shared by files, exec, signals and ptrace: reaching something of
 * `other` is denied when it belongs to another zone and `zone` has `flag`.
 * Allowed pairs do not open these: a policy's allowed_zones is about
 * connections only (see socket_connect).
 */
static __always_inline bool cross_zone_allowed(__u32 zone, __u32 flags, __u32 flag, __u32 other)
{
	if (other == RAUHA_ZONE_NONE || other == zone)
		return true;
	return !(flags & flag);
}

/*
 * The counters are per CPU, so a plain increment does: no locked
 * instruction on the hot path of every open. (A program preempted on the
 * same CPU can lose an increment; these are statistics, not decisions.)
 */
static __always_inline void count(__u32 slot, bool denied)
{
	struct rauha_counter *counter = bpf_map_lookup_elem(&counters, &slot);

	if (!counter)
		return;
	if (denied)
		counter->denied++;
	else
		counter->allowed++;
}

static __always_inline int allow(__u32 hook)
{
	count(hook, false);
	return 0;
}

static __always_inline void emit(__u32 zone, __u32 hook, int err, __u32 target_zone,
				 __u64 target0, __u64 target1, __u64 target2)
{
	struct rauha_event *event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);

	if (!event) {
		count(RAUHA_COUNTER_EVENTS_LOST, true);
		return;
	}
	/* Ring buffer memory is not zeroed: write every byte. */
	event->time_ns = bpf_ktime_get_boot_ns();
	event->pid = bpf_get_current_pid_tgid() >> 32;
	event->zone = zone;
	event->hook = hook;
	event->err = err;
	event->target_zone = target_zone;
	event->_pad = 0;
	event->target[0] = target0;
	event->target[1] = target1;
	event->target[2] = target2;
	if (bpf_get_current_comm(event->comm, sizeof(event->comm)))
		__builtin_memset(event->comm, 0, sizeof(event->comm));
	bpf_ringbuf_submit(event, 0);
}

static __always_inline int deny(__u32 zone, __u32 hook, int err, __u32 target_zone,
				__u64 target0, __u64 target1, __u64 target2)
{
	count(hook, true);
	emit(zone, hook, err, target_zone, target0, target1, target2);
	return err;
}

/*
 * An earlier BPF-LSM program on the same hook already denied: keep its
 * verdict, clamped to an errno so that kernels which check the range of an
 * LSM program's return value accept this one.
 */
static __always_inline int earlier_verdict(int ret)
{
	if (ret < 0 && ret >= -RAUHA_MAX_ERRNO)
		return ret;
	return -RAUHA_EPERM;
}

/* ---------------------------------------------------------------- files */

/*
 * LSM programs get BTF-typed pointers: plain loads (CO-RE relocated through
 * vmlinux.h's preserve_access_index) walk them without a helper call each,
 * which matters on a hook that runs for every open().
 */
static __always_inline void inode_key_of(struct inode *inode, struct rauha_inode_key *key)
{
	key->dev = inode->i_sb->s_dev;
	key->ino = inode->i_ino;
}

static __always_inline __u32 inode_owner(const struct rauha_inode_key *key)
{
	__u32 *owner = bpf_map_lookup_elem(&inode_owners, key);

	return owner ? *owner : RAUHA_ZONE_NONE;
}

/*
 * open(O_CREAT) created the inode: it now belongs to the caller's zone.
 * Created outside every zone, it belongs to nobody: drop what a deleted
 * file with the same inode number may have left behind.
 */
static __always_inline void record_creation(__u32 zone, const struct rauha_inode_key *key)
{
	if (zone == RAUHA_ZONE_NONE)
		bpf_map_delete_elem(&inode_owners, key);
	else
		bpf_map_update_elem(&inode_owners, key, &zone, BPF_ANY);
}

static __always_inline bool file_open_allowed(__u32 zone, __u32 flags, __u32 owner)
{
	return cross_zone_allowed(zone, flags, RAUHA_F_ISOLATE_FILES, owner);
}

static __always_inline bool exec_allowed(__u32 zone, __u32 flags, __u32 owner)
{
	return cross_zone_allowed(zone, flags, RAUHA_F_ISOLATE_EXEC, owner);
}

/* ------------------------------------------------------- cgroup attach */

/*
 * kernfs_node::parent became __parent (an RCU pointer) in 6.15. Both
 * flavors are declared here so the object builds against either vmlinux.h
 * and relocates against either kernel; the branch not taken is poisoned by
 * the loader and removed by the verifier as dead code.
 */
struct kernfs_node___parent {
	struct kernfs_node *parent;
} __attribute__((preserve_access_index));

struct kernfs_node___rcu_parent {
	struct kernfs_node *__parent;
} __attribute__((preserve_access_index));

static __always_inline struct kernfs_node *kernfs_parent(struct kernfs_node *kn)
{
	if (bpf_core_field_exists(struct kernfs_node___rcu_parent, __parent))
		return BPF_CORE_READ((struct kernfs_node___rcu_parent *)kn, __parent);
	return BPF_CORE_READ((struct kernfs_node___parent *)kn, parent);
}

/* Name of a cgroup2 file that moves a task when written. */
static __always_inline bool is_attach_file_name(const char *name, long len)
{
	/* len includes the NUL: "cgroup.procs" is 13, "cgroup.threads" 15 */
	const char prefix[] = "cgroup.";
	const char procs[] = "procs";
	const char threads[] = "threads";

	if (len != sizeof("cgroup.procs") && len != sizeof("cgroup.threads"))
		return false;
#pragma unroll
	for (int i = 0; i < sizeof(prefix) - 1; i++)
		if (name[i] != prefix[i])
			return false;
	if (len == sizeof("cgroup.procs")) {
#pragma unroll
		for (int i = 0; i < sizeof(procs); i++)
			if (name[sizeof(prefix) - 1 + i] != procs[i])
				return false;
		return true;
	}
#pragma unroll
	for (int i = 0; i < sizeof(threads); i++)
		if (name[sizeof(prefix) - 1 + i] != threads[i])
			return false;
	return true;
}

/*
 * 6.1 has no LSM hook for moving a task between cgroups, so the move is
 * caught where it starts: opening cgroup.procs or cgroup.threads of a
 * cgroup2 directory for writing. On success *cgroup_id is the id of that
 * directory (the cgroup the task would move into).
 */
static __always_inline bool is_cgroup_attach_open(struct file *file, __u64 *cgroup_id)
{
	struct inode *inode;
	struct kernfs_node *kn, *parent;
	char name[16] = {};
	long len;

	if (!(file->f_mode & RAUHA_FMODE_WRITE))
		return false;
	inode = file->f_inode;
	if (inode->i_sb->s_magic != RAUHA_CGROUP2_SUPER_MAGIC)
		return false;
	/* on kernfs, i_private is the file's kernfs_node */
	kn = BPF_CORE_READ(inode, i_private);
	if (!kn)
		return false;
	len = bpf_probe_read_kernel_str(name, sizeof(name), BPF_CORE_READ(kn, name));
	if (!is_attach_file_name(name, len))
		return false;
	parent = kernfs_parent(kn);
	if (!parent)
		return false;
	*cgroup_id = BPF_CORE_READ(parent, id);
	return true;
}

static __always_inline bool cgroup_attach_task_allowed(__u32 zone, __u32 flags, __u32 target_zone)
{
	if (!(flags & RAUHA_F_ISOLATE_CGROUP))
		return true;
	return target_zone == zone;
}

/* --------------------------------------------------------------- network */

/*
 * An endpoint is a rauha_listen_key: family after mapping, port in host
 * order, address as 16 bytes with IPv4 mapped into IPv6.
 */
static __always_inline void endpoint_set_v4(struct rauha_listen_key *ep, __u32 addr_be, __u16 port)
{
	__builtin_memset(ep, 0, sizeof(*ep));
	ep->family = RAUHA_AF_INET;
	ep->port = port;
	ep->addr[10] = 0xff;
	ep->addr[11] = 0xff;
	__builtin_memcpy(&ep->addr[12], &addr_be, sizeof(addr_be));
}

static __always_inline bool addr_is_v4_mapped(const __u8 addr[16])
{
#pragma unroll
	for (int i = 0; i < 10; i++)
		if (addr[i])
			return false;
	return addr[10] == 0xff && addr[11] == 0xff;
}

static __always_inline void endpoint_set_v6(struct rauha_listen_key *ep, const __u32 addr_be[4],
					    __u16 port)
{
	__builtin_memset(ep, 0, sizeof(*ep));
	ep->port = port;
	__builtin_memcpy(ep->addr, addr_be, 16);
	ep->family = addr_is_v4_mapped(ep->addr) ? RAUHA_AF_INET : RAUHA_AF_INET6;
}

/* 127.0.0.0/8 (mapped) or ::1 */
static __always_inline bool endpoint_is_loopback(const struct rauha_listen_key *ep)
{
	if (ep->family == RAUHA_AF_INET)
		return ep->addr[12] == 127;
#pragma unroll
	for (int i = 0; i < 15; i++)
		if (ep->addr[i])
			return false;
	return ep->addr[15] == 1;
}

static __always_inline __u32 listener_lookup(const struct rauha_listen_key *key)
{
	__u32 *zone = bpf_map_lookup_elem(&listeners, key);

	return zone ? *zone : RAUHA_ZONE_NONE;
}

/*
 * The zone listening on ep: the exact address first. A wildcard listener
 * (0.0.0.0, or :: which also takes IPv4) is considered only for loopback
 * destinations: `listeners` does not know network namespaces, and for any
 * other address a wildcard entry would pin every host on that port to the
 * listening zone (false denials, and an allowed pair would skip egress).
 */
static __always_inline __u32 listener_zone(const struct rauha_listen_key *ep)
{
	struct rauha_listen_key key = *ep;
	__u32 zone = listener_lookup(&key);

	if (zone != RAUHA_ZONE_NONE || !endpoint_is_loopback(ep))
		return zone;
	__builtin_memset(key.addr, 0, sizeof(key.addr));
	if (ep->family == RAUHA_AF_INET) {
		key.addr[10] = 0xff;
		key.addr[11] = 0xff;
		zone = listener_lookup(&key);
		if (zone != RAUHA_ZONE_NONE)
			return zone;
		__builtin_memset(key.addr, 0, sizeof(key.addr));
		key.family = RAUHA_AF_INET6;
	}
	return listener_lookup(&key);
}

static __always_inline bool port_listed(const struct rauha_egress_value *rule, __u16 port)
{
	__u32 n = rule->nports;

	if (n == 0)
		return true;
#pragma unroll
	for (int i = 0; i < RAUHA_EGRESS_PORTS; i++)
		if (i < n && rule->ports[i] == port)
			return true;
	return false;
}

static __always_inline bool egress_allowed(__u32 zone, __u32 flags, const struct rauha_listen_key *ep)
{
	struct rauha_egress_key key;
	struct rauha_egress_value *rule;

	if (!(flags & RAUHA_F_EGRESS_LIMITED))
		return true;
	if (endpoint_is_loopback(ep))
		return true;
	__builtin_memset(&key, 0, sizeof(key));
	key.prefixlen = RAUHA_EGRESS_FULL_PREFIX;
	key.zone = zone;
	__builtin_memcpy(key.addr, ep->addr, sizeof(key.addr));
	rule = bpf_map_lookup_elem(&egress_allow, &key);
	return rule && port_listed(rule, ep->port);
}

static __always_inline int deny_connect(__u32 zone, __u32 hook, int err, __u32 target_zone,
					const struct rauha_listen_key *ep)
{
	__u64 hi, lo;

	__builtin_memcpy(&hi, &ep->addr[0], sizeof(hi));
	__builtin_memcpy(&lo, &ep->addr[8], sizeof(lo));
	return deny(zone, hook, err, target_zone, ep->port, bpf_be64_to_cpu(hi), bpf_be64_to_cpu(lo));
}

/*
 * The connect decision, shared by lsm/socket_connect and cgroup/connect4/6.
 * First the cross-zone rule: connecting to another zone's listener is
 * allowed outright for an allowed pair, denied with cross_zone_err under
 * RAUHA_F_ZONES_LIMITED. Then egress: under RAUHA_F_EGRESS_LIMITED only
 * loopback and egress_allow (address and port) are reachable, else -EPERM.
 * Returns 0 or the negative errno.
 */
static __always_inline int connect_allowed(__u32 zone, __u32 hook, const struct rauha_listen_key *ep,
					   int cross_zone_err)
{
	__u32 flags = zone_flags(zone);
	__u32 owner = listener_zone(ep);

	if (owner != RAUHA_ZONE_NONE && owner != zone) {
		if (pair_allowed(zone, owner))
			return allow(hook);
		if (flags & RAUHA_F_ZONES_LIMITED)
			return deny_connect(zone, hook, cross_zone_err, owner, ep);
	}
	if (!egress_allowed(zone, flags, ep))
		return deny_connect(zone, hook, -RAUHA_EPERM, owner, ep);
	return allow(hook);
}

/* Layouts of the UAPI socket addresses; the same on every kernel. */
struct rauha_sockaddr_in {
	__u16 family;
	__u16 port; /* network order */
	__u32 addr; /* network order */
};

struct rauha_sockaddr_in6 {
	__u16 family;
	__u16 port; /* network order */
	__u32 flowinfo;
	__u32 addr[4]; /* network order */
};

/* Reads an AF_INET or AF_INET6 sockaddr given to connect(); false for others. */
static __always_inline bool endpoint_from_sockaddr(struct sockaddr *address, int addrlen,
						   struct rauha_listen_key *ep)
{
	__u16 family = 0;

	if (addrlen < (int)sizeof(family) ||
	    bpf_probe_read_kernel(&family, sizeof(family), &address->sa_family))
		return false;
	if (family == RAUHA_AF_INET) {
		struct rauha_sockaddr_in sin;

		if (addrlen < (int)sizeof(sin) || bpf_probe_read_kernel(&sin, sizeof(sin), address))
			return false;
		endpoint_set_v4(ep, sin.addr, bpf_ntohs(sin.port));
		return true;
	}
	if (family == RAUHA_AF_INET6) {
		struct rauha_sockaddr_in6 sin6;

		if (addrlen < (int)sizeof(sin6) || bpf_probe_read_kernel(&sin6, sizeof(sin6), address))
			return false;
		endpoint_set_v6(ep, sin6.addr, bpf_ntohs(sin6.port));
		return true;
	}
	return false;
}

/* ------------------------------------------------------- LSM programs */

SEC("lsm/file_open")
int BPF_PROG(file_open, struct file *file, int ret)
{
	struct rauha_inode_key key = {};
	__u32 zone, flags, owner;
	__u64 cgroup_id = 0;

	if (ret)
		return earlier_verdict(ret);
	zone = current_zone();
	if (file->f_mode & RAUHA_FMODE_CREATED) {
		inode_key_of(file->f_inode, &key);
		record_creation(zone, &key);
		return zone == RAUHA_ZONE_NONE ? 0 : allow(RAUHA_HOOK_FILE_OPEN);
	}
	if (zone == RAUHA_ZONE_NONE)
		return 0;
	flags = zone_flags(zone);

	if ((flags & RAUHA_F_ISOLATE_CGROUP) && is_cgroup_attach_open(file, &cgroup_id)) {
		__u32 target_zone = zone_of_cgroup(cgroup_id);

		if (!cgroup_attach_task_allowed(zone, flags, target_zone))
			return deny(zone, RAUHA_HOOK_CGROUP_ATTACH, -RAUHA_EACCES, target_zone,
				    cgroup_id, 0, 0);
		count(RAUHA_HOOK_CGROUP_ATTACH, false);
	}

	inode_key_of(file->f_inode, &key);
	owner = inode_owner(&key);
	if (!file_open_allowed(zone, flags, owner))
		return deny(zone, RAUHA_HOOK_FILE_OPEN, -RAUHA_EACCES, owner, key.dev, key.ino, 0);
	return allow(RAUHA_HOOK_FILE_OPEN);
}

SEC("lsm/bprm_check_security")
int BPF_PROG(bprm_check_security, struct linux_binprm *bprm, int ret)
{
	struct rauha_inode_key key = {};
	__u32 zone, flags, owner;

	if (ret)
		return earlier_verdict(ret);
	zone = current_zone();
	if (zone == RAUHA_ZONE_NONE)
		return 0;
	flags = zone_flags(zone);
	inode_key_of(bprm->file->f_inode, &key);
	owner = inode_owner(&key);
	if (!exec_allowed(zone, flags, owner))
		return deny(zone, RAUHA_HOOK_BPRM_CHECK, -RAUHA_EACCES, owner, key.dev, key.ino, 0);
	return allow(RAUHA_HOOK_BPRM_CHECK);
}

static __always_inline bool ptrace_access_allowed(__u32 zone, __u32 flags, __u32 target_zone)
{
	return cross_zone_allowed(zone, flags, RAUHA_F_ISOLATE_PTRACE, target_zone);
}

SEC("lsm/ptrace_access_check")
int BPF_PROG(ptrace_access_check, struct task_struct *child, unsigned int mode, int ret)
{
	__u32 zone, target_zone;

	if (ret)
		return earlier_verdict(ret);
	zone = current_zone();
	if (zone == RAUHA_ZONE_NONE)
		return 0;
	target_zone = task_zone(child);
	if (!ptrace_access_allowed(zone, zone_flags(zone), target_zone))
		return deny(zone, RAUHA_HOOK_PTRACE, -RAUHA_EACCES, target_zone,
			    BPF_CORE_READ(child, tgid), mode, 0);
	return allow(RAUHA_HOOK_PTRACE);
}

static __always_inline bool task_kill_allowed(__u32 zone, __u32 flags, __u32 target_zone)
{
	return cross_zone_allowed(zone, flags, RAUHA_F_ISOLATE_SIGNAL, target_zone);
}

SEC("lsm/task_kill")
int BPF_PROG(task_kill, struct task_struct *p, struct kernel_siginfo *info, int sig,
	     const struct cred *cred, int ret)
{
	__u32 zone, target_zone;

	if (ret)
		return earlier_verdict(ret);
	/* cred is set when the signal is sent for someone else than current
	 * (USB async I/O completion): current is not the sender then. */
	if (cred)
		return 0;
	zone = current_zone();
	if (zone == RAUHA_ZONE_NONE)
		return 0;
	target_zone = task_zone(p);
	if (!task_kill_allowed(zone, zone_flags(zone), target_zone))
		return deny(zone, RAUHA_HOOK_TASK_KILL, -RAUHA_EACCES, target_zone,
			    BPF_CORE_READ(p, tgid), (__u32)sig, 0);
	return allow(RAUHA_HOOK_TASK_KILL);
}

/*
 * clone3(CLONE_INTO_CGROUP) moves the new task without opening
 * cgroup.procs, and task_alloc does not see the target cgroup: under
 * RAUHA_F_ISOLATE_CGROUP it is denied whatever the target.
 */
SEC("lsm/task_alloc")
int BPF_PROG(task_alloc, struct task_struct *task, unsigned long clone_flags, int ret)
{
	__u32 zone, flags;

	if (ret)
		return earlier_verdict(ret);
	if (!(clone_flags & RAUHA_CLONE_INTO_CGROUP))
		return 0;
	zone = current_zone();
	if (zone == RAUHA_ZONE_NONE)
		return 0;
	flags = zone_flags(zone);
	if (flags & RAUHA_F_ISOLATE_CGROUP)
		return deny(zone, RAUHA_HOOK_CGROUP_ATTACH, -RAUHA_EACCES, RAUHA_ZONE_NONE, 0, 1, 0);
	return allow(RAUHA_HOOK_CGROUP_ATTACH);
}

SEC("lsm/socket_connect")
int BPF_PROG(socket_connect, struct socket *sock, struct sockaddr *address, int addrlen, int ret)
{
	struct rauha_listen_key ep;
	__u32 zone;

	if (ret)
		return earlier_verdict(ret);
	zone = current_zone();
	if (zone == RAUHA_ZONE_NONE)
		return 0;
	if (!endpoint_from_sockaddr(address, addrlen, &ep))
		return 0;
	return connect_allowed(zone, RAUHA_HOOK_SOCKET_CONNECT, &ep, -RAUHA_EACCES);
}

/* ---------------------------------------------------- cgroup programs */

/* cgroup/connect*: return 1 to allow, 0 to deny (the caller gets EPERM). */

SEC("cgroup/connect4")
int connect4(struct bpf_sock_addr *ctx)
{
	struct rauha_listen_key ep;
	__u32 zone = current_zone();

	if (zone == RAUHA_ZONE_NONE)
		return 1;
	endpoint_set_v4(&ep, ctx->user_ip4, bpf_ntohs((__u16)ctx->user_port));
	return connect_allowed(zone, RAUHA_HOOK_CONNECT4, &ep, -RAUHA_EPERM) ? 0 : 1;
}

SEC("cgroup/connect6")
int connect6(struct bpf_sock_addr *ctx)
{
	struct rauha_listen_key ep;
	__u32 addr[4];
	__u32 zone = current_zone();

	if (zone == RAUHA_ZONE_NONE)
		return 1;
	addr[0] = ctx->user_ip6[0];
	addr[1] = ctx->user_ip6[1];
	addr[2] = ctx->user_ip6[2];
	addr[3] = ctx->user_ip6[3];
	endpoint_set_v6(&ep, addr, bpf_ntohs((__u16)ctx->user_port));
	return connect_allowed(zone, RAUHA_HOOK_CONNECT6, &ep, -RAUHA_EPERM) ? 0 : 1;
}

/*
 * cgroup/post_bind*: run after bind() succeeded, so an entry names an
 * address the zone really holds (a failed bind claims nothing). A bind
 * outside every zone removes a stale entry for the same address. Port 0
 * (IP_BIND_ADDRESS_NO_PORT) is not a listener. Always allow.
 */
static __always_inline void record_listener(const struct rauha_listen_key *key)
{
	__u32 zone = current_zone();

	if (key->port == 0)
		return;
	if (zone == RAUHA_ZONE_NONE)
		bpf_map_delete_elem(&listeners, key);
	else
		bpf_map_update_elem(&listeners, key, &zone, BPF_ANY);
}

SEC("cgroup/post_bind4")
int post_bind4(struct bpf_sock *sk)
{
	struct rauha_listen_key key;

	endpoint_set_v4(&key, sk->src_ip4, (__u16)sk->src_port);
	record_listener(&key);
	return 1;
}

SEC("cgroup/post_bind6")
int post_bind6(struct bpf_sock *sk)
{
	struct rauha_listen_key key;
	__u32 addr[4];

	addr[0] = sk->src_ip6[0];
	addr[1] = sk->src_ip6[1];
	addr[2] = sk->src_ip6[2];
	addr[3] = sk->src_ip6[3];
	endpoint_set_v6(&key, addr, (__u16)sk->src_port);
	record_listener(&key);
	return 1;
}
