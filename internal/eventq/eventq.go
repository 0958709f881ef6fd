// Package eventq hands events from a loop that must never block to one
// consumer that may be slow.
package eventq

import "sync"

// Queue delivers pushed values on Out, in order. Push never blocks: past
// its limit the queue drops the oldest values and counts them, because the
// events it carries are hints (the current state can always be re-read),
// while a blocked producer would stall a heartbeat loop.
type Queue[T any] struct {
	mu      sync.Mutex
	pending []T
	limit   int
	dropped uint64
	wake    chan struct{}
	out     chan T
}

// New returns a queue holding at most limit undelivered values.
func New[T any](limit int) *Queue[T] {
	return &Queue[T]{limit: max(limit, 1), wake: make(chan struct{}, 1), out: make(chan T)}
}

// Out is where values come out; it is closed when Run returns.
func (q *Queue[T]) Out() <-chan T { return q.out }

// Push queues values without blocking.
func (q *Queue[T]) Push(vs ...T) {
	if len(vs) == 0 {
		return
	}
	q.mu.Lock()
	q.pending = append(q.pending, vs...)
	if over := len(q.pending) - q.limit; over > 0 {
		q.pending = append(q.pending[:0], q.pending[over:]...)
		q.dropped += uint64(over)
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Dropped counts the values lost to a consumer that fell behind.
func (q *Queue[T]) Dropped() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dropped
}

// Run delivers values until stop is closed, then closes Out. Values still
// pending at stop are discarded: after stop nobody is owed them.
func (q *Queue[T]) Run(stop <-chan struct{}) {
	defer close(q.out)
	for {
		q.mu.Lock()
		var next T
		have := len(q.pending) > 0
		if have {
			next = q.pending[0]
			q.pending = q.pending[1:]
		}
		q.mu.Unlock()
		if !have {
			select {
			case <-q.wake:
				continue
			case <-stop:
				return
			}
		}
		select {
		case q.out <- next:
		case <-stop:
			return
		}
	}
}
