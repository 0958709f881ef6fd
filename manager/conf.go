package manager

import (
	"fmt"

	"github.com/flockhq/flock/conf"
	"github.com/flockhq/flock/internal/wire"
)

// ConfigFrom reads a Manager's configuration from server.toml's
// [cluster.manager] (the route is [server] name).
func ConfigFrom(c conf.Config) (Config, error) {
	mc := c.Cluster.Manager
	if mc.Mode != ModeDelta && mc.Mode != ModeBackup {
		return Config{}, fmt.Errorf("cluster.manager.mode %q has no implementation", mc.Mode)
	}
	mode, err := wire.ParseMode(mc.Replication)
	if err != nil {
		return Config{}, fmt.Errorf("cluster.manager.replication: %w", err)
	}
	cfg := DefaultConfig()
	cfg.Route = c.Server.Name
	cfg.Mode = mc.Mode
	cfg.PersistDir = mc.PersistDir
	cfg.SessionTimeout = mc.SessionTimeout.Duration
	cfg.MaxActive = mc.MaxActive
	cfg.Replication = mode
	cfg.StateTransferTimeout = mc.StateTransferTimeout.Duration
	// Two heartbeats: the others answer a new member's first one at once,
	// and one may be lost.
	cfg.JoinWait = 2 * c.Cluster.Membership.Frequency.Duration
	cfg.AlwaysSave = mc.AlwaysSave
	cfg.NotifyOnReplication = mc.NotifyListenersOnReplication
	cfg.ExpireInterval = mc.ExpireInterval.Duration
	cfg.TouchInterval = mc.TouchInterval.Duration
	cfg.RequestTimeout = c.Cluster.Sender.Timeout.Duration
	// A state-transfer batch must fit in a frame with room for its envelope.
	cfg.TransferBatch = int(min(int64(cfg.TransferBatch), c.Cluster.Receiver.MaxFrame.Bytes/2))
	return cfg, nil
}
