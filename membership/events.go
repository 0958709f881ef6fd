package membership

import "sync"

// eventQueue hands events from the heartbeat loop to one consumer. push never
// blocks: past limit it drops the oldest event, because a membership event is
// only a hint to re-read Members, while a blocked heartbeat loop would make
// this node look dead to everyone.
type eventQueue struct {
	mu      sync.Mutex
	pending []Event
	limit   int
	dropped uint64
	wake    chan struct{}
	out     chan Event
}

func newEventQueue(limit int) *eventQueue {
	return &eventQueue{limit: limit, wake: make(chan struct{}, 1), out: make(chan Event)}
}

func (q *eventQueue) push(evs ...Event) {
	if len(evs) == 0 {
		return
	}
	q.mu.Lock()
	q.pending = append(q.pending, evs...)
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

func (q *eventQueue) droppedCount() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dropped
}

// run delivers events until stop is closed, then closes out. Events still
// pending at stop are discarded: after Stop nobody is owed them.
func (q *eventQueue) run(stop <-chan struct{}) {
	defer close(q.out)
	for {
		q.mu.Lock()
		var next Event
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
