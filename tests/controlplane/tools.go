//go:build tools

// Package tools pins the main packages built by scripts/build-controlplane.sh so
// that `go mod tidy` keeps their dependencies in go.mod/go.sum. Never compiled.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
