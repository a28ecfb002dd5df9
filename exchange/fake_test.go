package exchange

import (
	"context"
	"encoding/json"
	"sync"

	"github.com/easconnector/easconnector/runspace"
)

// response is what the fake answers to one call.
type response struct {
	objs  []string // raw JSON objects
	count int      // reported count; -1 → len(objs)
	err   error    // returned after the objects
}

// fake is a hand-written Runner: it records every call and answers with
// respond (or nothing when respond is nil).
type fake struct {
	mu      sync.Mutex
	calls   []runspace.Call
	respond func(runspace.Call) response
}

var _ Runner = (*fake)(nil)

func (f *fake) Do(ctx context.Context, c runspace.Call, each func(json.RawMessage) error) (runspace.Result, error) {
	f.mu.Lock()
	f.calls = append(f.calls, c)
	f.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return runspace.Result{}, err
	}
	r := response{count: -1}
	if f.respond != nil {
		r = f.respond(c)
	}
	for _, o := range r.objs {
		if err := each(json.RawMessage(o)); err != nil {
			return runspace.Result{Server: "ex1.contoso.com", Attempts: 1}, err
		}
	}
	n := r.count
	if n < 0 {
		n = len(r.objs)
	}
	return runspace.Result{Count: n, Server: "ex1.contoso.com", Attempts: 1}, r.err
}

func (f *fake) sent() []runspace.Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]runspace.Call(nil), f.calls...)
}

// objects answers every call with objs.
func objects(objs ...string) func(runspace.Call) response {
	return func(runspace.Call) response { return response{objs: objs, count: -1} }
}
