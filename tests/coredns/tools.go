//go:build tools

// Package tools pins the CoreDNS main package (github.com/coredns/coredns, the
// stock `coredns` binary with every in-tree plugin) so `go mod tidy` keeps its
// dependencies. Never compiled; scripts/build-coredns.sh builds the binary.
package tools

import _ "github.com/coredns/coredns"
