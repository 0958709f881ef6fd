// Package fdlimit divides the process's file descriptors between the
// listeners, so that connections to one port (the cluster's, the
// application's) can never take the descriptors another needs.
//
// The Go runtime raises the soft RLIMIT_NOFILE to the hard one at start
// (Go 1.19 and later), so Current is already as high as the system allows
// this process.
package fdlimit

import "syscall"

// Current is the process's limit of open files; 0 if unknown.
func Current() uint64 {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0
	}
	return r.Cur
}

// Budgets is how many connections each listener may hold open at once.
type Budgets struct {
	Limit   uint64 // the process's limit (0: unknown, no budgets)
	Cluster int    // the receiver's connections
	HTTP    int    // the application's listener
	Admin   int    // the admin listener
}

// Split divides limit: a quarter for the cluster port, at most
// clusterWant; half for HTTP; a few for admin; the rest for the sender's
// connections to members, the heartbeat socket, files and logs. With an
// unknown limit, every budget is 0 (no bound beyond clusterWant).
func Split(limit uint64, clusterWant int) Budgets {
	if limit == 0 {
		return Budgets{Cluster: clusterWant}
	}
	quarter := int(min(limit/4, 1<<30))
	return Budgets{
		Limit:   limit,
		Cluster: max(1, min(clusterWant, quarter)),
		HTTP:    max(1, 2*quarter),
		Admin:   max(1, min(64, quarter/4)),
	}
}
