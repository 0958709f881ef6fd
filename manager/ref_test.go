package manager

import "testing"

func TestRef(t *testing.T) {
	id := "0123456789abcdef0123456789abcdef.node1"
	tests := []struct {
		name        string
		domain, id  string
		sameAsFirst bool
	}{
		{"same domain and id", "prod", id, true},
		{"other domain", "staging", id, false},
		{"other id", "prod", id + "x", false},
	}
	first := Ref("prod", id)
	if len(first) != refLen {
		t.Fatalf("Ref = %q, want %d hex digits", first, refLen)
	}
	for _, tc := range tests {
		if got := Ref(tc.domain, tc.id); (got == first) != tc.sameAsFirst {
			t.Errorf("%s: Ref = %s, first %s, want same=%v", tc.name, got, first, tc.sameAsFirst)
		}
	}
}
