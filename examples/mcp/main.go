// Command mcp is a header-keyed server in the manner of the Model Context
// Protocol's Streamable HTTP transport: the client sends no cookie; the
// session id travels in the Mcp-Session-Id header ([session] id_header).
// The id is made by the first request (initialize) and sent back in the
// response's header; every later request must carry it (400 without it,
// 404 once the session is gone: the client then initializes again); a
// DELETE ends it on every node (204). Clients need not be sticky: any
// replica serves any session.
//
//	go run ./examples/mcp -name a -http 127.0.0.1:9001
//	go run ./examples/mcp -name b -http 127.0.0.1:9002
//	curl -si -XPOST localhost:9001/mcp -d '{"jsonrpc":"2.0","id":1,"method":"initialize"}'
//	curl -s -XPOST localhost:9002/mcp -H 'Mcp-Session-Id: <id>' -d '{"jsonrpc":"2.0","id":2,"method":"tools/call"}'
//
// It speaks only enough JSON-RPC to show the session's life: an MCP SDK's
// handler goes where serve's switch is.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"

	"github.com/flockhq/flock"
	"github.com/flockhq/flock/conf"
)

// Header is the session id's header, as MCP names it.
const Header = "Mcp-Session-Id"

type request struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id,omitempty"`
	Method  string          `json:"method"`
}

type response struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  any             `json:"result"`
}

// maxBody bounds a request's JSON: this example's messages are tiny.
const maxBody = 1 << 20

// Handler serves /mcp: POST for messages, DELETE to end the session. It
// must be wrapped by a flock node whose [session] id_header is Header.
func Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /mcp", serve)
	mux.HandleFunc("DELETE /mcp", func(w http.ResponseWriter, r *http.Request) {
		s, ok := existing(w, r)
		if !ok {
			return
		}
		s.Invalidate() // on every node
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

func serve(w http.ResponseWriter, r *http.Request) {
	var req request
	if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&req); err != nil || req.JSONRPC != "2.0" || req.Method == "" {
		http.Error(w, "400 not a JSON-RPC 2.0 request", http.StatusBadRequest)
		return
	}
	if req.Method == "initialize" {
		if _, err := flock.HeaderID(r, Header); !errors.Is(err, flock.ErrNoID) {
			http.Error(w, "400 initialize starts a session: send it without "+Header, http.StatusBadRequest)
			return
		}
		s, err := flock.SessionOf(r) // a new session; its id goes back in the Mcp-Session-Id header
		if err != nil {
			return // flock answered 503: max_active reached
		}
		s.Set("initialized", true)
		reply(w, req, map[string]any{"protocolVersion": "2025-06-18", "serverInfo": map[string]string{"name": "flock-mcp-example"}})
		return
	}
	s, ok := existing(w, r)
	if !ok {
		return
	}
	if req.ID == nil { // a notification: nothing to answer
		w.WriteHeader(http.StatusAccepted)
		return
	}
	switch req.Method {
	case "tools/call":
		// The state every replica shares: the calls of this session.
		n := s.GetInt("calls") + 1
		if err := s.Set("calls", n); err != nil {
			http.Error(w, "500 "+err.Error(), http.StatusInternalServerError)
			return
		}
		reply(w, req, map[string]any{"calls": n})
	default:
		reply(w, req, map[string]any{})
	}
}

// existing returns the session named by the request's Mcp-Session-Id, or
// answers 400 (no id, or a malformed one) or 404 (no such session: it
// ended, or expired; the client initializes again) and returns false.
func existing(w http.ResponseWriter, r *http.Request) (*flock.Session, bool) {
	if _, err := flock.HeaderID(r, Header); err != nil {
		http.Error(w, "400 "+err.Error(), http.StatusBadRequest)
		return nil, false
	}
	s := flock.Existing(r)
	if s == nil {
		http.Error(w, "404 no such session; initialize again", http.StatusNotFound)
		return nil, false
	}
	return s, true
}

func reply(w http.ResponseWriter, req request, result any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(response{JSONRPC: "2.0", ID: req.ID, Result: result})
}

// Config is conf.Default with the session id in the Mcp-Session-Id header.
func Config(name string) conf.Config {
	cfg := conf.Default() // loopback multicast; receiver ports auto-bind from 4000
	cfg.Server.Name = name
	cfg.Session.IDHeader = Header
	return cfg
}

func main() {
	name := flag.String("name", "a", "node name")
	addr := flag.String("http", "127.0.0.1:9001", "HTTP address")
	flag.Parse()
	if err := run(*name, *addr); err != nil {
		log.Fatal(err)
	}
}

func run(name, addr string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	node, err := flock.Start(ctx, Config(name))
	if err != nil {
		ln.Close()
		return err
	}
	defer node.Stop(context.Background())
	srv := flock.NewServer(addr, node.Wrap(Handler()))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		return srv.Shutdown(context.Background())
	case err := <-served:
		return err
	}
}
