// Package logx holds the logging helpers flock's packages share.
package logx

import (
	"io"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Limiter lets one event through per Every and counts the others: what a
// peer or a stranger can cause per message must not be logged per message.
type Limiter struct {
	Every time.Duration

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// Allow reports whether to log now, and how many were suppressed since
// the last one that was.
func (l *Limiter) Allow(now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < l.Every {
		l.suppressed++
		return false, 0
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	return true, n
}

// OrDiscard returns log, or a logger that drops everything when log is nil:
// a library stays silent unless its user hands it a logger.
func OrDiscard(log logrus.FieldLogger) logrus.FieldLogger {
	if log != nil {
		return log
	}
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}
