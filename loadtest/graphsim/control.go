package graphsim

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/easconnector/easconnector/loadtest/population"
)

// The control API lets a process outside graphsim (cmd/graphsim's users,
// cmd/easload) change the tenant and inject faults, as exsim's control API
// does for Exchange. It has no authentication: serve it on loopback only.

// maxControlBody bounds control request bodies (a burst of 40,000 new
// records fits).
const maxControlBody = 64 << 20

// ControlStatus is GET /v1/status.
type ControlStatus struct {
	Devices      int            `json:"devices"`      // managedDevices records
	TokensIssued int            `json:"tokensIssued"` // access tokens issued
	Requests     map[string]int `json:"requests"`     // "endpoint status" → count (status 0: connection reset)
	Faults       ControlFaults  `json:"faults"`
}

// ControlFaults is the body of PUT /v1/faults: the whole fault set at once
// (a field left out turns that fault off).
type ControlFaults struct {
	Outage     bool    `json:"outage"`      // reset every connection, token endpoint included
	TokenDown  bool    `json:"tokenDown"`   // token endpoint answers 503
	ErrorRate  float64 `json:"errorRate"`   // share of Graph API requests answered with ErrorStatus
	ErrorStat  int     `json:"errorStatus"` // 429, 500, 502, 503 or 504 (0 → 429)
	Throttle   int     `json:"throttle"`    // the next N Graph API requests answer 429
	RetryAfter string  `json:"retryAfter"`  // Retry-After sent with 429s ("" sends none)
	LatencyMS  int     `json:"latencyMs"`   // delay before every answer
}

// ControlChanges is the body of POST /v1/changes: MDM records to add or
// replace (by ID) and record ids to remove, applied in one Update.
type ControlChanges struct {
	Upsert []population.MDMRecord `json:"upsert"`
	Remove []string               `json:"remove"`
}

// ControlChurn is the body of POST /v1/churn: population.Churn on the
// server's population, which describes the same fleet as exsim's when both
// were generated from the same options and churned in step.
type ControlChurn struct {
	Fraction float64 `json:"fraction"`
	Step     string  `json:"step"` // a Go duration ("10s")
}

// ControlHandler returns the control API:
//
//	GET  /v1/status   counts, requests by endpoint and status, faults
//	PUT  /v1/faults   ControlFaults
//	POST /v1/changes  ControlChanges → {"upserted":n,"removed":n}
//	POST /v1/churn    ControlChurn → {"changes":[population.Change…]}
func (s *Server) ControlHandler() http.Handler {
	mux := http.NewServeMux()
	h := func(pattern string, f func(r *http.Request) (any, error)) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			r.Body = http.MaxBytesReader(w, r.Body, maxControlBody)
			v, err := f(r)
			w.Header().Set("Content-Type", "application/json")
			if err != nil {
				w.WriteHeader(http.StatusBadRequest)
				_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
				return
			}
			_ = json.NewEncoder(w).Encode(v)
		})
	}
	h("GET /v1/status", func(*http.Request) (any, error) { return s.controlStatus(), nil })
	h("PUT /v1/faults", func(r *http.Request) (any, error) {
		var f ControlFaults
		if err := decodeStrict(r, &f); err != nil {
			return nil, err
		}
		if err := s.SetFaults(f); err != nil {
			return nil, err
		}
		return s.controlStatus().Faults, nil
	})
	h("POST /v1/changes", func(r *http.Request) (any, error) {
		var c ControlChanges
		if err := decodeStrict(r, &c); err != nil {
			return nil, err
		}
		up, rm, err := s.ApplyRecords(c)
		if err != nil {
			return nil, err
		}
		return map[string]int{"upserted": up, "removed": rm}, nil
	})
	h("POST /v1/churn", func(r *http.Request) (any, error) {
		var c ControlChurn
		if err := decodeStrict(r, &c); err != nil {
			return nil, err
		}
		step, err := time.ParseDuration(c.Step)
		if err != nil || step < 0 {
			return nil, fmt.Errorf("step: want a non-negative Go duration, got %q", c.Step)
		}
		if c.Fraction <= 0 || c.Fraction > 1 {
			return nil, fmt.Errorf("fraction: must be in (0,1], got %v", c.Fraction)
		}
		var changes []population.Change
		s.Update(func(p *population.Population) { changes = p.Churn(c.Fraction, step) })
		if changes == nil {
			changes = []population.Change{}
		}
		return map[string]any{"changes": changes}, nil
	})
	return mux
}

func decodeStrict(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("request body: %w", err)
	}
	if dec.More() {
		return errors.New("request body: trailing data after the JSON value")
	}
	return nil
}

func (s *Server) controlStatus() ControlStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := ControlStatus{Devices: len(s.pop.MDM), TokensIssued: s.issued, Requests: map[string]int{}}
	for k, v := range s.requests {
		st.Requests[fmt.Sprintf("%s %d", k.Endpoint, k.Status)] += v
	}
	f := s.f
	st.Faults = ControlFaults{Outage: f.outage, TokenDown: f.tokenDown, ErrorRate: f.errRate, ErrorStat: f.errStatus,
		Throttle: f.throttleN, RetryAfter: f.retryAfter, LatencyMS: int(f.latency / time.Millisecond)}
	return st
}

// SetFaults replaces the injected faults with f.
func (s *Server) SetFaults(f ControlFaults) error {
	switch {
	case f.ErrorRate < 0 || f.ErrorRate > 1:
		return fmt.Errorf("errorRate: must be in [0,1], got %v", f.ErrorRate)
	case f.ErrorStat != 0 && f.ErrorStat != 429 && (f.ErrorStat < 500 || f.ErrorStat > 504):
		return fmt.Errorf("errorStatus: want 429 or 500–504, got %d", f.ErrorStat)
	case f.Throttle < 0 || f.LatencyMS < 0:
		return errors.New("throttle and latencyMs: must not be negative")
	}
	if f.ErrorStat == 0 {
		f.ErrorStat = 429
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.f.outage, s.f.tokenDown = f.Outage, f.TokenDown
	s.f.errRate, s.f.errStatus = f.ErrorRate, f.ErrorStat
	s.f.throttleN, s.f.retryAfter = f.Throttle, f.RetryAfter
	s.f.latency = time.Duration(f.LatencyMS) * time.Millisecond
	return nil
}

// ApplyRecords adds or replaces c.Upsert (by ID) and removes c.Remove. A
// record without an ID or an owner, or an unknown id to remove, fails the
// whole request before anything changes.
func (s *Server) ApplyRecords(c ControlChanges) (upserted, removed int, err error) {
	for i, r := range c.Upsert {
		if r.ID == "" || r.UserID == "" || r.EASDeviceID == "" {
			return 0, 0, fmt.Errorf("upsert[%d]: ID, UserID and EASDeviceID must not be empty", i)
		}
	}
	s.Update(func(p *population.Population) {
		at := make(map[string]int, len(p.MDM))
		for i, r := range p.MDM {
			at[r.ID] = i
		}
		for _, id := range c.Remove {
			if _, ok := at[id]; !ok {
				err = fmt.Errorf("remove %q: no such record", id)
				return
			}
		}
		for _, r := range c.Upsert {
			if i, ok := at[r.ID]; ok {
				p.MDM[i] = r
			} else {
				at[r.ID] = len(p.MDM)
				p.MDM = append(p.MDM, r)
			}
			upserted++
		}
		if len(c.Remove) > 0 {
			gone := make(map[string]bool, len(c.Remove))
			for _, id := range c.Remove {
				gone[strings.ToLower(id)] = true
			}
			n := len(p.MDM)
			p.MDM = slices.DeleteFunc(p.MDM, func(r population.MDMRecord) bool { return gone[strings.ToLower(r.ID)] })
			removed = n - len(p.MDM)
		}
	})
	return upserted, removed, err
}
