package admin_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/flockhq/flock/admin"
	"github.com/flockhq/flock/manager"
)

func TestAdminEndpoints(t *testing.T) {
	const token = "0123456789abcdef-token"
	mux := admin.NewMux(newFakeNode(), "static")
	guarded := admin.RequireToken(token, mux)
	health := admin.Health(newFakeNode())
	ref := manager.Ref("d", fakeID)
	tests := []struct {
		name   string
		h      http.Handler
		path   string
		auth   string
		want   int
		has    string // in the body
		hasNot string
	}{
		{"sessions list refs, not ids", mux, "/cluster/sessions", "", 200, ref, fakeID},
		{"lookup by id", mux, "/cluster/sessions?id=" + fakeID, "", 200, ref, fakeID},
		{"lookup of an unknown id", mux, "/cluster/sessions?id=nope", "", 200, "[]", ref},
		{"no token", guarded, "/cluster/status", "", 401, "token required", `"n1"`},
		{"wrong token", guarded, "/cluster/sessions", "Bearer 0123456789abcdef-tokeN", 401, "", ref},
		{"token without Bearer", guarded, "/metrics", token, 401, "", "flock_"},
		{"token", guarded, "/cluster/sessions", "Bearer " + token, 200, ref, fakeID},
		{"metrics with token", guarded, "/metrics", "Bearer " + token, 200, "flock_", ""},
		{"health needs no token", guarded, "/healthz", "", 200, "ok", ""},
		{"liveness needs no token", guarded, "/livez", "", 200, "ok", ""},
		{"public: healthz", health, "/healthz", "", 200, "ok", ""},
		{"public: readyz", health, "/readyz", "", 200, "ok", ""},
		{"public: livez", health, "/livez", "", 200, "ok", ""},
		{"public: no sessions", health, "/cluster/sessions", "", 404, "", ref},
		{"public: no status", health, "/cluster/status", "", 404, "", ""},
		{"public: no metrics", health, "/metrics", "", 404, "", "flock_"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", tc.path, nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			rec := httptest.NewRecorder()
			tc.h.ServeHTTP(rec, req)
			body, _ := io.ReadAll(rec.Body)
			if rec.Code != tc.want {
				t.Fatalf("GET %s: %d, want %d: %s", tc.path, rec.Code, tc.want, body)
			}
			if tc.has != "" && !strings.Contains(string(body), tc.has) {
				t.Errorf("GET %s: body lacks %q: %s", tc.path, tc.has, body)
			}
			if tc.hasNot != "" && strings.Contains(string(body), tc.hasNot) {
				t.Errorf("GET %s: body shows %q: %s", tc.path, tc.hasNot, body)
			}
		})
	}
}
