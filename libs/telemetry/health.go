package telemetry

import (
	"errors"
	"slices"
	"strings"
	"sync"
)

// Health collects the readiness of a process's components for /readyz. The
// zero value is ready to use and safe for concurrent use.
//
// A component is registered by the first SetReady or Expect naming it and
// stays registered. The process is ready when every registered component
// last reported a nil error; with none registered it is ready.
type Health struct {
	mu         sync.Mutex
	components map[string]error
}

// errNotReported is the state of a component Expected but not yet heard from.
var errNotReported = errors.New("not reported yet")

// SetReady records component name as ready (err == nil) or not ready
// because of err.
func (h *Health) SetReady(name string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.components == nil {
		h.components = map[string]error{}
	}
	h.components[name] = err
}

// Expect registers components as not ready until they report, so a process
// is not ready before its components have started. Components already
// registered keep their state.
func (h *Health) Expect(names ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.components == nil {
		h.components = map[string]error{}
	}
	for _, n := range names {
		if _, ok := h.components[n]; !ok {
			h.components[n] = errNotReported
		}
	}
}

// NotReady returns the registered components that are not ready, with
// why, one "name: reason" line each, sorted by name; empty when ready.
func (h *Health) NotReady() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for name, err := range h.components {
		if err != nil {
			out = append(out, name+": "+strings.ReplaceAll(err.Error(), "\n", "; "))
		}
	}
	slices.Sort(out)
	return out
}
