package flock_test

import (
	"net/http"
	"testing"

	"github.com/flockhq/flock"
)

func TestNewServerSetsEveryLimit(t *testing.T) {
	s := flock.NewServer(":0", http.NotFoundHandler())
	for name, v := range map[string]int64{
		"ReadHeaderTimeout": int64(s.ReadHeaderTimeout),
		"ReadTimeout":       int64(s.ReadTimeout),
		"WriteTimeout":      int64(s.WriteTimeout),
		"IdleTimeout":       int64(s.IdleTimeout),
		"MaxHeaderBytes":    int64(s.MaxHeaderBytes),
	} {
		if v <= 0 {
			t.Errorf("%s not set", name)
		}
	}
	if s.MaxHeaderBytes >= http.DefaultMaxHeaderBytes {
		t.Errorf("MaxHeaderBytes %d, want below net/http's %d", s.MaxHeaderBytes, http.DefaultMaxHeaderBytes)
	}
}
