// Command flockctl inspects a running flock cluster: a node's status,
// members and sessions over its admin endpoints, and the multicast
// heartbeats on the wire, listened to without joining the cluster.
//
//	flockctl status   [--node URL] [--json]
//	flockctl members  [--node URL] [--json]
//	flockctl sessions [--node URL] [--json]
//	flockctl listen   --bind ADDR [--address 228.0.0.4] [--port 45564] [--for DURATION] [--key-file FILE]
//	flockctl keygen
//	flockctl tls-ca   --out DIR [--valid DURATION]
//	flockctl tls-cert --ca DIR --name NODE --out DIR [--valid DURATION]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/flockhq/flock/keyring"
	"github.com/flockhq/flock/tlsid"
)

// Exit codes.
const (
	exitOK      = 0
	exitProblem = 1 // the cluster answered, and the answer is a problem
	exitUsage   = 2 // bad usage, or flockctl could not ask: node unreachable, group not joined
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is main without the process: ctx ends a command as a signal would.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a := &app{
		stdout:   stdout,
		stderr:   stderr,
		now:      time.Now,
		client:   &http.Client{Timeout: httpTimeout},
		terminal: isTerminal(stdout),
	}
	return a.run(ctx, args)
}

// app is what the commands share; tests build one with a fixed clock.
type app struct {
	stdout, stderr io.Writer
	now            func() time.Time
	client         *http.Client
	terminal       bool // stdout is a terminal: listen redraws its table
}

// command is one subcommand. setup defines its flags on fl and returns the
// action to run once they are parsed.
type command struct {
	name     string
	synopsis string
	summary  string
	setup    func(fl *flag.FlagSet) func(ctx context.Context, a *app) error
}

var commands = []command{
	{"status", "[--node URL] [--token T] [--json]",
		"The node's status: itself, membership, sessions, state transfer, its members\n" +
			"and its connections to them. Exits 1 when a member is suspect or the state\n" +
			"transfer timed out or failed.",
		statusCmd},
	{"members", "[--node URL] [--token T] [--json]",
		"The members the node sees: name, state, address, last heartbeat, id.",
		membersCmd},
	{"sessions", "[--node URL] [--token T] [--id ID] [--json]",
		"The sessions the node holds, most recently used first: references (the same\n" +
			"on every node, never the ids), sizes and versions; never attribute values.\n" +
			"--id finds the session of a full id, as a user's cookie gives it.",
		sessionsCmd},
	{"listen", "--bind ADDR [--address 228.0.0.4] [--port 45564] [--for DURATION] [--key-file FILE]",
		"Listen to the membership heartbeats on the interface whose IPv4 address is\n" +
			"ADDR, without joining the cluster (nothing is sent), and show every sender.\n" +
			"Runs until interrupted, or for DURATION; then prints the final table.",
		listenCmd},
	{"keygen", "",
		"Print a fresh random cluster key (base64, 32 bytes) for [cluster.security]\n" +
			"keys or a key_file. Every node of a cluster needs the same keys.",
		keygenCmd},
	{"tls-ca", "--out DIR [--valid DURATION]",
		"Make a small CA for [cluster.tls]: writes DIR/ca.pem (every node's ca) and\n" +
			"DIR/ca-key.pem (keep it off the nodes). Valid for DURATION (default 2 years).",
		tlsCACmd},
	{"tls-cert", "--ca DIR --name NODE --out DIR [--valid DURATION]",
		"Issue a certificate naming member NODE from the CA in DIR (ca.pem, ca-key.pem):\n" +
			"writes DIR/NODE.pem and DIR/NODE-key.pem for [cluster.tls] cert and key.",
		tlsCertCmd},
}

func tlsCACmd(fl *flag.FlagSet) func(ctx context.Context, a *app) error {
	out := fl.String("out", "", "directory to write ca.pem and ca-key.pem to")
	valid := fl.Duration("valid", 2*365*24*time.Hour, "validity")
	return func(ctx context.Context, a *app) error {
		if *out == "" {
			return usageErr("tls-ca: --out is required")
		}
		cert, key, err := tlsid.NewCA("flock cluster CA", *valid)
		if err != nil {
			return err
		}
		return writePair(a, *out, "ca", cert, key)
	}
}

func tlsCertCmd(fl *flag.FlagSet) func(ctx context.Context, a *app) error {
	caDir := fl.String("ca", "", "directory holding ca.pem and ca-key.pem")
	name := fl.String("name", "", "the member name the certificate binds (server.name)")
	out := fl.String("out", "", "directory to write NAME.pem and NAME-key.pem to")
	valid := fl.Duration("valid", 365*24*time.Hour, "validity")
	return func(ctx context.Context, a *app) error {
		if *caDir == "" || *name == "" || *out == "" {
			return usageErr("tls-cert: --ca, --name and --out are required")
		}
		if strings.ContainsAny(*name, `/\`) {
			return usageErr("tls-cert: --name %q: a member name, not a path", *name)
		}
		caCert, err := os.ReadFile(filepath.Join(*caDir, "ca.pem"))
		if err != nil {
			return err
		}
		caKey, err := os.ReadFile(filepath.Join(*caDir, "ca-key.pem"))
		if err != nil {
			return err
		}
		cert, key, err := tlsid.Issue(caCert, caKey, *name, *valid)
		if err != nil {
			return err
		}
		return writePair(a, *out, *name, cert, key)
	}
}

// writePair writes base.pem and base-key.pem (the key readable by its
// owner only), refusing to overwrite either.
func writePair(a *app, dir, base string, cert, key []byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{{base + ".pem", cert, 0o644}, {base + "-key.pem", key, 0o600}} {
		path := filepath.Join(dir, f.name)
		fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, f.mode)
		if err != nil {
			return err
		}
		if _, err := fh.Write(f.data); err != nil {
			fh.Close()
			return err
		}
		if err := fh.Close(); err != nil {
			return err
		}
		fmt.Fprintln(a.stdout, path)
	}
	return nil
}

func keygenCmd(fl *flag.FlagSet) func(ctx context.Context, a *app) error {
	return func(ctx context.Context, a *app) error {
		_, err := fmt.Fprintln(a.stdout, keyring.Generate())
		return err
	}
}

func (a *app) run(ctx context.Context, args []string) int {
	if len(args) == 0 {
		usage(a.stderr)
		return exitUsage
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		return a.help(args[1:])
	}
	cmd, ok := lookup(args[0])
	if !ok {
		if strings.HasPrefix(args[0], "-") {
			fmt.Fprintf(a.stderr, "flockctl: flag %s before the command; flags follow it (flockctl status --node URL)\n", args[0])
		} else {
			fmt.Fprintf(a.stderr, "flockctl: unknown command %q (flockctl help lists them)\n", args[0])
		}
		return exitUsage
	}
	return a.exit(a.runCommand(ctx, cmd, args[1:]))
}

func (a *app) help(args []string) int {
	if len(args) == 0 {
		usage(a.stdout)
		return exitOK
	}
	cmd, ok := lookup(args[0])
	if !ok {
		fmt.Fprintf(a.stderr, "flockctl: no help for unknown command %q\n", args[0])
		return exitUsage
	}
	commandUsage(a.stdout, cmd)
	return exitOK
}

func lookup(name string) (command, bool) {
	for _, c := range commands {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// runCommand parses the flags of cmd and runs it. Usage goes to stdout when
// asked for (-h), to stderr after a flag error.
func (a *app) runCommand(ctx context.Context, cmd command, args []string) error {
	fl := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	fl.SetOutput(io.Discard) // its errors are reported below, with the usage
	fl.Usage = func() {}
	action := cmd.setup(fl)
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			commandUsage(a.stdout, cmd)
			return err
		}
		fmt.Fprintf(a.stderr, "flockctl: %s: %v\n", cmd.name, err)
		commandUsage(a.stderr, cmd)
		return &exitError{exitUsage, errReported}
	}
	if fl.NArg() > 0 {
		return usageErr("%s: unexpected argument %q (flags start with --)", cmd.name, fl.Arg(0))
	}
	return action(ctx, a)
}

// exit reports err on stderr and turns it into an exit code.
func (a *app) exit(err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	code := exitProblem
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	if !errors.Is(err, errReported) {
		fmt.Fprintf(a.stderr, "flockctl: %v\n", err)
	}
	return code
}

// exitError carries the exit code of an error.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// errReported is an error already written to stderr.
var errReported = errors.New("reported")

func usageErr(format string, args ...any) error {
	return &exitError{exitUsage, fmt.Errorf(format, args...)}
}

func problemErr(format string, args ...any) error {
	return &exitError{exitProblem, fmt.Errorf(format, args...)}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `flockctl inspects a running flock cluster.

Usage:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  flockctl %-8s %s\n", c.name, c.synopsis)
	}
	fmt.Fprint(w, `  flockctl help [COMMAND]

URL is a node's admin address, e.g. http://127.0.0.1:8080 (the default).
Exit status: 0 ok; 1 the cluster answered with a problem (an HTTP error, a
suspect member, a failed state transfer); 2 usage error, or the node could
not be reached (or the group not joined).
`)
	for _, c := range commands {
		fmt.Fprintln(w)
		commandUsage(w, c)
	}
}

func commandUsage(w io.Writer, c command) {
	fmt.Fprintf(w, "flockctl %s %s\n", c.name, c.synopsis)
	for line := range strings.SplitSeq(c.summary, "\n") {
		fmt.Fprintf(w, "  %s\n", line)
	}
	fl := flag.NewFlagSet(c.name, flag.ContinueOnError)
	c.setup(fl)
	fl.VisitAll(func(f *flag.Flag) {
		name, help := flag.UnquoteUsage(f)
		arg := "--" + f.Name
		if name != "" {
			arg += " " + name
		}
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0s" {
			help += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "    %-22s %s\n", arg, help)
	})
}

// isTerminal reports whether w is a character device such as a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("TERM") == "dumb" {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
