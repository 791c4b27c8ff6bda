//! The managers against a temp-dir cgroupfs (files where the kernel's
//! would be): what each writes where, and what it reads back.

use super::*;

fn rl(r: &ResourcesSection) -> RootLimits {
    RootLimits {
        resources: r.clone(),
        ..Default::default()
    }
}

fn fake_v1() -> PathBuf {
    let root = std::env::temp_dir().join(format!("rauha-cg-{}", uuid::Uuid::new_v4()));
    for c in ["memory", "pids", "cpu", "cpuacct", "freezer"] {
        std::fs::create_dir_all(root.join(c)).expect("dir");
        std::fs::write(root.join(c).join("cgroup.procs"), "").expect("procs");
    }
    root
}

#[test]
fn v1_limits_land_in_each_controller() {
    let root = fake_v1();
    let fs = open(&root, "rauha").expect("v1");
    assert_eq!(fs.layout(), "v1");
    let limits = ResourcesSection {
        cpu_shares: Some(512),
        cpu_limit: Some(0.5),
        memory_limit: Some(64 << 20),
        pids_max: Some(32),
        disk_limit: None,
    };
    let cg = fs.create("z1", &limits).expect("create");
    assert_eq!(cg.join.len(), 5);
    assert_eq!(
        cg.work_procs,
        Some(root.join("freezer/rauha/z1/work/cgroup.procs"))
    );
    let read = |p: &str| std::fs::read_to_string(root.join(p)).expect(p);
    assert_eq!(
        read("memory/rauha/z1/memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(read("pids/rauha/z1/pids.max"), "32");
    assert_eq!(read("cpu/rauha/z1/cpu.shares"), "512");
    assert_eq!(read("cpu/rauha/z1/cpu.cfs_quota_us"), "50000");
    assert_eq!(fs.list().expect("list"), vec!["z1".to_string()]);
    std::fs::remove_dir_all(root).expect("cleanup");
}

#[test]
fn v1_container_roots_get_cgroups_of_their_own() {
    let root = fake_v1();
    let fs = open(&root, "rauha").expect("v1");
    let zone = ResourcesSection {
        cpu_limit: Some(1.0),
        ..Default::default()
    };
    fs.create("z", &zone).expect("create");
    let own = ResourcesSection {
        cpu_limit: Some(2.0),
        memory_limit: Some(32 << 20),
        pids_max: Some(16),
        cpu_shares: None,
        disk_limit: None,
    };
    assert!(fs.create_root("z", "c1", &rl(&own)).expect("create root"));
    let read = |p: &str| std::fs::read_to_string(root.join(p)).expect(p);
    assert_eq!(
        read("memory/rauha/z/work/c1/memory.limit_in_bytes"),
        (32u64 << 20).to_string()
    );
    assert_eq!(read("pids/rauha/z/work/c1/pids.max"), "16");
    // Above the zone's quota: the zone's is the ceiling (v1 refuses more).
    assert_eq!(read("cpu/rauha/z/work/c1/cpu.cfs_quota_us"), "100000");
    assert!(root.join("freezer/rauha/z/work/c1").is_dir());
    // No quota of its own stays none; a lower zone quota lowers the
    // container's first (v1 would refuse it otherwise).
    let plain = ResourcesSection {
        memory_limit: Some(16 << 20),
        ..Default::default()
    };
    assert!(fs.create_root("z", "c2", &rl(&plain)).expect("create root"));
    assert_eq!(read("cpu/rauha/z/work/c2/cpu.cfs_quota_us"), "-1");
    // A name that is a cgroup file's: a clear error, nothing made.
    std::fs::write(root.join("memory/rauha/z/work/tasks"), "").expect("w");
    assert!(matches!(
        fs.create_root("z", "tasks", &rl(&plain)),
        Err(CgroupError::NameTaken { .. })
    ));
    assert!(!root.join("pids/rauha/z/work/tasks").exists());
    // unified (v2) files on a v1 host: refused, naming them.
    let mut with_unified = rl(&plain);
    with_unified
        .unified
        .insert("memory.oom.group".into(), "1".into());
    assert!(matches!(
        fs.set_root_limits("z", "c2", &with_unified),
        Err(CgroupError::UnifiedOnV1 { .. })
    ));
    let lower = ResourcesSection {
        cpu_limit: Some(0.5),
        ..Default::default()
    };
    fs.set_limits("z", &lower).expect("lower the zone's quota");
    assert_eq!(read("cpu/rauha/z/work/c1/cpu.cfs_quota_us"), "50000");
    assert_eq!(read("cpu/rauha/z/work/c2/cpu.cfs_quota_us"), "-1");
    assert_eq!(read("cpu/rauha/z/cpu.cfs_quota_us"), "50000");
    // A zone made before containers had cgroups (no `work` in memory):
    // its containers share the zone's.
    std::fs::create_dir_all(root.join("memory/rauha/old")).expect("dir");
    std::fs::create_dir_all(root.join("freezer/rauha/old/work")).expect("dir");
    assert!(!fs.create_root("old", "c1", &rl(&plain)).expect("old zone"));
    // The zone's pids include its containers' cgroups.
    std::fs::write(root.join("memory/rauha/z/work/c1/cgroup.procs"), "4242\n").expect("w");
    // A kill in a container counts for the zone too (v1 counts it only
    // in the victim's cgroup).
    std::fs::write(
        root.join("memory/rauha/z/work/c1/memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
    )
    .expect("w");
    assert_eq!(fs.usage("z").expect("usage").oom_kills, 1);
    assert!(fs.pids("z").expect("pids").contains(&4242));
    std::fs::write(
        root.join("memory/rauha/z/work/c1/memory.usage_in_bytes"),
        "8192\n",
    )
    .expect("w");
    assert_eq!(fs.root_usage("z", "c1").expect("usage").memory_bytes, 8192);
    std::fs::remove_dir_all(root).expect("cleanup");
}

#[test]
fn v2_zones_leave_their_cgroup_free_to_hand_down_limits() {
    let root = std::env::temp_dir().join(format!("rauha-cg2r-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&root).expect("dir");
    std::fs::write(root.join("cgroup.controllers"), "cpu memory pids").expect("w");
    let fs = open(&root, "rauha").expect("v2");
    let cg = fs
        .create("z", &ResourcesSection::default())
        .expect("create");
    // The agent makes its namespace in the zone's cgroup, then moves
    // to a leaf; the work outside containers is in a leaf too; then the
    // zone and its work hand the controllers down.
    assert_eq!(cg.join, vec![root.join("rauha/z/cgroup.procs")]);
    assert_eq!(
        cg.agent_procs,
        Some(root.join("rauha/z/agent/cgroup.procs"))
    );
    assert_eq!(
        cg.work_procs,
        Some(root.join("rauha/z/work/@zone/cgroup.procs"))
    );
    assert_eq!(cg.containers, vec![root.join("rauha/z/work")]);
    let read = |p: &str| std::fs::read_to_string(root.join(p)).expect(p);
    let own = ResourcesSection {
        memory_limit: Some(32 << 20),
        cpu_limit: Some(0.5),
        ..Default::default()
    };
    assert!(!fs.create_root("z", "early", &rl(&own)).expect("before"));
    fs.delegate("z").expect("delegate");
    assert_eq!(read("rauha/z/cgroup.subtree_control"), v2::CONTROLLERS);
    assert_eq!(read("rauha/z/work/cgroup.subtree_control"), v2::CONTROLLERS);
    assert!(fs.create_root("z", "c1", &rl(&own)).expect("create root"));
    assert_eq!(
        read("rauha/z/work/c1/memory.max"),
        (32u64 << 20).to_string()
    );
    assert_eq!(read("rauha/z/work/c1/cpu.max"), "50000 100000");
    // unified files land in the container's cgroup (kubelet's
    // memory.oom.group).
    let mut with_unified = rl(&own);
    with_unified
        .unified
        .insert("memory.oom.group".into(), "1".into());
    assert!(fs
        .set_root_limits("z", "c1", &with_unified)
        .expect("unified"));
    assert_eq!(read("rauha/z/work/c1/memory.oom.group"), "1");
    // BPF learns every cgroup of the zone as the zone's.
    assert_eq!(fs.unified_ids("z").len(), 5, "z, agent, work, @zone, c1");

    // A zone made before (its agent in the zone's cgroup): containers
    // share the zone's cgroup, as they did.
    std::fs::create_dir_all(root.join("rauha/old/work")).expect("dir");
    assert!(!fs.create_root("old", "c1", &rl(&own)).expect("create root"));
    assert!(!root.join("rauha/old/work/c1").exists());
    assert!(!fs.set_root_limits("old", "c1", &rl(&own)).expect("set"));
    std::fs::remove_dir_all(root).expect("cleanup");
}

#[test]
fn v1_usage_reads_back() {
    let root = fake_v1();
    let fs = open(&root, "rauha").expect("v1");
    fs.create("z", &ResourcesSection::default())
        .expect("create");
    std::fs::write(root.join("memory/rauha/z/memory.usage_in_bytes"), "4096\n").expect("w");
    std::fs::write(
        root.join("memory/rauha/z/memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    )
    .expect("w");
    std::fs::write(root.join("cpuacct/rauha/z/cpuacct.usage"), "5000000\n").expect("w");
    std::fs::write(root.join("pids/rauha/z/pids.current"), "3\n").expect("w");
    std::fs::write(
        root.join("cpuacct/rauha/z/cpuacct.stat"),
        "user 30\nsystem 12\n",
    )
    .expect("w");
    std::fs::write(
        root.join("cpu/rauha/z/cpu.stat"),
        "nr_periods 40\nnr_throttled 7\nthrottled_time 2500000\n",
    )
    .expect("w");
    std::fs::write(
        root.join("memory/rauha/z/memory.stat"),
        "rss 1\ncache 2\ntotal_rss 1024\ntotal_rss_huge 0\ntotal_cache 2048\ntotal_mapped_file 512\n",
    )
    .expect("w");
    std::fs::write(
        root.join("memory/rauha/z/memory.memsw.usage_in_bytes"),
        "5120\n",
    )
    .expect("w");
    let u = fs.usage("z").expect("usage");
    assert_eq!(
        (u.memory_bytes, u.oom_kills, u.cpu_time_us, u.pids),
        (4096, 2, 5000, 3)
    );
    // USER_HZ ticks (100 a second) and nanoseconds, in µs.
    assert_eq!((u.cpu_user_us, u.cpu_system_us), (300_000, 120_000));
    assert_eq!(
        (u.cpu_periods, u.cpu_throttled_periods, u.cpu_throttled_us),
        (40, 7, 2500)
    );
    assert_eq!(
        (
            u.memory_rss_bytes,
            u.memory_cache_bytes,
            u.memory_mapped_file_bytes,
            u.memory_swap_bytes
        ),
        (1024, 2048, 512, 1024)
    );
    std::fs::remove_dir_all(root).expect("cleanup");
}

#[test]
fn v2_usage_reads_cpu_and_memory_stats() {
    let root = std::env::temp_dir().join(format!("rauha-cg2u-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&root).expect("dir");
    std::fs::write(root.join("cgroup.controllers"), "cpu memory pids").expect("w");
    let fs = open(&root, "rauha").expect("v2");
    fs.create("z", &ResourcesSection::default())
        .expect("create");
    let z = root.join("rauha/z");
    std::fs::write(
        z.join("cpu.stat"),
        "usage_usec 900\nuser_usec 600\nsystem_usec 300\nnr_periods 10\nnr_throttled 4\nthrottled_usec 77\n",
    )
    .expect("w");
    std::fs::write(
        z.join("memory.stat"),
        "anon 100\nanon_thp 0\nfile 200\nkernel 50\nkernel_stack 8\nfile_mapped 30\n",
    )
    .expect("w");
    std::fs::write(z.join("memory.swap.current"), "64\n").expect("w");
    let u = fs.usage("z").expect("usage");
    assert_eq!(
        (u.cpu_time_us, u.cpu_user_us, u.cpu_system_us),
        (900, 600, 300)
    );
    assert_eq!(
        (u.cpu_periods, u.cpu_throttled_periods, u.cpu_throttled_us),
        (10, 4, 77)
    );
    assert_eq!(
        (
            u.memory_rss_bytes,
            u.memory_cache_bytes,
            u.memory_mapped_file_bytes,
            u.memory_kernel_bytes,
            u.memory_swap_bytes
        ),
        (100, 200, 30, 50, 64)
    );
    std::fs::remove_dir_all(root).expect("cleanup");
}

#[test]
fn v2_writes_unified_files() {
    let root = std::env::temp_dir().join(format!("rauha-cg2-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&root).expect("dir");
    std::fs::write(root.join("cgroup.controllers"), "cpu memory pids").expect("w");
    let fs = open(&root, "rauha").expect("v2");
    assert_eq!(fs.layout(), "v2");
    let limits = ResourcesSection {
        cpu_shares: Some(1024),
        cpu_limit: Some(2.0),
        memory_limit: Some(1 << 30),
        pids_max: None,
        disk_limit: None,
    };
    fs.create("z", &limits).expect("create");
    let read = |p: &str| std::fs::read_to_string(root.join(p)).expect(p);
    assert_eq!(read("rauha/z/memory.max"), (1u64 << 30).to_string());
    assert_eq!(read("rauha/z/pids.max"), "max");
    assert_eq!(read("rauha/z/cpu.max"), "200000 100000");
    assert_eq!(read("rauha/cgroup.subtree_control"), v2::CONTROLLERS);
    std::fs::remove_dir_all(root).expect("cleanup");
}

#[test]
fn no_hierarchy_is_a_clear_error() {
    let root = std::env::temp_dir().join(format!("rauha-cg0-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&root).expect("dir");
    assert!(matches!(
        open(&root, "rauha"),
        Err(CgroupError::NoHierarchy { .. })
    ));
    std::fs::remove_dir_all(root).expect("cleanup");
}

// The managers against the recording cgroupfs: the order of what they do.

use super::files::CgroupFiles;
use super::recording::RecordingFiles;

const ROOT: &str = "/cg";

/// A v1 host with memsw (swap accounting) and a freezer.
fn recorded_v1() -> (Arc<RecordingFiles>, Arc<dyn CgroupDriver>) {
    let fs = Arc::new(RecordingFiles::default());
    for c in ["memory", "pids", "cpu,cpuacct", "freezer"] {
        fs.file(&Path::new(ROOT).join(c).join("cgroup.procs"), "");
    }
    let files: Arc<dyn files::CgroupFiles> = fs.clone();
    let cg = open_with(Path::new(ROOT), "rauha", files).expect("v1");
    (fs, cg)
}

fn recorded_v2() -> (Arc<RecordingFiles>, Arc<dyn CgroupDriver>) {
    let fs = Arc::new(RecordingFiles::default());
    fs.file(
        &Path::new(ROOT).join("cgroup.controllers"),
        "cpu memory pids",
    );
    let files: Arc<dyn files::CgroupFiles> = fs.clone();
    let cg = open_with(Path::new(ROOT), "rauha", files).expect("v2");
    (fs, cg)
}

#[test]
fn v1_lifts_memsw_before_it_lowers_memory() {
    let (fs, cg) = recorded_v1();
    let limits = ResourcesSection {
        memory_limit: Some(64 << 20),
        ..Default::default()
    };
    cg.create("z", &ResourcesSection::default())
        .expect("create");
    let dir = Path::new(ROOT).join("memory/rauha/z");
    fs.file(&dir.join("memory.memsw.limit_in_bytes"), "-1");
    cg.set_limits("z", &limits).expect("limits");
    let mem = |f: &str, v: &str| format!("write {} {v}", dir.join(f).display());
    let log = fs.log();
    let at = |line: &str| {
        log.iter()
            .rposition(|l| l == line)
            .unwrap_or_else(|| panic!("{line} not in {log:#?}"))
    };
    let n = (64u64 << 20).to_string();
    assert!(at(&mem("memory.memsw.limit_in_bytes", "-1")) < at(&mem("memory.limit_in_bytes", &n)));
    assert!(at(&mem("memory.limit_in_bytes", &n)) < at(&mem("memory.memsw.limit_in_bytes", &n)));
}

#[test]
fn v1_lowers_containers_quotas_before_the_zones() {
    let (fs, cg) = recorded_v1();
    cg.create("z", &ResourcesSection::default())
        .expect("create");
    let two_cores = ResourcesSection {
        cpu_limit: Some(2.0),
        ..Default::default()
    };
    assert!(cg.create_root("z", "c1", &rl(&two_cores)).expect("root"));
    let half = ResourcesSection {
        cpu_limit: Some(0.5),
        ..Default::default()
    };
    cg.set_limits("z", &half).expect("lower");
    let quotas = fs.writes_to("cpu.cfs_quota_us");
    let zone = Path::new(ROOT).join("cpu,cpuacct/rauha/z");
    let last_two: Vec<&String> = quotas.iter().rev().take(2).rev().collect();
    assert_eq!(
        last_two,
        [
            &format!(
                "write {} 50000",
                zone.join("work/c1/cpu.cfs_quota_us").display()
            ),
            &format!("write {} 50000", zone.join("cpu.cfs_quota_us").display()),
        ],
        "{quotas:#?}"
    );
}

#[test]
fn v1_freezing_that_stalls_is_retried_as_runc_does() {
    let (fs, cg) = recorded_v1();
    cg.create("z", &ResourcesSection::default())
        .expect("create");
    fs.freeze_slowly(1);
    cg.set_frozen("z", true).expect("frozen after a retry");
    let work = Path::new(ROOT).join("freezer/rauha/z/work/freezer.state");
    let state = |v: &str| format!("write {} {v}", work.display());
    assert_eq!(
        fs.writes_to("freezer.state"),
        [state("FROZEN"), state("THAWED"), state("FROZEN")]
    );
    assert_eq!(fs.content(&work).as_deref(), Some("FROZEN"));
    cg.set_frozen("z", false).expect("thawed");
    assert_eq!(fs.content(&work).as_deref(), Some("THAWED"));
}

#[test]
fn v2_waits_for_the_kernel_to_report_frozen() {
    let (fs, cg) = recorded_v2();
    cg.create("z", &ResourcesSection::default())
        .expect("create");
    cg.set_frozen("z", true).expect("frozen");
    let work = Path::new(ROOT).join("rauha/z/work");
    assert!(fs
        .content(&work.join("cgroup.events"))
        .is_some_and(|e| e.contains("frozen 1")));
    cg.set_frozen("z", false).expect("thawed");
}

#[test]
fn v2_makes_the_agent_and_work_leaves_after_the_limits() {
    let (fs, cg) = recorded_v2();
    let limits = ResourcesSection {
        memory_limit: Some(1 << 30),
        pids_max: Some(64),
        ..Default::default()
    };
    let zone = cg.create("z", &limits).expect("create");
    let dir = Path::new(ROOT).join("rauha/z");
    assert_eq!(zone.agent_procs, Some(dir.join("agent/cgroup.procs")));
    let log = fs.log();
    let at = |line: String| {
        log.iter()
            .position(|l| *l == line)
            .unwrap_or_else(|| panic!("{line} not in {log:#?}"))
    };
    let limit = at(format!("write {} 64", dir.join("pids.max").display()));
    let agent = at(format!("mkdir {}", dir.join("agent").display()));
    let plain = at(format!("mkdir {}", dir.join("work/@zone").display()));
    assert!(limit < agent && limit < plain, "{log:#?}");
}

#[test]
fn removal_kills_then_removes_the_deepest_cgroups_first() {
    let (fs, cg) = recorded_v2();
    cg.create("z", &ResourcesSection::default())
        .expect("create");
    cg.delegate("z").expect("delegate");
    assert!(cg
        .create_root("z", "c1", &rl(&ResourcesSection::default()))
        .expect("root"));
    let dir = Path::new(ROOT).join("rauha/z");
    fs.file(&dir.join("cgroup.kill"), "0");
    cg.remove("z").expect("remove");
    let log = fs.log();
    let at = |line: String| {
        log.iter()
            .position(|l| *l == line)
            .unwrap_or_else(|| panic!("{line} not in {log:#?}"))
    };
    let kill = at(format!("write {} 1", dir.join("cgroup.kill").display()));
    let c1 = at(format!("rmdir {}", dir.join("work/c1").display()));
    let work = at(format!("rmdir {}", dir.join("work").display()));
    let zone = at(format!("rmdir {}", dir.display()));
    assert!(kill < c1 && c1 < work && work < zone, "{log:#?}");
    assert!(!fs.is_dir(&dir));
}

#[test]
fn parents_made_for_a_zone_go_with_the_last_zone_and_found_ones_stay() {
    let (fs, cg) = recorded_v2();
    // kubelet's QoS cgroup is there; the pod's is not (as in a hierarchy
    // kubelet does not use).
    fs.dir(&Path::new(ROOT).join("kubepods/burstable"));
    let state = std::env::temp_dir().join(format!("rauha-made-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&state).expect("state dir");
    let made = made::MadeParents::new(state.join("made"));
    let none = ResourcesSection::default();
    let a = "/kubepods/burstable/pod1/za";
    let b = "/kubepods/burstable/pod1/zb";
    made.create(&*cg, a, &none).expect("zone a");
    made.create(&*cg, b, &none).expect("zone b");
    let pod = Path::new(ROOT).join("kubepods/burstable/pod1");
    let record = std::fs::read_to_string(state.join("made")).expect("record");
    assert_eq!(
        record,
        format!("{}\n", pod.display()),
        "only the pod's was made"
    );
    // The first zone goes: the pod's cgroup holds the other still.
    cg.remove(a).expect("remove a");
    made.remove_unused(&*cg, a).expect("unused a");
    assert!(fs.is_dir(&pod));
    // The last zone goes: the pod's cgroup with it, kubelet's stays.
    cg.remove(b).expect("remove b");
    made.remove_unused(&*cg, b).expect("unused b");
    assert!(!fs.is_dir(&pod), "{:#?}", fs.log());
    assert!(fs.is_dir(&Path::new(ROOT).join("kubepods/burstable")));
    assert_eq!(
        std::fs::read_to_string(state.join("made")).expect("record"),
        ""
    );
    // A zone under rauhad's own parent records nothing.
    made.create(&*cg, "zc", &none).expect("zone c");
    assert_eq!(
        std::fs::read_to_string(state.join("made")).expect("record"),
        ""
    );
    std::fs::remove_dir_all(state).expect("cleanup");
}
