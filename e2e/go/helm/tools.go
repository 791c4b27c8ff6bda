//go:build tools

// Package tools pins helm, which the chart's tests run (`helm lint`,
// `helm template`, `helm install`); scripts/build-helm.sh builds it.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
