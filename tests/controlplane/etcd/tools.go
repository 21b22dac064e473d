//go:build tools

// Package tools pins the etcd main package (go.etcd.io/etcd/server/v3, the
// `etcd` binary) so `go mod tidy` keeps its dependencies. Never compiled.
package tools

import _ "go.etcd.io/etcd/server/v3"
