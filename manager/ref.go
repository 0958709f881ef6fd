package manager

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
)

// refLen is the hex digits of a reference: 64 bits, so that a million
// sessions collide with odds of one in 36 million.
const refLen = 16

// Ref is the short reference of session id in cluster domain: what the
// admin endpoints, the page and the logs show instead of the id, which is
// the user's credential. Every node of the domain computes the same
// reference, so an operator can follow a session across nodes and logs;
// the id cannot be recovered from it, and an operator who has an id (from
// a user) finds its reference with [Ref] or the admin lookup.
func Ref(domain, id string) string {
	h := hmac.New(sha256.New, []byte("flock session ref\x00"+domain))
	h.Write([]byte(id))
	return hex.EncodeToString(h.Sum(nil))[:refLen]
}

// ref is Ref in this node's domain.
func (m *Manager) ref(id string) string { return Ref(m.domain, id) }
