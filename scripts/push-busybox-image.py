#!/usr/bin/env python3
"""Builds an OCI image from local files and pushes it to a plain-HTTP registry.

    push-busybox-image.py [--add SRC:DEST:MODE ...] HOST:PORT NAME:TAG [CMD ...]

The image holds busybox-static (/bin/busybox, Debian's busybox-static) with
its common applets linked in /bin, /etc/passwd and /etc/group (root and
nobody), an empty /tmp (1777), /proc and /dev; its command is CMD (default
`sh`). Each `--add` puts the host file SRC at DEST in the image with
MODE (octal), its directories made. Layers are gzip'd tars made reproducibly (fixed mtimes), so pushing
the same image twice pushes nothing new. Prints the image's reference.
Only the standard library: it runs before anything else is installed.
"""

import gzip
import hashlib
import io
import json
import sys
import tarfile
import urllib.error
import urllib.request

APPLETS = [
    "sh", "ls", "cat", "echo", "sleep", "ps", "id", "true", "false", "hostname", "head",
    "dd", "kill", "mkdir", "touch", "env", "top", "rm", "grep", "wc", "tail", "uname",
    "whoami", "pwd", "test", "[", "printf", "date", "stat", "mount", "cut", "seq", "ln",
    "cp", "mv", "chmod", "ip", "ifconfig", "nc", "wget", "nslookup", "ping", "tee", "sync",
    "uptime", "free", "readlink", "realpath", "basename", "dirname", "xargs", "find", "sed",
    "awk", "tr", "sort", "uniq", "yes", "timeout", "nproc", "df", "du", "mknod", "umount",
    "chown", "chroot",
]


def layer(busybox, extra=()):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name, kind, mode, data=b"", link=""):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = kind, mode, 0
            info.uname = info.gname = "root"
            if link:
                info.linkname = link
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)

        for d, mode in [("bin", 0o755), ("etc", 0o755), ("proc", 0o555), ("dev", 0o755),
                        ("tmp", 0o1777), ("root", 0o700)]:
            add(d, tarfile.DIRTYPE, mode)
        add("bin/busybox", tarfile.REGTYPE, 0o755, busybox)
        for a in APPLETS:
            add("bin/" + a, tarfile.SYMTYPE, 0o777, link="busybox")
        add("etc/passwd", tarfile.REGTYPE, 0o644,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        add("etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\nnobody:x:65534:\n")
        made = set()
        for dest, mode, data in extra:
            parts = dest.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in made and d not in ("bin", "etc", "proc", "dev", "tmp", "root"):
                    add(d, tarfile.DIRTYPE, 0o755)
                    made.add(d)
            add("/".join(parts), tarfile.REGTYPE, mode, data)
    tar_bytes = raw.getvalue()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0) as f:
        f.write(tar_bytes)
    return tar_bytes, gz.getvalue()


def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def request(method, url, data=None, headers=None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    return urllib.request.urlopen(req, timeout=30)


def push_blob(base, name, blob):
    d = digest(blob)
    try:
        request("HEAD", f"{base}/v2/{name}/blobs/{d}")
        return d
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise
    start = request("POST", f"{base}/v2/{name}/blobs/uploads/")
    location = start.headers["Location"]
    if location.startswith("/"):
        location = base + location
    sep = "&" if "?" in location else "?"
    request("PUT", f"{location}{sep}digest={d}", data=blob,
            headers={"Content-Type": "application/octet-stream"})
    return d


def main():
    args = sys.argv[1:]
    extra = []
    while len(args) >= 2 and args[0] == "--add":
        src, dest, mode = args[1].rsplit(":", 2)
        with open(src, "rb") as f:
            extra.append((dest, int(mode, 8), f.read()))
        args = args[2:]
    if len(args) < 2:
        sys.exit("usage: push-busybox-image.py [--add SRC:DEST:MODE ...] HOST:PORT NAME:TAG [CMD ...]")
    host, ref = args[0], args[1]
    cmd = args[2:] or ["sh"]
    name, _, tag = ref.partition(":")
    tag = tag or "latest"
    base = f"http://{host}"
    with open("/bin/busybox", "rb") as f:
        busybox = f.read()
    tar_bytes, gz = layer(busybox, extra)
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [digest(tar_bytes)]},
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": push_blob(base, name, config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": push_blob(base, name, gz), "size": len(gz)}],
    }, sort_keys=True).encode()
    request("PUT", f"{base}/v2/{name}/manifests/{tag}", data=manifest,
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    print(f"{host}/{name}:{tag}")


if __name__ == "__main__":
    main()
