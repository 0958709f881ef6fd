package tlsid

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func issue(t *testing.T, caCert, caKey []byte, name string) tls.Certificate {
	t.Helper()
	c, k, err := Issue(caCert, caKey, name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

func TestNew(t *testing.T) {
	caCert, caKey, err := NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherCert, otherKey, _ := NewCA("other", time.Hour)
	tests := []struct {
		name    string
		cert    tls.Certificate
		ca      []byte
		wantErr string
	}{
		{"member of the CA", issue(t, caCert, caKey, "node1"), caCert, ""},
		{"certificate of another CA", issue(t, otherCert, otherKey, "node1"), caCert, "own certificate"},
		{"CA bundle not PEM", issue(t, caCert, caKey, "node1"), []byte("not pem"), "no PEM certificate"},
		{"no certificate", tls.Certificate{}, caCert, "empty certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := New(tt.cert, tt.ca)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !id.Has("node1") || id.Has("node2") {
					t.Errorf("names %v", id.Names)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("New = %v, want an error with %q", err, tt.wantErr)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	caCert, caKey, _ := NewCA("test", time.Hour)
	c, k, _ := Issue(caCert, caKey, "node1", time.Hour)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cert, key, ca := write("c.pem", c), write("k.pem", k), write("ca.pem", caCert)
	if _, err := Load(cert, key, ca); err != nil {
		t.Fatalf("Load: %v", err)
	}
	for _, args := range [][3]string{
		{filepath.Join(dir, "missing.pem"), key, ca},
		{cert, cert, ca},
		{cert, key, filepath.Join(dir, "missing.pem")},
	} {
		if _, err := Load(args[0], args[1], args[2]); err == nil {
			t.Errorf("Load%v: no error", args)
		}
	}
	if id, err := Issued(caCert, caKey, "node2", time.Hour); err != nil || !id.Has("node2") {
		t.Errorf("Issued = %v, %v; want an identity naming node2", id, err)
	}
	if _, _, err := Issue(caCert, caKey, "", time.Hour); err == nil {
		t.Error("Issue with an empty name: no error")
	}
	if _, _, err := Issue([]byte("x"), caKey, "n", time.Hour); err == nil {
		t.Error("Issue with a CA that is not PEM: no error")
	}
}
