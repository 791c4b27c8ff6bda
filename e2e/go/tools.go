//go:build tools

// Package tools pins Go-based CLI tools used by the e2e suite: crictl and
// critest, the CRI validation suite (scripts/build-crictl.sh builds both).
package tools

import (
	_ "github.com/onsi/ginkgo/v2/ginkgo"
	_ "sigs.k8s.io/cri-tools/cmd/critest"
	_ "sigs.k8s.io/cri-tools/cmd/crictl"
)
