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
        other => {
            eprintln!("rauha-probe: unknown operation {other:?}");
            std::process::exit(2)
        }
    }
}
