// Package tlsid gives cluster connections mutual TLS 1.3 with identities
// bound to member names, for users who bring their own certificates: every
// node holds a certificate, signed by the cluster's CA, that names it (a DNS
// subject alternative name, or else the common name, equal to the member
// name). A caller's certificate must name the member its hello claims to
// be; the receiver checks that, the caller checks that the receiver's
// certificate comes from the cluster's CA.
//
// Members are dialled by address, so no host name is verified: what binds
// an address to a name is the member list (sealed heartbeats or static
// configuration), and what binds a name to a connection is this check.
package tlsid

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
)

// Identity is this node's certificate and the cluster's CA.
type Identity struct {
	cert tls.Certificate
	pool *x509.CertPool
	// Names are the member names the certificate carries.
	Names []string
}

// Errors of the checks.
var (
	ErrNoCertificate = errors.New("tlsid: the peer presented no certificate")
	ErrWrongName     = errors.New("tlsid: the certificate does not name the member")
)

// Load reads a PEM certificate (chain), its key and the CA bundle that
// signs every member's certificate.
func Load(certFile, keyFile, caFile string) (*Identity, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tlsid: cert %s, key %s: %w", certFile, keyFile, err)
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("tlsid: ca: %w", err)
	}
	return New(cert, ca)
}

// New builds an identity from a loaded certificate and a PEM CA bundle.
func New(cert tls.Certificate, caPEM []byte) (*Identity, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("tlsid: the CA bundle holds no PEM certificate")
	}
	if len(cert.Certificate) == 0 {
		return nil, errors.New("tlsid: empty certificate")
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("tlsid: certificate: %w", err)
	}
	cert.Leaf = leaf
	id := &Identity{cert: cert, pool: pool, Names: namesOf(leaf)}
	var chain []*x509.Certificate
	for _, der := range cert.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("tlsid: certificate chain: %w", err)
		}
		chain = append(chain, c)
	}
	if err := id.verify(leaf, chain); err != nil {
		return nil, fmt.Errorf("tlsid: this node's own certificate: %w", err)
	}
	return id, nil
}

// Has reports whether the identity's certificate names member name.
func (id *Identity) Has(name string) bool { return slices.Contains(id.Names, name) }

// Client is the configuration a node dials members with.
func (id *Identity) Client() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.cert},
		// Members are dialled by address: the chain is verified below,
		// against the cluster's CA only, and the name by the member list.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return ErrNoCertificate
			}
			return id.verify(cs.PeerCertificates[0], cs.PeerCertificates[1:])
		},
	}
}

// Server is the configuration a node's receiver accepts members with: a
// caller without a certificate of the cluster's CA is refused in the
// handshake.
func (id *Identity) Server() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    id.pool,
	}
}

func (id *Identity) verify(leaf *x509.Certificate, chain []*x509.Certificate) error {
	inter := x509.NewCertPool()
	for _, c := range chain {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         id.pool,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	return err
}

// CheckPeer reports whether the peer of a handshake that completed holds a
// certificate naming member name.
func CheckPeer(cs tls.ConnectionState, name string) error {
	if len(cs.PeerCertificates) == 0 {
		return ErrNoCertificate
	}
	names := namesOf(cs.PeerCertificates[0])
	if !slices.Contains(names, name) {
		return fmt.Errorf("%w: it names %q, the caller says it is %q", ErrWrongName, names, name)
	}
	return nil
}

// namesOf: the DNS names of the certificate, or its common name if it has
// none.
func namesOf(c *x509.Certificate) []string {
	if len(c.DNSNames) > 0 {
		return slices.Clone(c.DNSNames)
	}
	if c.Subject.CommonName != "" {
		return []string{c.Subject.CommonName}
	}
	return nil
}
