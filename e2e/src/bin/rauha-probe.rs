//! One system call, its outcome printed as `ok` or the errno's name: what
//! the VM enforcement tests run inside (and beside) zones.
//!
//! ```text
//! rauha-probe open PATH            open(2) for reading
//! rauha-probe exec PATH [ARG..]    execv(2)
//! rauha-probe kill PID             kill(PID, 0)
//! rauha-probe ptrace PID           PTRACE_ATTACH, then detach
//! rauha-probe move PID CGROUP_DIR  write PID into CGROUP_DIR/cgroup.procs
//! rauha-probe connect IP:PORT      a TCP connect
//! rauha-probe join CGROUP_DIR CMD..  join the cgroup, then exec CMD
//! rauha-probe openloop N PATH      N open+close pairs; prints ns per pair
//! rauha-probe read PATH            open(2) and read one byte
//! rauha-probe write PATH           open(2) an existing file for writing, write "1\n"
//! rauha-probe mknod PATH           mknod a character device 1:3 (/dev/null's)
//! rauha-probe mem PID              open /proc/PID/mem for reading
//! rauha-probe syscall NAME         a harmless call of a dangerous system call:
//!                                  open_by_handle_at, keyctl, userfaultfd,
//!                                  perf_event_open, bpf; clone_newuser,
//!                                  clone_newnet, clone3, unshare_user (a new
//!                                  namespace each: the child exits at once)
//! rauha-probe thread               start and join a thread (libc's clone3,
//!                                  or its fallback to clone)
//! ```
//! Always exits 0 after printing, except `exec` and `join` on success.

use std::ffi::CString;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

fn errno_name(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EACCES) => "EACCES".into(),
        Some(libc::EPERM) => "EPERM".into(),
        Some(libc::ENOENT) => "ENOENT".into(),
        Some(libc::ECONNREFUSED) => "ECONNREFUSED".into(),
        Some(libc::ESRCH) => "ESRCH".into(),
        Some(libc::EROFS) => "EROFS".into(),
        Some(libc::EINVAL) => "EINVAL".into(),
        Some(libc::ENOSYS) => "ENOSYS".into(),
        Some(libc::EBADF) => "EBADF".into(),
        Some(libc::ETXTBSY) => "ETXTBSY".into(),
        Some(n) => format!("errno {n}"),
        None => e.to_string(),
    }
}

fn report(what: &str, r: std::io::Result<()>) {
    match r {
        Ok(()) => println!("{what}: ok"),
        Err(e) => println!("{what}: {}", errno_name(&e)),
    }
}

fn check(ret: libc::c_long) -> std::io::Result<()> {
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in arguments")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> &str {
        args.get(i).map(String::as_str).unwrap_or_else(|| {
            eprintln!("rauha-probe: missing argument {i}; see the source for usage");
            std::process::exit(2)
        })
    };
    let pid = |i: usize| -> libc::pid_t {
        arg(i).parse().unwrap_or_else(|_| {
            eprintln!("rauha-probe: {:?} is not a pid", arg(i));
            std::process::exit(2)
        })
    };
    match arg(0) {
        "open" => report(
            &format!("open {}", arg(1)),
            std::fs::File::open(arg(1)).map(drop),
        ),
        "exec" => {
            let argv: Vec<CString> = args[1..].iter().map(|a| cstr(a)).collect();
            let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
            ptrs.push(std::ptr::null());
            // SAFETY: NUL-terminated strings and a NULL-terminated array.
            unsafe { libc::execv(ptrs[0], ptrs.as_ptr()) };
            report(
                &format!("exec {}", arg(1)),
                Err(std::io::Error::last_os_error()),
            );
        }
        // SAFETY: kill and ptrace take plain integers.
        "kill" => report(
            &format!("kill {}", arg(1)),
            check(unsafe { libc::kill(pid(1), 0) }.into()),
        ),
        "ptrace" => {
            let target = pid(1);
            // SAFETY: as above; the tracee is detached right after.
            let r = check(unsafe { libc::ptrace(libc::PTRACE_ATTACH, target, 0, 0) });
            if r.is_ok() {
                let mut status = 0;
                // SAFETY: waitpid writes to our status.
                unsafe {
                    libc::waitpid(target, &mut status, libc::__WALL);
                    libc::ptrace(libc::PTRACE_DETACH, target, 0, 0);
                }
            }
            report(&format!("ptrace {}", arg(1)), r);
        }
        "move" => {
            let procs = format!("{}/cgroup.procs", arg(2));
            let r = std::fs::OpenOptions::new()
                .write(true)
                .open(&procs)
                .and_then(|mut f| f.write_all(arg(1).as_bytes()));
            report(&format!("move {} {}", arg(1), arg(2)), r);
        }
        "connect" => {
            let addr: SocketAddr = arg(1).parse().unwrap_or_else(|_| {
                eprintln!("rauha-probe: {:?} is not IP:PORT", arg(1));
                std::process::exit(2)
            });
            report(
                &format!("connect {addr}"),
                TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map(drop),
            );
        }
        "join" => {
            let procs = format!("{}/cgroup.procs", arg(1));
            if let Err(e) = std::fs::write(&procs, std::process::id().to_string()) {
                report(&format!("join {}", arg(1)), Err(e));
                return;
            }
            let argv: Vec<CString> = args[2..].iter().map(|a| cstr(a)).collect();
            let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
            ptrs.push(std::ptr::null());
            // SAFETY: as for exec.
            unsafe { libc::execvp(ptrs[0], ptrs.as_ptr()) };
            report("join exec", Err(std::io::Error::last_os_error()));
        }
        "openloop" => {
            let n: u32 = arg(1).parse().unwrap_or_else(|_| {
                eprintln!("rauha-probe: {:?} is not a count", arg(1));
                std::process::exit(2)
            });
            let path = cstr(arg(2));
            let start = std::time::Instant::now();
            for _ in 0..n {
                // SAFETY: a NUL-terminated path; the fd is closed at once.
                let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
                if fd < 0 {
                    report("openloop", Err(std::io::Error::last_os_error()));
                    return;
                }
                // SAFETY: an fd we own.
                unsafe { libc::close(fd) };
            }
            let per = start.elapsed().as_nanos() / u128::from(n.max(1));
            println!("openloop {n}: {per} ns");
        }
        "read" => {
            use std::io::Read;
            let r = std::fs::File::open(arg(1)).and_then(|mut f| f.read(&mut [0u8; 1]).map(drop));
            report(&format!("read {}", arg(1)), r);
        }
        "write" => {
            let r = std::fs::OpenOptions::new()
                .write(true)
                .open(arg(1))
                .and_then(|mut f| f.write_all(b"1\n"));
            report(&format!("write {}", arg(1)), r);
        }
        "mknod" => {
            let path = cstr(arg(1));
            // SAFETY: a NUL-terminated path and integer arguments.
            let r =
                unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
            report(&format!("mknod {}", arg(1)), check(r.into()));
        }
        "mem" => report(
            &format!("mem {}", arg(1)),
            std::fs::File::open(format!("/proc/{}/mem", pid(1))).map(drop),
        ),
        "syscall" => {
            let name = arg(1);
            // SAFETY: each call gets arguments that name nothing to change:
            // an empty handle, a keyring query, a fresh userfaultfd, a
            // software counter of this process, a tiny array map.
            let r = unsafe {
                match name {
                    "open_by_handle_at" => {
                        #[repr(C)]
                        struct Handle {
                            bytes: u32,
                            kind: i32,
                            f: [u8; 8],
                        }
                        let mut h = Handle {
                            bytes: 8,
                            kind: 1,
                            f: [0; 8],
                        };
                        libc::syscall(
                            libc::SYS_open_by_handle_at,
                            libc::AT_FDCWD,
                            &mut h,
                            libc::O_RDONLY,
                        )
                    }
                    "keyctl" => libc::syscall(
                        libc::SYS_keyctl,
                        0,  /* KEYCTL_GET_KEYRING_ID */
                        -3, /* session */
                        0,
                    ),
                    "userfaultfd" => libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC),
                    "perf_event_open" => {
                        let mut attr = [0u8; 128];
                        attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // PERF_TYPE_SOFTWARE
                        attr[4..8].copy_from_slice(&128u32.to_ne_bytes()); // size
                        libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), 0, -1, -1, 0)
                    }
                    "clone_newuser" | "clone_newnet" => {
                        let ns = if name == "clone_newuser" {
                            libc::CLONE_NEWUSER
                        } else {
                            libc::CLONE_NEWNET
                        };
                        let flags = (ns | libc::SIGCHLD) as libc::c_ulong;
                        let r = libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0);
                        if r == 0 {
                            libc::_exit(0);
                        }
                        if r > 0 {
                            libc::waitpid(r as libc::pid_t, std::ptr::null_mut(), 0);
                        }
                        r
                    }
                    "clone3" => {
                        // struct clone_args: flags, pidfd, child_tid,
                        // parent_tid, exit_signal, stack, stack_size, tls.
                        let mut args = [0u64; 8];
                        args[4] = libc::SIGCHLD as u64;
                        let r = libc::syscall(libc::SYS_clone3, args.as_mut_ptr(), 64usize);
                        if r == 0 {
                            libc::_exit(0);
                        }
                        if r > 0 {
                            libc::waitpid(r as libc::pid_t, std::ptr::null_mut(), 0);
                        }
                        r
                    }
                    "unshare_user" => libc::unshare(libc::CLONE_NEWUSER).into(),
                    "bpf" => {
                        // BPF_MAP_CREATE of an array: type 2, key 4, value 4, 1 entry.
                        let mut attr = [0u32; 30];
                        attr[0] = 2;
                        attr[1] = 4;
                        attr[2] = 4;
                        attr[3] = 1;
                        libc::syscall(libc::SYS_bpf, 0, attr.as_ptr(), 120)
                    }
                    other => {
                        eprintln!("rauha-probe: unknown system call {other:?}");
                        std::process::exit(2)
                    }
                }
            };
            report(&format!("syscall {name}"), check(r));
        }
        "thread" => report(
            "thread",
            std::thread::Builder::new().spawn(|| ()).and_then(|t| {
                t.join()
                    .map_err(|_| std::io::Error::other("the thread panicked"))
            }),
        ),
        other => {
            eprintln!("rauha-probe: unknown operation {other:?}");
            std::process::exit(2)
        }
    }
}
