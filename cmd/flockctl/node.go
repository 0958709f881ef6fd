package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/flockhq/flock/admin"
	"github.com/flockhq/flock/manager"
	"github.com/flockhq/flock/membership"
)

const (
	defaultNode  = "http://127.0.0.1:9090"    // [server] admin's default
	tokenEnv     = "FLOCK_SERVER_ADMIN_TOKEN" // flockd reads it too (conf.EnvName)
	statusPath   = "/cluster/status"
	sessionsPath = "/cluster/sessions"
)

// nodeOpts are the flags of the commands that ask a node.
type nodeOpts struct {
	node  string
	json  bool
	token string
	id    string // sessions: the one session of this full id
}

func nodeFlags(fl *flag.FlagSet) *nodeOpts {
	o := &nodeOpts{}
	fl.StringVar(&o.node, "node", defaultNode, "admin `URL` of the node ([server] admin)")
	fl.BoolVar(&o.json, "json", false, "print the node's JSON document instead of tables")
	fl.StringVar(&o.token, "token", "", "[server] admin_token, if the node has one (default $"+tokenEnv+")")
	return o
}

// tokenOf is the token to send: the flag's, else the environment's, which
// keeps it out of the process list.
func (o nodeOpts) tokenOf() string {
	if o.token != "" {
		return o.token
	}
	return os.Getenv(tokenEnv)
}

func statusCmd(fl *flag.FlagSet) func(context.Context, *app) error {
	o := nodeFlags(fl)
	return func(ctx context.Context, a *app) error { return a.status(ctx, *o) }
}

func membersCmd(fl *flag.FlagSet) func(context.Context, *app) error {
	o := nodeFlags(fl)
	return func(ctx context.Context, a *app) error { return a.members(ctx, *o) }
}

func sessionsCmd(fl *flag.FlagSet) func(context.Context, *app) error {
	o := nodeFlags(fl)
	fl.StringVar(&o.id, "id", "", "show only the session of this full `ID` (a user's cookie value) and its reference")
	return func(ctx context.Context, a *app) error { return a.sessions(ctx, *o) }
}

// fetchStatus returns the status document of the node, raw and decoded.
func (a *app) fetchStatus(ctx context.Context, o nodeOpts) (string, []byte, admin.Status, error) {
	var st admin.Status
	node, err := nodeURL(o.node)
	if err != nil {
		return "", nil, st, err
	}
	body, err := a.get(ctx, node, o.tokenOf(), statusPath)
	if err != nil {
		return node, nil, st, err
	}
	return node, body, st, decode(node, statusPath, body, &st)
}

func (a *app) status(ctx context.Context, o nodeOpts) error {
	node, body, st, err := a.fetchStatus(ctx, o)
	if err != nil {
		return err
	}
	if o.json {
		err = printJSON(a.stdout, body)
	} else {
		renderStatus(a.stdout, st, a.now())
	}
	if err != nil {
		return err
	}
	if p := problems(st); len(p) > 0 {
		return problemErr("node %s: %s", node, strings.Join(p, "; "))
	}
	return nil
}

// problems lists what makes status exit 1.
func problems(st admin.Status) []string {
	var p []string
	switch st.Manager.TransferState {
	case "timed out", "failed":
		p = append(p, "state transfer "+st.Manager.TransferState)
	}
	for _, m := range st.Members {
		if m.State == membership.Suspect {
			p = append(p, fmt.Sprintf("member %s (%s) is suspect", cell(m.Name), shortID(m.ID)))
		}
	}
	return p
}

func (a *app) members(ctx context.Context, o nodeOpts) error {
	node, body, st, err := a.fetchStatus(ctx, o)
	if err != nil {
		return err
	}
	if !o.json {
		renderMembers(a.stdout, st.Members, a.now())
		return nil
	}
	// The members as the node sent them, fields flockctl does not know included.
	var doc struct {
		Members json.RawMessage `json:"members"`
	}
	if err := decode(node, statusPath, body, &doc); err != nil {
		return err
	}
	if len(doc.Members) == 0 || string(doc.Members) == "null" {
		doc.Members = json.RawMessage("[]")
	}
	return printJSON(a.stdout, doc.Members)
}

func (a *app) sessions(ctx context.Context, o nodeOpts) error {
	node, err := nodeURL(o.node)
	if err != nil {
		return err
	}
	path := sessionsPath
	if o.id != "" {
		path += "?id=" + url.QueryEscape(o.id)
	}
	body, err := a.get(ctx, node, o.tokenOf(), path)
	if err != nil {
		return err
	}
	var ss []manager.Info
	if err := decode(node, sessionsPath, body, &ss); err != nil {
		return err
	}
	if o.json {
		return printJSON(a.stdout, body)
	}
	renderSessions(a.stdout, ss, a.now())
	return nil
}
