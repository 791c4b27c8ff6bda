//go:build tools

// Package tools pins Go-based CLI tools used by the e2e suite (crictl).
// Build with scripts/build-crictl.sh.
package tools

import _ "sigs.k8s.io/cri-tools/cmd/crictl"
