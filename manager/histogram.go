package manager

import (
	"sync/atomic"
	"time"
)

// replicationBuckets are the upper bounds of the replication histogram.
var replicationBuckets = [...]time.Duration{
	50 * time.Microsecond, 100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
	500 * time.Millisecond, time.Second, 2500 * time.Millisecond, 5 * time.Second,
}

// histogram counts durations in replicationBuckets, lock-free: observing
// costs a few comparisons and three atomic adds.
type histogram struct {
	counts [len(replicationBuckets) + 1]atomic.Uint64 // per bucket, not cumulative; the last is above every bound
	nanos  atomic.Uint64                              // sum of the durations observed
}

func (h *histogram) observe(d time.Duration) {
	d = max(d, 0)
	i := 0
	for i < len(replicationBuckets) && d > replicationBuckets[i] {
		i++
	}
	h.counts[i].Add(1)
	h.nanos.Add(uint64(d))
}

// snapshot returns the bucket bounds in seconds, the cumulative count of
// each (observations <= bound), the sum in seconds and the count. The count
// is the sum of the buckets, so it is never below the last bucket even
// while observations race the snapshot.
func (h *histogram) snapshot() (buckets []float64, counts []uint64, sum float64, count uint64) {
	buckets = make([]float64, len(replicationBuckets))
	counts = make([]uint64, len(replicationBuckets))
	for i, b := range replicationBuckets {
		buckets[i] = b.Seconds()
		count += h.counts[i].Load()
		counts[i] = count
	}
	count += h.counts[len(replicationBuckets)].Load()
	return buckets, counts, time.Duration(h.nanos.Load()).Seconds(), count
}

// ReplicationHistogram describes how long Commit took to replicate a
// change (encoding and sending it to the members, waiting as the
// replication mode says; commits made alone are not counted): the bucket
// upper bounds in seconds, the cumulative count of commits within each, the
// sum of the durations in seconds and the number of commits.
func (m *Manager) ReplicationHistogram() (buckets []float64, counts []uint64, sum float64, count uint64) {
	return m.replication.snapshot()
}
