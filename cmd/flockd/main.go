// Command flockd runs one flock node, built on the front door (package
// flock): the cluster, the session manager, the admin endpoints and a demo
// application (a per-session counter).
//
//	flockd --config conf/server.toml [--name node2 --http 127.0.0.1:8081 ...]
//	flockd --version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/net/netutil"

	"github.com/flockhq/flock"
	"github.com/flockhq/flock/admin"
	"github.com/flockhq/flock/conf"
	"github.com/flockhq/flock/internal/fdlimit"
	"github.com/flockhq/flock/membership"
	"github.com/flockhq/flock/receiver"
)

const defaultConfig = "conf/server.toml"

// errVersion: --version asked for the version instead of a node.
var errVersion = errors.New("version requested")

// Exit codes.
const (
	exitOK     = 0
	exitFail   = 1 // the node could not run
	exitConfig = 2 // bad flags or configuration
)

func main() {
	// The signals stay caught until exit: a second SIGTERM during the
	// bounded shutdown must not cut the leave heartbeat short.
	ctx, _ := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process: ctx ends the node as a signal would.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, unknownEnv, err := configure(args, stderr)
	if errors.Is(err, errVersion) {
		fmt.Fprintln(stdout, "flockd", version())
		return exitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "flockd: %v\n", err)
		return exitConfig
	}

	log := logrus.New()
	log.SetOutput(stderr)
	if cfg.Server.LogFormat == "json" {
		log.SetFormatter(&logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano})
	} else {
		log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: time.RFC3339Nano})
	}
	level, err := logrus.ParseLevel(cfg.Server.LogLevel)
	if err != nil { // conf validated it; keep the default rather than fail
		level = logrus.InfoLevel
	}
	log.SetLevel(level)
	entry := log.WithField("node", cfg.Server.Name)
	if len(unknownEnv) > 0 {
		entry.WithField("variables", unknownEnv).Warn("environment variables that name no configuration key (a typo?) are ignored")
	}

	// SIGHUP rereads the configuration for what can change while the node
	// runs: the cluster keys.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := func() (conf.Config, error) {
		cfg, _, err := configure(args, io.Discard)
		return cfg, err
	}
	if err := serve(ctx, cfg, entry, hup, reload); err != nil {
		entry.WithError(err).Error("flockd failed")
		return exitFail
	}
	return exitOK
}

// configure reads the config file, applies the environment's FLOCK_*
// variables on top and then the flags. The default file may be missing
// (built-in defaults then apply); a named one may not. unknownEnv lists the
// FLOCK_ variables that name no key.
func configure(args []string, stderr io.Writer) (cfg conf.Config, unknownEnv []string, err error) {
	fl := flag.NewFlagSet("flockd", flag.ContinueOnError)
	fl.SetOutput(stderr)
	path := fl.String("config", defaultConfig, "configuration file")
	name := fl.String("name", "", "node name, overrides [server] name")
	domain := fl.String("domain", "", "cluster domain, overrides [cluster] domain")
	httpAddr := fl.String("http", "", "HTTP address, overrides [server] http")
	adminAddr := fl.String("admin", "", `admin address or "off", overrides [server] admin`)
	bind := fl.String("bind", "", "address of the heartbeat interface, overrides [cluster.membership] bind")
	rhost := fl.String("receiver-host", "", "advertised receiver address, overrides [cluster.receiver] host")
	rport := fl.Int("receiver-port", 0, "receiver port, overrides [cluster.receiver] port")
	showVersion := fl.Bool("version", false, "print the version and exit")
	if err := fl.Parse(args); err != nil {
		return conf.Config{}, nil, err
	}
	if *showVersion {
		return conf.Config{}, nil, errVersion
	}
	if fl.NArg() > 0 {
		return conf.Config{}, nil, fmt.Errorf("unexpected argument %q (flags start with --)", fl.Arg(0))
	}

	// The environment over the file, the flags over both; then one
	// validation of the whole.
	overlay := func(c *conf.Config) error {
		var err error
		if unknownEnv, err = c.ApplyEnv(os.Environ()); err != nil {
			return fmt.Errorf("environment: %w", err)
		}
		set := func(flagName string, apply func()) {
			if flagSet(fl, flagName) {
				apply()
			}
		}
		set("name", func() { c.Server.Name = *name })
		set("domain", func() { c.Cluster.Domain = *domain })
		set("http", func() { c.Server.HTTP = *httpAddr })
		set("admin", func() { c.Server.Admin = *adminAddr })
		set("bind", func() { c.Cluster.Membership.Bind = *bind })
		set("receiver-host", func() { c.Cluster.Receiver.Host = *rhost })
		set("receiver-port", func() { c.Cluster.Receiver.Port = *rport })
		return nil
	}
	cfg, err = conf.LoadWith(*path, overlay)
	if errors.Is(err, fs.ErrNotExist) && !flagSet(fl, "config") {
		cfg = conf.Default()
		if err = overlay(&cfg); err == nil {
			err = cfg.Validate()
		}
	}
	if err != nil {
		return conf.Config{}, nil, err
	}
	return cfg, unknownEnv, nil
}

func flagSet(fl *flag.FlagSet, name string) bool {
	found := false
	fl.Visit(func(f *flag.Flag) { found = found || f.Name == name })
	return found
}

// serve runs the node until ctx ends, then leaves the cluster cleanly.
func serve(ctx context.Context, cfg conf.Config, log *logrus.Entry, hup <-chan os.Signal, reload func() (conf.Config, error)) error {
	lns, err := listen(cfg)
	if err != nil {
		return err
	}
	closeAll := func() {
		for _, l := range lns {
			l.Close()
		}
	}
	events := admin.NewEventLog(50)
	// A Conflict: another live process, there first, holds this node's
	// name. This process is the duplicate and must not serve under it.
	conflict := make(chan membership.Event, 1)
	node, err := flock.Start(ctx, cfg, flock.WithLogger(log), flock.WithMemberEvents(func(e membership.Event) {
		events.Add(e)
		logEvent(e, log)
		if e.Type == membership.Conflict {
			select {
			case conflict <- e:
			default: // one is enough to stop
			}
		}
	}))
	if err != nil {
		closeAll()
		return err
	}
	local := node.Local()
	fields := logrus.Fields{"id": local.ID, "address": local.Addr, "domain": local.Domain, "http": lns[0].Addr(), "version": version()}
	if len(lns) > 1 {
		fields["admin"] = lns[1].Addr()
		if !admin.Loopback(lns[1].Addr()) && cfg.Server.AdminToken == "" {
			log.WithField("admin", lns[1].Addr()).Error("SECURITY: the admin endpoints (status, sessions, metrics) are reachable from the network WITHOUT A TOKEN; set [server] admin_token, or admin on a loopback address")
		}
	} else {
		fields["admin"] = conf.AdminOff
	}
	if ids := node.KeyIDs(); ids != nil {
		fields["keys"] = ids // public ids, never the keys
	}
	// Each listener holds at most its share of the file descriptors, so
	// that connections to one (idle ones to the cluster port, slow clients
	// of the application) never take what another needs.
	budget := fdlimit.Split(fdlimit.Current(), receiver.DefaultConfig().MaxConns)
	if budget.Limit > 0 {
		lns[0] = netutil.LimitListener(lns[0], budget.HTTP)
		if len(lns) > 1 {
			lns[1] = netutil.LimitListener(lns[1], budget.Admin)
		}
		fields["fds"] = fmt.Sprintf("limit %d: cluster %d, http %d, admin %d", budget.Limit, budget.Cluster, budget.HTTP, budget.Admin)
	}
	log.WithFields(fields).Info("node started")

	var draining atomic.Bool
	adminMux := node.Admin()
	adminMux.Handle("GET /cluster/{$}", admin.Page(node, cfg.Cluster.Membership.Type, events))
	if cfg.Server.Pprof {
		adminMux.HandleFunc("/debug/pprof/", pprof.Index)
		adminMux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		adminMux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		adminMux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		adminMux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	adminHandler := drainAware(admin.RequireToken(cfg.Server.AdminToken, adminMux), &draining)
	// The application's listener serves the application and the health
	// paths for load balancers, never the admin endpoints.
	app := http.NewServeMux()
	demoRoutes(app, node.Wrap)
	health := drainAware(node.Health(), &draining)
	for _, p := range admin.HealthPaths {
		app.Handle("GET "+p, health)
	}
	servers := []*http.Server{boundedServer(app)}
	if len(lns) > 1 {
		servers = append(servers, boundedServer(adminHandler))
	}
	httpDone := make(chan error, len(servers))
	for i, srv := range servers {
		go func() { httpDone <- srv.Serve(lns[i]) }()
	}

	var serveErr error
wait:
	for {
		select {
		case <-ctx.Done():
			log.Info("stopping: draining requests and replication")
			break wait
		case serveErr = <-httpDone:
			break wait
		case e := <-conflict:
			serveErr = fmt.Errorf("%w: %q is the name of the process at %s (id %s), which started first; stopping this one",
				membership.ErrNameTaken, e.Member.Name, e.Member.Addr, e.Member.ID)
			break wait
		case <-hup:
			reloadKeys(node, reload, log)
		}
	}
	// Graceful: the load balancer sees 503 on /healthz while the node
	// still serves (the grace), then requests in flight finish, what they
	// changed is replicated, and the node leaves.
	draining.Store(true)
	dctx, dcancel := context.WithTimeout(context.Background(), time.Second)
	if err := node.Drain(dctx); err != nil {
		log.WithError(err).Debug("not every member heard that this node drains")
	}
	dcancel()
	if g := cfg.Server.DrainGrace.Duration; g > 0 && serveErr == nil {
		log.WithField("grace", g).Info("draining: not ready, still serving")
		t := time.NewTimer(g)
		select {
		case <-t.C:
		case serveErr = <-httpDone:
		}
		t.Stop()
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.Server.DrainTimeout.Duration)
	defer cancel()
	for _, srv := range servers {
		if err := srv.Shutdown(shutdownCtx); err != nil {
			serveErr = errors.Join(serveErr, fmt.Errorf("http shutdown: %w", err))
		}
	}
	if err := node.Stop(shutdownCtx); err != nil {
		serveErr = errors.Join(serveErr, err)
	}
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return serveErr
	}
	log.Info("stopped")
	return nil
}

// reloadKeys rereads the configuration and gives the node its keys: a
// step of a key rotation. A bad file changes nothing.
func reloadKeys(node *flock.Node, reload func() (conf.Config, error), log *logrus.Entry) {
	cfg, err := reload()
	var keys [][]byte
	if err == nil {
		keys, err = cfg.Cluster.Security.LoadKeys()
	}
	if err == nil && keys == nil {
		err = errors.New("the configuration sets no key; a running node cannot drop its keyring")
	}
	if err == nil {
		err = node.SetKeys(keys...)
	}
	if err != nil {
		log.WithError(err).Error("SIGHUP: keys not reloaded; the node keeps its keys")
		return
	}
	log.WithField("keys", node.KeyIDs()).Info("SIGHUP: cluster keys reloaded (the first seals)")
}

// listen opens the HTTP listener and, unless [server] admin is "off", the
// admin one (on the next free port if its own is taken).
func listen(cfg conf.Config) ([]net.Listener, error) {
	ln, err := net.Listen("tcp", cfg.Server.HTTP)
	if err != nil {
		return nil, fmt.Errorf("http: %w", err)
	}
	if cfg.Server.Admin == conf.AdminOff {
		return []net.Listener{ln}, nil
	}
	al, err := admin.Listen(cfg.Server.Admin)
	if err != nil {
		ln.Close()
		return nil, err
	}
	return []net.Listener{ln, al}, nil
}

// drainAware answers /healthz and /readyz with 503 once the node is
// shutting down, so a load balancer stops sending it users before it
// leaves.
func drainAware(next http.Handler, draining *atomic.Bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if (r.URL.Path == "/healthz" || r.URL.Path == "/readyz") && draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func logEvent(e membership.Event, log *logrus.Entry) {
	entry := log.WithFields(logrus.Fields{
		"event":   e.Type.String(),
		"member":  e.Member.Name,
		"id":      e.Member.ID.String(),
		"address": e.Member.Addr.String(),
		"reason":  e.Reason,
	})
	switch e.Type {
	case membership.Conflict:
		entry.Error("another live process, started first, holds this node's name")
	case membership.Failed:
		entry.Warn("member " + e.Type.String())
	default:
		entry.Info("member " + e.Type.String())
	}
}

// boundedServer serves h with every limit set (flock.NewServer).
func boundedServer(h http.Handler) *http.Server { return flock.NewServer("", h) }
