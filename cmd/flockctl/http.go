package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"
)

const (
	httpTimeout = 5 * time.Second
	// maxBody bounds a node's answer; the session list of a large node is
	// the biggest (a few hundred bytes per session).
	maxBody = 256 << 20
)

// nodeURL checks a --node value and returns it without a trailing slash,
// ready for an endpoint path to be appended.
func nodeURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", usageErr("--node %q: want a URL like http://127.0.0.1:8080", s)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u.String(), nil
}

// get fetches path from node. A transport failure is an exitUsage error
// ("unreachable"), an answer other than 2xx an exitProblem one.
func (a *app) get(ctx context.Context, node, token, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, node+path, nil)
	if err != nil {
		return nil, usageErr("node %s: %v", node, err)
	}
	req.Header.Set("Accept", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, &exitError{exitUsage, fmt.Errorf("node %s unreachable: %s", node, reason(err, a.client.Timeout))}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, &exitError{exitUsage, fmt.Errorf("node %s: GET %s: answer cut short: %s", node, path, reason(err, a.client.Timeout))}
	}
	if resp.StatusCode == http.StatusUnauthorized {
		return nil, usageErr("node %s: GET %s: the node wants its admin token (--token or $%s)", node, path, tokenEnv)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, problemErr("node %s: GET %s: %s%s", node, path, resp.Status, snippet(body))
	}
	if len(body) > maxBody {
		return nil, problemErr("node %s: GET %s: answer larger than %d MiB", node, path, maxBody>>20)
	}
	return body, nil
}

// reason says in a few words why a request failed.
func reason(err error, timeout time.Duration) string {
	var dns *net.DNSError
	var ne net.Error
	var ue *url.Error
	switch {
	case errors.Is(err, context.Canceled):
		return "interrupted"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return fmt.Sprintf("no answer within %v", timeout)
	case errors.As(err, &dns):
		return dns.Error()
	case errors.As(err, &ue):
		return ue.Err.Error()
	}
	return err.Error()
}

// snippet is the first line of an error body, for the message.
func snippet(body []byte) string {
	line, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
	if line == "" {
		return ""
	}
	if r := []rune(line); len(r) > 200 {
		line = string(r[:200]) + "…"
	}
	return ": " + cell(line)
}

// decode parses a node's document into v.
func decode(node, path string, body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return problemErr("node %s: GET %s: not a flock document: %v", node, path, err)
	}
	return nil
}

// printJSON writes a document as received, indented.
func printJSON(w io.Writer, raw []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(raw), "", "  "); err != nil {
		return problemErr("invalid JSON: %v", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}
