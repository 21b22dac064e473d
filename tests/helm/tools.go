//go:build tools

// Package tools pins the Helm CLI's main package (helm.sh/helm/v3/cmd/helm) so
// `go mod tidy` keeps its dependencies. Never compiled; scripts/build-helm.sh
// builds the binary.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
