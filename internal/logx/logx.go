// Package logx holds the one logging helper flock's packages share.
package logx

import (
	"io"

	"github.com/sirupsen/logrus"
)

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
