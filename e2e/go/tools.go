//go:build tools

// Package tools pins Go-based CLI tools used by the e2e suite: crictl
// (scripts/build-crictl.sh) and critest, the CRI validation suite
// (scripts/build-critest.sh builds it with `go test -c`).
package tools

import (
	_ "sigs.k8s.io/cri-tools/cmd/critest"
	_ "sigs.k8s.io/cri-tools/cmd/crictl"
)
