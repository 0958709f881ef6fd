// Package syncx holds the one synchronisation helper flock's packages share.
package syncx

import (
	"context"
	"sync"
)

// Wait waits for wg, or until ctx is done. On ctx's end it returns ctx's
// error; the goroutines behind wg are still stopping and end on their own
// (the helper goroutine returns with them).
func Wait(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
