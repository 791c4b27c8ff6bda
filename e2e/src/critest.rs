//! Offline stand-ins for the images of the upstream CRI validation suite,
//! `critest` (sigs.k8s.io/cri-tools v1.37.0, `pkg/validate` and
//! `pkg/framework`), built from local files by [`Registry::push_image`]
//! and pushed to a private registry under the names critest pulls, less
//! the registry host: `registry.k8s.io/e2e-test-images/busybox:1.29-2` is
//! `e2e-test-images/busybox:1.29-2` there, `gcr.io/k8s-staging-cri-tools/
//! test-image-user-uid` is `k8s-staging-cri-tools/test-image-user-uid:latest`
//! ([`local_name`]). A containerd whose registry `config_path` hosts send
//! registry.k8s.io, k8s.gcr.io, gcr.io, docker.io and quay.io to that
//! registry then pulls them as critest names them; `k8s.gcr.io/pause:3.9`
//! and `registry.k8s.io/pause:3.9` are one image there, as critest expects.
//!
//! Every stand-in is busybox-static with its applets in `/bin`
//! ([`crate::containerd::APPLETS`]), as critest's own images are busybox
//! (cri-tools' `images/*/Dockerfile` start `FROM busybox:1.37.0`,
//! kubernetes' e2e images from busybox or alpine), plus two programs that
//! Debian's busybox-static lacks and critest runs: `/bin/pgrep`
//! (`e2e/probes/pgrep.c`) and `/bin/ipcs` (`e2e/probes/ipcs.c`), and a
//! `www-data` user (33) as busybox's image has. Line numbers are of
//! cri-tools v1.37.0's `pkg/`.
//!
//! # The images
//!
//! - `registry.k8s.io/e2e-test-images/busybox:1.29-2`: the default
//!   container image (`framework/util.go:91`), `Cmd ["sh"]`. Critest runs
//!   in it `top` and `sh -c top` (`framework/util.go:57,60`), `echo -n
//!   hello`, `sleep 4321`, `sh -c "pgrep sleep || true"` (stdout and stderr
//!   both empty once the timed-out exec is gone, `validate/container.go:
//!   225-229`), `/bin/sh` attached, `ls -A PATH`, `cat /etc/resolv.conf`,
//!   `hostname` (`validate/consts.go:41-49,219-225`); `id -u`, `id -nu`
//!   (`nobody` must be in `/etc/passwd`, `security_context_linux.go:
//!   1267`), `id -G`, `sh -c "echo $(id -u):$(id -g)"`, `ping 127.0.0.1`
//!   (without NET_RAW: stdout not empty, stderr holding `permission
//!   denied`, `:539-545`), `brctl addbr foobar` (`:1457`), `cat
//!   /proc/self/status`, `touch` (stderr exactly `touch: /tmp/test:
//!   Read-only file system\n`, `:650-653`; `touch: test.go: Read-only file
//!   system\n`, `:1405`), `ipcs -m` (must name the host's segment id under
//!   HostIpc and no digit of it otherwise, `:172-183`), `pidof nginx || true`
//!   (`:127`), `sh -c "sleep 1000"`, `sh -c "netstat -ln"` (`:1509`),
//!   `grep Seccomp: /proc/self/status`, `chmod 400 /`, `hostname
//!   ANewHostName`, `cat /proc/self/uid_map`, `sh -c "id -G; sleep
//!   infinity"`, `mount --bind`, `mkdir -p`, `dd if=/dev/zero of=/dev/null
//!   bs=20M` (`container_linux.go:306-310`), `seq`, `sync` (`pod.go:282`),
//!   `cat /proc/1/mountinfo`, `cat /proc/sys/...`.
//! - `registry.k8s.io/e2e-test-images/nginx:1.14-2`: the web server
//!   (`validate/consts.go:206`, `security_context_linux.go:44`), here
//!   `e2e/probes/web_server.c` installed as `/usr/sbin/nginx`: serves `GET
//!   /` with 200 on port 80 of the pod's network (`networking.go:252-295`
//!   checks the status code only; port mapping and port forward,
//!   `streaming.go:127-153`), writes its pid to `/var/run/nginx.pid`
//!   (`security_context_linux.go:107`), is found by `pidof nginx` from a
//!   HostPID sibling (`:127-138`: its command name is `nginx`), and its
//!   `/proc/PID/cmdline` starts `nginx: master process` (`:249`: under
//!   ContainerPID its PID 1 must show it; under PodPID `/proc/1/cmdline`
//!   must not, `:218-223`). `ExposedPorts 80/tcp`, `StopSignal SIGTERM`
//!   as nginx 1.14's image. Runs with critest's default command (none).
//! - `gcr.io/k8s-staging-cri-tools/hostnet-nginx-<GOARCH>` (`:latest`;
//!   `validate/consts_linux.go:31`, cri-tools' `images/hostnet-nginx`):
//!   the same server on port 12003 (`consts_linux.go:25`), started in the
//!   host's network; critest GETs `127.0.0.1:12003` and port-forwards 12002
//!   to it (`streaming_linux.go:47-73`). `StopSignal SIGQUIT`, as nginx
//!   1.25's image.
//! - `registry.k8s.io/e2e-test-images/httpd:2.4.39-4`
//!   (`multi_container_linux.go:36`): the same server installed as
//!   `/usr/local/apache2/bin/httpd`, port 80; its log must contain `httpd`
//!   (`:99`: the server's first line names it), `echo httpd` runs in it
//!   (`:109`). `WorkingDir /usr/local/apache2`, `StopSignal SIGWINCH`, as
//!   httpd's image.
//! - `registry.k8s.io/e2e-test-images/nonewprivs:1.3`
//!   (`security_context_linux.go:45`): `/usr/local/bin/nnp`, setuid root
//!   (`e2e/probes/setuid_probe.c`), as `Entrypoint`; run as uid 1000 it
//!   must print `Effective uid: 1000\n` with no_new_privs and `Effective
//!   uid: 0\n` without (`:1036-1046`, container log matched exactly).
//! - `registry.k8s.io/pause:3.9` and `k8s.gcr.io/pause:3.9`
//!   (`validate/consts.go:184-187`): one image (same id pulled by either
//!   name, `image.go:247-293`, `image_id_consistency.go:137-171`) whose
//!   `Entrypoint ["/pause"]` (`e2e/probes/pause.c`) runs with the default
//!   command (`image_id_consistency.go:185-203`), `User 65535:65535` as
//!   upstream's. Also [`SANDBOX_IMAGE`].
//! - `gcr.io/k8s-staging-cri-tools/test-image-user-uid` (`User 1002`),
//!   `test-image-user-username` (`www-data`), `test-image-user-uid-group`
//!   (`1003:1004`), `test-image-user-username-group` (`www-data:1004`):
//!   ImageStatus must report uid 1002 / username `www-data` / uid 1003 /
//!   username `www-data` (`consts.go:91-100`, `image.go:107-146`).
//! - `gcr.io/k8s-staging-cri-tools/test-image-predefined-group`: `User
//!   1000`, `default-user` 1000:1000 in `/etc/passwd`, group
//!   `group-defined-in-image` 50000 with `default-user` as member
//!   (cri-tools' `images/image-predefined-group`): as uid 1000 with
//!   supplemental group 1234, `id -G` prints `1000 1234 50000` under the
//!   Merge policy and `1000 1234` under Strict
//!   (`security_context_linux.go:670-810`); its `etc` is mounted as an
//!   image volume's subpath and `passwd` looked for in it
//!   (`image_volume.go:329-418`).
//! - `gcr.io/k8s-staging-cri-tools/test-image-1`, `-2`, `-3` (`:latest`):
//!   three different images (a file `/test-image-N` each), one repo tag
//!   each (`consts.go:141-145`, `image.go:149-169`).
//! - `gcr.io/k8s-staging-cri-tools/test-image-tags:1`, `:2`, `:3`: one
//!   image (one push, three tags): one id with three repo tags
//!   (`consts.go:146-150`, `image.go:171-245`).
//! - `gcr.io/k8s-staging-cri-tools/test-image-tag:test`: pulled, listed,
//!   removed (`image.go:46-66`, `image_consistency.go`), run with its
//!   default command (`image_id_consistency.go:51-135`: `Cmd ["sh"]`
//!   exits at once), and mounted as an image volume
//!   (`image_volume.go:97-327,421-479`: `/bin/sh` and an executable
//!   `/bin/ls` in it; containers of it run `sh -c top`, `ls`, `touch`).
//! - `gcr.io/k8s-staging-cri-tools/test-image-tag:all` (a different image,
//!   as upstream) for the status-by-every-reference test (`image.go:
//!   81-104`), and `test-image-latest` (`:latest`, pulled without a tag,
//!   repo tag `...:latest`, `image.go:68-72`).
//!
//! # What cannot be faked offline
//!
//! - "public image with digest should be pulled and removed"
//!   (`image.go:74-79`): `gcr.io/k8s-staging-cri-tools/test-image-digest@
//!   sha256:9700f9a2…` names upstream's manifest by its digest; no image
//!   built here has it. Nothing is pushed for it; the test fails on the
//!   pull (not found).
//! - "runtime should support MaskedPaths" (`security_context_linux.go:
//!   594-623`) masks `/bin/ls` and expects `/bin/sh -c ls` to fail with
//!   `/bin/sh: ls: Permission denied`. Debian's busybox-static is built
//!   with FEATURE_SH_STANDALONE: its `sh` runs the `ls` applet itself and
//!   never executes `/bin/ls`, so the mask cannot show and `ls` succeeds,
//!   whatever the runtime does. It would take a busybox without it (as
//!   busybox's own image; Debian's dynamic `busybox` package, which
//!   conflicts with busybox-static, with its libc copied in).
//! - Windows images (`win-test-image-*`) are not used on Linux.

use crate::containerd::{static_probe, ImageSpec, Registry};

/// The pod sandbox (pause) image to give containerd.
pub const SANDBOX_IMAGE: &str = "registry.k8s.io/pause:3.9";
/// The default container image (`framework.DefaultLinuxContainerImage`).
pub const BUSYBOX_IMAGE: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";
/// The web server image of the networking, streaming and PID tests.
pub const NGINX_IMAGE: &str = "registry.k8s.io/e2e-test-images/nginx:1.14-2";
/// The web server image of the multi-container tests.
pub const HTTPD_IMAGE: &str = "registry.k8s.io/e2e-test-images/httpd:2.4.39-4";
/// The image of the NoNewPrivs tests.
pub const NONEWPRIVS_IMAGE: &str = "registry.k8s.io/e2e-test-images/nonewprivs:1.3";

/// cri-tools' own test images' prefix (`validate/consts.go:91`).
const CRI_TOOLS: &str = "gcr.io/k8s-staging-cri-tools/";

/// The process title nginx's master shows in `/proc/PID/cmdline`.
const NGINX_TITLE: &str = "nginx: master process nginx -g daemon off;";

/// `runtime.GOARCH` of a critest built for this machine.
fn goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// The host-network web server image: `hostnet-nginx-<GOARCH>:latest`.
pub fn hostnet_nginx_image() -> String {
    format!("{CRI_TOOLS}hostnet-nginx-{}:latest", goarch())
}

/// The name a reference has in the private registry: without its registry
/// host (registry.k8s.io, k8s.gcr.io, gcr.io, docker.io, quay.io; Docker
/// Hub's one-part names under `library/`), with `:latest` when it has no
/// tag: `gcr.io/k8s-staging-cri-tools/test-image-latest` is
/// `k8s-staging-cri-tools/test-image-latest:latest`.
pub fn local_name(reference: &str) -> String {
    let (first, rest) = reference.split_once('/').unwrap_or(("", reference));
    let is_host = first.contains('.') || first.contains(':') || first == "localhost";
    let (host, path) = if is_host {
        (first, rest)
    } else {
        ("docker.io", reference)
    };
    let path = if host == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_string()
    };
    let last = path.rsplit('/').next().unwrap_or_default();
    if last.contains(':') || last.contains('@') {
        path
    } else {
        format!("{path}:latest")
    }
}

/// The full reference with `:latest` added when it has no tag, as
/// critest's `PrepareImageName` pulls it.
fn with_tag(reference: &str) -> String {
    let last = reference.rsplit('/').next().unwrap_or_default();
    if last.contains(':') || last.contains('@') {
        reference.to_string()
    } else {
        format!("{reference}:latest")
    }
}

/// A busybox image as critest's: `Cmd` `cmd`, `/bin/pgrep` and
/// `/bin/ipcs`, and `www-data`.
fn busybox(cmd: &[&str], tools: &Tools) -> ImageSpec {
    ImageSpec::busybox(cmd)
        .file("/bin/pgrep", tools.pgrep.clone(), 0o755)
        .file("/bin/ipcs", tools.ipcs.clone(), 0o755)
        .passwd("www-data:x:33:33:www-data:/var/www:/bin/false")
        .group("www-data:x:33:")
}

/// The probes the images hold, each built once.
struct Tools {
    pgrep: Vec<u8>,
    ipcs: Vec<u8>,
    web_server: Vec<u8>,
    pause: Vec<u8>,
    setuid_probe: Vec<u8>,
}

impl Tools {
    fn build() -> Tools {
        let read = |name: &str| {
            let path = static_probe(name);
            std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        };
        Tools {
            pgrep: read("pgrep"),
            ipcs: read("ipcs"),
            web_server: read("web_server"),
            pause: read("pause"),
            setuid_probe: read("setuid_probe"),
        }
    }
}

/// An nginx stand-in serving `port`: `/usr/sbin/nginx` under nginx's
/// process title, writing `/var/run/nginx.pid`.
fn nginx(port: u16, stop_signal: &str, tools: &Tools) -> ImageSpec {
    let port = port.to_string();
    busybox(
        &[
            "/usr/sbin/nginx",
            "-p",
            &port,
            "-f",
            "/var/run/nginx.pid",
            "-t",
            NGINX_TITLE,
            "-i",
            "/usr/share/nginx/html/index.html",
        ],
        tools,
    )
    .file("/usr/sbin/nginx", tools.web_server.clone(), 0o755)
    .file(
        "/usr/share/nginx/html/index.html",
        "<!DOCTYPE html>\n<html>\n<head>\n<title>Welcome to nginx!</title>\n</head>\n\
         <body>\n<h1>Welcome to nginx!</h1>\n</body>\n</html>\n",
        0o644,
    )
    .dir("/var/run", 0o755, 0, 0)
    .dir("/var/log/nginx", 0o755, 0, 0)
    .exposed_port("80/tcp")
    .stop_signal(stop_signal)
}

/// Every stand-in: the full names critest uses for it (the first is the
/// one pushed, the others name the same image) and what it holds.
fn stand_ins(tools: &Tools) -> Vec<(Vec<String>, ImageSpec)> {
    let cri = |name: &str| format!("{CRI_TOOLS}{name}");
    let marked = |path: &str| busybox(&["sh"], tools).file(path, "", 0o644);
    let user = |u: &str| busybox(&["sh"], tools).user(u);
    vec![
        (
            vec![
                SANDBOX_IMAGE.to_string(),
                "k8s.gcr.io/pause:3.9".to_string(),
            ],
            busybox(&[], tools)
                .file("/pause", tools.pause.clone(), 0o755)
                .entrypoint(&["/pause"])
                .user("65535:65535"),
        ),
        (vec![BUSYBOX_IMAGE.to_string()], busybox(&["sh"], tools)),
        (vec![NGINX_IMAGE.to_string()], nginx(80, "SIGTERM", tools)),
        (vec![hostnet_nginx_image()], nginx(12003, "SIGQUIT", tools)),
        (
            vec![HTTPD_IMAGE.to_string()],
            busybox(
                &[
                    "/usr/local/apache2/bin/httpd",
                    "-p",
                    "80",
                    "-f",
                    "/usr/local/apache2/logs/httpd.pid",
                    "-i",
                    "/usr/local/apache2/htdocs/index.html",
                ],
                tools,
            )
            .file(
                "/usr/local/apache2/bin/httpd",
                tools.web_server.clone(),
                0o755,
            )
            .file(
                "/usr/local/apache2/htdocs/index.html",
                "<html><body><h1>It works!</h1></body></html>\n",
                0o644,
            )
            .dir("/usr/local/apache2/logs", 0o755, 0, 0)
            .env("HTTPD_PREFIX=/usr/local/apache2")
            .working_dir("/usr/local/apache2")
            .exposed_port("80/tcp")
            .stop_signal("SIGWINCH"),
        ),
        (
            vec![NONEWPRIVS_IMAGE.to_string()],
            busybox(&[], tools)
                .file("/usr/local/bin/nnp", tools.setuid_probe.clone(), 0o4755)
                .entrypoint(&["/usr/local/bin/nnp"]),
        ),
        (vec![cri("test-image-user-uid")], user("1002")),
        (vec![cri("test-image-user-username")], user("www-data")),
        (vec![cri("test-image-user-uid-group")], user("1003:1004")),
        (
            vec![cri("test-image-user-username-group")],
            user("www-data:1004"),
        ),
        (
            vec![cri("test-image-predefined-group")],
            user("1000")
                .passwd("default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh")
                .group("default-user:x:1000:")
                .group("group-defined-in-image:x:50000:default-user")
                .dir("/home/default-user", 0o755, 1000, 1000),
        ),
        (vec![cri("test-image-1:latest")], marked("/test-image-1")),
        (vec![cri("test-image-2:latest")], marked("/test-image-2")),
        (vec![cri("test-image-3:latest")], marked("/test-image-3")),
        (vec![cri("test-image-latest")], marked("/test-image-latest")),
        (vec![cri("test-image-tag:test")], marked("/test")),
        (vec![cri("test-image-tag:all")], marked("/all")),
        (
            vec![
                cri("test-image-tags:1"),
                cri("test-image-tags:2"),
                cri("test-image-tags:3"),
            ],
            marked("/same-image"),
        ),
    ]
}

/// Pushes the nginx stand-in (serving :80) to `reg` as `name_tag`; returns
/// its full reference.
pub fn push_nginx(reg: &Registry, name_tag: &str) -> String {
    reg.push_image(name_tag, &nginx(80, "SIGTERM", &Tools::build()))
}

/// Pushes every stand-in to `reg` under its [`local_name`]s and returns
/// the full names critest uses for them (with `:latest` where critest
/// names none, as it pulls them), [`SANDBOX_IMAGE`] and
/// `k8s.gcr.io/pause:3.9` among them.
pub fn push_images(reg: &Registry) -> Vec<String> {
    let tools = Tools::build();
    let mut all = Vec::new();
    for (names, spec) in stand_ins(&tools) {
        let first = local_name(&names[0]);
        let mut spec = spec;
        let mut pushed = vec![first.clone()];
        for other in &names[1..] {
            let local = local_name(other);
            if !pushed.contains(&local) {
                spec = spec.also_as(&local);
                pushed.push(local);
            }
        }
        reg.push_image(&first, &spec);
        all.extend(names.iter().map(|n| with_tag(n)));
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_names_drop_the_registry_host() {
        assert_eq!(local_name(BUSYBOX_IMAGE), "e2e-test-images/busybox:1.29-2");
        assert_eq!(local_name(SANDBOX_IMAGE), "pause:3.9");
        assert_eq!(local_name("k8s.gcr.io/pause:3.9"), "pause:3.9");
        assert_eq!(
            local_name("gcr.io/k8s-staging-cri-tools/test-image-user-uid"),
            "k8s-staging-cri-tools/test-image-user-uid:latest"
        );
        assert_eq!(local_name("docker.io/nginx"), "library/nginx:latest");
        assert_eq!(local_name("busybox:1.37.0"), "library/busybox:1.37.0");
        assert_eq!(local_name("quay.io/org/img:1"), "org/img:1");
        assert_eq!(
            with_tag("gcr.io/k8s-staging-cri-tools/test-image-latest"),
            "gcr.io/k8s-staging-cri-tools/test-image-latest:latest"
        );
    }

    /// `skopeo inspect` of a pushed image: its manifest digest and config.
    fn inspect(reg: &Registry, reference: &str) -> (String, serde_json::Value) {
        let target = format!("docker://{}/{}", reg.host(), local_name(reference));
        let run = |extra: &[&str]| {
            let out = std::process::Command::new("skopeo")
                .args(["inspect", "--tls-verify=false"])
                .args(extra)
                .arg(&target)
                .output()
                .expect("run skopeo");
            assert!(
                out.status.success(),
                "skopeo inspect {target}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("skopeo JSON")
        };
        let digest = run(&[])["Digest"].as_str().unwrap_or_default().to_string();
        (digest, run(&["--config"])["config"].clone())
    }

    /// Pushes the stand-ins to a private registry and reads back what
    /// critest relies on. Needs root (owners in layers), docker-registry,
    /// umoci, skopeo, busybox-static and cc (the e2e stage has them).
    #[test]
    fn stand_ins_hold_what_critest_checks() {
        if !(crate::prerequisite(crate::is_root(), "root (file owners in image layers)")
            && crate::containerd::containerd_ready())
        {
            return;
        }
        let reg = Registry::start();
        let names = push_images(&reg);
        for n in [
            SANDBOX_IMAGE,
            "k8s.gcr.io/pause:3.9",
            BUSYBOX_IMAGE,
            NGINX_IMAGE,
            HTTPD_IMAGE,
            NONEWPRIVS_IMAGE,
            &hostnet_nginx_image(),
            "gcr.io/k8s-staging-cri-tools/test-image-latest:latest",
            "gcr.io/k8s-staging-cri-tools/test-image-tag:test",
        ] {
            assert!(names.iter().any(|m| m == n), "{n} missing from {names:?}");
        }
        let configs: Vec<(String, String, serde_json::Value)> = names
            .iter()
            .map(|n| {
                let (digest, config) = inspect(&reg, n);
                (n.clone(), digest, config)
            })
            .collect();
        let get = |name: &str| {
            configs
                .iter()
                .find(|(n, _, _)| n.ends_with(name))
                .unwrap_or_else(|| panic!("{name} not pushed"))
        };
        let user = |name: &str| get(name).2["User"].as_str().unwrap_or_default().to_string();
        assert_eq!(user("/test-image-user-uid:latest"), "1002");
        assert_eq!(user("/test-image-user-username:latest"), "www-data");
        assert_eq!(user("/test-image-user-uid-group:latest"), "1003:1004");
        assert_eq!(
            user("/test-image-user-username-group:latest"),
            "www-data:1004"
        );
        assert_eq!(user("/test-image-predefined-group:latest"), "1000");
        assert_eq!(user("/pause:3.9"), "65535:65535");
        assert_eq!(
            get("/pause:3.9").2["Entrypoint"],
            serde_json::json!(["/pause"])
        );
        assert_eq!(
            get("/nonewprivs:1.3").2["Entrypoint"],
            serde_json::json!(["/usr/local/bin/nnp"])
        );
        assert_eq!(get("/busybox:1.29-2").2["Cmd"], serde_json::json!(["sh"]));
        let nginx = &get("/nginx:1.14-2").2;
        assert!(nginx["ExposedPorts"].get("80/tcp").is_some(), "{nginx}");
        assert_eq!(nginx["StopSignal"], "SIGTERM");
        let httpd = &get("/httpd:2.4.39-4").2;
        assert_eq!(httpd["WorkingDir"], "/usr/local/apache2");
        assert_eq!(httpd["StopSignal"], "SIGWINCH");
        assert!(
            httpd["Env"]
                .as_array()
                .is_some_and(|e| e.iter().any(|v| v == "HTTPD_PREFIX=/usr/local/apache2")),
            "{httpd}"
        );
        let digest = |name: &str| get(name).1.clone();
        assert_eq!(
            digest("registry.k8s.io/pause:3.9"),
            digest("k8s.gcr.io/pause:3.9")
        );
        let tags: Vec<String> = ["1", "2", "3"]
            .iter()
            .map(|t| digest(&format!("/test-image-tags:{t}")))
            .collect();
        assert!(
            tags.iter().all(|d| d == &tags[0] && !d.is_empty()),
            "{tags:?}"
        );
        let mut different: Vec<String> = ["1", "2", "3"]
            .iter()
            .map(|n| digest(&format!("/test-image-{n}:latest")))
            .chain([
                digest("/test-image-tag:test"),
                digest("/test-image-tag:all"),
            ])
            .collect();
        different.sort();
        different.dedup();
        assert_eq!(different.len(), 5, "{different:?}");
    }
}
