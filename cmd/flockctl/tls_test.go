package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/flockhq/flock/tlsid"
)

// tls-ca and tls-cert make files that [cluster.tls] loads, the key kept
// private, and never overwrite one.
func TestTLSCommands(t *testing.T) {
	dir := t.TempDir()
	ca, certs := filepath.Join(dir, "ca"), filepath.Join(dir, "certs")
	if code, _, stderr := runApp(t, "tls-ca", "--out", ca); code != exitOK {
		t.Fatalf("tls-ca: exit %d: %s", code, stderr)
	}
	if code, _, stderr := runApp(t, "tls-cert", "--ca", ca, "--name", "node1", "--out", certs); code != exitOK {
		t.Fatalf("tls-cert: exit %d: %s", code, stderr)
	}
	id, err := tlsid.Load(filepath.Join(certs, "node1.pem"), filepath.Join(certs, "node1-key.pem"), filepath.Join(ca, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if !id.Has("node1") || id.Has("node2") {
		t.Errorf("the certificate names %v, want node1", id.Names)
	}
	if fi, err := os.Stat(filepath.Join(certs, "node1-key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, %v; want 0600", fi.Mode(), err)
	}
	if code, _, _ := runApp(t, "tls-cert", "--ca", ca, "--name", "node1", "--out", certs); code == exitOK {
		t.Error("tls-cert overwrote an existing certificate")
	}
	for _, args := range [][]string{
		{"tls-ca"},
		{"tls-cert", "--ca", ca, "--out", certs},
		{"tls-cert", "--ca", ca, "--name", "../x", "--out", certs},
	} {
		if code, _, _ := runApp(t, args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
	}
}
