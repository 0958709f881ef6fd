package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}} {
		code, out, errb := runApp(t, args...)
		if code != exitOK || errb != "" {
			t.Errorf("%v: exit %d, stderr %q", args, code, errb)
		}
		for _, want := range []string{
			"flockctl status   [--node URL] [--token T] [--json]",
			"flockctl members  [--node URL] [--token T] [--json]",
			"flockctl sessions [--node URL] [--token T] [--id ID] [--json]",
			"flockctl listen   --bind ADDR [--address 228.0.0.4] [--port 45564] [--for DURATION]",
			"--node URL", "(default http://127.0.0.1:9090)", "$FLOCK_SERVER_ADMIN_TOKEN", "--bind ADDR", "--for DURATION", "Exit status",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("%v: usage lacks %q:\n%s", args, want, out)
			}
		}
	}
	for _, args := range [][]string{{"help", "listen"}, {"listen", "-h"}, {"listen", "--help"}} {
		code, out, _ := runApp(t, args...)
		if code != exitOK || !strings.HasPrefix(out, "flockctl listen --bind ADDR") || strings.Contains(out, "flockctl status") {
			t.Errorf("%v: exit %d:\n%s", args, code, out)
		}
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	tests := []struct {
		args []string
		want string // in stderr
	}{
		{nil, "Usage:"},
		{[]string{"frobnicate"}, `flockctl: unknown command "frobnicate"`},
		{[]string{"--node", "http://x", "status"}, "flags follow it"},
		{[]string{"help", "frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"status", "--nope"}, "flockctl: status: flag provided but not defined: -nope\nflockctl status [--node URL]"},
		{[]string{"sessions", "extra"}, `sessions: unexpected argument "extra"`},
		{[]string{"status", "--node", "127.0.0.1:8080"}, `--node "127.0.0.1:8080": want a URL like http://127.0.0.1:8080`},
		{[]string{"members", "--node", "ftp://127.0.0.1/"}, `--node "ftp://127.0.0.1/"`},
		{[]string{"listen"}, "--bind is required"},
		{[]string{"listen", "--bind", "eth0"}, `--bind "eth0": need the IPv4 address`},
		{[]string{"listen", "--bind", "127.0.0.1", "--address", "10.0.0.1"}, `--address "10.0.0.1": need an IPv4 multicast address`},
		{[]string{"listen", "--bind", "127.0.0.1", "--port", "0"}, "--port 0"},
		{[]string{"listen", "--bind", "127.0.0.1", "--for", "-1s"}, "--for -1s"},
	}
	for _, tc := range tests {
		code, out, errb := runApp(t, tc.args...)
		if code != exitUsage || out != "" || !strings.Contains(errb, tc.want) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 2 and %q", tc.args, code, out, errb, tc.want)
		}
	}
}

// run itself, as main calls it: real clock, not a terminal.
func TestRun(t *testing.T) {
	var stdout, stderr bytes.Buffer
	url := serveNode(t, testStatus(), nil)
	if code := run(context.Background(), []string{"members", "--node", url}, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "node2  alive  127.0.0.1:4001") {
		t.Errorf("output:\n%s", stdout.String())
	}
}

func TestSince(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second:                          "0.0s",
		0:                                     "0.0s",
		340 * time.Millisecond:                "0.3s",
		9400 * time.Millisecond:               "9.4s",
		12 * time.Second:                      "12s",
		5*time.Minute + 3*time.Second:         "5m03s",
		2*time.Hour + 13*time.Minute:          "2h13m",
		75 * time.Hour:                        "3d03h",
		59*time.Second + 999*time.Millisecond: "59s",
	} {
		if got := since(d); got != want {
			t.Errorf("since(%v) = %q, want %q", d, got, want)
		}
	}
	if got := age(fixedNow, time.Time{}); got != "never" {
		t.Errorf("age of zero time: %q", got)
	}
}

func TestCells(t *testing.T) {
	for in, want := range map[string]string{
		"":                "-",
		"node1":           "node1",
		"a\tb\nc":         "a?b?c",
		"evil\x1b[2Jname": "evil?[2Jname",
		"c1\u009bcontrol": "c1?control",
		"é and ü":         "é and ü",
	} {
		if got := cell(in); got != want {
			t.Errorf("cell(%q) = %q, want %q", in, got, want)
		}
	}
	if got := truncate("Xy7kQ2mN9pLr4sT8vW1z.node1", 12); got != "Xy7kQ2mN9pLr…" {
		t.Errorf("truncate: %q", got)
	}
	if got := truncate("exactly12chr", 12); got != "exactly12chr" {
		t.Errorf("truncate: %q", got)
	}
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1229: "1.2 KiB", 5 << 20: "5.0 MiB"} {
		if got := bytesize(n); got != want {
			t.Errorf("bytesize(%d) = %q, want %q", n, got, want)
		}
	}
}
