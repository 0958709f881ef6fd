package main

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/flockhq/flock/manager"
	"github.com/flockhq/flock/valve"
)

// demoRoutes is the demo application: a per-session counter.
func demoRoutes(mux *http.ServeMux, v *valve.Valve) {
	// GET /counter increments the session's count and returns it.
	mux.Handle("GET /counter", v.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := valve.Session(r)
		if err != nil {
			return // the valve answers (503 when max_active is reached)
		}
		n, _, err := manager.Get[int](s, "count")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		n++
		if err := s.Set("count", n); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, n)
	})))
	// GET /counter/fill?bytes=N stores N bytes (at most 64 KiB) in the
	// session, for measuring memory and transfer per session of a given size.
	mux.Handle("GET /counter/fill", v.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("bytes"))
		if err != nil || n < 0 || n > 64<<10 {
			http.Error(w, "bytes: an integer in 0..65536", http.StatusBadRequest)
			return
		}
		s, err := valve.Session(r)
		if err != nil {
			return
		}
		if err := s.Set("pad", strings.Repeat("x", n)); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, n)
	})))
	// GET /counter/peek returns the count without changing the session (a
	// read costs no replication).
	mux.Handle("GET /counter/peek", v.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := 0
		if s := valve.Existing(r); s != nil {
			var err error
			if n, _, err = manager.Get[int](s, "count"); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, n)
	})))
}
