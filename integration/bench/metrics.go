//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// replicationMetric is the histogram of replication times flockd may expose
// at GET /metrics (Prometheus text format). It is used only if present.
const replicationMetric = "flock_replication_seconds"

// histogram is a Prometheus histogram: cumulative counts by upper bound
// (seconds; +Inf included), summed over every label set other than le.
type histogram map[float64]float64

// scrapeReplication reads the replication histogram of n. found is false
// when n serves no /metrics or the metric is not in it.
func scrapeReplication(ctx context.Context, n *node) (h histogram, found bool, err error) {
	code, body, err := n.get(ctx, "/metrics", "")
	if err != nil {
		return nil, false, err
	}
	if code != http.StatusOK {
		return nil, false, nil
	}
	h = parseHistogram(body, replicationMetric)
	return h, len(h) > 0, nil
}

// parseHistogram collects the _bucket series of name from a Prometheus
// text exposition.
func parseHistogram(text []byte, name string) histogram {
	h := histogram{}
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		rest, ok := strings.CutPrefix(line, name+"_bucket{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "}")
		if !ok {
			continue
		}
		le, ok := labelValue(labels, "le")
		if !ok {
			continue
		}
		bound, err1 := strconv.ParseFloat(le, 64)
		fields := strings.Fields(value)
		if err1 != nil || len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		h[bound] += v
	}
	return h
}

// labelValue returns the value of label key in `a="x",le="0.5"`.
func labelValue(labels, key string) (string, bool) {
	for _, kv := range strings.Split(labels, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if ok && k == key {
			return strings.Trim(v, `"`), true
		}
	}
	return "", false
}

// minus is the histogram of the observations made between old and h.
func (h histogram) minus(old histogram) histogram {
	d := histogram{}
	for b, v := range h {
		d[b] = v - old[b]
	}
	return d
}

// count is the number of observations (the +Inf bucket).
func (h histogram) count() float64 { return h[math.Inf(1)] }

// quantile estimates the q-quantile as Prometheus' histogram_quantile
// does: linear interpolation inside the bucket that holds it; in the +Inf
// bucket, the largest finite bound. It returns 0 for an empty histogram.
func (h histogram) quantile(q float64) time.Duration {
	bounds := make([]float64, 0, len(h))
	for b := range h {
		bounds = append(bounds, b)
	}
	slices.Sort(bounds)
	total := h.count()
	if total <= 0 || len(bounds) == 0 {
		return 0
	}
	rank := q * total
	lower, below := 0.0, 0.0
	for _, b := range bounds {
		if h[b] >= rank {
			if math.IsInf(b, 1) {
				return seconds(lower)
			}
			if h[b] == below {
				return seconds(b)
			}
			return seconds(lower + (b-lower)*(rank-below)/(h[b]-below))
		}
		lower, below = b, h[b]
	}
	return seconds(lower)
}

func seconds(s float64) time.Duration { return time.Duration(math.Round(s * float64(time.Second))) }

// deltasSeries counts the delta messages a node queued for its members, one
// per member a change goes to.
const deltasSeries = `flock_messages_sent_total{type="delta"}`

// scrapeCounter sums the sample of series (the metric name with its labels,
// exactly as exposed) over the nodes' GET /metrics. A node whose /metrics
// lacks the series counts 0; one that serves no /metrics is an error.
func scrapeCounter(ctx context.Context, nodes []*node, series string) (float64, error) {
	total := 0.0
	for _, n := range nodes {
		code, body, err := n.get(ctx, "/metrics", "")
		if err != nil {
			return 0, err
		}
		if code != http.StatusOK {
			return 0, fmt.Errorf("%s: GET /metrics: %d", n.name, code)
		}
		v, _, err := counterValue(body, series)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", n.name, err)
		}
		total += v
	}
	return total, nil
}

// counterValue returns the sample of series in a Prometheus text
// exposition; found is false when the series is not in it.
func counterValue(text []byte, series string) (v float64, found bool, err error) {
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), series+" ")
		if !ok {
			continue
		}
		fields := strings.Fields(rest) // value [timestamp]
		if len(fields) == 0 {
			return 0, false, fmt.Errorf("%s: no value", series)
		}
		x, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return 0, false, fmt.Errorf("%s: %w", series, err)
		}
		v, found = v+x, true
	}
	return v, found, sc.Err()
}
