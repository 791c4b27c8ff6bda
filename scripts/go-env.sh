# Sourced by the scripts that build upstream Go tools (build-crictl.sh,
# build-containerd2.sh, build-kubernetes.sh, build-helm.sh): sets $go to a
# local Go, or stops with how to get one, and forbids the go command to
# download another toolchain (an old local Go fails loudly instead).
# Needs $moddir (the module whose go.mod names the Go it needs) and $me
# (the script's name, for the message).
if [[ -x /usr/local/go/bin/go ]]; then
    go=/usr/local/go/bin/go
elif command -v go >/dev/null 2>&1; then
    go=$(command -v go)
else
    echo "$me: Go not found (looked at /usr/local/go/bin/go and PATH); install Go >= $(sed -n 's/^go //p' "$moddir/go.mod") from https://go.dev/dl/ into /usr/local/go" >&2
    exit 1
fi
export GOTOOLCHAIN=local
