package main

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/flockhq/flock"
)

// maxFill bounds /counter/fill.
const maxFill = 4 << 10

// demoRoutes is the demo application: a per-session counter.
func demoRoutes(mux *http.ServeMux, wrap func(http.Handler) http.Handler) {
	// GET /counter increments the session's count and returns it.
	mux.Handle("GET /counter", wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := flock.SessionOf(r)
		if err != nil {
			return // the valve answers (503 when max_active is reached)
		}
		n, _, err := flock.Get[int](s, "count")
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
		// The version the count was read from: lets a checker of the lab
		// tell which copy a node served.
		w.Header().Set("X-Flock-Base", strconv.FormatUint(s.Version(), 10))
		fmt.Fprintln(w, n)
	})))
	// GET /counter/fill?bytes=N stores N bytes (at most 4 KiB) in the
	// session, for measuring memory and transfer per session of a given size.
	// The bound keeps anonymous requests from filling a node: with the
	// default max_active, 100,000 sessions of 4 KiB are 400 MB at most.
	mux.Handle("GET /counter/fill", wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("bytes"))
		if err != nil || n < 0 || n > maxFill {
			http.Error(w, "bytes: an integer in 0.."+strconv.Itoa(maxFill), http.StatusBadRequest)
			return
		}
		s, err := flock.SessionOf(r)
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
	mux.Handle("GET /counter/peek", wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := 0
		if s := flock.Existing(r); s != nil {
			var err error
			if n, _, err = flock.Get[int](s, "count"); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, n)
	})))
	// GET /attr?key=K&value=V stores V under K (K: 1 to 64 letters, digits,
	// '-' or '_'; V: at most 1 KiB) and deletes K when value is absent:
	// many writers of many keys, for checking that replicas converge.
	mux.Handle("GET /attr", wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		key, value := q.Get("key"), q.Get("value")
		if !validKey(key) || len(value) > 1<<10 {
			http.Error(w, "key: 1 to 64 of [A-Za-z0-9_-]; value: at most 1 KiB", http.StatusBadRequest)
			return
		}
		s, err := flock.SessionOf(r)
		if err != nil {
			return
		}
		if q.Has("value") {
			err = s.Set(key, value)
		} else {
			err = s.Delete(key)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})))
	// GET /logout ends the session on every node (and deletes the cookie).
	mux.Handle("GET /logout", wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		s := flock.Existing(r)
		if s == nil {
			fmt.Fprintln(w, "no session") // nothing to end (a checker tells the two apart)
			return
		}
		s.Invalidate()
		fmt.Fprintln(w, "logged out")
	})))
}

func validKey(k string) bool {
	if len(k) == 0 || len(k) > 64 {
		return false
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
