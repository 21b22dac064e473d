// Command xds-client is the proxyless gRPC side of Waymark's xDS tests
// (tests/xds.rs): grpc-go's own xDS resolver and balancers, fed by Waymark's
// --xds-addr, plus loopback backends to route to.
//
//	xds-client backends NAME[=HOST:PORT]...
//	                              one gRPC TestService server per NAME, on
//	                              HOST:PORT or else 127.0.0.1 and a free
//	                              port; prints "listening NAME PORT" per
//	                              server, then "ready", and serves until
//	                              stdin closes.
//	xds-client client TARGET      one channel to TARGET (xds:///svc.ns);
//	                              for each line "N" on stdin sends N unary
//	                              RPCs and prints one JSON line:
//	                              {"counts":{NAME:n},"errors":e,"error":"…"}.
//
// The bootstrap comes from GRPC_XDS_BOOTSTRAP or GRPC_XDS_BOOTSTRAP_CONFIG,
// as for any grpc-go xDS client.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	// Registers the xds:/// resolver and the xDS balancers.
	_ "google.golang.org/grpc/xds"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: xds-client backends NAME... | xds-client client TARGET")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "backends":
		err = backends(os.Args[2:])
	case "client":
		err = client(os.Args[2])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "xds-client:", err)
		os.Exit(1)
	}
}

// backend answers UnaryCall with its name, so the client can count who
// served each request.
type backend struct {
	testgrpc.UnimplementedTestServiceServer
	name string
}

func (b *backend) UnaryCall(context.Context, *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{ServerId: b.name}, nil
}

func backends(names []string) error {
	for _, arg := range names {
		name, addr, ok := strings.Cut(arg, "=")
		if !ok {
			addr = "127.0.0.1:0"
		}
		lis, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		srv := grpc.NewServer()
		testgrpc.RegisterTestServiceServer(srv, &backend{name: name})
		go func() { _ = srv.Serve(lis) }()
		fmt.Printf("listening %s %d\n", name, lis.Addr().(*net.TCPAddr).Port)
	}
	fmt.Println("ready")
	// Serve until the test closes stdin (or dies).
	_, _ = bufio.NewReader(os.Stdin).ReadString(0)
	return nil
}

type report struct {
	Counts map[string]int `json:"counts"`
	Errors int            `json:"errors"`
	Error  string         `json:"error,omitempty"`
}

func client(target string) error {
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	stub := testgrpc.NewTestServiceClient(conn)
	out := json.NewEncoder(os.Stdout)
	lines := bufio.NewScanner(os.Stdin)
	for lines.Scan() {
		n, err := strconv.Atoi(strings.TrimSpace(lines.Text()))
		if err != nil {
			return fmt.Errorf("expected a request count, got %q", lines.Text())
		}
		rep := report{Counts: map[string]int{}}
		for range n {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			resp, err := stub.UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.WaitForReady(true))
			cancel()
			if err != nil {
				rep.Errors++
				rep.Error = err.Error()
				continue
			}
			rep.Counts[resp.GetServerId()]++
		}
		if err := out.Encode(rep); err != nil {
			return err
		}
	}
	return lines.Err()
}
