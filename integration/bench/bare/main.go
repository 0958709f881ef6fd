// Command bare is the baseline of the cluster benchmark: the demo counter of
// flockd with no flock at all, just an in-memory map keyed by the session
// cookie. It speaks the same protocol as flockd's demo:
//
//	GET /counter        increments the session's count and returns it; a
//	                    request without a known cookie gets a new session
//	                    (Set-Cookie FLOCKSESSIONID)
//	GET /counter/peek   returns the count (0 without a session), changes nothing
//	GET /healthz        200
//
//	bare --http 198.51.100.10:8080
package main

import (
	"crypto/rand"
	"flag"
	"fmt"
	"log"
	"net/http"
	"sync"
	"time"
)

const cookieName = "FLOCKSESSIONID"

// counters is the session store: count by session id.
type counters struct {
	mu     sync.Mutex
	counts map[string]int
}

// increment adds one to the count of id, or starts a new session when id is
// unknown; it returns the session's id and its new count.
func (c *counters) increment(id string) (string, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.counts[id]; !ok || id == "" {
		id = rand.Text()
	}
	c.counts[id]++
	return id, c.counts[id]
}

func (c *counters) peek(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[id]
}

func sessionID(r *http.Request) string {
	if ck, err := r.Cookie(cookieName); err == nil {
		return ck.Value
	}
	return ""
}

func (c *counters) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /counter", func(w http.ResponseWriter, r *http.Request) {
		old := sessionID(r)
		id, n := c.increment(old)
		if id != old {
			http.SetCookie(w, &http.Cookie{Name: cookieName, Value: id, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, n)
	})
	mux.HandleFunc("GET /counter/peek", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, c.peek(sessionID(r)))
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	return mux
}

func main() {
	addr := flag.String("http", "127.0.0.1:8080", "HTTP address")
	flag.Parse()
	c := &counters{counts: map[string]int{}}
	srv := &http.Server{Addr: *addr, Handler: c.routes(), ReadHeaderTimeout: 10 * time.Second}
	log.Printf("bare: listening on %s", *addr)
	log.Fatal(srv.ListenAndServe())
}
