package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// healthcheck asks the service's /readyz and succeeds only on 200: the
// container image has no curl, so its healthcheck runs this.
func healthcheck(ctx context.Context, args []string, stdout io.Writer) error {
	var target string
	cmd := command{name: "healthcheck", about: "Exits 0 when the service at --url answers ready, 2 otherwise.", settings: []string{"http-addr"}}
	cfg, positional, err := load(cmd, args, stdout, func(fs *flag.FlagSet) {
		fs.StringVar(&target, "url", "", "URL to ask (default: /readyz on --http-addr, on loopback)")
	})
	if err != nil {
		return err
	}
	if len(positional) > 0 {
		return fmt.Errorf("usage: taskledger healthcheck [--url URL]")
	}
	if target == "" {
		host, port, _ := net.SplitHostPort(cfg.HTTPAddr) // Load validated it
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			host = "127.0.0.1"
		}
		target = "http://" + net.JoinHostPort(host, port) + "/readyz"
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("not ready: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("not ready: %s answered %d %s", target, resp.StatusCode, body)
	}
	fmt.Fprintf(stdout, "ready: %s\n", target)
	return nil
}
