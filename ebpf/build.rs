//! Builds the BPF object and the layout table the unit tests check.
//!
//! 1. `vmlinux.h` into OUT_DIR: the file named by `RAUHA_VMLINUX_H`, or
//!    `bpftool btf dump file /sys/kernel/btf/vmlinux format c`. CO-RE makes
//!    the object load on other kernels than the one the header came from.
//! 2. `bpf/rauha.bpf.c` -> OUT_DIR/rauha.bpf.o with clang (target bpf), then
//!    `llvm-strip -g` (DWARF goes, BTF stays: the object shrinks tenfold).
//! 3. `bpf/layout_probe.c` compiled for the host with `$HOST_CC` (default
//!    `cc`)
//!    and run; its output, OUT_DIR/layout.rs, is the C view of `rauha.h`.
//!
//! A missing tool fails the build with one line naming the Debian package.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BTF_VMLINUX: &str = "/sys/kernel/btf/vmlinux";

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let bpf_dir = manifest_dir.join("bpf");

    for file in ["rauha.h", "rauha.bpf.c", "layout_probe.c"] {
        println!("cargo:rerun-if-changed={}", bpf_dir.join(file).display());
    }
    println!("cargo:rerun-if-env-changed=RAUHA_VMLINUX_H");
    println!("cargo:rerun-if-env-changed=HOST_CC");

    write_vmlinux_h(&out_dir);
    build_object(&bpf_dir, &out_dir);
    write_layout(&bpf_dir, &out_dir);
}

/// Stops the build with one line on stderr.
fn fail(message: &str) -> ! {
    eprintln!("rauha-ebpf build: {message}");
    std::process::exit(1);
}

/// Runs a tool; a tool that is not installed fails the build naming its package.
fn run(command: &mut Command, tool: &str, package: &str) -> Output {
    match command.output() {
        Ok(output) => output,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => fail(&format!(
            "`{tool}` not found: install the Debian package `{package}` (apt-get install {package})"
        )),
        Err(err) => fail(&format!("cannot run `{tool}`: {err}")),
    }
}

/// Fails the build with the tool's own diagnostics when it did not succeed.
fn check(output: &Output, what: &str) {
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        eprintln!("{stderr}");
        if stderr.contains("bpf/bpf_helpers.h") && stderr.contains("not found") {
            fail("libbpf headers not found: install the Debian package `libbpf-dev`");
        }
        if stderr.contains("linux/types.h") && stderr.contains("not found") {
            fail("kernel UAPI headers not found: install the Debian package `linux-libc-dev`");
        }
        fail(&format!("{what} failed ({})", output.status));
    }
}

/// `bpftool` lives in /usr/sbin on Debian, which is not on every user's PATH.
fn bpftool() -> PathBuf {
    let in_path = env::var_os("PATH")
        .map(|path| env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    in_path
        .into_iter()
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("bpftool"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from("bpftool"))
}

fn write_vmlinux_h(out_dir: &Path) {
    let target = out_dir.join("vmlinux.h");
    if let Some(given) = env::var_os("RAUHA_VMLINUX_H") {
        let given = PathBuf::from(given);
        println!("cargo:rerun-if-changed={}", given.display());
        if let Err(err) = fs::copy(&given, &target) {
            fail(&format!("RAUHA_VMLINUX_H={}: {err}", given.display()));
        }
        return;
    }
    if !Path::new(BTF_VMLINUX).exists() {
        fail(&format!(
            "{BTF_VMLINUX} is missing (kernel without CONFIG_DEBUG_INFO_BTF): set RAUHA_VMLINUX_H \
             to a header made with `bpftool btf dump file <vmlinux> format c`"
        ));
    }
    let output = run(
        Command::new(bpftool()).args(["btf", "dump", "file", BTF_VMLINUX, "format", "c"]),
        "bpftool",
        "bpftool",
    );
    check(&output, "bpftool btf dump");
    if let Err(err) = fs::write(&target, &output.stdout) {
        fail(&format!("writing {}: {err}", target.display()));
    }
}

fn build_object(bpf_dir: &Path, out_dir: &Path) {
    let object = out_dir.join("rauha.bpf.o");
    let output = run(
        Command::new("clang")
            .args([
                "-g",
                "-O2",
                "-target",
                "bpf",
                "-D__TARGET_ARCH_x86",
                "-Wall",
            ])
            .arg("-I")
            .arg(out_dir)
            .arg("-I")
            .arg(bpf_dir)
            .arg("-c")
            .arg(bpf_dir.join("rauha.bpf.c"))
            .arg("-o")
            .arg(&object),
        "clang",
        "clang",
    );
    check(&output, "clang (rauha.bpf.c)");
    // Warnings do not stop the build (a newer vmlinux.h may bring some) but
    // must be seen.
    for line in String::from_utf8_lossy(&output.stderr).lines() {
        println!("cargo:warning={line}");
    }
    let output = run(
        Command::new("llvm-strip").arg("-g").arg(&object),
        "llvm-strip",
        "llvm",
    );
    check(&output, "llvm-strip");
}

fn write_layout(bpf_dir: &Path, out_dir: &Path) {
    // The probe runs here, so it is built for the host even when cross
    // compiling: HOST_CC, not CC.
    let cc = env::var("HOST_CC").unwrap_or_else(|_| "cc".to_owned());
    let probe = out_dir.join("layout_probe");
    let output = run(
        Command::new(&cc)
            .args(["-std=c11", "-Wall", "-Werror", "-I"])
            .arg(bpf_dir)
            .arg(bpf_dir.join("layout_probe.c"))
            .arg("-o")
            .arg(&probe),
        &cc,
        "build-essential",
    );
    check(&output, "host compiler (layout_probe.c)");
    let output = run(&mut Command::new(&probe), "layout_probe", "build-essential");
    check(&output, "layout_probe");
    let layout = out_dir.join("layout.rs");
    if let Err(err) = fs::write(&layout, &output.stdout) {
        fail(&format!("writing {}: {err}", layout.display()));
    }
}
