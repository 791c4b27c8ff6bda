//go:build tools

// containerd 2.x and its ctr, for the shim's e2e test against containerd
// 2.x (scripts/build-containerd2.sh builds them into target/tools).
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
